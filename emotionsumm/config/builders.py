"""Shared plumbing of the entry points: building objects from a config and writing run files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..training.checkpoint import CheckpointError, load_checkpoint, policy_weights
from .trust import SHIPPED, Trust

log = logging.getLogger(__name__)


def instantiate_enabled(node: DictConfig | None) -> Any:
    """Instantiate a node that has an `enabled` switch (e.g. ema); None when off or absent."""
    if node is None or not node.get("enabled", True):
        return None
    return instantiate(OmegaConf.masked_copy(node, [k for k in node if k != "enabled"]))


def build_data(cfg: DictConfig, run_dir: Path | None, state: dict[str, Any] | None = None,
               splits: tuple[str, ...] = ("train", "val", "test")) -> Any:
    """Instantiate and set up `cfg.data`; `state` (from a checkpoint) fixes classes and tokenizer.

    Under DDP rank 0 reads the data and builds the tokenizer first; the other ranks receive its
    state, so every rank tokenizes identically.
    """
    from ..training import distributed as dist

    if dist.is_distributed() and state is None:
        data = instantiate(cfg.data) if dist.is_main() else None
        if data is not None:
            data.setup(run_dir, splits)
        state = dist.broadcast_object(data.state_dict() if data is not None else None)
        if data is not None:
            return data
    data = instantiate(cfg.data, state=state)
    data.setup(run_dir if dist.is_main() else None, splits)
    return data


def build_policy(cfg: DictConfig, data: Any) -> torch.nn.Module:
    """Model from `cfg.model` completed with what the data knows, wrapped by `cfg.policy`."""
    model = instantiate(cfg.model, **data.model_kwargs())
    return instantiate(cfg.policy, model=model, **data.policy_kwargs())


def load_for_inference(ckpt_path: str, weights: str = "ema", data_overrides: DictConfig | None = None,
                       splits: tuple[str, ...] = (), cache_dir: str | Path = ".cache",
                       trust: Trust = SHIPPED) -> tuple[DictConfig, Any, torch.nn.Module]:
    """Rebuild data, model and policy from a self-describing checkpoint and load its weights.

    Only the stored `model`, `policy` and `data` are built, and the data's caches and demo files go under
    `cache_dir` (this command's `paths.cache_dir`), never where the checkpoint says (`config.stored`).
    `weights=ema` uses the EMA weights when the checkpoint has them (else the raw ones, with a warning);
    `weights=raw` the trained weights.
    """
    from .stored import StoredConfigError, inference_config

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights={weights!r} is not allowed; choose 'ema' or 'raw'")
    ckpt = load_checkpoint(ckpt_path, key="ckpt", trust=trust)
    try:
        cfg = inference_config(ckpt["config"], cache_dir, data_overrides)
    except StoredConfigError as exc:
        raise CheckpointError(f"ckpt: {ckpt_path}: refusing to build from this checkpoint: {exc}; nothing was "
                              "run. Only use checkpoints from people you trust.") from None
    data = build_data(cfg, None, state=ckpt.get("data"), splits=splits)
    policy = build_policy(cfg, data)
    state = policy_weights(ckpt, weights)
    if state is None:
        log.warning("%s has no EMA weights (ema.enabled was false): using the raw weights", ckpt_path)
        state = policy_weights(ckpt, "raw")
    policy.load_state_dict(state)
    policy.eval()
    log.info("loaded %s weights from %s (step %d)", weights, ckpt_path, ckpt["step"])
    return cfg, data, policy
