"""A stop signal before training starts (imports, config, data loading) exits 128 + signal at once and says what
was written: nothing but Hydra's own files, or precisely which files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotionsumm.config import PROJECT_ROOT

from ..conftest import TINY

HYDRA_FILES = {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".lock", "train.log"}

# sends itself SIGNAL when the data is being built (the StopRequest is installed, training has not started)
DURING_DATA = """
import os, signal
from emotionsumm import runtime, train
build_data = runtime.build_data
def signalled(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return build_data(*args, **kwargs)
runtime.build_data = signalled
train.main()
"""


def listing(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")} if run_dir.exists() else set()


@pytest.mark.parametrize(("name", "delay"), [("SIGTERM", 0.2), ("SIGINT", 0.2), ("SIGTERM", 1.5)])
def test_signal_right_after_start_exits_saying_nothing_was_written(tmp_path, name, delay):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "emotionsumm.train", *TINY, f"hydra.run.dir={run}"],
                            stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    time.sleep(delay)  # imports, composing the config, or importing torch
    proc.send_signal(getattr(signal, name))
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + getattr(signal, name), stderr[-3000:]
    assert f"stopped by {name} before training; nothing was written" in stderr
    assert "Traceback" not in stderr
    assert listing(run) <= HYDRA_FILES  # at most what Hydra writes before the task starts


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_while_the_data_is_built_stops_at_once_naming_what_was_written(tmp_path, name):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", DURING_DATA, *TINY, f"hydra.run.dir={run}"], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=300, env={**os.environ, "SIGNAL": name})
    assert proc.returncode == 128 + getattr(signal, name), proc.stderr[-3000:]
    message = f"stopped by {name} before training; it wrote only provenance.json (no checkpoint, no metrics)"
    assert message in proc.stderr and message in (run / "train.log").read_text()
    assert "Traceback" not in proc.stderr and "optimizer steps" not in (run / "train.log").read_text()
    assert listing(run) == HYDRA_FILES | {"provenance.json"}
