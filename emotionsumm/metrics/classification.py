"""Classification metrics computed from a confusion matrix; regression metrics from predicted scores.

A confusion matrix is additive, so summing it across batches and DDP ranks and deriving the
metrics afterwards gives exactly the metrics of the whole split. Correlations need every prediction,
so a regression evaluation gathers them instead.
"""

from __future__ import annotations

from typing import Any

import torch


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts as a float64 tensor (float so it can be all-reduced anywhere)."""
    index = targets.long() * num_classes + preds.long()
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to(torch.float64)


def classification_metrics(cm: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1, weighted-F1, UAR (balanced accuracy), per-class F1, and how spread the
    predictions are: `pred_classes` (classes predicted at least once) and `pred_top_share` (share of
    the most predicted class), which expose a classifier collapsed onto one class."""
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    total = cm.sum().clamp_min(1)
    precision = tp / predicted.clamp_min(1)
    recall = tp / support.clamp_min(1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    present = support > 0
    out = {
        "acc": float(tp.sum() / total),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / total),
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "pred_classes": int((predicted > 0).sum()),
        "pred_top_share": float(predicted.max() / total) if len(class_names) else 0.0,
    }
    for name, value in zip(class_names, f1.tolist()):
        out[f"f1_{name}"] = value
    return out


def confusion_figure(cm: torch.Tensor, class_names: list[str], title: str = "confusion matrix") -> Any:
    """A matplotlib figure of the row-normalised confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = cm.cpu().numpy()
    norm = counts / counts.sum(1, keepdims=True).clip(min=1)
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.tight_layout()
    return fig


def collapse_warning(cm: torch.Tensor, class_names: list[str], margin: float = 0.2) -> str | None:
    """A warning when the predictions cover a single class, or when the most predicted class takes a
    share far (`margin`) above the largest true class share; None when the predictions look spread."""
    cm = cm.double()
    total = float(cm.sum())
    if total == 0 or len(class_names) < 2:
        return None
    predicted, support = cm.sum(0), cm.sum(1)
    top = int(predicted.argmax())
    share, true_share = float(predicted[top]) / total, float(support.max()) / total
    if int((predicted > 0).sum()) > 1 and share <= true_share + margin:
        return None
    covered = int((predicted > 0).sum())
    return (f"the classifier has collapsed: its predictions cover {covered} of {len(class_names)} classes and "
            f"'{class_names[top]}' takes {share:.0%} of them (the largest true class is {true_share:.0%}). "
            "Usual causes: a learning rate too high for a pretrained encoder (lower optimizer.lr or set "
            "group_lr for the encoder), or class imbalance (policy.class_weights=auto, "
            "data.balanced_sampling=true).")


# ---- the GLUE-style metrics: from a confusion matrix (additive), or from gathered predictions -----------------
def matthews_corrcoef(cm: torch.Tensor) -> float:
    """Matthews correlation from a [true, predicted] confusion matrix (Gorodkin's R_K for more than two
    classes, the binary MCC for two); 0 when it is undefined (one true or one predicted class), as
    scikit-learn does."""
    cm = cm.double()
    true, predicted, correct, total = cm.sum(1), cm.sum(0), cm.trace(), cm.sum()
    covariance = correct * total - (true * predicted).sum()
    spread = (total * total - (predicted * predicted).sum()) * (total * total - (true * true).sum())
    return float(covariance / spread.sqrt()) if spread > 0 else 0.0


def positive_f1(cm: torch.Tensor, positive: int = 1) -> float:
    """F1 of the class `positive` (GLUE's F1 for MRPC and QQP: class 1 = paraphrase / duplicate)."""
    cm = cm.double()
    tp = cm[positive, positive]
    denominator = cm[positive].sum() + cm[:, positive].sum()
    return float(2 * tp / denominator) if denominator > 0 else 0.0


# extra metrics of a confusion matrix that a task may ask for (`score_metrics`); not computed otherwise
CONFUSION_METRICS = {"mcc": matthews_corrcoef, "f1": positive_f1}


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank (what Spearman's correlation ranks by)."""
    _, inverse, counts = torch.unique(values.double(), sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    return ((last - counts + 1 + last) / 2)[inverse]


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson's correlation; 0 when either side is constant (undefined), so a monitor never sees NaN."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    spread = (x.square().sum() * y.square().sum()).sqrt()
    return float((x * y).sum() / spread) if spread > 0 else 0.0


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def regression_metrics(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Pearson, Spearman and the mean squared error of predicted against true scores (GLUE's STS-B)."""
    if len(targets) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": 0.0}
    return {"pearson": pearson(predictions, targets), "spearman": spearman(predictions, targets),
            "mse": float((predictions.double() - targets.double()).square().mean())}


REGRESSION_METRICS = ("pearson", "spearman", "mse")
