"""Learning-rate schedules per optimizer step, as LambdaLR with picklable, plain-valued lambdas.

Each factory is used from config as a partial and completed with the optimizer and the total
number of optimizer steps: `instantiate(cfg.scheduler)(optimizer, total_steps=N)`.
"""

from __future__ import annotations

import logging
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..config.ranges import require_ranges

log = logging.getLogger(__name__)


def _cap_warmup(warmup_steps: int, total_steps: int) -> int:
    require_ranges("scheduler", {"warmup_steps": warmup_steps})
    if total_steps > 0 and warmup_steps >= total_steps:
        capped = max(1, total_steps // 10)
        log.warning("scheduler.warmup_steps=%d is not shorter than the run (%d optimizer steps); "
                    "capped to %d (10%% of the run)", warmup_steps, total_steps, capped)
        return capped
    return warmup_steps


class _Schedule:
    """Multiplier of the base lr at a step; its __dict__ (plain values) is what LambdaLR saves."""

    def __init__(self, kind: str, warmup: int, total: int, min_ratio: float = 0.0,
                 step_size: int = 1, gamma: float = 1.0) -> None:
        self.kind, self.warmup, self.total = kind, warmup, total
        self.min_ratio, self.step_size, self.gamma = min_ratio, step_size, gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** ((step - self.warmup) // self.step_size)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int = 500,
                       min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warmup to the base lr, then cosine annealing to `min_lr_ratio` * base lr at the end."""
    require_ranges("scheduler", {"min_lr_ratio": min_lr_ratio})
    warmup = _cap_warmup(warmup_steps, total_steps)
    return LambdaLR(optimizer, _Schedule("cosine", warmup, total_steps, min_ratio=min_lr_ratio))


def constant_with_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int = 500) -> LambdaLR:
    """Linear warmup to the base lr, then constant."""
    return LambdaLR(optimizer, _Schedule("constant", _cap_warmup(warmup_steps, total_steps), total_steps))


def step_decay(optimizer: Optimizer, total_steps: int, step_size: int = 1000, gamma: float = 0.1,
               warmup_steps: int = 0) -> LambdaLR:
    """Multiply the lr by `gamma` every `step_size` optimizer steps (after an optional warmup)."""
    require_ranges("scheduler", {"step_size": step_size, "gamma": gamma})
    warmup = _cap_warmup(warmup_steps, total_steps)
    return LambdaLR(optimizer, _Schedule("step", warmup, total_steps, step_size=step_size, gamma=gamma))
