"""Trainer options end to end: early stopping, overfitting, bf16, class weights, what TensorBoard gets."""

from __future__ import annotations

import pytest
import torch

from emotionsumm.policies.classification import class_weights_from_counts
from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import run_train

LIMITS = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.test_after_fit=false"]


def test_early_stopping_stops_after_patience_and_survives_in_the_checkpoint(tmp_path):
    # min_delta=1 can never be beaten: the first validation sets the best, the next two do not improve.
    metrics = run_train(tmp_path, [*LIMITS, "trainer.max_epochs=10", "trainer.early_stopping_patience=2",
                                   "trainer.early_stopping_min_delta=1.0"])
    assert metrics["epoch"] == 3
    ckpt = load_checkpoint(tmp_path / "checkpoints/last.ckpt")
    assert ckpt["callbacks"]["early_stopping"]["wait"] == 2


def test_overfit_batches_drives_the_loss_down(tmp_path):
    metrics = run_train(tmp_path, ["debug=overfit", "trainer.overfit_batches=1", "trainer.max_epochs=150",
                                   "trainer.val_every_n_epochs=150", "optimizer.lr=5e-3",
                                   "trainer.test_after_fit=false"])
    assert metrics["val/acc"] == 1.0 and metrics["val/loss"] < 0.1


def test_bf16_autocast_and_accumulation_train_on_cpu(tmp_path):
    metrics = run_train(tmp_path, [*LIMITS, "trainer.max_steps=3", "trainer.precision=bf16",
                                   "trainer.accumulate_grad_batches=2"])
    assert metrics["step"] == 3 and metrics["epoch"] == 1  # 3 batches / 2 per step = 2 steps per epoch
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_auto_class_weights_follow_inverse_frequency(tmp_path):
    weights = class_weights_from_counts([10, 30, 0])
    assert weights.tolist() == pytest.approx([40 / 30, 40 / 90, 1.0])
    from emotionsumm.models.text import TextClassifier
    from emotionsumm.policies.classification import ClassificationPolicy

    model = TextClassifier(num_classes=3, vocab_size=30, hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8)
    policy = ClassificationPolicy(model, ["a", "b", "c"], class_counts=[10, 30, 0], class_weights="auto")
    assert torch.equal(policy.class_weights, weights)
    with pytest.raises(ValueError, match="policy.class_weights has 2 values for 3 classes"):
        ClassificationPolicy(model, ["a", "b", "c"], class_weights=[1.0, 2.0])


def test_tensorboard_gets_histograms_images_text_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_train(tmp_path, [*LIMITS, "trainer.max_steps=4", "logger.tensorboard.histogram_every_n_steps=2"])
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "weights/model.head.1.weight" in tags["histograms"] and "grads/model.head.1.weight" in tags["histograms"]
    assert [e.step for e in acc.Histograms("weights/model.head.1.weight")] == [2, 4]
    assert "val/confusion_matrix" in tags["images"]
    assert any(t.startswith("config") for t in tags["tensors"])
    assert {"val/acc", "val_raw/acc", "train/loss", "train/samples_per_s", "hparams/val/acc"} <= set(tags["scalars"])


def test_kfold_replaces_validation_with_a_held_out_fold_of_train(tmp_path):
    from emotionsumm.config.builders import build_data

    from ..conftest import make_cfg

    sizes = []
    for fold in range(3):
        data = build_data(make_cfg(tmp_path, ["data.num_folds=3", f"data.fold={fold}"]).copy(), None)
        sizes.append((len(data.dataset("train")), len(data.dataset("val"))))
        assert data.class_counts == [sum(y == c for y in data.dataset("train").labels) for c in range(6)]
    assert all(t + v == 2400 for t, v in sizes) and sum(v for _, v in sizes) == 2400
