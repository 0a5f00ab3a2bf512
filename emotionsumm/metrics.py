"""Classification metrics computed from a confusion matrix.

A confusion matrix is additive, so summing it across batches and DDP ranks and deriving the
metrics afterwards gives exactly the metrics of the whole split.
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
