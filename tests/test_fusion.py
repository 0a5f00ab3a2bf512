"""Multimodal fusion: manifests with missing modalities, the fusion heads, the demo set on which fusion
beats every single modality, predict from a fusion checkpoint, MELD with text alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from PIL import Image

from emotionsumm.data.multimodal import MultimodalData
from emotionsumm.models.fusion import FUSIONS

from .conftest import cli, make_cfg, needs_shared

TINY_AUDIO = {"features": {"sample_rate": 8000, "duration": 0.5, "n_mels": 8, "n_fft": 256, "win_length": 200,
                           "hop_length": 100}, "augment": {"freq_masks": 0, "time_masks": 0}}
TINY_IMAGE = {"channels": 1, "image_size": 8, "augment": None}


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def media(tmp_path: Path) -> tuple[str, str]:
    """A short tone and a grey image next to the manifests (paths relative to them)."""
    sf.write(str(tmp_path / "a.wav"), 0.3 * np.sin(np.arange(4000) / 5.0), 8000)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "f.png")
    return "a.wav", "f.png"


def test_missing_modalities_are_masked_and_a_row_with_none_names_its_line(tmp_path):
    wav, png = media(tmp_path)
    rows = [{"text": "so happy", "audio": wav, "image": png, "label": "joy"},
            {"text": "so sad", "label": "sadness"},
            {"audio": wav, "label": "joy"},
            {"text": "", "audio": None, "image": png, "label": "sadness"}]
    train = write_manifest(tmp_path / "train.jsonl", rows)
    data = MultimodalData(files={"train": str(train), "val": str(train)}, audio=TINY_AUDIO, image=TINY_IMAGE,
                          text={"vocab_size": 60, "max_length": 8}, batch_size=4)
    data.setup(None, splits=("train", "val"))
    assert data.active == ["text", "audio", "image"] and data.class_names == ["joy", "sadness"]
    batch = data.collate([data.dataset("val")[i] for i in range(4)])
    assert batch["text_mask"].tolist() == [True, True, False, False]
    assert batch["audio_mask"].tolist() == [True, False, True, False]
    assert batch["image_mask"].tolist() == [True, False, False, True]
    assert batch["audio_features"].shape == (4, 1, 8, 41) and not batch["audio_features"][1].any()
    assert batch["image_pixels"].shape == (4, 1, 8, 8) and not batch["image_pixels"][2].any()
    assert batch["labels"].tolist() == [0, 1, 0, 1]
    kwargs = data.model_kwargs()
    assert kwargs["modalities"] == ["text", "audio", "image"] and kwargs["encoder_kwargs"]["audio"] == {"n_mels": 8}

    bad = write_manifest(tmp_path / "bad.jsonl", [rows[0], {"text": None, "label": "joy"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no modality present"):
        MultimodalData(files={"train": str(bad)}, audio=TINY_AUDIO, image=TINY_IMAGE).setup(None, ("train",))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    with_broken = write_manifest(tmp_path / "broken.jsonl", [*rows, {"audio": "broken.wav", "label": "joy"}])
    with pytest.raises(ValueError, match=r"broken.jsonl:5: .*broken.wav"):
        MultimodalData(files={"train": str(with_broken)}, audio=TINY_AUDIO, image=TINY_IMAGE).setup(None, ("train",))
    skipping = MultimodalData(files={"train": str(with_broken)}, audio=TINY_AUDIO, image=TINY_IMAGE,
                              on_error="skip")
    skipping.setup(None, ("train",))
    assert len(skipping.dataset("train")) == 4 and skipping.skipped == {"train": 1}


def fusion_model(fusion: str, modality_dropout: float = 0.0) -> torch.nn.Module:
    cfg = make_cfg(Path("unused"), ["experiment=emotion_fusion", f"model.fusion={fusion}",
                                    f"model.modality_dropout={modality_dropout}"])
    return instantiate(cfg.model, num_classes=4, modalities=["text", "audio", "image"],
                       encoder_kwargs={"text": {"vocab_size": 50, "pad_token_id": 0}, "audio": {"n_mels": 8},
                                       "image": {"in_channels": 1}})


def random_batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"text_input_ids": torch.randint(1, 50, (n, 7), generator=g), "text_attention_mask": torch.ones(n, 7),
            "text_mask": torch.tensor([True, True, False, True, False, True]),
            "audio_features": torch.randn(n, 1, 8, 32, generator=g),
            "audio_mask": torch.tensor([True, False, True, True, True, False]),
            "image_pixels": torch.randn(n, 1, 48, 48, generator=g),
            "image_mask": torch.tensor([False, True, True, True, False, True])}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_masked_modality_does_not_change_the_prediction(fusion):
    torch.manual_seed(0)
    model = fusion_model(fusion).eval()
    batch = random_batch()
    with torch.no_grad():
        before = model(**batch)
        changed = dict(batch, image_pixels=batch["image_pixels"] + 3 * torch.randn_like(batch["image_pixels"]))
        after = model(**changed)
    masked = ~batch["image_mask"]
    assert before.shape == (6, 4) and torch.isfinite(before).all()
    assert torch.allclose(before[masked], after[masked], atol=1e-6)  # rows without a face ignore the pixels
    assert not torch.allclose(before[~masked], after[~masked], atol=1e-4)  # rows with one use them
    if fusion != "concat":
        assert torch.equal(model.last_weights[masked, 2], torch.zeros(int(masked.sum())))


def test_modality_dropout_hides_modalities_in_training_only_and_never_all():
    model = fusion_model("attention", modality_dropout=0.9)
    present = torch.rand(2000, 3) < 0.7
    present[~present.any(1), 0] = True
    model.train()
    kept = model._drop_modalities(present)
    assert kept.any(1).all() and not (kept & ~present).any()  # never all hidden, never adds one
    assert kept.sum() < 0.5 * present.sum()
    model.eval()
    assert torch.equal(model._drop_modalities(present), present)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The demo fusion experiment trained with all modalities and with each alone (same budget)."""
    from emotionsumm.train import train

    root = tmp_path_factory.mktemp("fusion")
    runs = {}
    for name in ("text,audio,image", "text", "audio", "image"):
        run = root / name.replace(",", "_")
        overrides = ["experiment=emotion_fusion", f"data.modalities=[{name}]", "trainer.max_epochs=6",
                     "trainer.progress_bar=false", "logger=none"]
        runs[name] = (run, train(make_cfg(run, overrides)))
    return runs


@pytest.mark.slow
def test_fusion_beats_every_single_modality_on_the_demo_set(demo_runs):
    fused = demo_runs["text,audio,image"][1]
    singles = {m: demo_runs[m][1]["test/acc"] for m in ("text", "audio", "image")}
    assert max(singles.values()) < 0.62, singles  # each modality alone tells half of the story at most
    assert fused["test/acc"] > max(singles.values()) + 0.2, (fused["test/acc"], singles)
    assert {"test/acc", "test/macro_f1", "test/weighted_f1", "test/uar"} <= set(fused)


@pytest.mark.slow
def test_fusion_checkpoint_predicts_a_manifest_and_exports_fused_embeddings(demo_runs, tmp_path):
    run = demo_runs["text,audio,image"][0]
    ckpt = run / "checkpoints" / "last.ckpt"
    demo = Path(make_cfg(tmp_path / "x", ["experiment=emotion_fusion"]).data.files.test).parent
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()[:5]]
    rows.sort(key=lambda row: row.get("text") is None)  # the first has a text
    for row in rows:  # absolute media paths: the manifest lives elsewhere
        for m in ("audio", "image"):
            row[m] = str(demo / row[m]) if row.get(m) else None
        del row["label"]
    rows[0]["audio"] = rows[0]["image"] = None  # text alone
    manifest = write_manifest(tmp_path / "in.jsonl", rows)
    emb = tmp_path / "emb.npy"
    proc = cli("predict", f"ckpt={ckpt}", f"input={manifest}", "export_embeddings=true", f"embeddings_path={emb}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert len(lines) == 5 and all(label in ("joy", "calm", "anger", "sadness") for label, _ in lines)
    assert all(0.25 <= float(p) <= 1.0 for _, p in lines)
    assert np.load(emb).shape == (5, 64)  # model.hidden of the experiment
    proc = cli("predict", f"ckpt={ckpt}", "input=-", stdin="a text is not a manifest\n")
    assert proc.returncode != 0 and "expected a manifest file" in proc.stderr


@needs_shared
@pytest.mark.slow
def test_meld_runs_on_text_alone_and_monitors_weighted_f1(tmp_path):
    cfg = make_cfg(tmp_path, ["experiment=emotion_fusion_meld"])
    assert cfg.trainer.monitor == "val/weighted_f1"
    data = instantiate(cfg.data)
    data.setup(None, splits=("train", "val"))
    assert data.active == ["text"] and len(data.dataset("train")) == 9989 and len(data.dataset("val")) == 1109
    assert data.model_kwargs()["modalities"] == ["text"]
    assert data.class_names == ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
