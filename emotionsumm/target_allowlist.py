"""Which `_target_`s may be built from a config someone else wrote: a checkpoint's stored config.

`evaluate`, `predict` and resume rebuild objects from the config inside a checkpoint with Hydra's
`instantiate`, which calls whatever `_target_` names (`builtins.open`, `shutil.copyfile`,
`os.system`...). Checkpoints are shared, so that config is data, never code: before anything is
built from it every `_target_` must be a target named by the shipped `conf/` (torch optimizers,
the emotionsumm schedulers, models, policies...) or a class defined in the emotionsumm package.

A string is judged before anything is imported (an import runs code): only `emotionsumm.*`
modules are ever imported here, and the object reached must be defined in emotionsumm (not a
re-export such as `emotionsumm.runtime.instantiate`). Functions are allowed only when `conf/`
names them: emotionsumm's own helpers write files at given paths (`atomic_write_text`).
Interpolations (`${...}`) are refused too: a stored config is already resolved, and a resolver
(`oc.env`, custom ones) would be chosen by the config's author.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import CONFIG_DIR

PACKAGE = "emotionsumm"


class UntrustedConfigError(ValueError):
    """A stored config names a `_target_` that is not allowed, or holds an interpolation."""


@functools.cache
def conf_targets(conf_dir: str = CONFIG_DIR) -> frozenset[str]:
    """Every `_target_` the YAML files under `conf_dir` name (in Hydra's own settings: emotionsumm's only)."""
    found: set[str] = set()

    def walk(node: Any, in_hydra: bool) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and (not in_hydra or target.startswith(PACKAGE + ".")):
                found.add(target)
            for key, value in node.items():
                walk(value, in_hydra or key == "hydra")
        elif isinstance(node, list):
            for item in node:
                walk(item, in_hydra)

    root = Path(conf_dir)
    for file in sorted(root.rglob("*.yaml")):
        walk(yaml.safe_load(file.read_text(encoding="utf-8")), file.relative_to(root).parts[0] == "hydra")
    return frozenset(found)


def _emotionsumm_object(target: str) -> Any:
    """The object `target` names, found as Hydra finds it but through emotionsumm modules only; else None."""
    parts = target.split(".")
    if len(parts) < 2 or parts[0] != PACKAGE or any(not p.isidentifier() or p.startswith("__") for p in parts):
        return None
    obj: Any = importlib.import_module(PACKAGE)
    for i in range(1, len(parts) - 1):  # every step before the last must be an emotionsumm module itself
        name = ".".join(parts[: i + 1])
        child = getattr(obj, parts[i], None)
        if child is None:
            try:  # a submodule of an emotionsumm package: the finders look inside it only
                child = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name == name:
                    return None
                raise
        if child is not sys.modules.get(name):  # e.g. `emotionsumm.checkpoint.os`: a re-export
            return None
        obj = child
    return getattr(obj, parts[-1], None)


def refusal(target: Any) -> str | None:
    """Why `target` may not be built from a stored config, or None when it may."""
    if not isinstance(target, str):
        return f"is of type {type(target).__name__}, not a string naming a class"
    if target in conf_targets():
        return None
    obj = _emotionsumm_object(target) if target.startswith(PACKAGE + ".") else None
    module = getattr(obj, "__module__", None) or ""
    if inspect.isclass(obj) and (module == PACKAGE or module.startswith(PACKAGE + ".")):
        return None
    return "is not an emotionsumm class or a target named in conf/"


def check_config(config: Any, path: str = "") -> None:
    """Raise UntrustedConfigError naming the key path of the first refused `_target_` or interpolation."""
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "${" in key:
                raise UntrustedConfigError(f"key {where!r} is an interpolation; a stored config is resolved")
            if key == "_target_" and (reason := refusal(value)) is not None:
                raise UntrustedConfigError(f"{where}={value!r} {reason}")
            check_config(value, where)
    elif isinstance(config, (list, tuple)):
        for i, item in enumerate(config):
            check_config(item, f"{path}[{i}]")
    elif isinstance(config, str) and "${" in config:
        raise UntrustedConfigError(f"{path}={config!r} is an interpolation; a stored config is already resolved, "
                                   "so only a hand-edited one holds one")
