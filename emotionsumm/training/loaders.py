"""DataLoaders for the trainer: sharded across DDP ranks, reshuffled per epoch, resumable mid-epoch.

Training batches are either drawn freely (`data.batch_size` examples, optionally weighted) or are
fixed groups of examples that the data decides (`data.train_batches()`, e.g. length buckets): then
the groups are the units that are shuffled, sharded and resumed. Epochs follow each other in one
DataLoader iterator, so with `data.num_workers` > 0 the workers, alive across epochs and validations,
prefetch the next epoch's first batches while this one ends (a new iterator per epoch would make every
epoch start by waiting for them). Workers seed every training example from (seed, epoch, rank, batch,
slot), so augmentation does not depend on which worker drew it: a resumed run sees the same examples as
an uninterrupted one. Small batches leave the workers by value (`ByValue`). Evaluation batches of a dataset
that knows its examples' lengths are formed longest first (little padding) and their results put back in
file order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, Subset

from ..interfaces import Data
from . import distributed as dist
from .sampling import ShardedSampler
from .seed import seed_worker

PREFETCH_BATCHES_PER_WORKER = 4  # enough to ride out one slow batch (a long dialogue, a large image) per worker
BY_VALUE_BYTES = 1 << 20  # a worker's batch below this size crosses to the main process by value (see ByValue)


@runtime_checkable
class KnowsLengths(Protocol):
    """A dataset that can say how long each example is (e.g. its token count) without building it."""

    def lengths(self) -> Sequence[int]: ...


def limit_batches(limit: int | float | None, n: int) -> int:
    """`trainer.limit_*_batches`: None = all `n`, a float <= 1 = that fraction (at least 1), an int = at most that."""
    if limit is None:
        return n
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(n * limit))
    return min(n, int(limit))


def worker_options(num_workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader process options: persistent, prefetching workers when there are any; pinned memory on CUDA."""
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory, "worker_init_fn": seed_worker}
    if num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_BATCHES_PER_WORKER)
    return options


class ByValue:
    """A small batch (a dict of tensors under BY_VALUE_BYTES in all) as numpy arrays, so that it leaves a worker
    process by value, pickled through the pipe: a tensor crosses as shared memory, whose file descriptor
    takes one handshake per tensor in the main process (a few hundred microseconds each), more than copying
    a few hundred KB. `unpack()` (or `pin_memory()`, which the DataLoader calls on CUDA) gives the tensors back."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.tensors = [k for k, v in batch.items() if isinstance(v, torch.Tensor)]  # other values stay as they are
        self.values = {k: v.numpy() if k in self.tensors else v for k, v in batch.items()}

    @classmethod
    def pack(cls, batch: Any) -> Any:
        """`batch` as a ByValue when it is a small dict of numpy-compatible CPU tensors, else itself."""
        if not isinstance(batch, dict) or sum(v.nbytes for v in batch.values()
                                              if isinstance(v, torch.Tensor)) >= BY_VALUE_BYTES:
            return batch
        try:
            return cls(batch)
        except TypeError:  # a dtype numpy does not have (bfloat16, float8): as shared memory
            return batch

    def unpack(self) -> dict[str, Any]:
        return {k: torch.from_numpy(v) if k in self.tensors else v for k, v in self.values.items()}

    def pin_memory(self) -> dict[str, Any]:
        return {k: v.pin_memory() if k in self.tensors else v for k, v in self.unpack().items()}


def unpacked(batch: Any) -> Any:
    """A batch from a DataLoader with the tensors of a ByValue given back."""
    return batch.unpack() if isinstance(batch, ByValue) else batch


class WorkerCollate:
    """`collate` in a worker process, its small batches packed ByValue."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, examples: list[Any]) -> Any:
        return ByValue.pack(self.collate(examples))


def collate_fn(data: Data) -> Any:
    """The data's collate, wrapped for worker processes when there are any."""
    return WorkerCollate(data.collate) if data.num_workers > 0 else data.collate


class GroupSampler(Sampler[list[int]]):
    """Yields fixed groups of indices (one batch each) in the order a ShardedSampler draws the groups."""

    def __init__(self, groups: list[list[int]], order: ShardedSampler) -> None:
        self.groups, self.order = groups, order

    def __iter__(self) -> Iterator[list[int]]:
        return (self.groups[i] for i in self.order)

    def __len__(self) -> int:
        return len(self.order)


def example_seed(seed: int, epoch: int, rank: int, batch: int, slot: int) -> int:
    """The RNG seed of one training example: the same wherever and whenever it is loaded."""
    value = seed
    for part in (epoch, rank, batch, slot):
        value = (value * 1_000_003 + part) % 2**63
    return value


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """Training batches as (index, example seed) pairs, for `SeededExamples` in worker processes."""

    def __init__(self, batches: Iterable[list[int]], sampler: ShardedSampler, units_per_batch: int, seed: int) -> None:
        self.batches, self.sampler, self.units_per_batch, self.seed = batches, sampler, units_per_batch, seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        first = self.sampler.start // self.units_per_batch
        for number, batch in enumerate(self.batches, start=first):
            yield [(index, example_seed(self.seed, self.sampler.epoch, self.sampler.rank, number, slot))
                   for slot, index in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


class Epochs(Sampler[Any]):
    """The batches of epoch after epoch, without end, from `first` = (epoch, batch): the sampler is moved to
    each epoch (and start) just before its batches are drawn, so every epoch's batches are the ones a fresh
    iterator of that epoch gives."""

    def __init__(self, batches: Iterable[Any], sampler: ShardedSampler, units_per_batch: int) -> None:
        self.batches, self.sampler, self.units_per_batch = batches, sampler, units_per_batch
        self.first = (0, 0)

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self.first
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(start * self.units_per_batch)
            yield from self.batches
            epoch, start = epoch + 1, 0


class SeededExamples(Dataset):
    """Seeds python, numpy and torch from the pair's seed, then loads the example (inside a worker)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]


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
        batches: Sampler = (GroupSampler(groups, self.sampler) if groups is not None
                            else BatchSampler(self.sampler, data.batch_size, drop_last=False))
        if data.num_workers > 0:  # a worker's own RNG stream would depend on which batches it drew before
            batches, dataset = SeededBatches(batches, self.sampler, self.units_per_batch, seed), SeededExamples(dataset)
        self.epochs = Epochs(batches, self.sampler, self.units_per_batch)
        self.loader = DataLoader(dataset, batch_sampler=self.epochs, collate_fn=collate_fn(data),
                                 generator=self.generator, **worker_options(data.num_workers, pin_memory))
        self.stream: Iterator[Any] | None = None
        self.position: tuple[int, int] | None = None  # (epoch, batch) the stream yields next

    def batches_per_epoch(self) -> int:
        return math.ceil(self.sampler.epoch_length() / self.units_per_batch)

    def epoch(self, epoch: int, start_batch: int, seed: int) -> Iterator[dict]:
        """The batches of `epoch` from batch `start_batch` on (the same ones an uninterrupted run sees): the
        running stream's when it stands there (the previous epoch was read to its end), else a new one's."""
        if self.position != (epoch, start_batch):  # None before the first stream
            self.generator.manual_seed(seed * 100003 + epoch)
            self.epochs.first = (epoch, start_batch)
            self.stream, self.position = iter(self.loader), (epoch, start_batch)
        return self._take(epoch, start_batch)

    def _take(self, epoch: int, start_batch: int) -> Iterator[dict]:
        total = self.batches_per_epoch()
        for number in range(start_batch, total):
            batch = unpacked(next(self.stream))  # type: ignore[arg-type]
            self.position = (epoch, number + 1) if number + 1 < total else (epoch + 1, 0)
            yield batch


class EvalBatches(Sampler[list[int]]):
    """One rank's evaluation batches: its examples once, cut to `limit` batches, sorted longest first when
    their lengths are known (the same examples either way); `positions[j]` is where the j-th example
    yielded stands in the unsorted order."""

    def __init__(self, indices: list[int], batch_size: int, limit: int | float | None,
                 lengths: Sequence[int] | None) -> None:
        chosen = indices[: limit_batches(limit, math.ceil(len(indices) / batch_size)) * batch_size]
        order = list(range(len(chosen)))
        if lengths is not None:
            order.sort(key=lambda position: -lengths[chosen[position]])  # stable: ties keep file order
        self.positions = order
        self.batches = [[chosen[p] for p in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def in_file_order(self, values: list[Any]) -> list[Any]:
        """Per-example `values` collected in batch order, put back in the unsorted order."""
        restored: list[Any] = [None] * len(values)
        for value, position in zip(values, self.positions):
            restored[position] = value
        return restored


class EvalLoader:
    """An evaluation DataLoader and its `EvalBatches` (which evaluation needs to restore the file order)."""

    def __init__(self, data: Data, dataset: Dataset, seed: int, pin_memory: bool,
                 limit: int | float | None = None) -> None:
        """Every example once (the first `limit` batches' worth with a limit), split across ranks unpadded."""
        shard = list(ShardedSampler(len(dataset), shuffle=False, seed=seed, rank=dist.rank(),
                                    world_size=dist.world_size(), pad=False))
        lengths = dataset.lengths() if isinstance(dataset, KnowsLengths) else None
        self.batches = EvalBatches(shard, data.eval_batch_size, limit, lengths)
        self.loader = DataLoader(dataset, batch_sampler=self.batches, collate_fn=collate_fn(data),
                                 generator=torch.Generator().manual_seed(seed),
                                 **worker_options(data.num_workers, pin_memory))

    def __iter__(self) -> Iterator[dict]:
        return (unpacked(batch) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.batches)


def overfit_subset(dataset: Dataset, batches: int, batch_size: int) -> Dataset:
    """The first `batches` batches' worth of examples (`trainer.overfit_batches`)."""
    return Subset(dataset, range(min(len(dataset), batches * batch_size)))
