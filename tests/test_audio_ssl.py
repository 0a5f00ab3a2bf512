"""Self-supervised speech encoders: the waveform pipeline, the SSL classifier (layer weights, pooling over valid
frames, attention mask only when the feature extractor asks for it, freezing), and fusion with it. Tiny randomly
initialised wav2vec2 / WavLM models saved to a temp dir stand in for pretrained ones (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emotionsumm.config.core import CONFIG_DIR
from emotionsumm.data.audio import AudioClassificationData
from emotionsumm.data.audio_features import AudioPipeline, FeatureCache, WaveformPipeline
from emotionsumm.models.audio_ssl import SpeechSSLClassifier

from .conftest import make_cfg
from .test_audio import folder, tone

SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "conv_dim": (16, 16, 16), "conv_stride": (5, 4, 4), "conv_kernel": (10, 4, 4),
         "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


def save_tiny_ssl(directory: Path, family: str = "wav2vec2") -> Path:
    """A tiny random speech encoder and its feature extractor, saved the way a hub model is.

    wav2vec2: the wav2vec2-base style (group-norm CNN, normalised input, no attention mask);
    wavlm: the wavlm-base-plus style (layer-norm CNN, raw input, attention mask)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    if family == "wav2vec2":
        model, mask, normalize = Wav2Vec2Model(Wav2Vec2Config(**SHAPE, feat_extract_norm="group")), False, True
    else:
        model = WavLMModel(WavLMConfig(**SHAPE, feat_extract_norm="layer", num_buckets=16, max_bucket_distance=64))
        mask, normalize = True, False
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=normalize,
                             return_attention_mask=mask).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    return save_tiny_ssl(tmp_path_factory.mktemp("wav2vec2"), "wav2vec2")


@pytest.fixture(scope="module")
def wavlm(tmp_path_factory) -> Path:
    return save_tiny_ssl(tmp_path_factory.mktemp("wavlm"), "wavlm")


def model(pretrained: Path, **kwargs) -> SpeechSSLClassifier:
    return SpeechSSLClassifier(num_classes=3, pretrained=str(pretrained), **kwargs)


def speech(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


# ---- the waveform pipeline -----------------------------------------------------------------------------
def test_waveform_pipeline_matches_the_feature_extractor(w2v, wavlm, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    pipeline = AudioPipeline(kind="waveform", feature_extractor=str(w2v), sample_rate=8000, duration=0.5,
                             n_mels=40, hop_length=320, freq_masks=2)  # log-mel keys are ignored
    assert isinstance(pipeline, WaveformPipeline) and pipeline.sample_rate == 16000  # the extractor's rate wins
    tone(tmp_path / "stereo.wav", 440.0, seconds=0.3, rate=8000, channels=2)
    wave = pipeline.extract(tmp_path / "stereo.wav")
    assert wave.shape == (4800,)  # mono, resampled 8 kHz -> 16 kHz
    out = pipeline.transform(wave, train=False)
    # statistics of the clip itself, then zero padding (what the extractor does when it knows the length)
    expected = Wav2Vec2FeatureExtractor.from_pretrained(w2v)(
        wave.numpy(), sampling_rate=16000, padding="max_length", max_length=8000, return_attention_mask=True,
        return_tensors="pt").input_values
    assert out.shape == (1, 1, 8000) and pipeline.num_frames == 8000 and pipeline.n_mels == 1
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)  # normalised, then zero-padded
    assert pipeline.normalizer.fitted and pipeline.normalizer.state_dict() is None  # nothing in the checkpoint

    raw = AudioPipeline(kind="waveform", feature_extractor=str(wavlm), duration=0.25)
    long = speech(1.0) * 0.1
    assert torch.equal(raw.transform(long, train=False)[0, 0], long[6000:10000])  # do_normalize false: centre
    assert not torch.equal(raw.transform(long, train=True), raw.transform(long, train=True))  # random window
    forced = AudioPipeline(kind="waveform", feature_extractor=str(wavlm), normalize=True, eval_crop="full")
    full, length = forced.transform_clip(long, train=False)
    assert full.shape == (1, 1, 16000) and length == 16000 and abs(float(full.std()) - 1) < 1e-3
    with pytest.raises(ValueError, match="data.features.eval_crop=full .* set eval_crop=center"):
        forced.num_frames  # noqa: B018 - a fixed-size collate (multimodal) reads it


def test_waveform_augmentation_and_settings(w2v, tmp_path):
    noisy = AudioPipeline(kind="waveform", duration=0.5, normalize=False, noise_snr_db=[10.0, 10.0], noise_prob=1.0)
    clean = speech(0.5) * 0.1
    added = noisy.transform(clean, train=True)[0, 0] - clean
    snr = 10 * torch.log10(clean.pow(2).mean() / added.pow(2).mean())
    assert abs(float(snr) - 10.0) < 0.5
    assert torch.equal(noisy.transform(clean, train=False)[0, 0], clean)  # evaluation: no augmentation
    with pytest.raises(ValueError, match=r"data.features.kind='mfcc' is not allowed; choose one of \['logmel', "):
        AudioPipeline(kind="mfcc")
    with pytest.raises(TypeError, match=r"unknown audio setting\(s\) \['n_mfcc'\]"):
        AudioPipeline(n_mfcc=13)
    with pytest.raises(FileNotFoundError, match=r"data.features.feature_extractor: no feature extractor "
                                                r"\(preprocessor_config.json\) in .*empty; set model.pretrained"):
        (tmp_path / "empty").mkdir()
        AudioPipeline(kind="waveform", feature_extractor=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="log-mel normaliser statistics, but data.features.kind=waveform"):
        AudioPipeline(kind="waveform", normalizer={"mean": torch.zeros(4), "std": torch.ones(4)})
    cache = FeatureCache(tmp_path / "cache", AudioPipeline(kind="waveform", feature_extractor=str(w2v)))
    tone(tmp_path / "a.wav", 300.0, rate=8000)
    assert torch.equal(cache.get(tmp_path / "a.wav"), cache.pipeline.extract(tmp_path / "a.wav"))
    assert cache.misses == 1 and cache.get(tmp_path / "a.wav").shape == (6400,) and cache.hits == 1
    assert cache.directory != FeatureCache(tmp_path / "cache", AudioPipeline()).directory  # log-mels elsewhere


def test_audio_data_batches_waveforms_with_their_lengths(w2v, tmp_path):
    root = folder(tmp_path / "data")  # 8 kHz clips of 0.30 and 0.35 s
    features = {"kind": "waveform", "feature_extractor": str(w2v), "duration": 0.32, "n_mels": 16}
    d = AudioClassificationData(root=str(root), split="group", split_ratios=[0.5, 0.25, 0.25], batch_size=4,
                                features=features, augment={"gain_db": 3.0, "freq_masks": 1})
    d.setup()
    assert d.model_kwargs() == {"num_classes": 3, "n_mels": 1} and d.state_dict()["normalizer"] is None
    val = d.dataset("val")
    batch = d.collate([val[i] for i in range(4)])
    assert batch["features"].shape == (4, 1, 1, 5120)
    lengths = sorted(batch["lengths"].tolist())
    assert lengths[0] == 4800 and lengths[-1] == 5120  # a 0.30 s clip padded, a 0.35 s one cropped
    short = [i for i in range(4) if batch["lengths"][i] == 4800][0]
    assert not batch["features"][short, 0, 0, 4800:].any()

    full = AudioClassificationData(root=str(root), split="group", split_ratios=[0.5, 0.25, 0.25], batch_size=4,
                                   features={**features, "eval_crop": "full"})
    full.setup()
    batch = full.collate([full.dataset("val")[i] for i in range(4)])
    assert set(batch["lengths"].tolist()) == {4800, 5600} and batch["features"].shape == (4, 1, 1, 5600)
    assert d.dataset("train")[0]["features"].shape == (1, 1, 5120)  # training crops stay fixed-size


# ---- the model ----------------------------------------------------------------------------------------
def test_weighted_layers_learn_and_a_chosen_layer_is_that_hidden_state(w2v):
    m = model(w2v).train()
    assert m.layer_weights.shape == (3,)  # CNN features + 2 transformer layers
    waves = torch.stack([speech(0.5, 1), speech(0.5, 2)])
    m(waves).logsumexp(-1).sum().backward()
    assert m.layer_weights.grad is not None and m.layer_weights.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.encoder.parameters())  # frozen by default

    second = model(w2v, layer=1).eval()
    with torch.no_grad():
        pooled = second.features(waves)
        hidden = second.encoder(waves, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(pooled, hidden.mean(dim=1))
    with pytest.raises(ValueError, match=r"model.layer=3 is not allowed; choose 'weighted' or a hidden-state index "
                                         r"in \[-3, 2\]"):
        model(w2v, layer=3)


def test_freezing_really_freezes_and_unfreezes_the_top_layers(w2v):
    m = model(w2v, unfreeze_at_epochs={1: 1})
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in m.parameters()], lr=1e-2)
    m.train()
    assert not m.encoder.training and m.head.training  # a wholly frozen encoder runs in eval mode
    waves, labels = torch.stack([speech(0.3, s) for s in range(4)]), torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(m(waves), labels).backward()
        optimizer.step()
    after = dict(m.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("encoder."))
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert not torch.equal(before["layer_weights"], after["layer_weights"])

    assert m.on_epoch_start(1) is True  # the top transformer layer trains from epoch 1
    layers = m.encoder.encoder.layers
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in [*layers[0].parameters(), *m.encoder.feature_extractor.parameters()])
    assert m.encoder.training and m.on_epoch_start(2) is False
    everything = model(w2v, freeze_encoder=False)  # all but the CNN feature encoder (freeze_feature_encoder)
    trainable = {n.split(".")[1] for n, p in everything.named_parameters() if p.requires_grad and n.startswith("enc")}
    assert trainable == {"feature_projection", "encoder", "masked_spec_embed"}
    assert everything.encoder.feature_extractor._requires_grad is False  # transformers skips autograd there
    assert all(p.requires_grad for p in model(w2v, freeze_encoder=False, freeze_feature_encoder=False).parameters())


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_zero_padding_changes_nothing(wavlm, pooling):
    """With an attention mask (WavLM style), a clip alone and the same clip zero-padded in a batch with a
    longer one pool to the same vector, whether the lengths are given or read from the trailing zeros."""
    m = model(wavlm, pooling=pooling).eval()
    clip, longer = speech(0.4, 3), speech(0.7, 4)
    padded = torch.stack([torch.nn.functional.pad(clip, (0, longer.shape[0] - clip.shape[0])), longer])
    with torch.no_grad():
        alone = m.features(clip[None])
        given = m.features(padded[:, None, None], lengths=torch.tensor([6400, 11200]))
        inferred = m.features(padded)
    torch.testing.assert_close(given[0], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(inferred, given)
    assert not torch.allclose(given[0], given[1])


def test_no_attention_mask_for_wav2vec2_base_style_models_but_pooling_skips_padding(w2v):
    m = model(w2v).eval()
    seen = []
    m.encoder.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs.get("attention_mask")),
                                        with_kwargs=True)
    waves = torch.stack([torch.nn.functional.pad(speech(0.3, 5), (0, 3200)), speech(0.5, 6)])
    with torch.no_grad():
        pooled = m.features(waves, lengths=torch.tensor([4800, 8000]))
        hidden = m.encoder(waves, output_hidden_states=True).hidden_states
    assert seen[0] is None  # zero padding only, as the feature extractor says (return_attention_mask false)
    frames = torch.stack(hidden).mul(m.layer_weights.softmax(0)[:, None, None, None]).sum(0)
    valid = int(m.encoder._get_feat_extract_output_lengths(torch.tensor(4800)))
    assert valid < frames.shape[1]
    torch.testing.assert_close(pooled[0], frames[0, :valid].mean(dim=0))
    torch.testing.assert_close(pooled[1], frames[1].mean(dim=0))


def test_bad_settings_name_their_key(w2v, tmp_path):
    with pytest.raises(ValueError, match="model.pretrained is not set"):
        SpeechSSLClassifier(num_classes=2)
    with pytest.raises(FileNotFoundError, match=r"model.pretrained: no pretrained model \(config.json\) in"):
        model(tmp_path / "missing")
    with pytest.raises(ValueError, match="gives 64-bin log-mels: set data.features.kind=waveform"):
        model(w2v, n_mels=64)
    with pytest.raises(ValueError, match=r"model.pooling='max' is not allowed"):
        model(w2v, pooling="max")
    with pytest.raises(TypeError, match=r"model: unknown setting\(s\) \['widht'\] for audio_ssl"):
        model(w2v, widht=16)
    assert model(w2v, width=16, depth=3).head[-1].in_features == 32  # the log-mel CNN's keys: ignored


def test_param_parts_and_the_encoder_lr(w2v):
    from emotionsumm.policies.classification import ClassificationPolicy
    from emotionsumm.training.optim import param_groups

    policy = ClassificationPolicy(model(w2v, lr=5e-5, pooling="attention"), class_names=["a", "b", "c"])
    optimizer = torch.optim.AdamW(param_groups(policy, 0.01), lr=1e-3)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {lr_of[id(p)] for p in policy.model.encoder.parameters()} == {5e-5}
    assert {lr_of[id(p)] for p in [policy.model.layer_weights, *policy.model.pool.parameters(),
                                   *policy.model.head.parameters()]} == {1e-3}
    assert set(policy.param_parts()) == {"encoder", "pooling", "head"}


# ---- configs and fusion -------------------------------------------------------------------------------
def test_model_audio_ssl_alone_selects_the_waveform_pipeline(w2v, tmp_path):
    cfg = make_cfg(tmp_path / "run", ["experiment=emotion_audio", "model=audio_ssl", f"model.pretrained={w2v}"])
    assert cfg.data.features.kind == "waveform" and cfg.data.features.feature_extractor == str(w2v)
    logmel = make_cfg(tmp_path / "run", ["experiment=emotion_audio"])
    assert logmel.data.features.kind == "logmel" and logmel.data.features.feature_extractor is None
    ssl = make_cfg(tmp_path / "run", ["experiment=emotion_audio_ssl"])
    assert ssl.data.features.kind == "waveform" and ssl.model.freeze_encoder and ssl.model.layer == "weighted"
    assert Path(CONFIG_DIR, "model", "audio_ssl.yaml").is_file()


def test_fusion_with_the_ssl_audio_encoder_runs_on_the_multimodal_demo(w2v, tmp_path):
    from emotionsumm.config.builders import build_data, build_policy

    cfg = make_cfg(tmp_path / "run", [
        "experiment=emotion_fusion", "model@model.encoders.audio=audio_ssl", f"model.encoders.audio.pretrained={w2v}",
        "data.audio.cache_features=false",  # the encoder config alone switches the audio pipeline to waveforms
        "data.batch_size=4", "logger=none"])
    data = build_data(cfg, None, splits=("train", "val"))
    policy = build_policy(cfg, data)
    assert isinstance(policy.model.encoders["audio"], SpeechSSLClassifier)
    batch = data.collate([data.dataset("val")[i] for i in range(4)])
    assert batch["audio_features"].shape == (4, 1, 1, 16000) and data.state_dict()["normalizer"] is None
    policy.train()
    loss = policy(batch)
    loss.backward()
    assert torch.isfinite(loss) and policy.model.encoders["audio"].layer_weights.grad is not None
    parts = policy.param_parts()
    assert "model.encoders.audio.layer_weights" in parts["audio"] and "model.encoders.audio.encoder." in parts["audio"]


def test_shipped_ssl_model_config_builds_from_a_local_dir(w2v):
    cfg = OmegaConf.load(Path(CONFIG_DIR, "model", "audio_ssl.yaml"))
    cfg.pretrained = str(w2v)
    built = instantiate(cfg, num_classes=4, n_mels=1)
    assert isinstance(built, SpeechSSLClassifier) and built.head[-1].out_features == 4
    assert not built.use_attention_mask and built.min_samples == 85
    assert np.isfinite(built(speech(0.2)[None]).detach().numpy()).all()
