"""`logger=[tensorboard,mlflow,csv]` from the shell: tiny trainings and a parallel 2-job sweep tracked in a temp
SQLite file, read back with MLflow's own client and compared with TensorBoard, metrics.json and the config."""

from __future__ import annotations

import csv
import json
import shutil
import signal

import pytest
import yaml

from emotionsumm.config.core import flatten

from ..conftest import TINY, cli, scalars
from ..test_loggers import artifacts, fresh_db, history  # noqa: F401 - fresh_db is a fixture
from .test_interrupt import OVERRIDES as INTERRUPT_OVERRIDES
from .test_interrupt import run_driver

RUN = [*TINY, "trainer.max_steps=6", "trainer.val_every_n_steps=3", "trainer.limit_val_batches=1",
       "trainer.test_after_fit=false"]


def only_run(client, run_dir):
    return client.get_run(json.loads((run_dir / "mlflow_run.json").read_text())["run_id"])


def scalar_tags(run_dir) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc.Tags()["scalars"]


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, fresh_db):  # noqa: F811
    """A run with all three loggers stopped by SIGTERM after step 5 of 8 (KILLED), then resumed to the end."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow_e2e")
    shutil.copy(fresh_db, tmp / "mlflow.db")
    uri, run_dir = f"sqlite:///{tmp / 'mlflow.db'}", tmp / "run"
    client = MlflowClient(uri)
    loggers = ["logger=[tensorboard,mlflow,csv]", f"logger.mlflow.tracking_uri={uri}"]
    proc = run_driver(run_dir, "SIGTERM", 8, *loggers)  # stops after optimizer step 5 of 8, saved there
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    killed = only_run(client, run_dir)
    killed_steps = [s for s, _ in history(client, killed.info.run_id, "train/loss")]
    proc = cli("train", *INTERRUPT_OVERRIDES, *loggers, f"hydra.run.dir={run_dir}", "trainer.resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"uri": uri, "client": client, "run_dir": run_dir, "killed": killed, "killed_steps": killed_steps,
            "run": only_run(client, run_dir)}


def test_sigterm_ends_the_run_killed_and_its_resume_continues_the_same_run(stopped_and_resumed):
    client, killed, run = (stopped_and_resumed[k] for k in ("client", "killed", "run"))
    assert killed.info.status == "KILLED" and stopped_and_resumed["killed_steps"] == [1, 2, 3, 4, 5]
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "run" and client.get_experiment(run.info.experiment_id).name == "emotion_text"
    assert [s for s, _ in history(client, run.info.run_id, "train/loss")] == list(range(1, 9))  # no step twice
    assert run.data.params["trainer.resume"] == "null"  # params keep the first segment's values
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_mlflow_and_csv_hold_what_tensorboard_metrics_json_and_the_config_hold(stopped_and_resumed):
    client, run_dir, run = (stopped_and_resumed[k] for k in ("client", "run_dir", "run"))
    final = json.loads((run_dir / "metrics.json").read_text())
    tags = [t for t in scalar_tags(run_dir) if not t.startswith("hparams/")]
    assert set(run.data.metrics) == set(tags) | set(final)  # the TensorBoard names, and the final metrics
    for tag in ("train/loss", "val/acc", "val_raw/loss", "lr/default"):
        tb = scalars(run_dir, tag)  # purged at the resume step, so each step once
        assert [step for step, _ in history(client, run.info.run_id, tag)] == sorted(tb)
        assert [value for _, value in history(client, run.info.run_id, tag)] == pytest.approx(
            [tb[step] for step in sorted(tb)])
    assert {k: run.data.metrics[k] for k in final} == pytest.approx(final)

    config = yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())
    assert set(run.data.params) == set(flatten(config))
    assert run.data.params["optimizer.lr"] == str(config["optimizer"]["lr"])
    assert run.data.params["logger.mlflow.tracking_uri"] == stopped_and_resumed["uri"]

    files = artifacts(client, run.info.run_id)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "confusion_val.png", "train.log",
            "provenance.json", "metrics.csv", "figures/val/confusion_matrix/step_0000006.png"} <= files
    assert not any(f.startswith(("checkpoints/", "tb/")) or f.endswith(".ckpt") for f in files)

    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for tag in ("train/loss", "val/acc"):
        tb = scalars(run_dir, tag)
        assert {int(r["step"]): float(r["value"]) for r in rows if r["name"] == tag} == pytest.approx(tb)
        assert len([r for r in rows if r["name"] == tag]) == len(tb)  # each step once


def test_parallel_sweep_is_one_experiment_with_a_parent_run_and_a_child_run_per_job(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'new.db'}"  # a new database: both jobs start on it at once
    sweep = tmp_path / "sweep"
    proc = cli("train", "launcher=joblib", "optimizer.lr=1e-3,2e-3", *RUN,
               "logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    parent = only_run(client, sweep)
    assert client.get_experiment(parent.info.experiment_id).name == "emotion_text/sweep"
    assert parent.info.status == "FINISHED" and "report.md" in artifacts(client, parent.info.run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2
    assert sorted(r.info.run_name for r in children) == [p.name for p in jobs]
    for job in jobs:
        child = only_run(client, job)
        assert child.info.status == "FINISHED"
        assert child.data.metrics["best/val/acc"] == json.loads((job / "metrics.json").read_text())["best/val/acc"]
    assert {r.data.params["optimizer.lr"] for r in children} == {"0.001", "0.002"}
