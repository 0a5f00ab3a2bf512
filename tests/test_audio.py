"""Speech emotion: layouts, splits, normaliser, augmentation, bad audio, feature cache, train → evaluate → predict."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from emotionsumm.data.audio import AudioClassificationData
from emotionsumm.data.audio_features import LOG_FLOOR, AudioPipeline, AudioReadError

from .conftest import cli, make_cfg

RATE = 8000
FEATURES = {"sample_rate": RATE, "duration": 0.25, "n_mels": 16, "n_fft": 128, "win_length": 128, "hop_length": 64}
AUGMENT = {"freq_masks": 1, "freq_mask_width": 4, "time_masks": 1, "time_mask_width": 6, "gain_db": 3.0,
           "noise_snr_db": [10.0, 20.0], "noise_prob": 1.0}
CLASSES = ("low", "mid", "high")
PITCH = {"low": 200.0, "mid": 500.0, "high": 1200.0}


def tone(path, freq: float, seconds: float = 0.4, rate: int = RATE, channels: int = 1, seed: int = 0,
         noise: float = 0.01) -> None:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(seed).standard_normal(t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)


def folder(root, speakers: int = 4, clips: int = 2, header: str = "path,label,speaker"):
    """labels.csv (`path,label,speaker`) + one tone per (speaker, class, clip); returns the root."""
    lines = [header]
    for s in range(speakers):
        for label in CLASSES:
            for k in range(clips):
                name = f"wav/s{s}_{label}_{k}.wav"
                tone(root / name, PITCH[label] * (1 + 0.05 * s), seconds=0.3 + 0.05 * k, seed=s * 10 + k)
                lines.append(f"{name},{label},spk{s}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def data(root, **kwargs) -> AudioClassificationData:
    kwargs = {"split": "group", "split_ratios": [0.5, 0.25, 0.25], "features": FEATURES, "augment": AUGMENT,
              "batch_size": 4, **kwargs}
    return AudioClassificationData(root=str(root), **kwargs)


def test_labels_csv_and_ravdess_layouts(tmp_path):
    d = data(folder(tmp_path / "csv"))
    d.setup()
    assert d.class_names == sorted(CLASSES) and sum(len(d.dataset(s)) for s in ("train", "val", "test")) == 24
    batch = d.collate([d.dataset("val")[0], d.dataset("val")[1]])
    assert batch["features"].shape == (2, 1, 16, 32) and batch["labels"].dtype == torch.long
    assert d.model_kwargs() == {"num_classes": 3, "n_mels": 16}

    root = tmp_path / "ravdess"
    for actor in (1, 2, 3, 4):
        for code, freq in (("01", 200.0), ("05", 900.0), ("08", 1500.0)):
            tone(root / f"Actor_{actor:02d}" / f"03-01-{code}-01-01-01-{actor:02d}.wav", freq)
    r = data(root, layout="ravdess", labels_file=None)
    r.setup()
    assert r.class_names == ["angry", "neutral", "surprised"]
    speakers = {s: {p.parent.name for p in r.dataset(s).paths} for s in ("train", "val", "test")}
    assert sum(map(len, speakers.values())) == 4 and all(len(v) >= 1 for v in speakers.values())
    names = {p.name: r.class_names[y] for p, y in zip(r.dataset("train").paths, r.dataset("train").labels)}
    assert all({"01": "neutral", "05": "angry", "08": "surprised"}[n.split("-")[2]] == y for n, y in names.items())
    tone(root / "Actor_01" / "notes.wav", 300.0)
    with pytest.raises(AudioReadError, match=r"notes\.wav: not a RAVDESS file name"):
        data(root, layout="ravdess").setup()


def test_normaliser_statistics_come_from_the_training_split_only(tmp_path):
    d = data(folder(tmp_path))
    d.setup()
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=RATE, n_fft=128, win_length=128, hop_length=64,
                                               f_min=20.0, f_max=RATE / 2, n_mels=16, power=2.0)

    def logmel(path):
        wave, _ = sf.read(str(path), dtype="float32")
        return torch.log(mel(torch.from_numpy(wave)) + LOG_FLOOR)

    train = torch.cat([logmel(p) for p in d.dataset("train").paths], dim=1).double()
    everything = torch.cat([logmel(p) for s in ("train", "val", "test") for p in d.dataset(s).paths], dim=1)
    state = d.state_dict()["normalizer"]
    torch.testing.assert_close(state["mean"], train.mean(dim=1).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["std"], train.std(dim=1, unbiased=False).float(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(state["mean"], everything.mean(dim=1), atol=1e-3)
    torch.save(d.state_dict(), tmp_path / "state.pt")
    restored = data(tmp_path, state=torch.load(tmp_path / "state.pt", weights_only=True))
    restored.setup(splits=("test",))
    assert restored.dataset("train") is None
    assert torch.equal(restored.dataset("test")[0]["features"], d.dataset("test")[0]["features"])


def test_clip_norm_removes_a_clips_level_and_colour(tmp_path):
    """clip_norm=mean: a louder, differently coloured copy of a clip gives the same features; `none` does not."""
    root = folder(tmp_path)
    tilt = torch.linspace(-1.0, 1.0, 16)[:, None]  # a fixed spectral colour in log-mel: a microphone's response
    outputs = {}
    for norm in ("none", "mean", "mean_std"):
        d = data(root, features={**FEATURES, "clip_norm": norm})
        d.setup()
        pipeline = d.pipeline
        clip = pipeline.extract(d.dataset("test").paths[0])
        outputs[norm] = (pipeline.transform(clip, train=False), pipeline.transform(clip + 2.0 + tilt, train=False))
        per_clip = pipeline.normalizer.per_clip(clip)
        if norm != "none":
            torch.testing.assert_close(per_clip.mean(dim=1), torch.zeros(16), atol=1e-5, rtol=0)
        if norm == "mean_std":
            torch.testing.assert_close(per_clip.std(dim=1, correction=0), torch.ones(16), atol=1e-4, rtol=0)
    assert not torch.allclose(*outputs["none"], atol=1e-2)
    torch.testing.assert_close(*outputs["mean"], atol=1e-5, rtol=0)
    torch.testing.assert_close(*outputs["mean_std"], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="data.features.clip_norm"):
        AudioPipeline(**FEATURES, clip_norm="utterance")


def test_group_split_never_leaks_a_speaker(tmp_path):
    root = folder(tmp_path, speakers=6, clips=1)

    def speakers(d, split):
        return {p.name.split("_")[0] for p in d.dataset(split).paths}

    for seed in range(4):
        d = data(root, seed=seed, split_ratios=[0.5, 0.25, 0.25])
        d.setup()
        parts = [speakers(d, s) for s in ("train", "val", "test")]
        assert sum(map(len, parts)) == 6 and len(set.union(*parts)) == 6
    d = data(root, val_groups=["spk1"], test_groups=["spk4", "spk5"])
    d.setup()
    assert (speakers(d, "val"), speakers(d, "test")) == ({"s1"}, {"s4", "s5"})
    for fold in (0, 1):
        d = data(root, num_folds=2, fold=fold, test_groups=["spk5"])
        d.setup()
        assert speakers(d, "train").isdisjoint(speakers(d, "val")) and speakers(d, "test") == {"s5"}
        assert len(speakers(d, "train") | speakers(d, "val")) == 5
    with pytest.raises(ValueError, match=r"data.test_groups: group\(s\) \['spk9'\] not in the data"):
        data(root, test_groups=["spk9"]).setup()


def test_augmentation_and_random_crop_only_in_training(tmp_path):
    d = data(folder(tmp_path, clips=1), split="random", split_ratios=[0.5, 0.25, 0.25])
    d.setup()
    val, train = d.dataset("val"), d.dataset("train")
    assert torch.equal(val[0]["features"], val[0]["features"])
    assert not torch.equal(train[0]["features"], train[0]["features"])
    train.train = False  # the flag alone decides: without it the same clip gives the same features
    assert torch.equal(train[0]["features"], train[0]["features"])


def test_short_clip_padded_wrong_rate_resampled_stereo_mixed(tmp_path):
    pipeline = AudioPipeline(**FEATURES, normalizer={"mean": torch.zeros(16), "std": torch.ones(16)})
    tone(tmp_path / "short.wav", 440.0, seconds=0.005)  # 40 samples: shorter than one 128-sample window
    out = pipeline(tmp_path / "short.wav")
    assert out.shape == (1, 16, pipeline.num_frames) == (1, 16, 32)
    assert torch.all(out[0, :, -1] == math.log(LOG_FLOOR))  # padded frames are silence
    tone(tmp_path / "hi_rate.wav", 440.0, seconds=0.5, rate=22050, channels=2, noise=0.0)
    wave = pipeline.load(tmp_path / "hi_rate.wav")
    assert wave.shape == (4000,)  # 0.5 s at 8 kHz, one channel
    assert pipeline(tmp_path / "hi_rate.wav").shape == (1, 16, 32)
    tone(tmp_path / "same.wav", 440.0, seconds=0.5, noise=0.0)
    torch.testing.assert_close(wave[100:-100], pipeline.load(tmp_path / "same.wav")[100:-100], atol=0.01, rtol=0)


def test_bad_audio_names_the_file_or_is_skipped_and_counted(tmp_path, caplog):
    root = folder(tmp_path)
    (root / "wav/s0_low_0.wav").write_bytes(b"RIFF\x00\x00 definitely not audio")
    (root / "wav/s1_mid_0.wav").write_bytes(b"")
    sf.write(str(root / "wav/s2_high_0.wav"), np.zeros(0, dtype=np.float32), RATE)
    for cached in (False, True):
        with pytest.raises(AudioReadError, match=r"labels.csv:2: .*s0_low_0\.wav: cannot read audio \(Format not"):
            data(root, cache_features=cached, cache_dir=str(tmp_path / "cache")).setup()
    pipeline = AudioPipeline(**FEATURES)
    for name, reason in (("s0_low_0", "cannot read audio"), ("s1_mid_0", "cannot read audio"),
                         ("s2_high_0", "audio file has no samples"), ("gone", "audio file not found")):
        with pytest.raises(AudioReadError, match=rf"{name}\.wav: {reason}"):
            pipeline.extract(root / f"wav/{name}.wav")
    with caplog.at_level(logging.WARNING):
        d = data(root, on_error="skip", split="random")
        d.setup()
    assert sum(d.skipped.values()) == 3 and sum(len(d.dataset(s)) for s in ("train", "val", "test")) == 21
    assert "skipped" in caplog.text and "data.on_error=skip" in caplog.text
    (root / "labels.csv").write_text("path,label,speaker\nwav/s3_low_0.wav,low,spk3\nwav/s3_mid_0.wav,calm,spk3\n")
    with pytest.raises(ValueError, match=r"labels.csv:3: label 'calm' is not one of the classes"):
        data(root, split="random", split_ratios=[1.0, 0.0, 0.0], class_names=["low", "mid"]).setup()
    missing = data(root, labels_file="nope.csv")
    with pytest.raises(FileNotFoundError, match=r"data.labels_file: file not found: .*nope\.csv"):
        missing.setup()


def test_feature_cache_hit_is_identical_and_does_not_reload_audio(tmp_path, monkeypatch):
    root = folder(tmp_path / "data")
    cached = {"cache_features": True, "cache_dir": str(tmp_path / "cache")}
    first = data(root, **cached)
    first.setup()
    assert first.cache.misses == 24 and first.cache.hits == 0
    calls = []
    load = AudioPipeline.load
    monkeypatch.setattr(AudioPipeline, "load", lambda self, path: calls.append(path) or load(self, path))
    second = data(root, **cached)
    second.setup()
    assert calls == [] and second.cache.hits == 24
    for split in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(first.dataset(split).features, second.dataset(split).features))
    assert torch.equal(first.dataset("val")[1]["features"], second.dataset("val")[1]["features"])
    train = second.dataset("train")
    assert not torch.equal(train[0]["features"], train[0]["features"])  # random crop + augmentation still on
    plain = data(root)
    plain.setup()
    assert torch.equal(plain.dataset("test")[0]["features"], second.dataset("test")[0]["features"])
    torch.testing.assert_close(plain.state_dict()["normalizer"]["mean"], second.state_dict()["normalizer"]["mean"])
    assert len(calls) == 12 + 1  # without the cache: the training files for the normaliser, then each item
    other = data(root, **cached, features={**FEATURES, "n_mels": 8})  # another feature config: another key
    other.setup()
    assert other.cache.misses == 24 and other.cache.directory != second.cache.directory and len(calls) == 13 + 24


@pytest.mark.slow
def test_train_evaluate_predict_on_demo_data(tmp_path):
    from emotionsumm.evaluate import evaluate
    from emotionsumm.train import train

    tiny = ["experiment=emotion_audio", "model.width=4", "model.depth=2", "trainer.max_steps=4",
            "trainer.limit_val_batches=1", "trainer.progress_bar=false", "data.batch_size=16", "logger=none"]
    run = tmp_path / "run"
    metrics = train(make_cfg(run, tiny))
    assert {"test/acc", "test/macro_f1", "test/weighted_f1", "test/uar"} <= set(metrics)
    best = sorted((run / "checkpoints").glob("epoch*.ckpt"))[-1]
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["data"]["normalizer"]["mean"].shape == (40,) and len(ckpt["data"]["class_names"]) == 6
    (tmp_path / "eval").mkdir()
    evaluated = evaluate(make_cfg(tmp_path / "eval", [f"ckpt={best}", "split=test"], config_name="evaluate"))
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"])
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["test/uar"] == pytest.approx(metrics["test/uar"])

    embeddings = predict_three_demo_clips(best, Path(make_cfg(tmp_path / "paths", tiny).data.root), tmp_path)
    assert embeddings.shape == (3, 8)  # width 4, depth 2: 8 channels pooled


def predict_three_demo_clips(ckpt_path: Path, root: Path, tmp_path: Path) -> np.ndarray:
    """`predict` of three demo clips through the CLI with their embeddings: checks the rows, returns those."""
    clips = sorted(str(p) for p in (root / "wav").glob("*.wav"))[:3]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("\n".join(clips) + "\n")
    emb = tmp_path / "emb.npy"
    proc = cli("predict", f"ckpt={ckpt_path}", f"input={inputs}", "export_embeddings=true", f"embeddings_path={emb}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    class_names = torch.load(ckpt_path, weights_only=True)["data"]["class_names"]
    assert len(rows) == 3 and all(label in class_names and 0 < float(p) <= 1 for label, p in rows)
    return np.load(emb)


def test_global_statistics_keep_the_spectral_shape_and_the_checkpoint_format():
    from emotionsumm.data.audio_features import Normalizer

    clip = torch.stack([torch.full((50,), 1.0), torch.full((50,), 3.0)])  # two mel bins, 50 frames
    clip = clip + torch.linspace(-0.5, 0.5, 50)
    per_mel, whole = Normalizer(), Normalizer(stats="global")
    for normalizer in (per_mel, whole):
        normalizer.update(clip)
        normalizer.finish()
    assert torch.allclose(per_mel(clip).mean(dim=1), torch.zeros(2), atol=1e-5)  # the bins' levels flattened
    out = whole(clip)
    assert whole.mean.shape == whole.std.shape == (2,) and torch.equal(whole.mean, whole.mean[:1].expand(2))
    assert torch.allclose(out.mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(out.std(correction=0), torch.tensor(1.0), atol=1e-4)
    assert out[1].mean() - out[0].mean() > 1.5  # the louder bin stays louder
    restored = Normalizer(**whole.state_dict())
    assert torch.equal(restored(clip), out)
    with pytest.raises(ValueError, match="data.features.stats"):
        Normalizer(stats="per_bin")
