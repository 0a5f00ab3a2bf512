"""Exponential moving average of a module's weights (a deepcopy updated once per optimizer step)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..config.ranges import require_ranges


class EMA:
    """Keeps `module` = decay * module + (1 - decay) * source after every optimizer step.

    The copy is made of the unwrapped module (never a DDP wrapper), holds no gradients, and
    is updated with a single `torch._foreach_lerp_` over its floating tensors; integer buffers
    (counters, ids) are copied. With `warmup`, the decay ramps as min(decay, (1 + n) / (10 + n))
    so early, random weights are forgotten quickly.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        """Copy `module` (already on its final device: the copy follows the source's tensors)."""
        require_ranges("ema", {"decay": decay})
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self._bind(module)

    def _bind(self, source: nn.Module) -> None:
        ema_tensors = list(self.module.state_dict(keep_vars=True).values())
        src_tensors = list(source.state_dict(keep_vars=True).values())
        if len(ema_tensors) != len(src_tensors):
            raise ValueError("EMA source module has a different structure than the EMA copy")
        pairs = list(zip(ema_tensors, src_tensors))
        self._float_ema = [e for e, s in pairs if e.is_floating_point()]
        self._float_src = [s for e, s in pairs if e.is_floating_point()]
        self._other = [(e, s) for e, s in pairs if not e.is_floating_point()]

    def current_decay(self) -> float:
        """Decay used by the next update."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self) -> None:
        """Blend the source weights into the EMA copy; call once per optimizer step."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self._float_ema, self._float_src, weight)
        for ema_t, src_t in self._other:
            ema_t.copy_(src_t)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and the update counter (which sets the warmup decay)."""
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
