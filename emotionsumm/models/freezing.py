"""Freezing and gradual unfreezing of a pretrained backbone, shared by every model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def top_layers_to_train(schedule: dict[Any, int] | None, epoch: int, frozen: bool) -> int | None:
    """How many top layers train at `epoch`: None = all, 0 = none (frozen), k = top k.

    `schedule` maps an epoch to the number of top layers trainable from that epoch on
    (-1 = the whole backbone). Computed from the epoch alone, so it is right after a resume.
    """
    if not frozen:
        return None
    k = 0
    for start, count in sorted(((int(e), int(c)) for e, c in (schedule or {}).items())):
        if epoch >= start:
            k = count
    return None if k < 0 else k


def set_trainable(embeddings: nn.Module | None, layers: nn.ModuleList, others: list[nn.Module],
                  top: int | None, frozen: Sequence[nn.Module] = ()) -> bool:
    """Make the top `top` layers trainable (all when None); return True if anything changed.

    `others` train only when everything does; one of them may hold `layers` (e.g. the whole backbone, so
    that parameters outside any submodule follow too): the layers' own setting is applied after it.
    `frozen` modules (e.g. a speech model's CNN feature encoder) stay frozen whatever the schedule.
    """
    modules = [m for m in [embeddings, layers, *others, *frozen] if m is not None]
    before = [p.requires_grad for m in modules for p in m.parameters()]
    train_all = top is None
    for module in [embeddings, *others]:
        if module is not None:
            module.requires_grad_(train_all)
    for i, layer in enumerate(layers):
        layer.requires_grad_(train_all or i >= len(layers) - top)
    for module in frozen:
        module.requires_grad_(False)
    after = [p.requires_grad for m in modules for p in m.parameters()]
    return before != after
