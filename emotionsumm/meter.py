"""The running training loss and throughput between two log steps (averaged across DDP ranks)."""

from __future__ import annotations

import time

import torch

from . import distributed as dist


class TrainMeter:
    """Sums losses on the device (no host sync per step) and reads them once per log step."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.micro_batches = self.samples = 0
        self.since = time.perf_counter()

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.loss_sum += loss.detach()
        self.micro_batches += 1
        self.samples += samples

    def read(self) -> tuple[float, float]:
        """(mean loss over every rank's micro-batches since the last read, samples/s of all ranks); then reset."""
        loss = self.loss_sum / self.micro_batches
        if dist.is_distributed():
            torch.distributed.all_reduce(loss)
            loss /= dist.world_size()
        out = float(loss), self.samples * dist.world_size() / (time.perf_counter() - self.since)
        self.loss_sum.zero_()
        self.micro_batches = self.samples = 0
        self.since = time.perf_counter()
        return out
