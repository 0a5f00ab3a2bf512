"""Parameter groups for the optimizer: no weight decay on biases and norm weights, and an
optional learning rate per named part of the policy (e.g. encoder vs head)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..config.core import require_range

log = logging.getLogger(__name__)

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.Embedding)


def _no_decay_names(module: nn.Module) -> set[str]:
    names = set()
    for mod_name, mod in module.named_modules():
        for p_name, param in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p_name.endswith("bias") or param.ndim <= 1 or isinstance(mod, _NORMS):
                names.add(full)
    return names


def param_groups(policy: nn.Module, weight_decay: float,
                 group_lr: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Split the policy's parameters into optimizer groups.

    `group_lr` maps a part name to its learning rate; a parameter belongs to a part when its
    name starts with one of the prefixes `policy.param_parts()` gives for that part. A part that
    `group_lr` does not name takes the model's default for it (`policy.param_lrs()`, e.g. a
    pretrained encoder config's `lr`); parameters of the remaining parts use the optimizer's own lr.
    Frozen parameters are included so that they train once unfrozen (optimizers skip parameters
    without gradients).
    """
    group_lr = dict(group_lr or {})
    parts: dict[str, tuple[str, ...]] = policy.param_parts() if hasattr(policy, "param_parts") else {}
    defaults: dict[str, float] = policy.param_lrs() if hasattr(policy, "param_lrs") else {}
    unknown = set(group_lr) - set(parts)
    if unknown:
        raise ValueError(f"group_lr names unknown parts {sorted(unknown)}; this policy has parts {sorted(parts)}")
    for part, lr in group_lr.items():
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise ValueError(f"group_lr.{part}={lr!r} is not a valid float "
                             f"(expected float > 0, e.g. group_lr.{part}=0.001)")
        require_range(f"group_lr.{part}", lr, 0, low_open=True)
    lrs = {**{part: lr for part, lr in defaults.items() if part in parts}, **group_lr}
    if lrs:
        log.info("learning rate per part: %s (others: optimizer.lr)", ", ".join(
            f"{part}={lr:g}{'' if part in group_lr else ' (model default)'}" for part, lr in lrs.items()))
    no_decay = _no_decay_names(policy)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in policy.named_parameters():
        part = next((p for p, prefixes in parts.items() if p in lrs and name.startswith(prefixes)), "")
        decay = name not in no_decay
        group = groups.setdefault((part, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                  "name": f"{part or 'default'}{'' if decay else '_no_decay'}"})
        if part:
            group["lr"] = lrs[part]
        group["params"].append(param)
    return list(groups.values())
