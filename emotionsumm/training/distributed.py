"""torch.distributed set-up from torchrun or SLURM environment variables, and small collectives.

Everything works without a process group too (world size 1), so single-process code paths
call the same functions.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from typing import Any

import torch
import torch.distributed as dist

from ..config.core import env_world_size

log = logging.getLogger(__name__)


def _adopt_slurm_env() -> None:
    """Map SLURM variables onto the torchrun names so one code path serves both."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
    os.environ.setdefault("MASTER_ADDR", first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
    if os.environ.get("SLURM_JOB_ID", "").isdigit():  # two jobs sharing a node must not share a port
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000))
    os.environ.setdefault("MASTER_PORT", "29500")


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (the rendezvous host): `gpu[007-009,12],cpu1` -> `gpu007`."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        return nodelist
    prefix, ranges = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def init_from_env() -> bool:
    """Join the process group if launched by torchrun/SLURM with more than one process.

    Uses NCCL when CUDA is available, gloo otherwise, and gives each rank cores / local ranks
    threads so that ranks on one machine do not oversubscribe it. Returns True if distributed.
    """
    if env_world_size() <= 1:
        return False
    _adopt_slurm_env()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.get_world_size())))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum a dict of tensors across ranks (same keys on every rank), in place."""
    if is_distributed():
        for key in sorted(tensors):
            dist.all_reduce(tensors[key], op=dist.ReduceOp.SUM)
    return tensors


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from `src` to every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
