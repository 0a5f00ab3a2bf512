"""One process per run dir: an OS lock (`fcntl.flock` on `<run dir>/.lock`) held for the whole run.

A second process on the same dir fails at once with the holder's PID. The OS drops the lock
when its process dies, so a SIGKILL leaves no stale lock behind. Single runs take the lock in
`RunDirLock.on_run_start`, before Hydra writes `.hydra/` or the log file; sweep jobs and
in-process `train(cfg)` calls take it in `train` (re-entrant within one process).

Light on purpose (no torch): Hydra imports the callback before anything runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # run dir -> fd of the lock file this process holds


class RunDirInUse(SystemExit):
    """Another live process holds the run dir: exit status 1 with only the message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def acquire(run_dir: str | Path) -> bool:
    """Lock `run_dir` for this process; False if this process holds it already. Raises RunDirInUse."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirInUse(
            f"run dir {run_dir} is in use by another process (PID {_holder(path)}); nothing was written. "
            "Wait for that run to end (or stop it), or start this one in another dir (a new hydra.run.dir, "
            "or none for a fresh time-stamped one)."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[run_dir] = fd
    return True


def release(run_dir: str | Path) -> None:
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the lock of `run_dir` inside the block (unless an outer holder of this process has it)."""
    acquired = acquire(run_dir)
    try:
        yield
    finally:
        if acquired:
            release(run_dir)


class RunDirLock(Callback):
    """Takes the run dir's lock before Hydra writes into it; only rank 0 under torchrun."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        HydraConfig.instance().set_config(config)  # run.dir may use ${hydra:…}; run_job sets it again
        acquire(str(config.hydra.run.dir))
