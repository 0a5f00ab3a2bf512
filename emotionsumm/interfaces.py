"""The two contracts of the framework, written down once (in the spirit of torchtune's recipe interfaces).

The trainer talks to a `Data` object and a `Policy` and to nothing else: it never asks which task,
modality or metric it is running. Entry points (`train`, `evaluate`, `predict`) build both from the
config and also use `DataBuilder`/`Predictable`/`FeatureManifestData` below. Every data class and policy of the package
implements these without inheriting from them (a Protocol is checked by its shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

Batch = dict[str, Any]
EvalState = dict[str, Any]  # tensors are summed across DDP ranks, lists concatenated in rank order


@runtime_checkable
class Data(Protocol):
    """What the trainer takes from a data object."""

    batch_size: int  # examples per training batch (per rank)
    eval_batch_size: int
    num_workers: int

    def dataset(self, split: str) -> Dataset | None:
        """The examples of `train`, `val` or `test` (None if the split is absent)."""

    def collate(self, examples: list[Any]) -> Batch:
        """A batch (a dict of tensors and lists) from examples of `dataset(...)`."""

    def train_batches(self) -> list[list[int]] | None:
        """Fixed groups of training example indices, one group per batch (e.g. length buckets), that the
        trainer shuffles, shards and resumes as units; None: batches of `batch_size` drawn freely."""

    def sample_weights(self) -> Sequence[float] | None:
        """One weight per training example to draw it with (e.g. class-balanced); None: a permutation."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep to rebuild the same data later (classes, tokenizer, normaliser)."""


class DataBuilder(Data, Protocol):
    """What the entry points additionally use: set-up and what model and policy need to know."""

    def setup(self, run_dir: str | Path | None, splits: Sequence[str]) -> None:
        """Read, split and prepare the requested splits (writes e.g. the tokenizer into run_dir)."""

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments only the data knows (num_classes, vocab size, feature sizes)."""

    def policy_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the policy (class names and counts, tokenizer)."""

    def predict_dataset(self, source: str) -> Dataset:
        """Unlabelled inputs of `predict` from a file or '-' (stdin)."""


@runtime_checkable
class Policy(Protocol):
    """What the trainer takes from a policy: an `nn.Module` that wraps the model for one task."""

    def __call__(self, batch: Batch) -> torch.Tensor:
        """The training loss of a batch (called through DDP, so gradients are synchronised)."""

    def eval_state(self) -> EvalState:
        """Zeroed statistics for one evaluation pass."""

    def evaluation_step(self, batch: Batch, state: EvalState) -> None:
        """Add one batch's statistics to `state`."""

    def compute_metrics(self, state: EvalState) -> dict[str, float]:
        """Metrics of a whole split from its gathered statistics."""

    def log_artifacts(self, state: EvalState, logger: Any, prefix: str, step: int, run_dir: Path | None) -> None:
        """Figures, tables or files for a split; rank 0 only."""

    def summary_metrics(self) -> tuple[str, ...]:
        """Metric names (without split prefix) worth a place in the one-line validation log."""

    def on_epoch_start(self, epoch: int) -> bool:
        """Freeze/unfreeze schedule; True if the set of trainable parameters changed (DDP re-wraps)."""

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        """Named parts (e.g. encoder, head) as parameter-name prefixes, for per-part learning rates."""

    def param_lrs(self) -> dict[str, float]:
        """Default learning rates of parts (e.g. a pretrained encoder's); `group_lr` overrides them."""


class Predictable(Protocol):
    """What `predict` prints for a batch: one line per example."""

    def predict_rows(self, batch: Batch) -> list[str]: ...


@runtime_checkable
class BaselineData(Protocol):
    """Classification data that gives the baselines (`metrics/class_baselines.py`) a cheap fixed representation of
    the examples of a set-up split, in the order of `dataset(split).labels`."""

    def baseline_views(self, split: str, rows: Sequence[int] | None = None) -> dict[str, list[str] | np.ndarray]:
        """Modality -> its texts (bag of words) or a float array [N, D] (NaN rows: the modality is missing), of
        every example of the split or only of `rows` (indices into it, in that order)."""


@runtime_checkable
class FeatureManifestData(Protocol):
    """Data read from a manifest that can write it back with a column of exported embeddings: what
    `predict export_embeddings=true embeddings_manifest=<file>` needs (the first stage of feature fusion)."""

    def feature_manifest(self, source: str, names: Sequence[str], embeddings: Path, column: str,
                         target: Path) -> str:
        """JSONL text of a manifest at `target`: the rows of manifest `source` plus `column` referring to the
        row's embedding in `embeddings` (`names`: the predicted rows in order)."""
