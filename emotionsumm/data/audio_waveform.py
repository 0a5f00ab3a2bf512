"""The waveform pipeline for self-supervised speech encoders (wav2vec2, HuBERT, WavLM): load → mono →
resample → crop/pad → gain/noise → per-utterance normalisation, as the model's feature extractor says.

`feature_extractor` (a local dir or Hugging Face name; `data.features.feature_extractor`, by default
`model.pretrained`) gives the sampling rate and `do_normalize` (zero mean, unit variance per clip, the way
`Wav2Vec2FeatureExtractor` computes it, before zero padding). Training takes a random `duration`-long
window; evaluation the centre one (`eval_crop: center`) or the whole clip (`eval_crop: full`, padded per
batch by the data's collate). Examples are [1, 1, samples] tensors: the shape of a one-bin spectrogram, so
the collates written for log-mels ([1, n_mels, num_frames]) stack them unchanged. There is nothing to fit
on the training split, so nothing goes into the checkpoint; `extract` (what the feature cache stores) is
the full-length mono waveform at the model's rate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config.core import require_choice
from ..models.pretrained import pretrained_source
from .audio_clips import ClipReader, check_clip_settings, window_start
from .cache_keys import settings_key

log = logging.getLogger(__name__)

WAVEFORM_SETTINGS = ("feature_extractor", "normalize", "eval_crop")  # the keys only this pipeline takes
EVAL_CROPS = ("center", "full")
NORM_EPS = 1e-7  # the variance floor of Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
CACHE_VERSION = 1  # bump when `extract` changes, so old cached waveforms are not reused


def extractor_settings(name_or_path: str, key: str = "data.features.feature_extractor") -> tuple[int, bool]:
    """(sampling_rate, do_normalize) of a Hugging Face feature extractor in a local dir or under a hub name."""
    from transformers import AutoFeatureExtractor

    source = pretrained_source(name_or_path, key, "preprocessor_config.json", "feature extractor",
                               "set model.pretrained (model=audio_ssl passes it on) or this key to a speech model's "
                               "directory or Hugging Face name, or this key to null (then data.features.sample_rate "
                               "and data.features.normalize apply)")
    try:
        extractor = AutoFeatureExtractor.from_pretrained(source)
    except OSError as exc:
        raise FileNotFoundError(f"{key}={name_or_path}: cannot load its feature extractor ({exc})") from None
    return int(extractor.sampling_rate), bool(getattr(extractor, "do_normalize", False))


class UtteranceNormalizer:
    """Zero mean and unit variance per clip (`do_normalize`), or the identity. Nothing is fitted on the
    training split, so it is `fitted` from the start and has no checkpoint state."""

    fitted = True

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return wave
        return (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + NORM_EPS)

    def state_dict(self) -> None:
        return None


class WaveformPipeline:
    """Turns an audio file into a normalised (and, in training, augmented) [1, 1, samples] waveform.

    `sample_rate` applies when no `feature_extractor` is given (else the extractor's rate); `duration`
    (seconds) is the training window and the `eval_crop=center` window; `normalize` null follows the
    extractor's `do_normalize` (true without an extractor). Augmentation (training only): `gain_db`
    (uniform in ±gain_db; a no-op under normalisation) and `noise_snr_db` ([low, high]: white noise at a
    uniform SNR, with probability `noise_prob`). `normalizer` must be empty: waveforms have no statistics.
    """

    kind = "waveform"
    n_mels = 1  # one row of samples: collates built for [1, n_mels, num_frames] log-mels stack it unchanged

    def __init__(self, sample_rate: int = 16000, duration: float = 2.0, feature_extractor: str | None = None,
                 normalize: bool | None = None, eval_crop: str = "center", gain_db: float = 0.0,
                 noise_snr_db: Sequence[float] | None = None, noise_prob: float = 0.5,
                 normalizer: dict[str, torch.Tensor] | None = None) -> None:
        check_clip_settings(sample_rate, duration, gain_db, noise_snr_db)
        require_choice("data.features.eval_crop", eval_crop, EVAL_CROPS)
        if normalizer:
            raise ValueError("the checkpoint's data carries log-mel normaliser statistics, but data.features.kind="
                             "waveform: the model was trained on log-mels (keep data.features.kind=logmel)")
        do_normalize = True
        if feature_extractor:
            rate, do_normalize = extractor_settings(str(feature_extractor))
            if rate != sample_rate:
                log.info("waveforms at %d Hz, the rate of the feature extractor %s (data.features.sample_rate=%d "
                         "is for log-mels)", rate, feature_extractor, sample_rate)
            sample_rate = rate
        self.sample_rate, self.duration, self.eval_crop = int(sample_rate), float(duration), eval_crop
        self.num_samples = max(1, round(self.duration * self.sample_rate))
        self.gain_db, self.noise_snr_db, self.noise_prob = float(gain_db), noise_snr_db, float(noise_prob)
        self.normalizer = UtteranceNormalizer(do_normalize if normalize is None else bool(normalize))
        self.read = ClipReader(self.sample_rate)

    @property
    def num_frames(self) -> int:
        """Samples per example, when every example has the same length (a fixed-size collate stacks them)."""
        if self.eval_crop == "full":
            raise ValueError("data.features.eval_crop=full keeps whole clips of different lengths, but this data "
                             "stacks fixed-size clips (multimodal data): set eval_crop=center")
        return self.num_samples

    # ---- un-augmented, full-length waveforms (what the cache stores) ---------------------------
    def feature_config(self) -> dict[str, Any]:
        """Everything `extract` depends on (the cache key)."""
        return {"kind": self.kind, "version": CACHE_VERSION, "sample_rate": self.sample_rate}

    def feature_key(self) -> str:
        return settings_key(self.feature_config())

    def load(self, path: str | Path) -> torch.Tensor:
        """Mono waveform at `sample_rate` (resampled when the file has another rate)."""
        return self.read(path)

    def extract(self, path: str | Path) -> torch.Tensor:
        """The full-length, un-augmented, un-normalised waveform of one file."""
        return self.load(path)

    # ---- per-example transform ------------------------------------------------------------
    def _gain_and_noise(self, wave: torch.Tensor) -> torch.Tensor:
        if self.gain_db > 0:
            wave = wave * 10 ** (float(torch.rand(()) * 2 - 1) * self.gain_db / 20)
        if self.noise_snr_db is not None and float(torch.rand(())) < self.noise_prob:
            low, high = self.noise_snr_db
            snr = low + float(torch.rand(())) * (high - low)
            wave = wave + torch.randn_like(wave) * (wave.pow(2).mean() * 10 ** (-snr / 10)).sqrt()
        return wave

    def transform_clip(self, wave: torch.Tensor, train: bool) -> tuple[torch.Tensor, int]:
        """([1, 1, samples] waveform, its length before zero padding). Training and `eval_crop=center` give
        `duration`-long windows (shorter clips padded); `eval_crop=full` evaluates the whole clip."""
        fixed = train or self.eval_crop == "center"
        if fixed:
            start = window_start(wave.shape[-1], self.num_samples, train)
            wave = wave[start:start + self.num_samples]
        if train:
            wave = self._gain_and_noise(wave)
        wave = self.normalizer(wave)
        length = wave.shape[-1]
        if fixed and length < self.num_samples:
            wave = torch.nn.functional.pad(wave, (0, self.num_samples - length))
        return wave.reshape(1, 1, -1), length

    def transform(self, wave: torch.Tensor, train: bool) -> torch.Tensor:
        """The [1, 1, samples] example of a full-length waveform (see `transform_clip`)."""
        return self.transform_clip(wave, train)[0]

    def __call__(self, path: str | Path, train: bool = False) -> torch.Tensor:
        return self.transform(self.extract(path), train)
