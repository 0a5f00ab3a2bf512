"""Policies wrap a model with what one task needs: loss, prediction and metrics.

The trainer only knows this protocol, never the task.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class Policy(Protocol):
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch (called through DDP, so gradients are synchronised)."""

    def eval_state(self) -> dict[str, Any]:
        """Zeroed additive statistics for one evaluation pass: tensors are summed across DDP ranks,
        lists (e.g. predictions) are concatenated in rank order."""

    def evaluation_step(self, batch: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
        """Add one batch's statistics to `state`."""

    def compute_metrics(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of a whole split from its summed statistics."""

    def predict_rows(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """One printable line per example (used by `python -m emotionsumm.predict`)."""

    def log_artifacts(self, state: dict[str, torch.Tensor], logger: Any, prefix: str, step: int,
                      run_dir: Any) -> None:
        """Figures, tables or files for a split (rank 0 only)."""


class ModelHooks:
    """What a policy passes through from its `model`: the freezing schedule, the named parameter parts and
    their default learning rates."""

    model: nn.Module

    def on_epoch_start(self, epoch: int) -> bool:
        """The model's freezing schedule; True if the set of trainable parameters changed."""
        hook = getattr(self.model, "on_epoch_start", None)
        return bool(hook(epoch)) if hook else False

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        """The model's named parts (e.g. encoder, head) as parameter-name prefixes of the policy (for group_lr)."""
        parts = getattr(self.model, "param_parts", dict)()
        return {name: tuple("model." + p for p in prefixes) for name, prefixes in parts.items()}

    def param_lrs(self) -> dict[str, float]:
        """The model's default learning rate per part (e.g. a pretrained encoder's); group_lr overrides them."""
        return dict(getattr(self.model, "param_lrs", dict)())
