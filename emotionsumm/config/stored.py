"""What `evaluate` and `predict` rebuild from a checkpoint's stored config: model, policy and the data's shape.

A checkpoint is data from someone else. Its config has passed the target allow-list when it was loaded
(`config.trust`), but the allow-list judges names only, and allowed classes write files (loggers,
the demo generators, caches). So the stored config is cut down here to what rebuilding the weights
needs, and nothing in it decides which files are written:
- only the `model`, `policy` and `data` nodes are taken: never loggers, trainer, callbacks, paths, hydra;
- `model` and `policy` must name `nn.Module` classes and `data` a data class (the `DataBuilder` shape);
  a nested `_target_` is allowed only inside `model` and only for `nn.Module` classes (a fusion model's
  encoders), so an allowed class with side effects cannot ride along as a constructor argument;
- every directory the data writes to (`demo_dir`, `*cache_dir`) is re-rooted under this command's
  `paths.cache_dir`; the data files it reads are named in the log as read from the checkpoint.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REBUILT = ("model", "policy", "data")  # the only nodes of a stored config that are ever built
DATA_METHODS = ("setup", "dataset", "collate", "state_dict", "model_kwargs", "policy_kwargs")


class StoredConfigError(ValueError):
    """A stored config asks to build something a checkpoint may not build."""


def _target_class(target: str, where: str) -> type:
    from hydra.utils import get_object

    obj = get_object(target)  # already allow-listed by name, so importing it runs only trusted code
    if not inspect.isclass(obj):
        raise StoredConfigError(f"{where}._target_={target!r} is not a class; a checkpoint rebuilds classes only")
    return obj


def _targets(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(key path, value) of every `_target_` below `node`, the node itself included."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _targets(item, f"{path}[{i}]")


def check_roles(stored: dict[str, Any]) -> None:
    """Refuse a stored config whose `model`/`policy`/`data` name classes of the wrong kind, or that nests a
    `_target_` anywhere but inside the model (and there only `nn.Module` classes)."""
    from torch import nn

    for name in REBUILT:
        node = stored.get(name)
        if not isinstance(node, dict) or "_target_" not in node:
            raise StoredConfigError(f"the stored config has no `{name}._target_`; it cannot be rebuilt")
        for where, target in _targets(node, name):
            if where != name and name != "model":
                raise StoredConfigError(f"{where}._target_={target!r}: a checkpoint's {name} config may not nest "
                                        "objects to build")
            cls = _target_class(str(target), where)
            if name == "data":
                missing = [m for m in DATA_METHODS if not callable(getattr(cls, m, None))]
                if missing:
                    raise StoredConfigError(f"data._target_={target!r} is not a data class (it has no "
                                            f"{', '.join(missing)})")
            elif not issubclass(cls, nn.Module):
                raise StoredConfigError(f"{where}._target_={target!r} is not a torch.nn.Module; a checkpoint's "
                                        f"{name} config builds modules only")


def _writable_dirs(node: Any, path: str = "data") -> Iterator[tuple[dict[str, Any], str, str]]:
    """(parent node, key, key path) of the directories a data config writes to: `demo_dir` and
    `cache_dir`/`*_cache_dir`."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if isinstance(value, dict):
                yield from _writable_dirs(value, where)
            elif key == "demo_dir" or key == "cache_dir" or str(key).endswith("_cache_dir"):
                yield node, key, where


def _reroot(value: Any, stored_cache: str | None, cache_dir: Path, key: str) -> str | None:
    """`value` (a stored directory) moved under this command's cache dir: its part below the checkpoint's own
    `paths.cache_dir` when it lies there, else `<cache_dir>/checkpoint/<key>`."""
    if value in (None, ""):
        return None
    tail = None
    if stored_cache:
        try:
            tail = PurePosixPath(str(value)).relative_to(PurePosixPath(stored_cache))
        except ValueError:
            tail = None
    if tail is None or not tail.parts or any(p in ("..", "") for p in tail.parts):
        tail = PurePosixPath("checkpoint", re.sub(r"[^A-Za-z0-9_.-]", "_", key))
    return str(cache_dir.joinpath(*tail.parts))


def inference_config(stored: dict[str, Any], cache_dir: str | Path, data_overrides: DictConfig | None = None,
                     source: str = "checkpoint") -> DictConfig:
    """The `model`, `policy` and `data` of a stored config, roles checked, write paths re-rooted under
    `cache_dir` (this command's), the command's `+data.…` overrides merged last; read paths logged."""
    check_roles(stored)
    picked = {name: copy.deepcopy(stored[name]) for name in REBUILT}  # a stored config holds plain containers
    data = picked["data"]
    cache_dir = Path(cache_dir)
    stored_cache = (stored.get("paths") or {}).get("cache_dir")
    demo_old = data.get("demo_dir")
    for node, key, where in list(_writable_dirs(data)):
        node[key] = _reroot(node[key], stored_cache, cache_dir, where)
    demo_new = data.get("demo_dir")
    if data.get("demo") and demo_old and demo_new:  # demo files follow their directory
        files = data.get("files") or {}
        for split, path in files.items():
            if path and PurePosixPath(str(path)).is_relative_to(PurePosixPath(str(demo_old))):
                files[split] = str(Path(demo_new) / PurePosixPath(str(path)).relative_to(str(demo_old)))
    cfg = OmegaConf.create(picked)
    if data_overrides:
        if cfg.data.get("demo") and {"files", "file", "root"} & set(data_overrides) and "demo" not in data_overrides:
            data_overrides = OmegaConf.merge(data_overrides, {"demo": False})  # the user's own file, not demo data
        cfg.data = OmegaConf.merge(cfg.data, data_overrides)
    if not cfg.data.get("demo"):
        overridden = set(data_overrides or {})
        for key, path in _read_paths(cfg.data):
            if key.split(".")[1] not in overridden:
                log.info("reading %s=%s as the %s's config names it (read-only; replace it with +%s=<path>)",
                         key, path, source, key)
    return cfg


def _read_paths(data: DictConfig) -> Iterator[tuple[str, str]]:
    """The data files and folders a data config reads: `files.<split>`, `file`, `root`."""
    for split, path in (data.get("files") or {}).items():
        if path:
            yield f"data.files.{split}", str(path)
    for key in ("file", "root"):
        if data.get(key):
            yield f"data.{key}", str(data.get(key))
