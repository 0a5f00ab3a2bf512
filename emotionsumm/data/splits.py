"""Train/val/test splits and k-fold selection: random (stratified), predefined, or by group.

Group splits keep every group (a speaker, a subject) inside one split, so a model is never tested on a
person it was trained on. Everything is a pure function of the inputs and the seed (`TableData` applies
it to the rows of every modality).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..config.core import require_choice, require_range

SPLITS = ("train", "val", "test")
STRATEGIES = ("files", "random", "predefined", "group")


def _cut(items: list[Any], ratios: list[float]) -> list[list[Any]]:
    n_val = round(len(items) * ratios[1])
    n_test = round(len(items) * ratios[2])
    n_train = len(items) - n_val - n_test
    return [items[:n_train], items[n_train:n_train + n_val], items[n_train + n_val:]]


def split_indices(n: int, strategy: str = "random", ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                  labels: Sequence[Any] | None = None, groups: Sequence[Any] | None = None,
                  predefined: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Indices of rows for each of train/val/test.

    `random` shuffles within each label (stratified) when labels are given; `group` assigns whole groups
    (shuffled, then cut by ratio of groups); `predefined` (or `files`) reads each row's split name.
    """
    require_choice("data.split", strategy, STRATEGIES)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if strategy in ("predefined", "files"):
        if predefined is None:
            raise ValueError("data.split=predefined needs a split column (data.split_column)")
        for i, name in enumerate(predefined):
            if name not in out:
                raise ValueError(f"row {i}: split {name!r} is not one of {list(SPLITS)} (data.split_column)")
            out[name].append(i)
        return out
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"data.split_ratios={ratios} must be three non-negative numbers (train, val, test) "
                         "that sum to 1")
    rng = random.Random(seed)
    if strategy == "group":
        if groups is None:
            raise ValueError("data.split=group needs a group per row (data.group_column or data.group_regex)")
        unique = sorted({str(g) for g in groups})
        rng.shuffle(unique)
        if len(unique) < sum(1 for r in ratios if r > 0):
            raise ValueError(f"data.split=group: {len(unique)} group(s) cannot fill {sum(r > 0 for r in ratios)} "
                             "splits; lower the number of splits or use data.split=random")
        where = {g: name for name, part in zip(SPLITS, _cut(unique, ratios)) for g in part}
        for i, g in enumerate(groups):
            out[where[str(g)]].append(i)
        return out
    by_label: dict[Any, list[int]] = defaultdict(list)
    for i in range(n):
        by_label[labels[i] if labels is not None else 0].append(i)
    for key in sorted(by_label, key=str):
        members = by_label[key]
        rng.shuffle(members)
        for name, part in zip(SPLITS, _cut(members, ratios)):
            out[name].extend(part)
    return {name: sorted(idx) for name, idx in out.items()}


def kfold_indices(indices: Sequence[int], num_folds: int, fold: int, seed: int = 0,
                  labels: Sequence[Any] | None = None,
                  groups: Sequence[Any] | None = None) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of fold `fold` of a stratified or group-aware K-fold.

    `labels`/`groups` are aligned with `indices`. With groups, whole groups are dealt to folds;
    otherwise each label's rows are dealt round-robin, so every fold has the class balance.
    """
    require_range("data.num_folds", num_folds, 2)
    require_range("data.fold", fold, 0, num_folds - 1)
    rng = random.Random(seed)
    fold_of: dict[int, int] = {}
    if groups is not None:
        unique = sorted({str(g) for g in groups})
        if len(unique) < num_folds:
            raise ValueError(f"data.num_folds={num_folds} exceeds the {len(unique)} groups")
        rng.shuffle(unique)
        group_fold = {g: i % num_folds for i, g in enumerate(unique)}
        fold_of = {pos: group_fold[str(g)] for pos, g in enumerate(groups)}
    else:
        by_label: dict[Any, list[int]] = defaultdict(list)
        for pos in range(len(indices)):
            by_label[labels[pos] if labels is not None else 0].append(pos)
        offset = 0
        for key in sorted(by_label, key=str):
            members = by_label[key]
            rng.shuffle(members)
            for j, pos in enumerate(members):
                fold_of[pos] = (j + offset) % num_folds
            offset += len(members)
    train = [indices[p] for p in range(len(indices)) if fold_of[p] != fold]
    held = [indices[p] for p in range(len(indices)) if fold_of[p] == fold]
    return train, held
