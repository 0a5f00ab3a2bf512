"""Data loading with worker processes: persistent, prefetching workers whose augmentation randomness is a
function of (seed, epoch, rank, batch, slot), so resuming mid-epoch and the number of workers change nothing."""

from __future__ import annotations

import numpy as np
import torch

from emotionsumm.training import loaders
from emotionsumm.training.checkpoint import load_checkpoint
from emotionsumm.training.loaders import ByValue, EvalLoader, TrainLoader, worker_options

from .tiny_task import fit_tiny, tiny_data


def test_workers_persist_and_prefetch_and_memory_is_pinned_only_when_asked():
    assert worker_options(0, False) == {"num_workers": 0, "pin_memory": False, "worker_init_fn": worker_options(
        0, False)["worker_init_fn"]}
    options = worker_options(2, True)
    assert options["persistent_workers"] and options["prefetch_factor"] >= 2 and options["pin_memory"]
    data = tiny_data(noise=True, num_workers=2)
    train = TrainLoader(data, data.dataset("train"), seed=0, pin_memory=False)
    val = EvalLoader(data, data.dataset("val"), seed=0, pin_memory=False)
    assert train.loader.persistent_workers and val.loader.persistent_workers


def _noise_of_epoch(data, epoch: int, start_batch: int = 0) -> list[list[float]]:
    train = TrainLoader(data, data.dataset("train"), seed=3, pin_memory=False)
    return [batch["noise"].tolist() for batch in train.epoch(epoch, start_batch, seed=3)]


def test_augmentation_depends_on_the_example_slot_not_on_the_worker_or_a_resume():
    one = _noise_of_epoch(tiny_data(noise=True, num_workers=1), epoch=1)
    two = _noise_of_epoch(tiny_data(noise=True, num_workers=2), epoch=1)
    resumed = _noise_of_epoch(tiny_data(noise=True, num_workers=2), epoch=1, start_batch=5)
    assert one == two and resumed == two[5:]
    assert len({x for batch in two for x in batch}) == 64  # every example drew its own noise
    assert _noise_of_epoch(tiny_data(noise=True, num_workers=2), epoch=2) != two  # and again each epoch


def _weights(run_dir):
    ckpt = load_checkpoint(run_dir / "checkpoints/last.ckpt")
    return ckpt["step"], ckpt["policy"], ckpt["ema"]["module"]


def test_resume_mid_epoch_with_workers_is_bitwise_identical(tmp_path):
    options = {"val_every_n_steps": 6, "checkpoint_every_n_steps": 5, "test_after_fit": False}
    fit_tiny(tmp_path / "full", tiny_data(noise=True, num_workers=1), max_steps=20, **options)
    fit_tiny(tmp_path / "cut", tiny_data(noise=True, num_workers=1), max_steps=5, **options)  # mid-epoch 0
    fit_tiny(tmp_path / "cut", tiny_data(noise=True, num_workers=1), max_steps=20, resume="auto", **options)
    step_a, raw_a, ema_a = _weights(tmp_path / "full")
    step_b, raw_b, ema_b = _weights(tmp_path / "cut")
    assert step_a == step_b == 20
    assert all(torch.equal(raw_a[k], raw_b[k]) and torch.equal(ema_a[k], ema_b[k]) for k in raw_a)


def test_epochs_follow_in_one_prefetching_stream_with_the_batches_of_fresh_iterators(monkeypatch):
    data = tiny_data(noise=True, num_workers=2)
    train = TrainLoader(data, data.dataset("train"), seed=3, pin_memory=False)
    streams = []
    original = type(train.loader).__iter__
    monkeypatch.setattr(type(train.loader), "__iter__", lambda self: streams.append(1) or original(self))
    chained = [[batch["noise"].tolist() for batch in train.epoch(epoch, 0, seed=3)] for epoch in range(3)]
    assert len(streams) == 1  # epochs 1 and 2 came from the stream that prefetched them
    assert chained == [_noise_of_epoch(data, epoch) for epoch in range(3)]
    expected = _noise_of_epoch(data, 4)
    before = len(streams)
    next(train.epoch(3, 0, seed=3))  # an epoch not read to its end (trainer.limit_train_batches): the stream
    assert len(streams) == before  # went on into epoch 3, but epoch 4 needs a new one
    assert [b["noise"].tolist() for b in train.epoch(4, 0, seed=3)] == expected and len(streams) == before + 1


def test_small_batches_leave_workers_by_value_and_arrive_as_the_same_tensors(monkeypatch):
    batch = {"x": torch.randn(4, 3), "mask": torch.tensor([True, False, True, True]), "ids": torch.arange(4),
             "names": ["a", "b", "c", "d"], "raw": np.zeros(2)}
    packed = ByValue.pack(batch)
    assert isinstance(packed, ByValue) and not any(isinstance(v, torch.Tensor) for v in packed.values.values())
    back = loaders.unpacked(packed)
    assert isinstance(back["raw"], np.ndarray)  # what was not a tensor is given back as it was
    assert back["names"] == batch["names"] and all(
        torch.equal(back[k], batch[k]) and back[k].dtype == batch[k].dtype for k in ("x", "mask", "ids"))
    big = {"x": torch.zeros(loaders.BY_VALUE_BYTES // 4)}  # 1 MB and more: shared memory, as before
    assert ByValue.pack(big) is big and ByValue.pack([1]) == [1]
    assert ByValue.pack({"x": torch.zeros(2, dtype=torch.bfloat16)})["x"].dtype == torch.bfloat16
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self + 0)  # no CUDA here: what the loader calls
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = pin_memory(packed)
    assert isinstance(pinned, dict) and torch.equal(pinned["x"], batch["x"])
    data = tiny_data(num_workers=2)
    served = [b for b in EvalLoader(data, data.dataset("val"), seed=0, pin_memory=False)]
    plain = [b for b in EvalLoader(tiny_data(), tiny_data().dataset("val"), seed=0, pin_memory=False)]
    assert all(isinstance(v, torch.Tensor) for b in served for v in b.values())  # unpacked
    assert len(served) == len(plain) and all(torch.equal(a[k], b[k]) for a, b in zip(served, plain) for k in a)
    train = TrainLoader(data, data.dataset("train"), seed=0, pin_memory=False)
    assert all(isinstance(v, torch.Tensor) for b in train.epoch(0, 0, seed=0) for v in b.values())
