"""The allowed range of every numeric setting the shipped configs have, in one table.

`core.validate_config` checks a composed config against it before anything is built; the Trainer, the
EMA and the schedulers check their own arguments against the same rules when they are constructed directly
(tests, benchmarks). Keys are config paths (`fnmatch` patterns where a key recurs, e.g. every `model.…dropout`)
and apply whichever `_target_` the node has (these names mean the same in every optimizer, model or data class);
keys of user `_target_`s that are not in the table are not range-checked. No torch import here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig


def range_error(key: str, value: float, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, note: str = "") -> str | None:
    """The message of `require_range` if `value` is outside the range (NaN is outside any), else None."""
    below = low is not None and not (value > low if low_open else value >= low)
    above = high is not None and not (value < high if high_open else value <= high)
    if not (below or above):
        return None
    if high is None:
        allowed = f"{'>' if low_open else '>='} {low}"
    elif low is None:
        allowed = f"{'<' if high_open else '<='} {high}"
    else:
        allowed = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return f"{key}={value!r} is out of range; allowed: {allowed}{f' {note}' if note else ''}"


@dataclass(frozen=True)
class Range:
    """Allowed values: numbers in [low, high] (bounds excluded with `low_open`/`high_open`), plus `special`
    values that mean something outside it (null = off, -1 = unlimited…), which `note` explains.

    With `fraction`, a float is a fraction in (0, 1] and an int a count in the range (`limit_*_batches`).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple[Any, ...] = ()
    fraction: bool = False
    note: str = ""

    def is_special(self, value: Any) -> bool:
        """`value` is one of `special`, type included (0 is not `false`, `true` is not 1)."""
        return any(value is None if s is None else (type(value) is type(s) and value == s) for s in self.special)


COUNT = Range(1)  # an int >= 1
NONNEG = Range(0)
PROBABILITY = Range(0, 1, high_open=True)  # dropout, smoothing, decay, betas: [0, 1)


def _optional_count(off: str) -> Range:
    return Range(1, special=(None,), note=f"(use null {off})")


def _limit(skip: str) -> Range:
    return Range(1, fraction=True, special=(None,),
                 note=f"(an int: that many batches; a float in (0, 1]: that fraction; null: all). {skip}")


RANGES: dict[str, Range] = {
    "seed": Range(0),
    "trainer.max_epochs": Range(1, special=(-1,), note="(-1: no epoch limit, trainer.max_steps > 0 decides)"),
    "trainer.max_steps": Range(1, special=(-1,), note="(use -1 to let trainer.max_epochs decide the run length)"),
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.gradient_clip_val": Range(0, low_open=True, special=(None, 0, 0.0),
                                       note="(the max gradient norm; use null or 0 to disable clipping)"),
    "trainer.val_every_n_epochs": _optional_count("to validate only by steps (trainer.val_every_n_steps) and at "
                                                  "the end of the run"),
    "trainer.val_every_n_steps": _optional_count("to disable validation by steps"),
    "trainer.checkpoint_every_n_steps": _optional_count("to disable checkpoints by steps; validations and epoch "
                                                        "ends still save"),
    "trainer.limit_train_batches": _limit("To train less, set trainer.max_steps."),
    "trainer.limit_val_batches": _limit("To skip validation, give no validation split (data.files.val=null); "
                                        "to validate less often, set trainer.val_every_n_epochs / "
                                        "trainer.val_every_n_steps."),
    "trainer.limit_test_batches": _limit("To skip the test, set trainer.test_after_fit=false."),
    "trainer.log_every_n_steps": COUNT,
    "trainer.save_top_k": Range(-1, note="(-1: keep every checkpoint, 0: none but last.ckpt)"),
    "trainer.early_stopping_patience": _optional_count("to disable early stopping"),
    "trainer.early_stopping_min_delta": NONNEG,
    "trainer.overfit_batches": Range(0, note="(0: off)"),
    "trainer.fast_dev_run": Range(1, special=(False, True), note="(or true = 1; use false to disable)"),
    "ema.decay": Range(0, 1, high_open=True, note="(use ema.enabled=false to disable EMA)"),
    "scheduler.warmup_steps": NONNEG,
    "scheduler.min_lr_ratio": Range(0, 1),
    "scheduler.step_size": COUNT,
    "scheduler.gamma": Range(0, 1, low_open=True),
    "optimizer.weight_decay": NONNEG,
    "optimizer.momentum": PROBABILITY,
    "optimizer.betas": PROBABILITY,
    "optimizer.eps": Range(0, low_open=True),
    "data.batch_size": COUNT,
    "data.eval_batch_size": COUNT,
    "data.num_workers": Range(0, note="(0: load in the main process)"),
    "data.preload_budget_mb": Range(0, note="(MB of decoded images data.preload=auto may keep in memory; 0: never)"),
    "data.max_length": COUNT,
    "data.max_eval_examples": Range(1, special=(None,), note="(null: all)"),
    "policy.label_smoothing": PROBABILITY,
    "policy.num_beams": COUNT,
    "policy.max_new_tokens": COUNT,
    "model.*dropout": PROBABILITY,
    "model.*input_noise": NONNEG,
    "model.lr": Range(0, low_open=True, special=(None,), note="(null: optimizer.lr)"),
    "model.*.lr": Range(0, low_open=True, special=(None,), note="(null: optimizer.lr)"),
}


def rule_for(key: str) -> Range | None:
    """The range of a config key (`trainer.max_steps`, `model.encoders.text.dropout`), None if unchecked."""
    if key in RANGES:
        return RANGES[key]
    return next((rule for pattern, rule in RANGES.items() if "*" in pattern and fnmatch.fnmatchcase(key, pattern)),
                None)


def range_errors(key: str, value: Any) -> list[str]:
    """Messages for `value` at `key` if it is outside the key's range (each element of a list: `key[i]`).

    Values that are not numbers (a wrong type) are left to the type check.
    """
    rule = rule_for(key)
    if rule is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [e for i, v in enumerate(value) for e in _errors(f"{key}[{i}]", v, rule)]
    return _errors(key, value, rule)


def _errors(key: str, value: Any, rule: Range) -> list[str]:
    if rule.is_special(value) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    if rule.fraction and isinstance(value, float):
        error = range_error(key, value, 0, 1, low_open=True, note=rule.note)
    else:
        error = range_error(key, value, rule.low, rule.high, low_open=rule.low_open, high_open=rule.high_open,
                            note=rule.note)
    return [error] if error else []


def require_ranges(prefix: str, values: Mapping[str, Any]) -> None:
    """Raise one ValueError listing every value of `values` (keys under `prefix`, e.g. a constructor's
    arguments) outside its range; keys without a rule are ignored."""
    errors = [e for name, value in values.items() for e in range_errors(f"{prefix}.{name}", value)]
    if errors:
        raise ValueError("\n  ".join(["invalid settings:", *errors]) if len(errors) > 1 else errors[0])
