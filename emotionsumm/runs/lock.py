"""One process per run dir: an OS lock (`fcntl.flock` on `<run dir>/.lock`) held for the whole run.

A second process on the same dir fails at once with the holder's PID (and a run that would replace an
earlier run's results is refused, `guard`, before anything is written). The OS drops the lock
when its process dies, so a SIGKILL leaves no stale lock behind. Single runs take the lock in
`RunDirLock.on_run_start`, before Hydra writes `.hydra/` or the log file; sweep jobs and
in-process `train(cfg)` calls take it in `train` (re-entrant within one process).

Light on purpose (no torch): Hydra imports the callback before anything runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .guard import check_run_dir

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


def _lock(path: Path, create: bool) -> int:
    """An fd of `path` holding its exclusive lock (nothing written yet). Raises RunDirInUse."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirInUse(
            f"run dir {path.parent} is in use by another process (PID {_holder(path)}); nothing was written. "
            "Wait for that run to end (or stop it), or start this one in another dir (a new hydra.run.dir, "
            "or none for a fresh time-stamped one)."
        ) from None
    return fd


def acquire(run_dir: str | Path, check: Callable[[], None] | None = None) -> bool:
    """Lock `run_dir` for this process; False if this process holds it already. Raises RunDirInUse.

    `check` runs once no other process holds the dir and before anything is created or written in it
    (it may refuse the run by raising).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return False
    path = run_dir / LOCK_FILE
    fd = _lock(path, create=False) if path.is_file() else None
    try:
        if check is not None:
            check()
        if fd is None:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = _lock(path, create=True)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[run_dir] = fd
    return True


def holder(run_dir: str | Path) -> int | None:
    """The PID of the live process holding `run_dir`'s lock (0: unknown; None: nobody). Probes without writing."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return int(_holder(path)) if _holder(path).isdigit() else 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


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
    """Takes the run dir's lock before Hydra writes into it, refusing a run that would replace an earlier run's
    results (`guard`); only rank 0 under torchrun."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        HydraConfig.instance().set_config(config)  # run.dir may use ${hydra:…}; run_job sets it again
        run_dir = Path(str(config.hydra.run.dir))
        trainer = config.get("trainer") if config.hydra.job.name == "train" else None  # not evaluate, predict
        acquire(run_dir, check=None if trainer is None else lambda: check_run_dir(run_dir, trainer))
