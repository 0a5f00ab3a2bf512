"""Shared helpers: compose a config in-process, run an entry point as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# pytest-xdist workers share the cores: each (and every subprocess it starts) gets its share of threads,
# instead of each taking them all (4 threads on 2 cores made the small-op tests up to 5x slower)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from emotionsumm.config.core import CONFIG_DIR, PROJECT_ROOT, register_resolvers

SHARED = Path(os.environ.get("EMOTIONSUMM_SHARED", PROJECT_ROOT.parent / "shared"))
# A model and data small enough for a CPU test: a training step takes a few milliseconds. No baselines at the end
# (importing scikit-learn and fitting them adds about 1 s to a run; tests/test_class_baselines.py checks them).
TINY = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "data.vocab_size=400", "data.batch_size=16", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=2", "baseline=null",
]


def make_cfg(run_dir: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose like `python -m emotionsumm.<config_name> <overrides>` would, writing to run_dir."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=[*overrides, f"paths.output_dir={run_dir}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_train(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    from emotionsumm.train import train

    return train(make_cfg(run_dir, [*TINY, *overrides]))


def cli(module: str, *args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m emotionsumm.<module> args…` from the project root."""
    return subprocess.run([sys.executable, "-m", f"emotionsumm.{module}", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=PROJECT_ROOT)


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of a TensorBoard scalar in <run_dir>/tb."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason=f"real data not found in {SHARED}/data")
