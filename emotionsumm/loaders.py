"""DataLoaders for the trainer: sharded across DDP ranks, reshuffled per epoch, resumable mid-epoch.

Training batches are either drawn freely (`data.batch_size` examples, optionally weighted) or are
fixed groups of examples that the data decides (`data.train_batches()`, e.g. length buckets): then
the groups are the units that are shuffled, sharded and resumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from . import distributed as dist
from .interfaces import Data
from .sampling import ShardedSampler
from .seed import seed_worker


class GroupSampler(Sampler[list[int]]):
    """Yields fixed groups of indices (one batch each) in the order a ShardedSampler draws the groups."""

    def __init__(self, groups: list[list[int]], order: ShardedSampler) -> None:
        self.groups, self.order = groups, order

    def __iter__(self) -> Iterator[list[int]]:
        return (self.groups[i] for i in self.order)

    def __len__(self) -> int:
        return len(self.order)


class TrainLoader:
    """The training DataLoader plus what resuming needs: the sampler and how many units make a batch."""

    def __init__(self, data: Data, dataset: Dataset, seed: int, pin_memory: bool, plain: bool = False) -> None:
        """`plain`: no fixed groups, no weights, no shuffling (e.g. `trainer.overfit_batches`)."""
        groups = None if plain else data.train_batches()
        weights = None if plain or groups is not None else data.sample_weights()
        units = len(groups) if groups is not None else len(dataset)
        self.sampler = ShardedSampler(units, shuffle=not plain, seed=seed, rank=dist.rank(),
                                      world_size=dist.world_size(), pad=True, weights=weights)
        self.units_per_batch = 1 if groups is not None else data.batch_size
        self.generator = torch.Generator().manual_seed(seed)
        batching = ({"batch_sampler": GroupSampler(groups, self.sampler)} if groups is not None
                    else {"batch_size": data.batch_size, "sampler": self.sampler})
        self.loader = DataLoader(dataset, collate_fn=data.collate, num_workers=data.num_workers,
                                 worker_init_fn=seed_worker, generator=self.generator, pin_memory=pin_memory,
                                 **batching)

    def batches_per_epoch(self) -> int:
        return math.ceil(self.sampler.epoch_length() / self.units_per_batch)

    def epoch(self, epoch: int, start_batch: int, seed: int) -> Iterator[dict]:
        """The batches of `epoch` from batch `start_batch` on (the same ones an uninterrupted run sees)."""
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start_batch * self.units_per_batch)
        self.generator.manual_seed(seed * 100003 + epoch)
        return iter(self.loader)


def eval_loader(data: Data, dataset: Dataset, seed: int, pin_memory: bool) -> DataLoader:
    """Every example once, in order, split across ranks without padding."""
    sampler = ShardedSampler(len(dataset), shuffle=False, seed=seed, rank=dist.rank(), world_size=dist.world_size(),
                             pad=False)
    return DataLoader(dataset, batch_size=data.eval_batch_size, sampler=sampler, collate_fn=data.collate,
                      num_workers=data.num_workers, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory)


def overfit_subset(dataset: Dataset, batches: int, batch_size: int) -> Dataset:
    """The first `batches` batches' worth of examples (`trainer.overfit_batches`)."""
    return Subset(dataset, range(min(len(dataset), batches * batch_size)))
