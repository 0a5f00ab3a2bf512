"""One evaluation pass of a policy over a loader, gathered across DDP ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..interfaces import EvalState
from ..tracking.progress import progress
from . import distributed as dist
from .loaders import EvalLoader


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a batch on `device`; asynchronous copies (from pinned memory) on CUDA only."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def evaluation_state(module: nn.Module, loader: EvalLoader, device: torch.device,
                     autocast: Callable[[], contextlib.AbstractContextManager], desc: str,
                     progress_bar: bool) -> EvalState:
    """The policy's evaluation statistics over every batch of `loader`, from every rank.

    Runs under `torch.inference_mode` (no autograd bookkeeping at all). Lists with one entry per example
    (e.g. generated texts) come back in the order of unsorted evaluation, even when the loader formed
    its batches from length-sorted examples; then tensors are summed across ranks and lists concatenated
    in rank order. The returned tensors are ordinary ones (usable outside inference mode).
    """
    was_training = module.training
    module.eval()
    examples = 0
    bar = progress(len(loader), desc, progress_bar and dist.is_main(), leave=False)
    with torch.inference_mode():
        state = module.eval_state()
        with autocast():
            for batch in loader:
                examples += len(next(iter(batch.values())))
                module.evaluation_step(to_device(batch, device), state)
                bar.update()
        state = {k: loader.batches.in_file_order(v) if isinstance(v, list) and len(v) == examples else v
                 for k, v in state.items()}
        if dist.is_distributed():
            tensors = {k: v.to(device) for k, v in state.items() if torch.is_tensor(v)}
            reduced = {k: v.cpu() for k, v in dist.all_reduce_sum(tensors).items()}
            lists = {k: [x for part in dist.gather_object(v) for x in part]
                     for k, v in state.items() if isinstance(v, list)}
            state = {**reduced, **lists}
    bar.close()
    module.train(was_training)
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


def score(weights: list[tuple[str, nn.Module]], loader: EvalLoader, device: torch.device,
          autocast: Callable[[], contextlib.AbstractContextManager], progress_bar: bool,
          artifacts: Callable[[nn.Module, EvalState, str], None] | None = None) -> dict[str, float]:
    """`<prefix>/<metric>` of every (prefix, policy) in `weights` on `loader`; `artifacts(policy, state,
    prefix)` gets each pass's gathered state (figures, prediction files: rank 0 only)."""
    metrics: dict[str, float] = {}
    for prefix, module in weights:
        state = evaluation_state(module, loader, device, autocast, prefix, progress_bar)
        metrics.update({f"{prefix}/{k}": v for k, v in module.compute_metrics(state).items()})
        if artifacts is not None:
            artifacts(module, state, prefix)
    return metrics
