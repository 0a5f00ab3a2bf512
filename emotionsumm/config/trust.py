"""Which `_target_`s may be built from a config someone else wrote: a checkpoint's stored config.

`evaluate`, `predict`, resume and the test after fit rebuild objects from the config inside a checkpoint
with Hydra's `instantiate`, which calls whatever `_target_` names (`builtins.open`, `shutil.copyfile`,
`os.system`...). Checkpoints are shared, so that config is data, never code. What may be built is the
decision of the person running the command, never of the checkpoint: a `Trust` built by each entry
point from its own composed config (`command_trust`) allows
- classes defined in the emotionsumm package;
- targets named by the shipped `conf/` (torch optimizers, the emotionsumm schedulers...) or by the config
  dirs this command composes (`hydra.searchpath=[file://…]`, `pkg://…`, `--config-dir`): a lab's own configs;
- classes and functions defined inside the packages named by `trust=[mylab, …]` (on dotted boundaries:
  `mylab` trusts `mylab.models.X`, not `mylabx.Y`).
Nothing stored in a checkpoint (its `trust`, its searchpath) widens this: the checkpoint's config is only
ever checked, never read for trust. The standard library, emotionsumm itself and the libraries it builds on
cannot be trusted wholesale (`UNTRUSTABLE`): they are full of callables that open, write, unpickle or run
code; name the exact target in a config of your own instead.

A string is judged before anything is imported (an import runs code): only emotionsumm modules and those
of trusted packages are ever imported here, and the object reached must be defined there (not a re-export
such as `emotionsumm.config.builders.instantiate` or `mylab.models.os.system`). emotionsumm functions are
allowed only when a config names them: emotionsumm's own helpers write files at given paths (`atomic_write_text`).
A name from before the packages by role (`emotionsumm.trainer.Trainer`) is judged by the name it has now
(`config.renames`): allowed exactly when that one is. Interpolations (`${...}`) are refused too: a stored
config is already resolved, and a resolver (`oc.env`, custom ones) would be chosen by the config's author.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Iterable, Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from .core import CONFIG_DIR
from .renames import current_target

PACKAGE = "emotionsumm"
# top-level packages `trust=[…]` refuses: the standard library, emotionsumm (its helpers write files) and the
# libraries it builds on (torch.load unpickles, hydra.utils.call calls anything, transformers runs remote code...)
UNTRUSTABLE = frozenset(sys.stdlib_module_names) | {
    PACKAGE, "torch", "torchvision", "torchaudio", "hydra", "hydra_plugins", "omegaconf", "transformers",
    "tokenizers", "huggingface_hub", "safetensors", "numpy", "yaml", "tensorboard", "tqdm", "matplotlib", "soundfile",
    "rouge_score", "sklearn", "scipy", "mlflow", "optuna", "submitit", "joblib", "pip", "setuptools", "pkg_resources",
    "pytest", "_pytest",
}


class UntrustedConfigError(ValueError):
    """A stored config names a `_target_` that is not allowed, or holds an interpolation."""


def _walk_yaml(root: Traversable, top: str = "") -> Iterator[tuple[str, Traversable]]:
    """(top-level dir name, file) for every YAML file under `root`, in a stable order."""
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk_yaml(entry, top or entry.name)
        elif entry.name.endswith(".yaml"):
            yield top, entry


def _config_root(conf_dir: str) -> Traversable | None:
    """A config dir as Hydra names it (`/path`, `file:///path`, `pkg://package.conf`), None if absent."""
    if conf_dir.startswith("pkg://"):
        try:
            root: Traversable = resources.files(conf_dir[len("pkg://"):])
        except (ModuleNotFoundError, TypeError):
            return None
    else:
        root = Path(conf_dir.removeprefix("file://"))
    return root if root.is_dir() else None


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

    root = _config_root(conf_dir)
    for top, file in _walk_yaml(root) if root is not None else ():
        walk(yaml.safe_load(file.read_text(encoding="utf-8")), top == "hydra")
    return frozenset(found)


def _within(name: str, package: str) -> bool:
    """`name` is `package` or inside it, on a dotted boundary (`mylab` holds `mylab.x`, not `mylabx`)."""
    return name == package or name.startswith(package + ".")


def _defined_object(target: str, package: str) -> Any:
    """The object `target` names, found as Hydra finds it but through modules of `package` only; else None."""
    parts = target.split(".")
    if len(parts) < 2 or any(not p.isidentifier() or p.startswith("__") for p in parts):
        return None
    root = parts[0]
    obj: Any = importlib.import_module(root)
    for i in range(1, len(parts) - 1):  # every step before the last must be a module of the package itself
        name = ".".join(parts[: i + 1])
        child = getattr(obj, parts[i], None)
        if child is None:
            try:  # a submodule of a package: the finders look inside it only
                child = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name == name:
                    return None
                raise
        if child is not sys.modules.get(name):  # e.g. `emotionsumm.training.checkpoint.os`: a re-export
            return None
        obj = child
    found = getattr(obj, parts[-1], None)
    return found if _within(getattr(found, "__module__", None) or "", package) else None


def trust_error(package: Any) -> str | None:
    """Why `package` cannot be an entry of `trust=[…]`, or None when it can."""
    if not isinstance(package, str) or not package or not all(
            p.isidentifier() and not p.startswith("__") for p in package.split(".")):
        return f"trust entry {package!r} is not a package name (e.g. trust=[mylab] or trust=[mylab.models])"
    if package.split(".")[0] in UNTRUSTABLE:
        return (f"trust=[{package}] is refused: {package.split('.')[0]!r} is the standard library, emotionsumm or "
                "a library it builds on, whose functions open, write, unpickle or run code; trust your own package, "
                "or name the exact target in a config of yours (hydra.searchpath=[file://<your conf>])")
    return None


class Trust:
    """What a stored config may build, as the running command decides (immutable; see the module docstring).

    A plain class rather than a dataclass: Hydra's `instantiate` would turn a dataclass kwarg into a config.
    """

    __slots__ = ("_packages", "_conf_dirs")

    def __init__(self, packages: Iterable[str] = (), conf_dirs: Iterable[str] = ()) -> None:
        packages, conf_dirs = tuple(packages), tuple(conf_dirs)
        errors = [e for e in map(trust_error, packages) if e]
        if errors:
            raise ValueError("; ".join(errors))
        object.__setattr__(self, "_packages", packages)
        object.__setattr__(self, "_conf_dirs", conf_dirs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Trust is immutable")

    @property
    def packages(self) -> tuple[str, ...]:
        """Packages named by `trust=[…]`."""
        return self._packages

    @property
    def conf_dirs(self) -> tuple[str, ...]:
        """Config dirs this command composes besides the shipped one (`file://…`, `pkg://…`)."""
        return self._conf_dirs

    def __repr__(self) -> str:
        return f"Trust(packages={list(self._packages)}, conf_dirs={list(self._conf_dirs)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trust) and (self._packages, self._conf_dirs) == (other._packages, other._conf_dirs)

    def __hash__(self) -> int:
        return hash((self._packages, self._conf_dirs))

    def named_by_configs(self, target: str) -> bool:
        """A config of the shipped `conf/` or of a dir this command composes names `target`."""
        return any(target in conf_targets(d) for d in (CONFIG_DIR, *self._conf_dirs))

    def refusal(self, target: Any) -> str | None:
        """Why `target` may not be built from a stored config, or None when it may."""
        if not isinstance(target, str):
            return f"is of type {type(target).__name__}, not a string naming a class"
        target = current_target(target)  # a checkpoint written before the packages by role: judged by its new name
        if self.named_by_configs(target):
            return None
        if _within(target, PACKAGE):
            obj = _defined_object(target, PACKAGE)
            if inspect.isclass(obj):
                return None
            return "is not an emotionsumm class or a target named by the configs this command composes"
        package = next((p for p in self._packages if _within(target, p)), None)
        if package is not None:
            obj = _defined_object(target, package)  # imported only now: the user trusts this package
            if callable(obj):
                return None
            return f"is not a class or function defined in the trusted package {package!r}"
        top = target.split(".")[0]
        if trust_error(top) is not None:  # not a package name, or one that cannot be trusted
            return ("is not an emotionsumm class, not named by the configs this command composes and not inside "
                    "a package you trust (trust=[…] cannot name the standard library or the libraries emotionsumm "
                    "builds on: name such a target in a config of yours on hydra.searchpath)")
        return ("is not an emotionsumm class, not named by the configs this command composes and not inside a "
                f"package you trust; if you trust the code of {top!r}, add trust=[{', '.join([*self._packages, top])}] "
                f"to the command (or name the target in a config of yours on hydra.searchpath)")


SHIPPED = Trust()  # the shipped configs and emotionsumm's classes only: what a command trusts by default


def command_trust(cfg: Any) -> Trust:
    """The Trust of the running command: its composed `trust` list and the config dirs Hydra composed for it
    (`hydra.searchpath`, `--config-dir`). Nothing of a checkpoint is read here."""
    packages = cfg.get("trust") or []
    if isinstance(packages, str) or not isinstance(packages, Iterable):
        raise ValueError(f"trust={packages!r} is not a list; write trust=[mylab] (packages whose code you trust)")
    conf_dirs: list[str] = []
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.get("config_sources") or []:
            if source.provider == "command-line" or str(source.provider).startswith("hydra.searchpath"):
                conf_dirs.append(f"{source.schema}://{source.path}")
    return Trust(packages, conf_dirs)


def refusal(target: Any, trust: Trust = SHIPPED) -> str | None:
    """Why `target` may not be built from a stored config under `trust`, or None when it may."""
    return trust.refusal(target)


def check_config(config: Any, path: str = "", trust: Trust = SHIPPED) -> None:
    """Raise UntrustedConfigError naming the key path of the first refused `_target_` or interpolation."""
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "${" in key:
                raise UntrustedConfigError(f"key {where!r} is an interpolation; a stored config is resolved")
            if key == "_target_" and (reason := trust.refusal(value)) is not None:
                raise UntrustedConfigError(f"{where}={value!r} {reason}")
            check_config(value, where, trust)
    elif isinstance(config, (list, tuple)):
        for i, item in enumerate(config):
            check_config(item, f"{path}[{i}]", trust)
    elif isinstance(config, str) and "${" in config:
        raise UntrustedConfigError(f"{path}={config!r} is an interpolation; a stored config is already resolved, "
                                   "so only a hand-edited one holds one")
