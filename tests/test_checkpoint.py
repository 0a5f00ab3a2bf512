"""Checkpoints: round trip, atomic writes under SIGKILL, safe loading, top-k bookkeeping."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from emotionsumm.runs.atomic import TMP_PREFIX, atomic_save
from emotionsumm.training.checkpoint import FORMAT_VERSION, Checkpointer, CheckpointError, load_checkpoint
from emotionsumm.training.seed import rng_state, set_rng_state


def _payload(step: int) -> dict:
    return {"policy": {"w": torch.arange(6.0).reshape(2, 3) * step}, "ema": None, "optimizer": {}, "scheduler": None,
            "version": FORMAT_VERSION, "step": step, "epoch": 0, "rng": [rng_state()],
            "config": {"seed": 1, "model": {"hidden_size": 4}}}


def test_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "a.ckpt"
    atomic_save(_payload(3), path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["config"]["model"]["hidden_size"] == 4
    assert torch.equal(loaded["policy"]["w"], torch.arange(6.0).reshape(2, 3) * 3)
    assert torch.load(path, weights_only=True)["epoch"] == 0


def test_rng_state_round_trip_restores_every_generator():
    import random

    import numpy as np

    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.ckpt"
    script = f"""
import os, signal, torch
from emotionsumm.runs import atomic
meta = {{"epoch": 0, "config": {{}}, "version": 2}}
atomic.atomic_save({{"policy": {{"w": torch.ones(3)}}, "step": 1, **meta}}, {str(path)!r})
real_save = torch.save
def dying_save(obj, fh):
    real_save(obj, fh)
    fh.flush()
    fh.truncate(fh.tell() // 2)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
atomic.atomic_save({{"policy": {{"w": torch.zeros(100000)}}, "step": 2, **meta}}, {str(path)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    leftovers = list(tmp_path.glob(TMP_PREFIX + "*"))
    assert leftovers, "the kill should have happened while the temp file was being written"
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["policy"]["w"], torch.ones(3))
    Checkpointer(tmp_path, monitor="val/acc")  # a new run cleans the half-written temp file
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_only_rejects_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"policy": {}, "step": 0, "epoch": 0, "config": {}, "x": _Exploit(marker)}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        load_checkpoint(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match="raw.pkl"):
        load_checkpoint(raw)
    assert not marker.exists()


def test_truncated_and_missing_checkpoints_name_the_file(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_save(_payload(1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.ckpt.*truncated"):
        load_checkpoint(path, key="trainer.resume")
    with pytest.raises(CheckpointError, match="trainer.resume: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.ckpt", key="trainer.resume")


def test_top_k_keeps_the_best_files_and_last(tmp_path):
    ckpt = Checkpointer(tmp_path, monitor="val/acc", mode="max", save_top_k=2)
    for step, acc in enumerate([0.5, 0.7, 0.6, 0.9], start=1):
        topk, dropped = ckpt.plan({"val/acc": acc}, step, 0)
        ckpt.write(_payload(step), topk, dropped)
    files = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert len(files) == 3 and "last.ckpt" in files
    assert [score for score, _ in ckpt.best] == [0.9, 0.7]
    assert load_checkpoint(tmp_path / "last.ckpt")["step"] == 4
    assert load_checkpoint(ckpt.best_path)["step"] == 4
    restored = Checkpointer(tmp_path, monitor="val/acc", mode="max", save_top_k=2)
    restored.load_state_dict(ckpt.state_dict())
    assert restored.best == ckpt.best
    with pytest.raises(KeyError, match="trainer.monitor='val/acc'"):
        ckpt.plan({"val/loss": 1.0}, 5, 0)


@pytest.mark.parametrize(("version", "age"), [(1, "an older"), (FORMAT_VERSION + 1, "a newer"), (None, "a newer")])
def test_a_checkpoint_of_another_format_fails_saying_so(tmp_path, version, age):
    path = tmp_path / "old.ckpt"
    atomic_save({**_payload(1), "version": version}, path)
    with pytest.raises(CheckpointError, match=rf"old\.ckpt has checkpoint format {version}, written by {age} "
                                              rf"emotionsumm; this version reads format {FORMAT_VERSION}"):
        load_checkpoint(path, key="ckpt")
