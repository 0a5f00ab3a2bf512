"""Where each module of the flat layout (before the packages by role) lives now, for checkpoints written then.

A checkpoint's stored config names its `_target_`s by the module paths of the code that wrote it
(`emotionsumm.trainer.Trainer`, `emotionsumm.loggers.TensorBoardLogger`, `emotionsumm.sweep.SweepCallback`...).
Rather than shim modules at the old paths (re-exports, which the trust check refuses on purpose), one explicit
table: the trust check judges an old name by its new name (`config.trust`: allowed exactly when the new one is),
and `training.checkpoint.load_checkpoint` hands an accepted stored config on with the new names, so whatever is
rebuilt from it (model, policy, data; on resume the config compared with the running one) names modules that
exist. Only `emotionsumm.<old module>.<name>` is renamed: every old target named a class or function at the top
of a flat module; nothing else changes (a name not in the table is judged as it is, and refused if it names
nothing).
"""

from __future__ import annotations

from typing import Any

# old dotted module -> the module it became (issue 27); never shrinks, so old checkpoints keep loading
MOVED_MODULES: dict[str, str] = {
    "emotionsumm.trainer": "emotionsumm.training.trainer",
    "emotionsumm.state": "emotionsumm.training.state",
    "emotionsumm.checkpoint": "emotionsumm.training.checkpoint",
    "emotionsumm.ema": "emotionsumm.training.ema",
    "emotionsumm.interrupt": "emotionsumm.training.stop",
    "emotionsumm.loaders": "emotionsumm.training.loaders",
    "emotionsumm.sampling": "emotionsumm.training.sampling",
    "emotionsumm.evaluation": "emotionsumm.training.scoring",
    "emotionsumm.meter": "emotionsumm.training.step_checks",
    "emotionsumm.optim": "emotionsumm.training.optim",
    "emotionsumm.schedulers": "emotionsumm.training.schedulers",
    "emotionsumm.devices": "emotionsumm.training.devices",
    "emotionsumm.distributed": "emotionsumm.training.distributed",
    "emotionsumm.seed": "emotionsumm.training.seed",
    "emotionsumm.loggers": "emotionsumm.tracking.loggers",
    "emotionsumm.mlflow_logger": "emotionsumm.tracking.mlflow_logger",
    "emotionsumm.plots": "emotionsumm.tracking.plots",
    "emotionsumm.progress": "emotionsumm.tracking.progress",
    "emotionsumm.runs": "emotionsumm.runs.layout",
    "emotionsumm.runlock": "emotionsumm.runs.lock",
    "emotionsumm.io": "emotionsumm.runs.atomic",
    "emotionsumm.provenance": "emotionsumm.runs.provenance",
    "emotionsumm.sweep": "emotionsumm.runs.sweep",
    "emotionsumm.config": "emotionsumm.config.core",
    "emotionsumm.ranges": "emotionsumm.config.ranges",
    "emotionsumm.runtime": "emotionsumm.config.builders",
    "emotionsumm.target_allowlist": "emotionsumm.config.trust",
    "emotionsumm.stored_config": "emotionsumm.config.stored",
    "emotionsumm.metrics": "emotionsumm.metrics.classification",
    "emotionsumm.rouge": "emotionsumm.metrics.rouge",
    "emotionsumm.baselines": "emotionsumm.metrics.baselines",
    "emotionsumm.quantize": "emotionsumm.models.quantize",
    "emotionsumm.pretrained": "emotionsumm.models.pretrained",
}


def current_target(target: str) -> str:
    """`emotionsumm.<old module>.<name>` under today's module (`emotionsumm.trainer.Trainer` ->
    `emotionsumm.training.trainer.Trainer`); any other string as it is. Exactly three parts: `emotionsumm.runs`
    and `emotionsumm.config` are packages now, so `emotionsumm.runs.sweep.SweepCallback` is a new name."""
    module, dot, name = target.rpartition(".")
    if dot and module in MOVED_MODULES and module.count(".") == 1:
        return f"{MOVED_MODULES[module]}.{name}"
    return target


def current_targets(config: Any) -> Any:
    """A copy of a stored config (plain dicts and lists) with every `_target_` under today's module names."""
    if isinstance(config, dict):
        return {key: current_target(value) if key == "_target_" and isinstance(value, str) else current_targets(value)
                for key, value in config.items()}
    if isinstance(config, list):
        return [current_targets(item) for item in config]
    return config
