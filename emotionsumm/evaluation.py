"""One evaluation pass of a policy over a loader, gathered across DDP ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .interfaces import EvalState


def limit_batches(limit: int | float | None, n: int) -> int:
    """`trainer.limit_*_batches`: None = all `n`, a float <= 1 = that fraction (at least 1), an int = at most that."""
    if limit is None:
        return n
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(n * limit))
    return min(n, int(limit))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def evaluation_state(module: nn.Module, loader: DataLoader, batches: int, device: torch.device,
                     autocast: Callable[[], contextlib.AbstractContextManager], desc: str,
                     progress_bar: bool) -> EvalState:
    """The policy's evaluation statistics over the first `batches` batches, from every rank.

    Tensors are summed across ranks, lists (e.g. generated texts) concatenated in rank order.
    """
    was_training = module.training
    module.eval()
    state = module.eval_state()
    bar = tqdm(total=batches, desc=desc, leave=False, dynamic_ncols=True, disable=not (progress_bar and dist.is_main()))
    with autocast():
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            module.evaluation_step(to_device(batch, device), state)
            bar.update()
    bar.close()
    module.train(was_training)
    if dist.is_distributed():
        tensors = {k: v.to(device) for k, v in state.items() if torch.is_tensor(v)}
        reduced = {k: v.cpu() for k, v in dist.all_reduce_sum(tensors).items()}
        lists = {k: [x for part in dist.gather_object(v) for x in part]
                 for k, v in state.items() if isinstance(v, list)}
        state = {**reduced, **lists}
    return state
