"""model=audio_ssl end to end on the demo speech: the brief's command line (`experiment=emotion_audio
model=audio_ssl model.pretrained=<dir>`) with a tiny random wav2vec2 whose top layer unfreezes for the second
epoch; resume onto the same weights; evaluate and predict (with embeddings) from the checkpoint; a WavLM-style
model (attention mask, no normalisation) with attention pooling and a chosen layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emotionsumm.training.checkpoint import load_checkpoint

from ..conftest import cli, make_cfg
from ..test_audio import predict_three_demo_clips
from ..test_audio_ssl import save_tiny_ssl

# two epochs of three batches; the schedule unfreezes the top transformer layer for the second one
SHORT = ["experiment=emotion_audio", "model=audio_ssl", "data.batch_size=16", "trainer.limit_train_batches=3",
         "trainer.limit_val_batches=1", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
         "scheduler=constant", "model.unfreeze_at_epochs={1: 1}", "model.lr=1e-3", "trainer.max_epochs=2",
         "data.features.duration=0.5", "data.cache_features=false", "logger=none"]


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    return save_tiny_ssl(tmp_path_factory.mktemp("wav2vec2"), "wav2vec2")


def encoder_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model.encoder."): v for k, v in state.items() if k.startswith("model.encoder.")}


def test_ssl_encoder_trains_unfreezes_resumes_evaluates_and_predicts(w2v, tmp_path):
    from transformers import AutoModel

    from emotionsumm.train import train

    full = tmp_path / "full"
    proc = cli("train", *SHORT, f"model.pretrained={w2v}", f"hydra.run.dir={full}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "audio_ssl ignores them" in proc.stderr and "encoder=0.001 (model default)" in proc.stderr
    metrics = json.loads((full / "metrics.json").read_text())
    assert {"test/acc", "test/uar"} <= set(metrics)
    ckpt = load_checkpoint(full / "checkpoints/last.ckpt")
    assert ckpt["data"]["normalizer"] is None and ckpt["config"]["data"]["features"]["kind"] == "waveform"
    pretrained = AutoModel.from_pretrained(str(w2v)).state_dict()
    trained = encoder_weights(ckpt["policy"])
    unchanged = {k for k, v in trained.items() if torch.equal(v, pretrained[k])}
    assert {k for k in trained if k.startswith(("feature_extractor.", "encoder.layers.0."))} <= unchanged
    assert {k for k in trained if k.startswith("encoder.layers.1.")}.isdisjoint(unchanged)  # trained in epoch 1

    halted = tmp_path / "halted"  # stopped after epoch 0 (the encoder frozen), then resumed
    train(make_cfg(halted, [*SHORT, f"model.pretrained={w2v}", "trainer.max_epochs=1",
                            "trainer.test_after_fit=false"]))
    train(make_cfg(halted, [*SHORT, f"model.pretrained={w2v}", "trainer.resume=auto"]))
    resumed = load_checkpoint(halted / "checkpoints/last.ckpt")["policy"]
    assert resumed.keys() == ckpt["policy"].keys()
    assert all(torch.equal(resumed[k], ckpt["policy"][k]) for k in resumed)  # the schedule resumed at epoch 1

    best = sorted((full / "checkpoints").glob("epoch*.ckpt"))[-1]  # what training tested
    proc = cli("evaluate", f"ckpt={best}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["test/acc"] == pytest.approx(metrics["test/acc"])
    embeddings = predict_three_demo_clips(best, Path(make_cfg(tmp_path / "paths", SHORT).data.root), tmp_path)
    assert embeddings.shape == (3, 32)  # the pooled hidden size


def test_wavlm_style_model_with_attention_pooling_and_a_chosen_layer(tmp_path):
    wavlm = save_tiny_ssl(tmp_path / "wavlm", "wavlm")
    run = tmp_path / "run"
    proc = cli("train", "experiment=emotion_audio", "model=audio_ssl", f"model.pretrained={wavlm}",
               "model.pooling=attention", "model.layer=-1", "data.features.eval_crop=full", "data.batch_size=16",
               "trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
               "trainer.progress_bar=false", "logger=none", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(run / "checkpoints/last.ckpt")["policy"]
    assert "model.layer_weights" not in state and "model.pool.score.0.weight" in state
    assert {"test/acc", "test/uar"} <= set(json.loads((run / "metrics.json").read_text()))
