"""A stop signal before training starts (imports, config, data loading) exits 128 + signal at once and says what
was written: nothing but Hydra's own files, or precisely which files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotionsumm.config.core import PROJECT_ROOT

from ..conftest import TINY

HYDRA_FILES = {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".lock", "train.log"}

# sends itself SIGNAL when the data is being built (the StopRequest is installed, training has not started)
DURING_DATA = """
import os, signal
from emotionsumm import train
from emotionsumm.config import builders
build_data = builders.build_data
def signalled(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return build_data(*args, **kwargs)
builders.build_data = signalled
train.main()
"""


def listing(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")} if run_dir.exists() else set()


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()} if run_dir.exists() else set()


def handles_stop_signals(pid: int) -> bool:
    """The process has its own handler for SIGUSR1 (installed last of the stop signals by `emotionsumm.train`)."""
    caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGUSR1 - 1) & 1)


@pytest.mark.parametrize(("name", "delay"), [("SIGTERM", 0.0), ("SIGINT", 0.0), ("SIGTERM", 1.5)])
def test_signal_right_after_start_exits_saying_what_was_written(tmp_path, name, delay):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "emotionsumm.train", *TINY, f"hydra.run.dir={run}"],
                            stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    deadline = time.time() + 60  # the interpreter's own start-up has no handler to speak; the first import does
    while not handles_stop_signals(proc.pid) and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(delay)  # 0: the imports; later: composing the config, importing torch (or, when fast, the set-up)
    proc.send_signal(getattr(signal, name))
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + getattr(signal, name), stderr[-3000:]
    said = re.search(rf"stopped by {name} before training; (nothing was written|it wrote only (.+) \(no checkpoint, "
                     r"no metrics\))", stderr)
    assert said, stderr[-3000:]
    assert "Traceback" not in stderr
    written = set(said[2].split(", ")) if said[2] else set()
    assert files(run) - HYDRA_FILES == written  # the message is exact; Hydra's own files aside
    if delay == 0:
        assert said[1] == "nothing was written" and listing(run) <= HYDRA_FILES


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
