"""Parameter groups for the optimizer: no weight decay on biases and norm weights, and an
optional learning rate per named part of the policy (e.g. encoder vs head)."""

from __future__ import annotations

from typing import Any

from torch import nn

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
    name starts with one of the prefixes `policy.param_parts()` gives for that part. Parameters
    of no named part use the optimizer's own lr. Frozen parameters are included so that they
    train once unfrozen (optimizers skip parameters without gradients).
    """
    group_lr = dict(group_lr or {})
    parts: dict[str, tuple[str, ...]] = policy.param_parts() if hasattr(policy, "param_parts") else {}
    unknown = set(group_lr) - set(parts)
    if unknown:
        raise ValueError(f"group_lr names unknown parts {sorted(unknown)}; this policy has parts {sorted(parts)}")
    no_decay = _no_decay_names(policy)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in policy.named_parameters():
        part = next((p for p, prefixes in parts.items() if p in group_lr and name.startswith(prefixes)), "")
        decay = name not in no_decay
        group = groups.setdefault((part, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                  "name": f"{part or 'default'}{'' if decay else '_no_decay'}"})
        if part:
            group["lr"] = group_lr[part]
        group["params"].append(param)
    return list(groups.values())
