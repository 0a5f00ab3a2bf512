"""model=image_hf end to end on the demo faces: train with a frozen-then-unfrozen tiny ViT, resume onto the
same weights, evaluate and predict from the checkpoint; the ConvNeXt experiment from the command line; a
fusion model with the ViT as its image encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import cli, make_cfg
from ..test_image_hf import VIT_MEAN, save_tiny_convnext, save_tiny_vit

# two epochs of three batches; the schedule unfreezes the ViT's top layer for the second epoch
SHORT = ["experiment=emotion_image_hf", "data=image_demo", "data.batch_size=16", "trainer.limit_train_batches=3",
         "trainer.limit_val_batches=1", "trainer.progress_bar=false",
         "trainer.log_every_n_steps=1", "scheduler=constant", "model.unfreeze_at_epochs={1: 1}", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("vit"))


def backbone_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "model.backbone.model."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def test_frozen_then_unfrozen_vit_trains_resumes_evaluates_and_predicts(vit, tmp_path):
    from transformers import AutoModel

    from emotionsumm.train import train

    full = tmp_path / "full"
    metrics = train(make_cfg(full, [*SHORT, f"model.pretrained={vit}"]))
    pretrained = AutoModel.from_pretrained(str(vit)).state_dict()
    trained = backbone_weights(load_checkpoint(full / "checkpoints/last.ckpt")["policy"])
    unchanged = {k for k, v in trained.items() if torch.equal(v, pretrained[k])}
    assert {k for k in trained if k.startswith(("embeddings.", "layers.0."))} <= unchanged  # never unfrozen
    assert {k for k in trained if k.startswith(("layers.1.", "layernorm."))}.isdisjoint(unchanged)  # epoch 1

    halted = tmp_path / "halted"  # stopped after epoch 0 (everything but the head frozen), then resumed
    train(make_cfg(halted, [*SHORT, f"model.pretrained={vit}", "trainer.max_epochs=1",
                            "trainer.test_after_fit=false"]))
    train(make_cfg(halted, [*SHORT, f"model.pretrained={vit}", "trainer.resume=auto"]))
    resumed = load_checkpoint(halted / "checkpoints/last.ckpt")["policy"]
    expected = load_checkpoint(full / "checkpoints/last.ckpt")["policy"]
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)  # the schedule resumed at epoch 1

    ckpt = sorted((full / "checkpoints").glob("epoch*.ckpt"))[-1]  # the best: what training tested
    proc = cli("evaluate", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["test/acc"] == pytest.approx(metrics["test/acc"])
    demo = Path(make_cfg(tmp_path / "x", ["data=image_demo"]).data.root)
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{demo / 'happy' / 'S001_004_00000000.png'}\n{demo / 'sadness' / 'S002_006_00000000.png'}\n")
    emb = tmp_path / "emb.npy"
    proc = cli("predict", f"ckpt={ckpt}", f"input={listing}", "export_embeddings=true", f"embeddings_path={emb}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert len(rows) == 2 and all(0 < float(p) <= 1 for _, p in rows)
    assert np.load(emb).shape == (2, 16)  # the ViT's pooled vector


def test_convnext_experiment_from_the_command_line(tmp_path):
    convnext = save_tiny_convnext(tmp_path / "convnext")
    run = tmp_path / "run"
    proc = cli("train", "experiment=emotion_image_hf", "data=image_demo", f"model.pretrained={convnext}",
               "data.batch_size=16", "trainer.max_steps=4", "trainer.limit_val_batches=1",
               "trainer.limit_test_batches=1", "trainer.progress_bar=false", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 channel(s) at 36x36, normalisation mean=[0.5, 0.5, 0.5] std=[0.5, 0.5, 0.5]" in proc.stderr
    assert "backbone=5e-05 (model default)" in proc.stderr
    assert {"test/acc", "test/uar"} <= set(json.loads((run / "metrics.json").read_text()))
    state = load_checkpoint(run / "checkpoints/last.ckpt")["data"]
    assert state["mean"] == [0.5, 0.5, 0.5]


def test_fusion_with_the_vit_as_image_encoder_builds_and_runs_forward(vit, tmp_path):
    from emotionsumm.config.builders import build_data, build_policy

    cfg = make_cfg(tmp_path / "run", ["data=multimodal_demo", "model=fusion", "model@model.encoders.image=image_hf",
                                      f"model.encoders.image.pretrained={vit}"])
    data = build_data(cfg, None)
    policy = build_policy(cfg, data)
    assert policy.model.param_lrs()["image"] == pytest.approx(1e-4)  # image_hf's lr is the part's default
    batch = data.collate([data.dataset("train")[i] for i in range(4)])
    assert batch["image_pixels"].shape[1:] == (3, 40, 40)  # the encoder's processor: RGB at its size
    assert data.state_dict()["image_mean"] == pytest.approx(VIT_MEAN)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = policy.model(**inputs)
    assert logits.shape == (4, len(data.class_names)) and torch.isfinite(logits).all()
