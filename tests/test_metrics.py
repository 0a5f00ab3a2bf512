"""Classification metrics from the confusion matrix (accuracy, per-class and macro/weighted F1, UAR)."""

from __future__ import annotations

import pytest
import torch

from emotionsumm.metrics.classification import classification_metrics, confusion_matrix


def test_classification_metrics_from_confusion_matrix():
    preds = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    target = torch.tensor([0, 0, 1, 2, 2, 2, 1, 1])
    cm = confusion_matrix(preds, target, 3)
    assert cm.tolist() == [[2, 0, 0], [1, 1, 1], [0, 1, 2]]
    m = classification_metrics(cm, ["a", "b", "c"])
    assert m["acc"] == pytest.approx(5 / 8)
    f1 = [2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3), 2 * (2 / 3) * (2 / 3) / (4 / 3)]
    assert [m["f1_a"], m["f1_b"], m["f1_c"]] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * f1[0] + 3 * f1[1] + 3 * f1[2]) / 8)
    assert m["uar"] == pytest.approx((1 + 1 / 3 + 2 / 3) / 3)
