"""Checkpoints: safe (`weights_only`) loads, and top-k + last bookkeeping (written through `runs.atomic`)."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config.core import flatten
from ..config.renames import current_targets
from ..config.trust import SHIPPED, Trust, UntrustedConfigError, check_config
from ..runs.atomic import TMP_PREFIX, atomic_save
from . import distributed as dist

log = logging.getLogger(__name__)

LAST = "last.ckpt"
# the names `Checkpointer.plan` gives top-k files; no other file is ever ranked, loaded as best or deleted
TOPK_NAME = re.compile(r"epoch\d{3,}-step\d{7,}-[A-Za-z0-9_.-]+_(-?\d+\.\d{4}|-?inf)\.ckpt")
# 2: the EMA's state (weights and update counter) under "ema"; run state from `state.TrainState`
FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the current config."""


def load_checkpoint(path: str | Path, key: str = "ckpt", trust: Trust = SHIPPED) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` and refuse a config naming code the command does not trust.

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
    version = payload.get("version")
    if version != FORMAT_VERSION:
        age = "an older" if isinstance(version, int) and version < FORMAT_VERSION else "a newer"
        raise CheckpointError(f"{key}: {path} has checkpoint format {version}, written by {age} emotionsumm; this "
                              f"version reads format {FORMAT_VERSION}. Use the emotionsumm version that wrote "
                              "it, or retrain; nothing was started.")
    try:  # its config is someone else's data: nothing may be built from it unless allow-listed
        check_config(payload["config"], trust=trust)
    except UntrustedConfigError as exc:
        raise CheckpointError(
            f"{key}: {path}: refusing to build from this checkpoint: {exc}; nothing was run. Only use checkpoints "
            "from people you trust."
        ) from None
    payload["config"] = current_targets(payload["config"])  # written before the packages by role: today's names
    return payload


def policy_weights(ckpt: dict[str, Any], weights: str = "raw") -> dict[str, torch.Tensor] | None:
    """The policy's weights in a checkpoint: `raw` (trained) or `ema` (None when it has no EMA)."""
    if weights == "raw":
        return ckpt["policy"]
    return ckpt["ema"]["module"] if ckpt.get("ema") else None


def find_resume(resume: str, directory: Path, trust: Trust = SHIPPED) -> tuple[dict[str, Any], Path] | None:
    """`trainer.resume`: a checkpoint path, or `auto` = the newest checkpoint in `directory` (None: start fresh)."""
    if str(resume) == "auto":
        path = latest_checkpoint(directory)
        if path is None:
            log.info("trainer.resume=auto: no checkpoint in %s, starting fresh", directory)
            return None
    else:
        path = Path(str(resume)).expanduser()
    return load_checkpoint(path, key="trainer.resume", trust=trust), path


def training_payload(run_state: dict[str, Any], config: dict[str, Any], data_state: dict[str, Any], *,
                     policy: nn.Module, ema: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: Any) -> dict[str, Any]:
    """Everything a checkpoint holds (the counterpart of `restore_training`; `run_state` from TrainState)."""
    return {
        **run_state, "version": FORMAT_VERSION, "policy": policy.state_dict(),
        "ema": ema.state_dict() if ema is not None else None, "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None, "scaler": scaler.state_dict(),
        "config": config, "data": data_state,
    }


def restore_training(ckpt: dict[str, Any], path: Path, config: dict[str, Any], *, policy: nn.Module, ema: Any,
                     optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> bool:
    """Load weights, EMA, optimizer, scheduler and grad scaler for a resume (the run state is TrainState's).

    Config changes since the checkpoint are logged; weights that do not fit name the model config
    changes. Returns False when an EMA is wanted but the checkpoint has none (it restarts).
    """
    changes = _config_changes(ckpt["config"], config, path) if config else []
    _load_fitting(policy, ckpt["policy"], path, changes)
    ema_kept = ema is None or ckpt.get("ema") is not None
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict(ckpt["ema"])
    elif ema is not None:
        log.warning("%s has no EMA state: the EMA restarts from the loaded weights", path)
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("world_size", 1) != dist.world_size():
        log.warning("%s was written by %s ranks, resuming on %d: data order and RNG streams differ",
                    path, ckpt.get("world_size"), dist.world_size())
    return ema_kept


def _config_changes(saved: dict[str, Any], config: dict[str, Any], path: Path) -> list[str]:
    """Log every config change since the checkpoint; return the changed `model.*` keys."""
    old, new = flatten(saved), flatten(config)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith("hydra"))
    for key in changed:
        log.warning("resuming %s with a changed config: %s: %r -> %r", path.name, key, old.get(key), new.get(key))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed if k.startswith("model.")]


def _load_fitting(policy: nn.Module, weights: dict[str, torch.Tensor], path: Path, model_changes: list[str]) -> None:
    """Load weights; a shape or key mismatch names the file and the model config changes."""
    current = policy.state_dict()
    problems = [f"{k}: {tuple(v.shape)} in checkpoint vs {tuple(current[k].shape)} now"
                for k, v in weights.items() if k in current and v.shape != current[k].shape]
    problems += [f"{k}: missing in checkpoint" for k in current if k not in weights]
    problems += [f"{k}: not in the model" for k in weights if k not in current]
    if problems:
        hint = f" The model config changed: {'; '.join(model_changes)}." if model_changes else ""
        raise CheckpointError(f"trainer.resume: {path} does not fit the configured model "
                              f"({'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}).{hint} "
                              "Resume with the checkpoint's model config or start a new run.")
    policy.load_state_dict(weights)


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
        if enabled and self.directory.is_dir():  # the directory itself is made by the first write
            for stale in self.directory.glob(TMP_PREFIX + "*"):
                log.warning("removing a half-written checkpoint left by a crash: %s", stale)
                stale.unlink(missing_ok=True)

    def is_better(self, score: float, than: float, margin: float = 0.0) -> bool:
        """`score` beats `than` by more than `margin` in the direction of `trainer.mode`."""
        return score > than + margin if self.mode == "max" else score < than - margin

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
        # no '=' in names: Hydra overrides such as ckpt=<path> would need quoting (TOPK_NAME matches them)
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
            if TOPK_NAME.fullmatch(name):  # only files this checkpointer named, in its own directory
                (self.directory / name).unlink(missing_ok=True)

    def load_best(self, policy: nn.Module, ema: Any, trust: Trust = SHIPPED) -> None:
        """Load the best top-k checkpoint's weights (and EMA) into `policy` on every rank, if there is one."""
        best = dist.broadcast_object(str(self.best_path) if dist.is_main() and self.best_path else None)
        if not best or not Path(best).is_file():
            return
        ckpt = load_checkpoint(best, key="best checkpoint", trust=trust)
        policy.load_state_dict(ckpt["policy"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        log.info("testing the best checkpoint %s", best)

    def state_dict(self) -> dict[str, Any]:
        return {"best": [[score, name] for score, name in self.best], "monitor": self.monitor, "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            log.warning("monitor changed from %s (%s) to %s (%s): top-k ranking restarts",
                        state.get("monitor"), state.get("mode"), self.monitor, self.mode)
            return
        self.best = _checked_ranking(state["best"])


def _checked_ranking(entries: Any) -> list[tuple[float, str]]:
    """A stored top-k ranking, refused unless every entry is (score, a file name `plan` generates): the names are
    files this run later loads and deletes, so a crafted checkpoint must not name anything else."""
    ranking = []
    for entry in entries if isinstance(entries, (list, tuple)) else [entries]:
        name = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
        if not isinstance(name, str) or not TOPK_NAME.fullmatch(name):
            raise CheckpointError(
                f"trainer.resume: the checkpoint's top-k ranking (callbacks.checkpointer.best) holds {entry!r}, "
                "which is not a checkpoint file name emotionsumm writes; refusing to resume from it (nothing was "
                "deleted). Resume from a checkpoint of your own, or start a new run.")
        try:
            ranking.append((float(entry[0]), name))
        except (TypeError, ValueError):
            raise CheckpointError(f"trainer.resume: the checkpoint's top-k ranking holds a score {entry[0]!r} "
                                  "that is not a number; refusing to resume from it") from None
    return ranking
