"""A `launcher=joblib` sweep whose launcher is stopped (SIGTERM) or killed (SIGKILL) leaves no worker training on:
each running job saves its last.ckpt and exits, and the same command resumes and finishes the sweep."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import TINY

MAX_STEPS = 300  # ~4 s of training: still mid-run when the later of the 2 workers starts


def sweep_cmd(sweep: Path) -> list[str]:
    return [sys.executable, "-m", "emotionsumm.train", "--multirun", "launcher=joblib", *TINY,
            f"trainer.max_steps={MAX_STEPS}", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "trainer.val_every_n_epochs=100", "logger=none", "seed=0,1", f"hydra.sweep.dir={sweep}"]


def session(sid: int) -> list[str]:
    """PIDs of the processes of session `sid` (the launcher and its loky workers)."""
    return subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True).stdout.split()


def training(sweep: Path) -> bool:
    logs = list(sweep.glob("*/train.log"))
    return len(logs) == 2 and all("optimizer steps" in log.read_text() for log in logs)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGKILL"])
def test_stopped_joblib_launcher_stops_its_workers_after_they_save_and_a_rerun_finishes(tmp_path, name):
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(sweep_cmd(sweep), stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                                start_new_session=True)
    deadline = time.time() + 120
    while not training(sweep) and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert launcher.poll() is None and len(session(launcher.pid)) >= 3, "the launcher and 2 workers should be running"
    launcher.send_signal(getattr(signal, name))
    stderr = launcher.communicate(timeout=60)[1]
    deadline = time.time() + 10
    while session(launcher.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert session(launcher.pid) == [], "a worker outlived its launcher"
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        step = load_checkpoint(job / "checkpoints/last.ckpt")["step"]
        assert 0 < step < MAX_STEPS and not (job / "metrics.json").exists()
        assert f"stopped by SIGTERM at step {step}" in (job / "train.log").read_text()
    if name == "SIGTERM":
        assert launcher.returncode == 143, stderr[-3000:]
        assert (f"sweep stopped by SIGTERM; stopped jobs: {jobs[0].name} (saved last.ckpt), {jobs[1].name} (saved "
                f"last.ckpt). Rerun the same command with hydra.sweep.dir={sweep} to resume them") in stderr
    else:
        assert launcher.returncode == -signal.SIGKILL
        assert all("the sweep's launcher (PID" in (job / "train.log").read_text() for job in jobs)
    rerun = subprocess.run(sweep_cmd(sweep), capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for job in jobs:
        assert "resumed from" in (job / "train.log").read_text() and (job / "metrics.json").is_file()
        assert load_checkpoint(job / "checkpoints/last.ckpt")["step"] == MAX_STEPS
