"""Where this process computes and in which precision: the device of a rank and the autocast context."""

from __future__ import annotations

import contextlib
import os

import torch

from ..config.core import require_choice

PRECISIONS = ("32", "bf16", "16")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu")


def device_for(accelerator: str) -> torch.device:
    """CPU, or this rank's GPU (`LOCAL_RANK` under torchrun); `auto` takes a GPU when there is one."""
    require_choice("trainer.accelerator", accelerator, ACCELERATORS)
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes: none for "32", bfloat16 or float16 autocast otherwise."""
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def compiled_graphs() -> int:
    """How many graphs `torch.compile` has built in this process so far (a change marks a compile warm-up)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
