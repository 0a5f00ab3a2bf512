"""Checkpoints: safe (`weights_only`) loads, and top-k + last bookkeeping (written through `io`)."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from .io import TMP_PREFIX, atomic_save
from .target_allowlist import UntrustedConfigError, check_config

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the current config."""


def load_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` and refuse a config naming code outside the allow-list.

    Every consumer (evaluate, predict, resume, the best checkpoint before testing) loads here, so
    no `_target_` from a checkpoint is ever instantiated unchecked. Errors name the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}: checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code payload, wrong file type...
        raise CheckpointError(
            f"{key}: cannot load checkpoint {path}: it is truncated, corrupt or not a safe "
            f"emotionsumm checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). "
            "Point it at another checkpoint; nothing was started."
        ) from exc
    missing = {"policy", "step", "epoch", "config"} - set(payload) if isinstance(payload, dict) else {"policy"}
    if missing:
        raise CheckpointError(f"{key}: {path} is not an emotionsumm checkpoint (missing keys {sorted(missing)})")
    try:  # its config is someone else's data: nothing may be built from it unless allow-listed
        check_config(payload["config"])
    except UntrustedConfigError as exc:
        raise CheckpointError(
            f"{key}: {path}: refusing to build from this checkpoint: {exc}; nothing was run. Only use checkpoints "
            "from people you trust; a target of your own is allowed once a config under conf/ names it."
        ) from None
    return payload


def latest_checkpoint(directory: str | Path) -> Path | None:
    """`last.ckpt` if present, else the newest `*.ckpt` in `directory`, else None."""
    directory = Path(directory)
    if (directory / LAST).is_file():
        return directory / LAST
    found = sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


class Checkpointer:
    """Writes `last.ckpt` and keeps the `save_top_k` best checkpoints by a monitored metric.

    Its bookkeeping (the best files and their scores) is part of every checkpoint so that a
    resumed run keeps deleting and ranking the same files.
    """

    def __init__(self, directory: str | Path, monitor: str, mode: str = "max", save_top_k: int = 1,
                 save_last: bool = True, enabled: bool = True) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"trainer.mode={mode!r} is not allowed; choose 'min' or 'max'")
        self.directory = Path(directory)
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.enabled = enabled
        self.best: list[tuple[float, str]] = []  # (score, file name), best first
        if enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in self.directory.glob(TMP_PREFIX + "*"):
                log.warning("removing a half-written checkpoint left by a crash: %s", stale)
                stale.unlink(missing_ok=True)

    def is_better(self, score: float, than: float) -> bool:
        return score > than if self.mode == "max" else score < than

    @property
    def best_score(self) -> float | None:
        return self.best[0][0] if self.best else None

    @property
    def best_path(self) -> Path | None:
        return self.directory / self.best[0][1] if self.best else None

    def _sorted(self, entries: list[tuple[float, str]]) -> list[tuple[float, str]]:
        return sorted(entries, key=lambda e: e[0], reverse=self.mode == "max")

    def plan(self, metrics: dict[str, float] | None, step: int, epoch: int) -> tuple[str | None, list[str]]:
        """Update the ranking for a new validation; return (top-k file to write, files to drop)."""
        if metrics is None or self.save_top_k == 0:
            return None, []
        if self.monitor not in metrics:
            raise KeyError(
                f"trainer.monitor={self.monitor!r} is not among the validation metrics "
                f"{sorted(metrics)}; set trainer.monitor to one of them"
            )
        score = float(metrics[self.monitor])
        if math.isnan(score):
            return None, []
        # no '=' in names: Hydra overrides such as ckpt=<path> would need quoting
        name = f"epoch{epoch:03d}-step{step:07d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.monitor)}_{score:.4f}.ckpt"
        ranked = self._sorted(self.best + [(score, name)])
        keep = ranked if self.save_top_k < 0 else ranked[: self.save_top_k]
        kept = {n for _, n in keep}
        self.best = keep
        return (name if name in kept else None), [n for _, n in ranked if n not in kept and n != name]

    def write(self, payload: dict[str, Any], topk_name: str | None, dropped: list[str], last: bool = False) -> None:
        """Write the payload to the top-k file and/or last.ckpt (always with `last`); delete files that fell out."""
        if not self.enabled:
            return
        if topk_name:
            atomic_save(payload, self.directory / topk_name)
        if self.save_last or last:
            if topk_name:  # same bytes: link instead of writing twice, still atomically
                tmp = self.directory / f"{TMP_PREFIX}{LAST}.link"
                tmp.unlink(missing_ok=True)
                os.link(self.directory / topk_name, tmp)
                os.replace(tmp, self.directory / LAST)
            else:
                atomic_save(payload, self.directory / LAST)
        for name in dropped:
            (self.directory / name).unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best": [[score, name] for score, name in self.best], "monitor": self.monitor, "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            log.warning("monitor changed from %s (%s) to %s (%s): top-k ranking restarts",
                        state.get("monitor"), state.get("mode"), self.monitor, self.mode)
            return
        self.best = [(float(score), str(name)) for score, name in state["best"]]
