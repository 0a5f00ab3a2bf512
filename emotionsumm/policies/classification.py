"""Classification policy: cross-entropy (label smoothing, class weights), probabilities, metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import require_range
from ..metrics import classification_metrics, collapse_warning, confusion_figure, confusion_matrix
from ..runs import confusion_file
from . import ModelHooks

log = logging.getLogger(__name__)


def class_weights_from_counts(counts: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency weights N / (C * n_c), 1 for classes absent from the training split."""
    counts_t = torch.tensor(counts, dtype=torch.float32)
    weights = counts_t.sum() / (len(counts) * counts_t.clamp_min(1))
    return torch.where(counts_t > 0, weights, torch.ones_like(weights))


class ClassificationPolicy(ModelHooks, nn.Module):
    """Wraps a model that maps a batch's inputs to class logits."""

    def __init__(self, model: nn.Module, class_names: Sequence[str], class_counts: Sequence[int] | None = None,
                 label_smoothing: float = 0.0, class_weights: str | Sequence[float] | None = None) -> None:
        super().__init__()
        require_range("policy.label_smoothing", label_smoothing, 0, 1, high_open=True)
        self.model = model
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        weights = None
        if class_weights == "auto":
            if class_counts is None:
                raise ValueError("policy.class_weights=auto needs the training split's class counts")
            weights = class_weights_from_counts(class_counts)
        elif class_weights is not None:
            if len(class_weights) != len(self.class_names):
                raise ValueError(f"policy.class_weights has {len(class_weights)} values for "
                                 f"{len(self.class_names)} classes {self.class_names}")
            weights = torch.tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    @staticmethod
    def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k != "labels"}

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**self._inputs(batch))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch).float(), batch["labels"], weight=self.class_weights,
                               label_smoothing=self.label_smoothing)

    def summary_metrics(self) -> tuple[str, ...]:
        """What the one-line validation log shows (besides the monitored metric)."""
        return ("acc", "macro_f1", "loss")

    @torch.no_grad()
    def predict_proba(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits(batch).float().softmax(-1)

    def predict_rows(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """`label<TAB>probability` per example (what `predict` prints)."""
        conf, idx = self.predict_proba(batch).max(-1)
        return [f"{self.class_names[i]}\t{p:.4f}" for i, p in zip(idx.tolist(), conf.tolist())]

    def eval_state(self) -> dict[str, torch.Tensor]:
        n = len(self.class_names)
        return {"confusion": torch.zeros(n, n, dtype=torch.float64), "loss_sum": torch.zeros((), dtype=torch.float64)}

    def evaluation_step(self, batch: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
        logits = self.logits(batch).float()
        labels = batch["labels"]
        state["loss_sum"] += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
        state["confusion"] += confusion_matrix(logits.argmax(-1).cpu(), labels.cpu(), len(self.class_names))

    def compute_metrics(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        metrics = classification_metrics(state["confusion"], self.class_names)
        metrics["loss"] = float(state["loss_sum"] / state["confusion"].sum().clamp_min(1))
        return metrics

    def log_artifacts(self, state: dict[str, torch.Tensor], logger: Any, prefix: str, step: int,
                      run_dir: str | Path | None) -> None:
        """Confusion matrix as a TensorBoard image and a PNG in the run dir; a warning if predictions collapsed."""
        warning = collapse_warning(state["confusion"], self.class_names)
        if warning:
            log.warning("%s at step %d: %s", prefix, step, warning)
        figure = confusion_figure(state["confusion"], self.class_names, f"{prefix} confusion matrix (step {step})")
        if run_dir is not None:
            figure.savefig(Path(run_dir) / confusion_file(prefix), dpi=100)
        logger.log_figure(f"{prefix}/confusion_matrix", figure, step)  # closes the figure
