"""Policies wrap a model with what one task needs: loss, prediction and metrics.

The trainer knows them through `interfaces.Policy` only, never the task. This module holds what the policies
share and stays free of torch, so that `report` can read the names of the files they write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def confusion_file(split: str) -> str:
    """The confusion matrix image a classification policy writes into the run dir for `split` (val, test);
    `report` shows it."""
    return f"confusion_{split}.png"


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
