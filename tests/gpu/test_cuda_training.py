"""Training on CUDA through the entry points: bf16 and fp16 (GradScaler), bitwise resume, pinned-memory
loaders with workers, `trainer.compile`, and 2-GPU DDP with NCCL (skipped without CUDA: see conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ..conftest import TINY, cli, scalars

ROOT = Path(__file__).resolve().parents[2]
# `accelerator=cuda`, not auto: a CUDA problem fails the test instead of training on the CPU
CUDA = [*TINY, "trainer.accelerator=cuda", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2",
        "trainer.test_after_fit=false"]
# resume at step 4 is mid-epoch (5 batches an epoch); both runs validate (raw weights too) and save at step 4;
# a constant schedule, so that the first half (max_steps=4) has the learning rates of the full run
RESUMABLE = [*CUDA, "trainer.deterministic=true", "scheduler=constant", "trainer.val_every_n_steps=4",
             "trainer.validate_raw=always", "ema.decay=0.9"]


def train(run: Path, *overrides: str) -> dict[str, Any]:
    """`python -m emotionsumm.train` into `run`; its last.ckpt (weights_only, as a user would load it)."""
    proc = cli("train", *overrides, f"hydra.run.dir={run}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def tensors(value: Any, path: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts/lists, by its path (e.g. `optimizer.state.0.exp_avg`)."""
    if isinstance(value, torch.Tensor):
        return {path: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else ()
    return {k: v for key, item in items for k, v in tensors(item, f"{path}.{key}" if path else str(key)).items()}


def assert_finite_weights(ckpt: dict[str, Any]) -> None:
    for name, value in {**tensors(ckpt["policy"], "policy"), **tensors(ckpt["ema"], "ema")}.items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, f"{name} is {value.dtype}: the weights stay fp32 under autocast"
            assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_trains_with_finite_loss(tmp_path, precision):
    run = tmp_path / "run"
    ckpt = train(run, *CUDA, f"trainer.precision={precision}", "trainer.max_steps=8")
    assert ckpt["step"] == 8 and str(ckpt["config"]["trainer"]["precision"]) == precision
    assert_finite_weights(ckpt)
    losses = scalars(run, "train/loss")
    assert sorted(losses) == list(range(1, 9)) and all(math.isfinite(v) for v in losses.values()), losses
    assert math.isfinite(json.loads((run / "metrics.json").read_text())["val/loss"])
    if precision == "16":  # GradScaler's state travels with the checkpoint
        scaler = ckpt["scaler"]
        assert {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} <= set(scaler)
        assert 0 < scaler["scale"] < math.inf
    else:  # bf16 needs no loss scaling: the scaler is off and saves nothing
        assert ckpt["scaler"] == {}


@pytest.mark.parametrize("overrides", [["trainer.precision=32"], ["trainer.precision=bf16"],
                                       ["trainer.precision=16"], ["trainer.precision=32", "data.num_workers=2"]],
                         ids=["fp32", "bf16", "fp16", "fp32-pinned-workers"])
def test_resume_on_cuda_is_bitwise_identical(tmp_path, overrides):
    full = train(tmp_path / "full", *RESUMABLE, *overrides, "trainer.max_steps=8")
    half = train(tmp_path / "resumed", *RESUMABLE, *overrides, "trainer.max_steps=4")
    assert half["step"] == 4
    resumed = train(tmp_path / "resumed", *RESUMABLE, *overrides, "trainer.max_steps=8", "trainer.resume=auto")
    assert full["step"] == resumed["step"] == 8
    for part in ("policy", "ema", "optimizer"):
        a, b = tensors(full[part], part), tensors(resumed[part], part)
        assert a.keys() == b.keys() and a, part
        different = [name for name in a if not torch.equal(a[name], b[name])]
        assert not different, f"not bitwise identical after resume: {different[:10]}"
    assert full["scaler"] == resumed["scaler"]
    assert_finite_weights(resumed)
    # steps 1-4 logged by the first half, 5-8 by the resumed run
    assert scalars(tmp_path / "resumed", "train/loss") == scalars(tmp_path / "full", "train/loss")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="inductor on CUDA needs triton")
def test_compiled_training_on_cuda(tmp_path):
    run = tmp_path / "run"
    ckpt = train(run, *CUDA, "trainer.compile=true", "trainer.max_steps=4", "data.max_length=8")
    assert ckpt["step"] == 4 and ckpt["config"]["trainer"]["compile"] is True
    assert not any("_orig_mod" in k for k in [*ckpt["policy"], *ckpt["ema"]["module"]])  # plain names
    assert_finite_weights(ckpt)
    assert all(math.isfinite(v) for v in scalars(run, "train/loss").values())


@pytest.mark.ddp
@pytest.mark.min_gpus(2)
def test_two_gpu_ddp_with_nccl(tmp_path):
    outputs = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "emotionsumm.train", *CUDA, "trainer.max_steps=6", "trainer.val_every_n_steps=3",
           f"paths.output_root={outputs}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = (p for p in (outputs / "emotion_text").iterdir() if p.is_dir())  # one run dir for both ranks
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 6
    assert_finite_weights(ckpt)
    assert "on cuda:0 x2" in (run / "train.log").read_text()  # rank 0 on its GPU, two ranks (NCCL on CUDA)
