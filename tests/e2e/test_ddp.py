"""DDP with two gloo processes on CPU: identical weights on every rank and a single run dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import TINY

DRIVER = """
import os, torch
from emotionsumm import train
from emotionsumm.training import trainer
fit = trainer.Trainer.fit
def fit_and_dump(self, policy, *args, **kwargs):
    metrics = fit(self, policy, *args, **kwargs)
    torch.save(policy.state_dict(), os.path.join(os.environ["DUMP_DIR"], f"rank{os.environ['RANK']}.pt"))
    return metrics
trainer.Trainer.fit = fit_and_dump
train.main()
"""


@pytest.mark.ddp
def test_two_gloo_ranks_share_one_run_dir_and_identical_weights(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    outputs = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           *TINY, "trainer.max_steps=6", "trainer.limit_val_batches=2", "trainer.val_every_n_steps=3",
           f"paths.output_root={outputs}"]
    env = {**__import__("os").environ, "DUMP_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dirs = [p for p in (outputs / "emotion_text").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    run = run_dirs[0]
    assert (run / "metrics.json").is_file() and (run / ".hydra/config.yaml").is_file()
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) <= 2  # rank 0's writer (+ hparams), not 2 ranks'
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ckpt = load_checkpoint(run / "checkpoints/last.ckpt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 6
    (best,) = (run / "checkpoints").glob("epoch*.ckpt")  # fit ends by loading the best weights for the test
    assert all(torch.equal(w0[k], load_checkpoint(best)["policy"][k]) for k in w0)
    log = (run / "train.log").read_text()
    assert "x2" in log and Path(run / "train.log").stat().st_size > 0
