"""Feature fusion end to end: on the demo features fusion beats each view alone, and the two-stage workflow
(single-modality checkpoints -> `predict export_embeddings=true embeddings_manifest=...` -> fusion on the
exported features -> predict from that checkpoint) runs with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ..conftest import cli, make_cfg

QUIET = ["trainer.progress_bar=false", "logger=none"]


@pytest.fixture(scope="module")
def views(tmp_path_factory) -> dict[str, dict]:
    """The demo feature experiment with both views and with each alone (same budget)."""
    from emotionsumm.train import train

    root = tmp_path_factory.mktemp("features")
    return {name: train(make_cfg(root / name.replace(",", "_"), ["experiment=emotion_features_demo",
                                                                f"data.modalities=[{name}]",
                                                                "trainer.max_epochs=6", *QUIET]))
            for name in ("visual_au,audio_lld", "visual_au", "audio_lld")}


def test_fusion_beats_each_view_alone_on_the_demo_test_split(views):
    fused = views["visual_au,audio_lld"]["test/acc"]
    alone = {view: views[view]["test/acc"] for view in ("visual_au", "audio_lld")}
    assert max(alone.values()) < 0.6, alone  # each view tells one of valence / arousal
    assert fused > max(alone.values()) + 0.15, (fused, alone)


def test_two_stage_export_then_fusion_on_the_exported_features(tmp_path):
    from emotionsumm.predict import predict
    from emotionsumm.train import train

    tiny = ["experiment=emotion_fusion", "model.hidden=8", "model.encoders.text.hidden_size=16",
            "model.encoders.text.intermediate_size=32", "model.encoders.audio.width=4", "model.encoders.audio.depth=2",
            "trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "scheduler.warmup_steps=1", *QUIET]
    for modality in ("text", "audio"):
        train(make_cfg(tmp_path / modality, [*tiny, f"data.modalities=[{modality}]"]))
    demo = Path(make_cfg(tmp_path / "x", ["experiment=emotion_fusion"]).data.files.train).parent
    out = tmp_path / "features"
    for split in ("train", "val", "test"):  # the text model's embeddings, then the audio model's on its manifest
        for modality, source, target in (("text", demo / f"{split}.jsonl", out / f"{split}_text.jsonl"),
                                         ("audio", out / f"{split}_text.jsonl", out / f"{split}.jsonl")):
            printed = predict(make_cfg(tmp_path / "predict", [
                f"ckpt={tmp_path / modality / 'checkpoints' / 'last.ckpt'}", f"input={source}",
                "export_embeddings=true", f"embeddings_path={out / f'{split}_{modality}.npy'}",
                f"embeddings_manifest={target}", f"embeddings_column={modality}_emb"], config_name="predict"))
            assert len(np.load(out / f"{split}_{modality}.npy")) == len(printed)  # one embedding per prediction

    inputs = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [r["label"] for r in inputs]  # every row, in order
    assert all((r["text_emb"] is None) == (i["text"] is None) for r, i in zip(rows, inputs))
    assert all((r["audio_emb"] is None) == (i["audio"] is None) for r, i in zip(rows, inputs))
    assert next(r["text_emb"] for r in rows if r["text_emb"]) == "test_text.npy#0"
    assert all((out / r["audio"]).resolve().is_file() for r in rows if r["audio"])  # media paths rebased
    text_emb = np.load(out / "test_text.npy")
    assert text_emb.shape == (sum(i["text"] is not None for i in inputs), 8) and np.isfinite(text_emb).all()

    files = [f"data.files.{s}={out / f'{s}.jsonl'}" for s in ("train", "val", "test")]
    metrics = train(make_cfg(tmp_path / "fused", ["experiment=emotion_features_two_stage", *files,
                                                  "trainer.max_steps=4", "scheduler.warmup_steps=1", *QUIET]))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    proc = cli("predict", f"ckpt={tmp_path / 'fused' / 'checkpoints' / 'last.ckpt'}", f"input={out / 'test.jsonl'}",
               f"hydra.run.dir={tmp_path / 'predict'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = [line.split("\t")[0] for line in proc.stdout.strip().splitlines()]
    with_features = [r for r in rows if r["text_emb"] or r["audio_emb"]]  # a row with a face only has none
    assert len(labels) == len(with_features) and set(labels) <= {"joy", "calm", "anger", "sadness"}
