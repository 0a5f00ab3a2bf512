"""A sampler that shards across DDP ranks, reshuffles per epoch and can start mid-epoch.

Like `DistributedSampler` (same seed + epoch gives the same order on every run), plus
`set_start` so that a resumed run continues from the exact sample where the checkpoint was
taken, and an unpadded mode for evaluation so that no sample is counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    def __init__(self, num_samples: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True, weights: list[float] | None = None) -> None:
        """`weights` (one per sample) draw each epoch with replacement in proportion to them
        (e.g. inverse class frequency, to balance classes) instead of a permutation."""
        if weights is not None and len(weights) != num_samples:
            raise ValueError(f"{len(weights)} sampling weights for {num_samples} samples")
        self.weights = torch.as_tensor(weights, dtype=torch.double) if weights is not None else None
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first `start` samples of this rank's share (mid-epoch resume)."""
        self.start = start

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        if self.pad and self.world_size > 1:
            total = math.ceil(self.num_samples / self.world_size) * self.world_size
            order += order[: total - len(order)]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return max(0, self.epoch_length() - self.start)

    def epoch_length(self) -> int:
        """Samples per epoch on this rank, ignoring `start`."""
        if self.pad and self.world_size > 1:
            return math.ceil(self.num_samples / self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))
