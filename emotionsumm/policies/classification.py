"""Classification policy: cross-entropy (label smoothing, class weights), probabilities, metrics; or, for a
regression task (one score per example, e.g. GLUE's STS-B), mean squared error and correlations."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config.core import require_choice, require_range
from ..metrics.classification import (
    CONFUSION_METRICS,
    REGRESSION_METRICS,
    classification_metrics,
    collapse_warning,
    confusion_figure,
    confusion_matrix,
    regression_metrics,
)
from . import ModelHooks, confusion_file

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")
CLASSIFICATION_METRICS = ("acc", "macro_f1", "weighted_f1", "uar", *CONFUSION_METRICS)


def class_weights_from_counts(counts: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency weights N / (C * n_c), 1 for classes absent from the training split."""
    counts_t = torch.tensor(counts, dtype=torch.float32)
    weights = counts_t.sum() / (len(counts) * counts_t.clamp_min(1))
    return torch.where(counts_t > 0, weights, torch.ones_like(weights))


class ClassificationPolicy(ModelHooks, nn.Module):
    """Wraps a model that maps a batch's inputs to class logits, or with `task=regression` to one score per
    example (the data sets `task`: classes do not exist for a regression task).

    `score_metrics` name the task's official metrics (e.g. [f1, acc] for GLUE's MRPC, [mcc] for CoLA);
    `mcc` and `f1` (F1 of class 1) are computed only when named, and the mean of the named metrics is
    logged as `score`: the task's one number, to monitor and to average over a benchmark.
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str], class_counts: Sequence[int] | None = None,
                 label_smoothing: float = 0.0, class_weights: str | Sequence[float] | None = None,
                 task: str = "classification", score_metrics: Sequence[str] | None = None) -> None:
        super().__init__()
        require_choice("policy.task", task, TASKS)
        require_range("policy.label_smoothing", label_smoothing, 0, 1, high_open=True)
        self.model = model
        self.task = task
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.score_metrics = list(score_metrics or [])
        for name in self.score_metrics:
            require_choice("score_metrics", name, REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS)
        if "f1" in self.score_metrics and len(self.class_names) != 2:
            raise ValueError(f"score_metrics: f1 (the F1 of class 1) needs two classes, not {self.class_names}")
        if self.regression and (class_weights is not None or label_smoothing):
            raise ValueError("policy.class_weights and policy.label_smoothing apply to classification only; the data "
                             "is a regression task (set them to null and 0)")
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

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @staticmethod
    def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k != "labels"}

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**self._inputs(batch))

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A regression model's one output per example, as a [batch] float tensor."""
        out = self.logits(batch).float()
        if out.shape[-1] != 1:
            raise ValueError(f"a regression task needs one model output per example, got {out.shape[-1]}")
        return out.squeeze(-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(self.scores(batch), batch["labels"].float())
        return F.cross_entropy(self.logits(batch).float(), batch["labels"], weight=self.class_weights,
                               label_smoothing=self.label_smoothing)

    def summary_metrics(self) -> tuple[str, ...]:
        """What the one-line validation log shows (besides the monitored metric)."""
        return ("pearson", "spearman", "loss") if self.regression else ("acc", "macro_f1", "loss")

    @torch.no_grad()
    def predict_proba(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits(batch).float().softmax(-1)

    def predict_rows(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """`label<TAB>probability` per example (what `predict` prints); the predicted score for regression."""
        if self.regression:
            with torch.no_grad():
                return [f"{score:.4f}" for score in self.scores(batch).tolist()]
        conf, idx = self.predict_proba(batch).max(-1)
        return [f"{self.class_names[i]}\t{p:.4f}" for i, p in zip(idx.tolist(), conf.tolist())]

    def eval_state(self) -> dict[str, Any]:
        loss_sum = torch.zeros((), dtype=torch.float64)
        if self.regression:  # correlations need every prediction: lists, concatenated across ranks
            return {"predictions": [], "targets": [], "loss_sum": loss_sum}
        n = len(self.class_names)
        return {"confusion": torch.zeros(n, n, dtype=torch.float64), "loss_sum": loss_sum}

    def evaluation_step(self, batch: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        labels = batch["labels"]
        if self.regression:
            scores, targets = self.scores(batch), labels.float()
            state["loss_sum"] += F.mse_loss(scores, targets, reduction="sum").double().cpu()
            state["predictions"] += scores.tolist()
            state["targets"] += targets.tolist()
            return
        logits = self.logits(batch).float()
        state["loss_sum"] += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
        state["confusion"] += confusion_matrix(logits.argmax(-1).cpu(), labels.cpu(), len(self.class_names))

    def compute_metrics(self, state: dict[str, Any]) -> dict[str, float]:
        if self.regression:
            count = len(state["targets"])
            metrics = regression_metrics(torch.tensor(state["predictions"]), torch.tensor(state["targets"]))
        else:
            count = float(state["confusion"].sum())
            metrics = classification_metrics(state["confusion"], self.class_names)
            metrics.update({name: CONFUSION_METRICS[name](state["confusion"]) for name in self.score_metrics
                            if name in CONFUSION_METRICS})
        metrics["loss"] = float(state["loss_sum"] / max(count, 1))
        if self.score_metrics:
            metrics["score"] = sum(metrics[name] for name in self.score_metrics) / len(self.score_metrics)
        return metrics

    def log_artifacts(self, state: dict[str, Any], logger: Any, prefix: str, step: int,
                      run_dir: str | Path | None) -> None:
        """Confusion matrix as a TensorBoard image and a PNG in the run dir; a warning if predictions collapsed.
        A regression task has no confusion matrix: nothing to draw."""
        if self.regression:
            return
        warning = collapse_warning(state["confusion"], self.class_names)
        if warning:
            log.warning("%s at step %d: %s", prefix, step, warning)
        figure = confusion_figure(state["confusion"], self.class_names, f"{prefix} confusion matrix (step {step})")
        if run_dir is not None:
            figure.savefig(Path(run_dir) / confusion_file(prefix), dpi=100)
        logger.log_figure(f"{prefix}/confusion_matrix", figure, step)  # closes the figure
