"""No result silently replaced: a run may start in a dir holding an earlier run's results only when asked to.

A dir with `metrics.json` holds a finished run, one with checkpoints but no metrics.json an interrupted
one. A fresh run there (no `trainer.resume`) is refused unless `trainer.overwrite=true`; a smoke run
(`trainer.fast_dev_run`) is refused always, since its one-batch metrics.json would pass for the real
run's. `RunDirLock.on_run_start` checks this before Hydra writes `.hydra/` or the log file into the
dir, so a refused run changes nothing there.

Light on purpose (no torch): it runs in a Hydra callback before anything is imported.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from stat import S_ISREG
from typing import Any

from .layout import CHECKPOINT_DIR, METRICS_FILE

log = logging.getLogger(__name__)


class RunDirHasResults(SystemExit):
    """The run would replace (or pass for) an earlier run's results: exit status 1 with only the message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def results_in(run_dir: Path) -> list[Path]:
    """The earlier run's results in `run_dir`: its metrics.json and checkpoints (empty: nothing to lose)."""
    found = [run_dir / METRICS_FILE] if (run_dir / METRICS_FILE).is_file() else []
    ckpts = run_dir / CHECKPOINT_DIR
    return found + (sorted(ckpts.glob("*.ckpt")) if ckpts.is_dir() else [])


def check_run_dir(run_dir: Path, trainer: Any) -> None:
    """Refuse to start in `run_dir` if that would replace an earlier run's results (`trainer`: cfg.trainer)."""
    found = results_in(run_dir)
    if not found:
        return
    names = ", ".join(str(p.relative_to(run_dir)) for p in found[:3]) + (", …" if len(found) > 3 else "")
    finished = found[0].name == METRICS_FILE
    what = "a finished run" if finished else "an interrupted run's checkpoints"
    if trainer.get("fast_dev_run"):
        raise RunDirHasResults(
            f"run dir {run_dir} holds {what} ({names}); trainer.fast_dev_run is a smoke test and never writes "
            "over a real run's results. Nothing was written. Run it in a new dir (drop hydra.run.dir for a fresh "
            "time-stamped one).")
    if trainer.get("resume") or trainer.get("overwrite"):
        return
    keep = "continue it (e.g. with a larger trainer.max_steps)" if finished else "resume it from its last checkpoint"
    raise RunDirHasResults(
        f"run dir {run_dir} holds {what} ({names}); a fresh run would replace them. Nothing was written. "
        f"Add trainer.resume=auto to {keep}, start in a new dir (a new hydra.run.dir, or none for a fresh "
        "time-stamped one), or add trainer.overwrite=true to replace them.")


def clear_previous(run_dir: Path) -> None:
    """`trainer.overwrite=true` on a fresh start: delete the earlier run's metrics.json and checkpoints (the names
    we wrote), so that this run's results never mix with them and an interrupted overwrite is not 'finished'."""
    found = results_in(run_dir)
    for path in found:
        path.unlink(missing_ok=True)
    if found:
        log.warning("trainer.overwrite=true: deleted the earlier run's %s", ", ".join(str(p) for p in found))


def files_of(run_dir: Path) -> dict[Path, tuple[int, int]]:
    """Every file under run_dir but Hydra's (.hydra/, <job>.log) and the lock: path -> (size, mtime)."""
    files = {}
    for path in run_dir.rglob("*") if run_dir.is_dir() else ():
        top = path.relative_to(run_dir).parts[0]
        if top in (".hydra", ".lock") or (path.parent == run_dir and path.suffix == ".log"):
            continue
        with contextlib.suppress(OSError):  # a temp file may vanish meanwhile
            info = path.stat()
            if S_ISREG(info.st_mode):
                files[path] = (info.st_size, info.st_mtime_ns)
    return files


def written_since(run_dir: Path, before: dict[Path, tuple[int, int]]) -> str:
    """What this run wrote into run_dir (files new or changed since `before`), in words."""
    now = files_of(run_dir)
    changed = sorted(str(p.relative_to(run_dir)) for p, stat in now.items() if before.get(p) != stat)
    gone = sorted(str(p.relative_to(run_dir)) for p in before.keys() - now.keys())  # trainer.overwrite=true
    if not changed and not gone:
        return "nothing was written"
    return "; ".join([*([f"it wrote only {', '.join(changed)} (no checkpoint, no metrics)"] if changed else []),
                      *([f"trainer.overwrite=true deleted {', '.join(gone)}"] if gone else [])])
