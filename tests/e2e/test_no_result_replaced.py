"""No result silently replaced: a fresh or smoke run in a dir holding an earlier run's results is refused before
Hydra writes anything there; `trainer.overwrite=true` replaces them on purpose."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import TINY, cli

OVERRIDES = [*TINY, "trainer.max_steps=3", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
             "trainer.limit_test_batches=1"]


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file and dir under run_dir (hidden ones too): relative path -> sha256 (dirs: 'dir')."""
    return {str(p.relative_to(run_dir)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = cli("train", *OVERRIDES, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "metrics.json").is_file() and (run / "checkpoints/last.ckpt").is_file()
    return run


@pytest.mark.parametrize("extra", [[], ["trainer.fast_dev_run=true", "trainer.resume=auto"],
                                   ["trainer.fast_dev_run=true", "trainer.overwrite=true"]],
                         ids=["fresh", "fast_dev_run-resume", "fast_dev_run-overwrite"])
def test_run_in_a_finished_dir_is_refused_and_changes_nothing(finished, extra):
    before = snapshot(finished)
    assert ".hydra/config.yaml" in before and "train.log" in before and ".lock" in before
    proc = cli("train", *OVERRIDES, *extra, f"hydra.run.dir={finished}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"run dir {finished} holds a finished run (metrics.json, checkpoints/" in proc.stderr
    assert "Nothing was written" in proc.stderr and "Traceback" not in proc.stderr
    if extra:
        assert "trainer.fast_dev_run is a smoke test and never writes over a real run's results" in proc.stderr
    else:
        assert "Add trainer.resume=auto to continue it" in proc.stderr
        assert "trainer.overwrite=true" in proc.stderr and "a new hydra.run.dir" in proc.stderr
    assert snapshot(finished) == before  # byte-identical, no new file (not even Hydra's .hydra/ or log lines)


def test_fresh_run_in_an_interrupted_dir_is_refused_naming_resume(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()  # checkpoints, no metrics.json: an interrupted run
    before = snapshot(run)
    proc = cli("train", *OVERRIDES, f"hydra.run.dir={run}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "holds an interrupted run's checkpoints (checkpoints/" in proc.stderr
    assert "Add trainer.resume=auto to resume it from its last checkpoint" in proc.stderr
    assert snapshot(run) == before


def test_overwrite_replaces_the_finished_run(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    old = snapshot(run)
    proc = cli("train", *OVERRIDES, "trainer.max_steps=2", "trainer.overwrite=true", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainer.overwrite=true: deleted the earlier run's" in proc.stderr
    assert load_checkpoint(run / "checkpoints/last.ckpt")["step"] == 2
    assert snapshot(run)["metrics.json"] != old["metrics.json"]
    steps = {p.name: load_checkpoint(p)["step"] for p in (run / "checkpoints").glob("*.ckpt")}
    assert max(steps.values()) == 2, steps  # no checkpoint of the earlier (3-step) run is left to resume from
