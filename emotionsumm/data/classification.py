"""What every classification data object shares, whatever the modality.

Class names (given or inferred, kept in the checkpoint), label ids with errors that point at the
file and line, class counts, k-fold selection inside the training split, class-balanced sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .splits import kfold_indices


class Label(NamedTuple):
    """A raw label value and where it was read ("file:line"), for error messages."""

    value: Any
    where: str


def as_int(value: Any) -> int | None:
    """An int label id from an int or a digit string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


class ClassificationData:
    """Base of the emotion data objects (text, audio, image, multimodal).

    Subclasses read their rows, call `fix_classes`/`label_ids`, optionally `take_fold`, and fill
    `self.datasets[split]` with Datasets that have a `labels` list (class ids, or None when
    unlabelled).
    """

    def __init__(self, class_names: Sequence[str] | None = None, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, balanced_sampling: bool = False,
                 num_folds: int | None = None, fold: int = 0, seed: int = 0,
                 state: dict[str, Any] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} is out of range; allowed: >= 1")
        if num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers} is out of range; allowed: >= 0")
        state = state or {}
        self.class_names: list[str] | None = list(state.get("class_names") or class_names or []) or None
        self.class_counts: list[int] | None = state.get("class_counts")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.balanced_sampling = balanced_sampling
        self.num_folds, self.fold, self.seed = num_folds, fold, seed
        self.datasets: dict[str, Any] = {}

    def fix_classes(self, train_labels: Sequence[Label]) -> None:
        """Infer class names from the training labels unless given (ids -> "0".."n-1", else sorted names)."""
        if self.class_names is not None:
            return
        values = [label.value for label in train_labels]
        if values and all(as_int(v) is not None for v in values):
            self.class_names = [str(i) for i in range(max(as_int(v) for v in values) + 1)]
        else:
            self.class_names = sorted({str(v) for v in values})

    def label_ids(self, labels: Sequence[Label]) -> list[int]:
        """Map names or ids to class ids; an unknown label names its file and line."""
        index = {name: i for i, name in enumerate(self.class_names)}
        ids = []
        for value, where in labels:
            if str(value) in index:
                ids.append(index[str(value)])
            elif (number := as_int(value)) is not None and 0 <= number < len(self.class_names):
                ids.append(number)
            else:
                raise ValueError(f"{where}: label {value!r} is not one of the classes {self.class_names} "
                                 f"(ids 0..{len(self.class_names) - 1}); fix the row or set data.class_names")
        return ids

    def count_classes(self, train_ids: Sequence[int]) -> None:
        self.class_counts = [list(train_ids).count(c) for c in range(len(self.class_names))]

    def take_fold(self, train_ids: Sequence[int], groups: Sequence[Any] | None = None) -> tuple[list[int], list[int]]:
        """With `num_folds`, (training rows, held-out rows) of fold `fold` of the training split.

        Stratified by label, or group-aware when `groups` are given (no group in both parts).
        Positions refer to the training split's rows.
        """
        positions = list(range(len(train_ids)))
        return kfold_indices(positions, self.num_folds, self.fold, seed=self.seed, labels=list(train_ids),
                             groups=groups)

    # ---- what the trainer, model and policy need ------------------------------------------
    def dataset(self, split: str) -> Any:
        return self.datasets.get(split)

    def train_batches(self) -> list[list[int]] | None:
        """Batches are drawn freely (no fixed groups)."""
        return None

    def sample_weights(self) -> list[float] | None:
        """With `balanced_sampling`, draw training examples in inverse proportion to class size."""
        if not self.balanced_sampling:
            return None
        return [1.0 / self.class_counts[y] for y in self.datasets["train"].labels]

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.class_names)}

    def policy_kwargs(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "class_counts": self.class_counts}

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "class_counts": self.class_counts}
