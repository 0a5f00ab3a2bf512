"""`trainer.compile=true` end to end on CPU: the real inductor backend (it needs a C++ compiler) for
training, checkpoints with plain names that `evaluate` reads and a resume without compiling; DDP with the
aot_eager backend (dynamo's graph capture and DDP's graph splitting without minutes of C++ builds)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import TINY, cli

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="inductor on CPU needs a C++ compiler (g++)")
SHORT = [*TINY, "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.val_every_n_steps=3",
         "trainer.checkpoint_every_n_steps=3",
         "data.max_length=8"]  # every batch 8 tokens wide: one compile (a new width recompiles: 45 s instead of 26)


def test_compiled_training_saves_plain_names_evaluates_and_resumes_eagerly(tmp_path):
    run = tmp_path / "run"
    proc = cli("train", *SHORT, "trainer.max_steps=3", "trainer.compile=true", f"hydra.run.dir={run}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoints/last.ckpt")
    assert ckpt["config"]["trainer"]["compile"] is True and ckpt["step"] == 3
    assert not any("_orig_mod" in k for k in [*ckpt["policy"], *ckpt["ema"]["module"]])
    assert all(torch.isfinite(v).all() for v in ckpt["policy"].values() if v.is_floating_point())
    metrics = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "eval"
    proc = cli("evaluate", f"ckpt={run}/checkpoints/last.ckpt", "split=test", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["test/acc"] == pytest.approx(metrics["test/acc"])
    proc = cli("train", *SHORT, "trainer.max_steps=6", "trainer.compile=false", f"hydra.run.dir={run}",
               "trainer.resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and load_checkpoint(run / "checkpoints/last.ckpt")["step"] == 6


@pytest.mark.ddp
def test_compiled_ddp_ranks_keep_identical_weights(tmp_path):
    outputs = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "emotionsumm.train", *SHORT, "trainer.max_steps=3", "trainer.compile=true", "trainer.test_after_fit=false",
           "trainer.compile_backend=aot_eager",  # DDP + dynamo graph breaks, without minutes of C++ builds
           f"paths.output_root={outputs}"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=PROJECT_ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = (outputs / "emotion_text").iterdir()
    ckpt = load_checkpoint(run / "checkpoints/last.ckpt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    assert not any("_orig_mod" in k for k in ckpt["policy"])
