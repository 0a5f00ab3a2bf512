"""Reports on sweep and run dirs built by hand (no training): tables, statistics, plots, errors."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from emotionsumm.report import main, write_report

from ..conftest import cli

PNG = b"\x89PNG\r\n\x1a\n"


def make_job(root: Path, name: str, overrides: list[str], metrics: dict | None = None, error: str | None = None,
             monitor: str = "val/acc", mode: str = "max") -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": {"monitor": monitor, "mode": mode}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        (job / "error.txt").write_text(f"overrides: {' '.join(overrides)}\n\nTraceback ...\n{error}\n")
    return job


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture
def cv_sweep(tmp_path: Path) -> Path:
    """2 learning rates × 3 folds (one failed, one never finished) as `make cv` + a grid would leave them."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    accs = {("0.001", 0): 0.5, ("0.001", 1): 0.6, ("0.001", 2): 0.7, ("0.01", 0): 0.8, ("0.01", 1): 0.9}
    for num, (lr, fold) in enumerate([(lr, f) for lr in ("0.001", "0.01") for f in range(3)]):
        overrides = [f"optimizer.lr={lr}", "data.num_folds=3", f"data.fold={fold}", "trainer.max_steps=4"]
        name = f"{num}-{num:08x}"
        if (lr, fold) in accs:
            acc = accs[(lr, fold)]
            make_job(sweep, name, overrides, {"best/val/acc": acc, "val/acc": acc - 0.1, "test/acc": acc - 0.2,
                                              "test/f1_joy": 0.3, "val_raw/acc": 0.1, "step": 4, "epoch": 0})
    make_job(sweep, "5-0000000f", ["optimizer.lr=0.01", "data.num_folds=3", "data.fold=2", "trainer.max_steps=4"],
             error="ValueError: trainer.precision=16 needs a CUDA device")
    make_job(sweep, "6-00000010", ["optimizer.lr=0.1", "data.num_folds=3", "data.fold=0", "trainer.max_steps=4"])
    return sweep


def test_sweep_report_tables_and_mean_std_over_folds(cv_sweep):
    report = write_report(cv_sweep)
    rows = list(csv.DictReader((cv_sweep / "report.csv").open()))
    assert [r["job"] for r in rows][:2] == ["0-00000000", "1-00000001"] and len(rows) == 7
    assert [r["status"] for r in rows].count("finished") == 5
    assert {r["status"] for r in rows[5:]} == {"failed", "unfinished"}
    assert rows[0]["optimizer.lr"] == "0.001" and rows[0]["data.fold"] == "0" and "data.num_folds" not in rows[0]
    assert float(rows[1]["best/val/acc"]) == 0.6 and rows[5]["best/val/acc"] == ""
    assert "needs a CUDA device" in rows[5]["error"]

    groups = {g["optimizer.lr"]: g for g in csv.DictReader((cv_sweep / "report_groups.csv").open())}
    assert groups["0.001"]["n"] == "3" and groups["0.01"]["n"] == "2"
    assert float(groups["0.001"]["best/val/acc mean"]) == pytest.approx(0.6)
    assert float(groups["0.001"]["best/val/acc std"]) == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert float(groups["0.01"]["test/acc mean"]) == pytest.approx(0.65)

    md = report.read_text()
    assert "## Mean ± std over data.fold" in md
    assert "| 0.001 | 3 | 0.6000 ± 0.1000 |" in md
    assert "Best job: `4-00000004` with best/val/acc = 0.9000 (`optimizer.lr=0.01 data.fold=1`)" in md
    assert "`5-0000000f` (`optimizer.lr=0.01" in md and "needs a CUDA device" in md
    assert "test/f1_joy" not in md and "val_raw/acc" not in md  # per-class and raw twins: CSV only
    for key in ("optimizer.lr", "data.fold"):
        assert f"![metric_vs_{key}](metric_vs_{key}.png)" in md
        assert_png(cv_sweep / f"metric_vs_{key}.png")


def test_run_report_of_a_summarization_run_has_a_rouge_table_and_learning_curves(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = make_job(tmp_path, "run", ["experiment=summ"], monitor="val/rougeL",
                   metrics={"best/val/rougeL": 31.0, "val/rouge1": 40.5, "val/rougeL": 31.0, "test/rouge1": 39.0,
                            "test/rouge2": 17.25, "test/rougeL": 30.0, "test/loss": 2.5, "step": 30, "epoch": 1})
    writer = SummaryWriter(str(run / "tb"))
    for step in range(1, 31):
        writer.add_scalar("train/loss", 3.0 - step / 20, step)
        writer.add_scalar("lr/default", 1e-3, step)
    for step in (10, 20, 30):
        writer.add_scalar("val/loss", 2.9 - step / 30, step)
        writer.add_scalar("val/rougeL", step, step)
    writer.close()

    md = write_report(run).read_text()
    assert "## ROUGE" in md
    rouge = md[md.index("## ROUGE"):].split("\n\n")[1].splitlines()
    assert rouge[0] == "|  | rouge1 | rouge2 | rougeL |"
    assert rouge[2:] == ["| val | 40.5000 |  | 31.0000 |", "| test | 39.0000 | 17.2500 | 30.0000 |",
                         "| best/val |  |  | 31.0000 |"]
    assert "best/val/rougeL = 31.0000 (max)" in md and "confusion" not in md
    assert_png(run / "learning_curves.png")
    assert list(csv.reader((run / "report.csv").open()))[0] == ["metric", "value"]


def test_run_report_of_a_classification_run_shows_its_confusion_matrices(tmp_path):
    run = make_job(tmp_path, "run", [], {"val/acc": 0.5, "test/acc": 0.4, "best/val/acc": 0.5})
    (run / "confusion_test.png").write_bytes(PNG)
    md = write_report(run).read_text()
    assert "![confusion_test](confusion_test.png)" in md and "confusion_val.png" not in md
    assert "| test | 0.4000 |" in md


def test_bad_paths_fail_with_a_message_saying_what_to_pass(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a directory; pass a run dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "is neither a run dir" in capsys.readouterr().err

    sweep = tmp_path / "sweep"
    make_job(sweep, "0-00000000", ["seed=0"], error="RuntimeError: boom")
    make_job(sweep, "1-00000001", ["seed=1"])
    assert main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "no finished job among 2 job dirs" in err and "RuntimeError: boom" in err
    assert f"hydra.sweep.dir={sweep}" in err
    assert not (sweep / "report.md").exists()


def test_report_command_line_writes_its_files_into_the_dir(cv_sweep):
    res = cli("report", str(cv_sweep))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(cv_sweep / "report.md")
    assert {p.name for p in cv_sweep.iterdir() if p.is_file()} >= {"report.md", "report.csv", "report_groups.csv",
                                                                   "metric_vs_optimizer.lr.png"}


def test_sweep_of_runs_without_validation_is_reported_by_the_test_value(tmp_path):
    """EmoDB-style jobs (every non-test speaker trains): no val/… metric, the table and plots still come."""
    sweep = tmp_path / "sweep"
    for seed, acc in enumerate([0.70, 0.75]):
        make_job(sweep, f"{seed}-{seed:08x}", [f"seed={seed}"], {"test/acc": acc, "test/uar": acc - 0.05, "step": 9})
    md = write_report(sweep).read_text()
    assert "Monitored: `test/acc` (max) — the jobs have no validation split." in md
    assert "| 1-00000001 | finished | 1 | 0.7500 | 0.7000 |" in md
    assert "## Mean ± std over seed" in md and "0.7250 ± 0.0354" in md
    assert_png(sweep / "metric_vs_seed.png")
