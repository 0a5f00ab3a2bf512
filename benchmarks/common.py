"""What several benchmarks share: composing an experiment's config and timing a call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from emotionsumm.config.core import CONFIG_DIR, register_resolvers


def compose_experiment(experiment: str, overrides: list[str]) -> DictConfig:
    """conf/train.yaml with `experiment=<experiment>` and `overrides`, as the shell would compose it."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *overrides])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out
