"""Which runs may start in a run dir holding an earlier run's results (runguard); the lock probe runlock.holder."""

from __future__ import annotations

import os

import pytest

from emotionsumm.runs.guard import RunDirHasResults, check_run_dir, clear_previous
from emotionsumm.runs.lock import acquire, holder, release


def finished(run_dir, metrics: bool = True):
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints/last.ckpt").write_bytes(b"ckpt")
    (run_dir / "checkpoints/epoch=1-step=9.ckpt").write_bytes(b"best")
    if metrics:
        (run_dir / "metrics.json").write_text("{}")
    return run_dir


@pytest.mark.parametrize(("trainer", "refused"), [
    ({}, "a fresh run would replace them"),
    ({"resume": "auto"}, None),
    ({"resume": "/elsewhere/last.ckpt"}, None),
    ({"overwrite": True}, None),
    ({"fast_dev_run": True, "resume": "auto"}, "never writes over a real run's results"),
    ({"fast_dev_run": 2, "overwrite": True}, "never writes over a real run's results"),
])
@pytest.mark.parametrize("metrics", [True, False])
def test_a_run_dir_with_results_takes_only_an_explicit_resume_or_overwrite(tmp_path, trainer, refused, metrics):
    run = finished(tmp_path / "run", metrics)
    if refused is None:
        check_run_dir(run, trainer)
        return
    with pytest.raises(RunDirHasResults) as err:
        check_run_dir(run, trainer)
    what = "a finished run (metrics.json, checkpoints/" if metrics else "an interrupted run's checkpoints (checkpoints/"
    assert f"run dir {run} holds {what}" in str(err.value.code) and refused in str(err.value.code)
    if not trainer:
        assert "trainer.resume=auto" in str(err.value.code) and "trainer.overwrite=true" in str(err.value.code)


@pytest.mark.parametrize("trainer", [{}, {"fast_dev_run": True}])
def test_a_dir_without_results_takes_any_run(tmp_path, trainer):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("a run that failed while building its data\n")
    (tmp_path / "provenance.json").write_text("{}")
    check_run_dir(tmp_path, trainer)
    check_run_dir(tmp_path / "missing", trainer)


def test_overwrite_deletes_only_the_metrics_and_checkpoints(tmp_path):
    run = finished(tmp_path / "run")
    (run / "checkpoints/notes.txt").write_text("mine")
    (run / "provenance.json").write_text("{}")
    clear_previous(run)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == [
        "checkpoints", "checkpoints/notes.txt", "provenance.json"]


def test_holder_names_the_locking_process_without_writing(tmp_path):
    assert holder(tmp_path) is None  # no lock file: nobody
    acquire(tmp_path)
    try:
        lock = (tmp_path / ".lock").read_bytes()
        pid = os.fork()
        if pid == 0:  # another process sees this one as the holder
            os._exit(0 if holder(tmp_path) == os.getppid() else 1)
        assert os.waitpid(pid, 0)[1] == 0
        assert (tmp_path / ".lock").read_bytes() == lock
    finally:
        release(tmp_path)
    assert holder(tmp_path) is None  # released: the stale PID in the file does not count
