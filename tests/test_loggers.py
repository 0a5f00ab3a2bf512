"""Loggers: the `logger` list group, CSV rows and their purge on resume, several loggers at once, and MLflow on a
temp SQLite file read back with MLflow's own client (params, metric histories, final metrics, artifacts, status,
resume into the same run, a sweep's parent and child runs)."""

from __future__ import annotations

import atexit
import csv
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib
import pytest
import torch
from omegaconf import OmegaConf

from emotionsumm.tracking.loggers import CSVLogger, MultiLogger, TensorBoardLogger, histogram, logger_factory
from emotionsumm.training.stop import Interrupted

from .conftest import make_cfg

matplotlib.use("Agg")


def csv_rows(run_dir) -> list[tuple[int, str, float]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["step", "name", "value"]
        return [(int(step), name, float(value)) for step, name, value in reader]


# ---- the config group ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("choice", "names"), [
    ([], ["tensorboard"]), (["logger=mlflow"], ["mlflow"]),
    (["logger=[tensorboard,mlflow]"], ["tensorboard", "mlflow"]),
    (["logger=[tensorboard,mlflow,csv]"], ["tensorboard", "mlflow", "csv"]), (["logger=none"], []),
])
def test_logger_group_composes_one_node_per_chosen_logger(tmp_path, choice, names):
    cfg = make_cfg(tmp_path, choice)
    assert list(cfg.logger or {}) == names
    if "mlflow" in names:
        assert cfg.logger.mlflow.tracking_uri.startswith("sqlite:///") and cfg.logger.mlflow.tracking_uri.endswith(
            "/outputs/mlflow.db")
        assert cfg.logger.mlflow.experiment_name == "emotion_text"


def test_factory_builds_each_chosen_logger_with_the_run_values_it_names(tmp_path):
    cfg = make_cfg(tmp_path, ["logger=[tensorboard,csv]", "logger.tensorboard.histogram_every_n_steps=4"])
    build = logger_factory(cfg.logger, run_dir=tmp_path, run_config={}, sweep_dir=None)
    logger = build(log_dir=str(tmp_path / "tb"), purge_step=None)
    try:
        assert isinstance(logger, MultiLogger)
        tb, rows = logger.loggers
        assert isinstance(tb, TensorBoardLogger) and tb.log_dir == tmp_path / "tb"
        assert isinstance(rows, CSVLogger) and rows.path == tmp_path / "metrics.csv"
        assert logger.histogram_every_n_steps == 4
    finally:
        logger.close()
    assert logger_factory(make_cfg(tmp_path, ["logger=none"]).logger) is None


def test_factory_refuses_the_old_single_node_layout_saying_how_to_move_keys():
    old = OmegaConf.create({"_target_": "emotionsumm.tracking.loggers.TensorBoardLogger", "histogram_every_n_steps": 2})
    with pytest.raises(ValueError, match=r"logger.tensorboard.histogram_every_n_steps"):
        logger_factory(old)


# ---- CSV -----------------------------------------------------------------------------------------------------
def test_csv_rows_are_step_name_value_and_finals_are_not_repeated(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_scalars({"train/loss": 2.5, "lr/default": 1e-3}, 1)
    logger.log_scalars({"val/acc": 0.5, "test/acc": 0.25}, 2)
    logger.log_hparams({}, {"val/acc": 0.5, "test/acc": 0.25, "best/val/acc": 0.75, "step": 2})
    logger.close()
    assert csv_rows(tmp_path) == [(1, "train/loss", 2.5), (1, "lr/default", 1e-3), (2, "val/acc", 0.5),
                                  (2, "test/acc", 0.25), (2, "best/val/acc", 0.75), (2, "step", 2.0)]


def test_csv_resume_drops_rows_at_and_after_the_purge_step_and_a_torn_last_line(tmp_path):
    first = CSVLogger(tmp_path)
    for step in range(1, 6):
        first.log_scalars({"train/loss": float(step)}, step)
    first.close()
    with open(tmp_path / "metrics.csv", "a") as fh:  # what a power cut during a write could leave
        fh.write("6,train/lo")
    resumed = CSVLogger(tmp_path, purge_step=4)
    resumed.log_scalars({"train/loss": 40.0}, 4)
    resumed.close()
    assert csv_rows(tmp_path) == [(1, "train/loss", 1.0), (2, "train/loss", 2.0), (3, "train/loss", 3.0),
                                  (4, "train/loss", 40.0)]
    CSVLogger(tmp_path).close()  # a fresh start in the same dir begins a new file
    assert csv_rows(tmp_path) == []


def test_histograms_count_every_finite_value_into_equal_width_bins():
    import numpy as np

    values = torch.tensor([0.0, 0.1, 0.5, 0.5, 1.0, float("inf"), float("nan"), -float("inf")])
    hist = histogram(values, bins=4)
    assert (hist["min"], hist["max"], hist["num"]) == (0.0, 1.0, 5)
    assert hist["sum"] == pytest.approx(2.1) and hist["sum_squares"] == pytest.approx(1.51)
    assert hist["bucket_limits"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])  # right edges; first bin empty
    assert hist["bucket_counts"] == [0.0, 2.0, 0.0, 2.0, 1.0]  # 0.5 falls in [0.5, 0.75), 1.0 in the last bin
    big = torch.randn(10_000)
    counts = histogram(big, bins=32)["bucket_counts"][1:]
    expected, _ = np.histogram(big.numpy(), bins=np.linspace(float(big.min()), float(big.max()), 33))
    assert sum(counts) == 10_000 and np.abs(np.array(counts) - expected).max() <= 2  # float edge rounding only
    assert histogram(torch.full((3,), 2.0))["bucket_counts"][:2] == [0.0, 3.0]  # constant: one bin
    assert histogram(torch.tensor([float("nan"), float("inf")])) is None


def test_several_loggers_each_get_every_call_and_histograms_at_their_own_interval(tmp_path):
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch import nn

    logger = MultiLogger([TensorBoardLogger(tmp_path / "tb", histogram_every_n_steps=2), CSVLogger(tmp_path)])
    module = nn.Linear(2, 1)
    for step in (1, 2, 3, 4):
        logger.log_scalars({"train/loss": float(step)}, step)
        logger.log_histograms(module, step)
    figure = plt.figure()
    logger.log_figure("val/confusion_matrix", figure, 4)
    logger.close()
    assert not plt.fignum_exists(figure.number)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "images": 0, "scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Histograms("weights/weight")] == [2, 4]
    stored = acc.Histograms("weights/weight")[0].histogram_value
    weights = module.weight.detach().flatten()
    assert (stored.num, stored.min, stored.max) == (2, pytest.approx(float(weights.min())),
                                                   pytest.approx(float(weights.max())))
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert "val/confusion_matrix" in acc.Tags()["images"]
    assert [row[0] for row in csv_rows(tmp_path)] == [1, 2, 3, 4]


# ---- MLflow --------------------------------------------------------------------------------------------------
@functools.cache
def template_db(base: Path) -> Path:
    """An empty MLflow database with its tables, to copy: creating them takes seconds (MLflow runs every schema
    migration, each with an fsync; in a tmpfs when there is one), copying the file does not. Once per session,
    also for tests/e2e/test_mlflow.py."""
    from mlflow.tracking import MlflowClient

    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if os.access(shm, os.W_OK) else None) as scratch:
        MlflowClient(f"sqlite:///{scratch}/mlflow.db").search_experiments()
        db = base / "mlflow_template.db"
        shutil.copy(Path(scratch) / "mlflow.db", db)
    return db


@pytest.fixture(scope="session")
def fresh_db(tmp_path_factory) -> Path:
    return template_db(tmp_path_factory.getbasetemp())


@pytest.fixture
def store(tmp_path, fresh_db):
    """(tracking URI of a temp SQLite file, MlflowClient on it)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(fresh_db, db)
    uri = f"sqlite:///{db}"
    return uri, MlflowClient(uri)


def make_mlflow(run_dir, uri, **kwargs):
    from emotionsumm.tracking.mlflow_logger import MLflowLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    return MLflowLogger(run_dir, uri, experiment_name=kwargs.pop("experiment_name", "unit"), **kwargs)


def history(client, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(client, run_id, path=None) -> set[str]:
    found = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def test_mlflow_run_has_config_params_metric_histories_finals_artifacts_and_finishes(tmp_path, store):
    uri, client = store
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra/config.yaml").write_text("seed: 1\n")
    (run_dir / "confusion_val.png").write_bytes(b"png")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints/last.ckpt").write_bytes(b"weights")
    (run_dir / "big.log").write_bytes(b"x" * 2 * 2**20)
    config = {"optimizer": {"lr": 0.001, "betas": [0.9, 0.99]}, "data": {"path": "a" * 7000},
              "many": {f"k{i}": i for i in range(150)}, "trainer": {"resume": None}}
    logger = make_mlflow(run_dir, uri, run_config=config, tags={"team": "nlp"}, max_artifact_mb=1, run_name="first")
    for step in (1, 2, 3):
        logger.log_scalars({"train/loss": 1.0 / step, "lr/default": 0.001}, step)
    logger.log_scalars({"val/acc": 0.5}, 2)
    logger.flush()  # what the trainer does at a checkpoint
    assert history(client, logger.run_id, "train/loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    logger.log_scalars({"val/acc": 0.75, "test/acc": 0.6}, 3)
    logger.log_text("config", "seed: 1", 0)
    final = {"val/acc": 0.75, "test/acc": 0.6, "best/val/acc": 0.75, "step": 3, "epoch": 1}
    logger.log_hparams({}, final)
    logger.close()

    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.data.tags["team"] == "nlp" and run.data.tags["emotionsumm.run_dir"] == str(run_dir.resolve())
    assert client.get_experiment(run.info.experiment_id).name == "unit"
    params = run.data.params
    assert params["optimizer.lr"] == "0.001" and params["optimizer.betas"] == "[0.9, 0.99]"
    assert params["trainer.resume"] == "null" and params["many.k149"] == "149"  # more than one batch of 100
    assert params["data.path"] == "a" * 6000  # cut to MLflow's limit of a param value
    assert len(params) == 154
    assert history(client, logger.run_id, "val/acc") == [(2, 0.5), (3, 0.75)]  # the final value is not repeated
    assert history(client, logger.run_id, "best/val/acc") == [(3, 0.75)]
    assert run.data.metrics["test/acc"] == 0.6 and run.data.metrics["step"] == 3
    assert artifacts(client, logger.run_id) == {".hydra/config.yaml", "confusion_val.png", "metrics.json",
                                                 "text/config/step_0000000.md"}
    local = client.download_artifacts(logger.run_id, "metrics.json", str(tmp_path / "down"))
    assert json.loads(open(local).read()) == final
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == logger.run_id


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "FAILED"), (Interrupted(15, 3), "KILLED"),
                                               (KeyboardInterrupt(), "KILLED"), (None, "KILLED")])
def test_mlflow_status_says_how_the_run_ended(tmp_path, store, error, status):
    uri, client = store
    logger = make_mlflow(tmp_path / "run", uri)
    logger.log_scalars({"train/loss": 1.0}, 1)
    if error is None:  # closed without final metrics: the trainer's path after a stop signal
        logger.close()
    else:
        try:
            raise error
        except BaseException:
            logger.close()  # as the trainer does while the exception propagates
    run = client.get_run(logger.run_id)
    assert run.info.status == status
    assert history(client, logger.run_id, "train/loss") == [(1, 1.0)]  # the buffer is sent on every path


def test_mlflow_resume_continues_the_same_run_without_repeating_a_step(tmp_path, store):
    uri, client = store
    run_dir = tmp_path / "run"
    first = make_mlflow(run_dir, uri, run_config={"trainer": {"resume": None}, "seed": 1})
    for step in range(1, 6):
        first.log_scalars({"train/loss": float(step)}, step)
        if step in (3, 5):  # a checkpoint at 3, then a timed flush at 5 before the process was SIGKILLed
            first.flush()
    atexit.unregister(first._close_at_exit)  # SIGKILL: no close, the run stays RUNNING
    assert client.get_run(first.run_id).info.status == "RUNNING"

    resumed = make_mlflow(run_dir, uri, purge_step=4, run_config={"trainer": {"resume": "auto"}, "seed": 1})
    assert resumed.run_id == first.run_id
    for step in range(4, 9):
        resumed.log_scalars({"train/loss": 10.0 * step}, step)
    resumed.log_hparams({}, {"train/loss": 80.0, "step": 8})
    resumed.close()
    assert history(client, first.run_id, "train/loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0),
                                                           (6, 60.0), (7, 70.0), (8, 80.0)]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer.resume"] == "null"
    assert len(client.search_runs([run.info.experiment_id])) == 1

    fresh = make_mlflow(run_dir, uri)  # not resumed (no purge_step): a new run in the same dir
    fresh.close()
    assert fresh.run_id != first.run_id


def test_mlflow_sweep_jobs_are_child_runs_of_one_parent_in_the_sweeps_experiment(tmp_path, store):
    from emotionsumm.tracking.mlflow_logger import end_sweep_run

    uri, client = store
    sweep = tmp_path / "sweep"
    jobs = [make_mlflow(sweep / f"{n}-abc", uri, sweep_dir=sweep, experiment_name="emotion_text") for n in (0, 1)]
    for n, job in enumerate(jobs):
        job.log_hparams({}, {"val/acc": 0.5 + n, "step": 1})
        job.close()
    (sweep / "report.md").write_text("| job | acc |\n")
    end_sweep_run(sweep, failed=False)
    parent_id = json.loads((sweep / "mlflow_run.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert client.get_experiment(parent.info.experiment_id).name == "emotion_text/sweep"
    assert parent.info.status == "FINISHED" and artifacts(client, parent_id) == {"report.md"}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.info.run_name for r in children) == ["0-abc", "1-abc"]
    assert {r.info.run_id for r in children} == {job.run_id for job in jobs}


def test_mlflow_missing_says_how_to_install_it(monkeypatch):
    from emotionsumm.tracking.mlflow_logger import import_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without MLflow gives
    with pytest.raises(ImportError, match=r"pip install -e '\.\[mlflow\]'"):
        import_mlflow()
