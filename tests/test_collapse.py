"""The collapse alarm: prediction spread in every classification run's metrics, a warning when one class takes over."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from emotionsumm.metrics.classification import classification_metrics, collapse_warning
from emotionsumm.policies.classification import ClassificationPolicy
from emotionsumm.tracking.loggers import NullLogger

from .conftest import run_train

NAMES = ["neutral", "joy", "anger"]


def test_prediction_spread_metrics_and_when_the_warning_fires():
    spread = torch.tensor([[5.0, 1, 0], [1, 3, 0], [0, 1, 4]])  # [true, predicted]
    metrics = classification_metrics(spread, NAMES)
    assert metrics["pred_classes"] == 3 and metrics["pred_top_share"] == 6 / 15
    assert collapse_warning(spread, NAMES) is None
    one_class = torch.tensor([[5.0, 0, 0], [4, 0, 0], [6, 0, 0]])
    assert classification_metrics(one_class, NAMES)["pred_classes"] == 1
    warning = collapse_warning(one_class, NAMES)
    assert "cover 1 of 3 classes" in warning and "'neutral' takes 100%" in warning
    assert "policy.class_weights=auto" in warning and "learning rate" in warning
    # two classes predicted, but 'neutral' takes 90% where the largest true class is 40%: collapsed
    skewed = torch.tensor([[4.0, 0, 0], [3, 0, 0], [2, 0, 1]])
    assert collapse_warning(skewed, NAMES) is not None
    # a majority class predicted as often as it occurs is not a collapse
    majority = torch.tensor([[8.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert collapse_warning(majority, NAMES) is None


class Constant(nn.Module):
    """Always the same logits, whatever the input: the collapsed classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([3.0, 0.0, 0.0]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(features), -1)


def test_a_collapsed_policy_warns_once_per_evaluation(caplog, tmp_path):
    policy = ClassificationPolicy(Constant(), NAMES)
    state = policy.eval_state()
    with torch.no_grad():
        policy.evaluation_step({"features": torch.zeros(6, 2), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}, state)
    with caplog.at_level(logging.WARNING):
        policy.log_artifacts(state, NullLogger(), "val", 7, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("val at step 7: ")
    assert policy.compute_metrics(state)["pred_top_share"] == 1.0


@pytest.mark.slow
def test_every_classification_run_records_the_spread_of_its_validation_predictions(tmp_path):
    run_train(tmp_path, ["trainer.max_steps=3", "trainer.limit_val_batches=2", "trainer.test_after_fit=false"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 1 <= metrics["val/pred_classes"] <= 6 and 0 < metrics["val/pred_top_share"] <= 1
    assert "val_raw/pred_classes" in metrics
