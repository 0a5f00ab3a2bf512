"""Config plumbing that must stay light: resolvers, the run-dir stamp, printing and validation.

Nothing here imports torch, so `python -m emotionsumm.train --cfg job` composes instantly
(`validate_config`, called by `train()`, imports the `_target_`s it checks when it runs).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import types
import typing
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .ranges import range_error, range_errors

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # emotionsumm/ (this file is emotionsumm/config/core.py)
# the checkout this package runs from (editable install, tests); in an installed wheel: site-packages
PROJECT_ROOT = PACKAGE_DIR.parent


def _config_dir() -> str:
    """The shipped configs: `conf/` inside the installed package (the wheel maps the repository's top-level
    `conf/` to `emotionsumm/conf/`), else the checkout's `conf/` beside the package."""
    installed = PACKAGE_DIR / "conf"
    return str(installed if (installed / "train.yaml").is_file() else PROJECT_ROOT / "conf")


CONFIG_DIR = _config_dir()
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
    """Register the `${run_stamp:}`, `${work_dir:}` (the working directory: run-time paths follow the user),
    `${project_root:}` and `${job_subdir:…}` resolvers (idempotent)."""
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp)
    if not OmegaConf.has_resolver("work_dir"):
        OmegaConf.register_new_resolver("work_dir", os.getcwd)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("job_subdir"):  # multirun job dirs `<num>-<hash of overrides>`
        from ..runs.layout import job_subdir

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


def require_range(key: str, value: float, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, high_open: bool = False, note: str = "") -> None:
    """Raise a ValueError naming the key, the value and the allowed range: `>= low`, `<= high` or
    `[low, high]`, a bound excluded with `low_open`/`high_open` (`> 0`, `[0, 1)`); `note` follows it."""
    error = range_error(key, value, low, high, low_open=low_open, high_open=high_open, note=note)
    if error:
        raise ValueError(error)


# Config nodes whose `_target_` signatures give the expected types of their keys (nested targets too).
VALIDATED_NODES = ("trainer", "optimizer", "scheduler", "data", "model", "policy", "ema")
_SCALARS = {"bool": bool, "int": int, "float": float}


def _scalar_types(hint: Any) -> tuple[type, ...] | None:
    """The scalar types (bool, int, float) a parameter takes when that is all a config can give it,
    plus NoneType if it is optional; None when the hint admits anything else (str, containers, Any…)."""
    if isinstance(hint, str):  # an annotation that did not evaluate: read `int | None` style text
        names = [part.strip() for part in hint.split("|")]
        if not all(n in _SCALARS or n == "None" for n in names):
            return None
        members: tuple[Any, ...] = tuple(_SCALARS.get(n, type(None)) for n in names)
    else:
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    # runtime-only alternatives (e.g. `lr: float | Tensor`) are not something a config can hold
    members = tuple(m for m in members if not getattr(m, "__module__", "").startswith("torch"))
    if not members or not all(m in (bool, int, float, type(None)) for m in members) or members == (type(None),):
        return None
    return members


def _target_params(target: str) -> dict[str, tuple[tuple[type, ...], Any]]:
    """key -> (expected scalar types, default) for the numeric/bool parameters of a `_target_`, following
    `**kwargs` into the base classes' `__init__`. Imports the target, never instantiates it."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001 - instantiate reports a bad target itself, with its own message
        return {}
    functions = ([vars(k)["__init__"] for k in obj.__mro__ if "__init__" in vars(k) and k is not object]
                 if inspect.isclass(obj) else [obj])
    params: dict[str, tuple[tuple[type, ...], Any]] = {}
    for fn in functions:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            break
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # noqa: BLE001 - names only imported for type checking: read the text instead
            hints = {}
        for name, p in sig.parameters.items():
            if name in params or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            hint = hints.get(name, p.annotation)
            if hint is p.empty:  # no annotation: a bool/int/float default says what it takes
                hint = type(p.default) if type(p.default) in (bool, int, float) else typing.Any
            expected = _scalar_types(hint)
            if expected is not None:
                params[name] = (expected + ((type(None),) if p.default is None else ()), p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params


def _type_error(key: str, value: Any, expected: tuple[type, ...], default: Any) -> str | None:
    """A message naming the key and the expected type if `value` does not fit `expected`, else None."""
    if value is None:
        ok = type(None) in expected
    elif isinstance(value, bool):
        ok = bool in expected
    elif isinstance(value, int):
        ok = int in expected or float in expected
    elif isinstance(value, float):
        ok = float in expected
    else:
        ok = False
    if ok:
        return None
    names = [t.__name__ for t in expected if t is not type(None)]
    wanted = " or ".join(names + (["null"] if type(None) in expected else []))
    example = default if type(default) in expected and default is not None else {"bool": True, "int": 1}.get(
        names[0], 0.001)
    example = str(example).lower() if isinstance(example, bool) else example
    return f"{key}={value!r} is not a valid {names[0]} (expected {wanted}, e.g. {key}={example})"


def _check_node(node: DictConfig, path: str, errors: list[str]) -> None:
    target = node.get("_target_") if "_target_" in node else None
    params = _target_params(target) if isinstance(target, str) else {}
    for key in node:
        key = str(key)
        if key.startswith("_"):
            continue
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - an interpolation that resolves only later (e.g. at run time)
            continue
        if isinstance(value, DictConfig):
            _check_node(value, f"{path}.{key}", errors)
            continue
        error = _type_error(f"{path}.{key}", value, *params[key]) if key in params else None
        errors.extend([error] if error else _range_errors(f"{path}.{key}", value))


def _range_errors(key: str, value: Any) -> list[str]:
    return range_errors(key, value)


def validate_config(cfg: DictConfig) -> None:
    """Fail before anything heavy with every bad value, each naming its key and what is allowed.

    Checks that the keys of the `_target_` nodes in VALIDATED_NODES hold the scalar types their
    constructor signatures declare (bool/int/float, optionally null), that the values of the right type
    are in the ranges of `ranges.RANGES`, and that every learning rate (`optimizer.lr`, each value of
    `group_lr`) is a positive number.
    """
    errors: list[str] = _range_errors("seed", cfg.get("seed"))
    for name in VALIDATED_NODES:
        node = cfg.get(name)
        if isinstance(node, DictConfig):
            _check_node(node, name, errors)
    group_lr = cfg.get("group_lr")
    if group_lr is not None and not isinstance(group_lr, DictConfig):
        errors.append(f"group_lr={group_lr!r} is not a mapping (expected part: lr, e.g. "
                      "'group_lr={encoder: 3e-5, head: 1e-3}')")
    lrs = {f"group_lr.{part}": lr for part, lr in group_lr.items()} if isinstance(group_lr, DictConfig) else {}
    if isinstance(cfg.get("optimizer"), DictConfig) and "lr" in cfg.optimizer:
        lrs = {"optimizer.lr": cfg.optimizer.lr, **lrs}
    for key, lr in lrs.items():
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            error = range_error(key, lr, 0, low_open=True)
            if error:
                errors.append(error)
        elif not any(e.startswith(f"{key}=") for e in errors):  # not already named by the type check
            errors.append(f"{key}={lr!r} is not a valid float (expected float > 0, e.g. {key}=0.001)")
    if errors:
        raise ValueError("invalid config:\n  " + "\n  ".join(errors))
