"""Config plumbing that must stay light: resolvers, the run-dir stamp, printing and validation.

Nothing here imports torch, so `python -m emotionsumm.train --cfg job` composes instantly.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = str(PROJECT_ROOT / "conf")
RUN_STAMP_ENV = "EMOTIONSUMM_RUN_STAMP"


@functools.cache
def run_stamp() -> str:
    """`<YYYY-MM-DD_HH-MM-SS>-<short id>`: unique even for two jobs started in the same second.

    Under torchrun rank 0 chooses it and the other ranks receive it through the environment,
    so every rank resolves the same run dir.
    """
    if os.environ.get(RUN_STAMP_ENV):
        return os.environ[RUN_STAMP_ENV]
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{uuid.uuid4().hex[:6]}"


def env_world_size() -> int:
    """World size announced by torchrun (WORLD_SIZE) or SLURM (SLURM_NTASKS), 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def register_resolvers() -> None:
    """Register the `${run_stamp:}`, `${project_root:}` and `${job_subdir:…}` resolvers (idempotent)."""
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("job_subdir"):  # multirun job dirs `<num>-<hash of overrides>`
        from .sweep import job_subdir

        OmegaConf.register_new_resolver("job_subdir", job_subdir)


def format_tree(cfg: DictConfig) -> str:
    """The resolved config as a tree: one branch per top-level group, YAML leaves."""
    lines = ["config"]
    keys = list(cfg.keys())
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        lines.append(("└── " if last else "├── ") + str(key))
        node = cfg[key]
        body = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else f"{node}\n"
        pad = "    " if last else "│   "
        lines.extend(pad + line for line in body.rstrip("\n").splitlines())
    return "\n".join(lines)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (resolved) config or nested dict into `a.b.c -> value`."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not cfg and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = cfg
    return out


def require_choice(key: str, value: Any, allowed: list[Any] | tuple[Any, ...]) -> None:
    """Raise a ValueError naming the key, the value and the allowed values."""
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")


def require_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise a ValueError naming the key, the value and the allowed range (bounds inclusive)."""
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{key}={value!r} is out of range; allowed: [{lo}, {hi}]")
