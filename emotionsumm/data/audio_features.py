"""The per-file speech pipeline: load → mono → resample → log-mel → crop/pad → augment → normalise.

Independent of labels and datasets, so any data object with an audio path (a labelled folder,
the `audio` column of a multimodal manifest) reuses it. `extract` gives the full-length,
un-augmented log-mel (what the feature cache stores); `transform` crops or pads it to the
configured duration (random crop in training, centre crop otherwise), applies the training-only
augmentations and the normaliser. Gain and additive noise act on the mel power (so they work on
cached features too); SpecAugment masks the normalised features with 0, the training mean.

`AudioPipeline(kind=waveform, …)` builds the raw-waveform pipeline of self-supervised speech encoders
instead (`audio_waveform.WaveformPipeline`, same interface), so every data object that builds an
AudioPipeline from its `features` config takes both; each kind ignores the other kind's keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchaudio

from ..config.core import require_choice, require_range
from .audio_clips import (
    AudioReadError,
    ClipReader,
    check_clip_settings,
    probe_audio,
    read_audio,
    window_start,
)
from .audio_waveform import WAVEFORM_SETTINGS, WaveformPipeline
from .cache_keys import file_ident, settings_key

__all__ = ["AudioPipeline", "AudioReadError", "FeatureCache", "LOG_FLOOR", "Normalizer", "WaveformPipeline",
           "clip_statistics", "probe_audio", "read_audio"]

log = logging.getLogger(__name__)

LOG_FLOOR = 1e-6  # added to the mel power before the log; log(LOG_FLOOR) is the value of silence
CACHE_VERSION = 1  # bump when `extract` changes, so old cached features are not reused
KINDS = ("logmel", "waveform")
# the keys only the log-mel pipeline takes (a waveform pipeline built from the same config ignores them)
LOGMEL_SETTINGS = ("n_mels", "n_fft", "win_length", "hop_length", "f_min", "f_max", "clip_norm", "stats", "freq_masks",
                   "freq_mask_width", "time_masks", "time_mask_width")
CLIP_NORMS = ("none", "mean", "mean_std")
STATS = ("per_mel", "global")


class Normalizer:
    """Per-mel-bin mean and std (population), fitted on the training split's full-length log-mels.

    `stats=global` fits one mean and std over every bin and frame instead (stored per bin, all equal): it
    keeps the clip's spectral shape (how loud the low bands are against the high ones), which per-bin
    statistics flatten.

    `clip_norm` first normalises each clip on its own, per mel bin over time (`mean`: subtract the clip's
    mean, i.e. cepstral mean normalisation; `mean_std`: also divide by its std): it removes the fixed
    spectral colour of a speaker, microphone or level that a model would otherwise learn as a cue.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 clip_norm: str = "none", stats: str = "per_mel") -> None:
        require_choice("data.features.clip_norm", clip_norm, CLIP_NORMS)
        require_choice("data.features.stats", stats, STATS)
        self.mean, self.std, self.clip_norm, self.stats = mean, std, clip_norm, stats
        self._sum = self._sq = None
        self._count = 0

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def per_clip(self, features: torch.Tensor) -> torch.Tensor:
        """One [n_mels, T] log-mel normalised over its own frames as `clip_norm` says."""
        if self.clip_norm == "none":
            return features
        x = features - features.mean(dim=-1, keepdim=True)
        if self.clip_norm == "mean_std":
            x = x / x.std(dim=-1, correction=0, keepdim=True).clamp_min(1e-5)
        return x

    def update(self, features: torch.Tensor) -> None:
        """Add one [n_mels, T] log-mel to the running float64 sums."""
        x = self.per_clip(features).double()
        if self._sum is None:
            self._sum, self._sq = torch.zeros(x.shape[0], dtype=torch.float64), torch.zeros(x.shape[0],
                                                                                              dtype=torch.float64)
        self._sum += x.sum(dim=1)
        self._sq += (x * x).sum(dim=1)
        self._count += x.shape[1]

    def finish(self) -> None:
        if not self._count:
            raise ValueError("cannot fit the audio normaliser: the training split has no readable audio")
        total, squares, count = self._sum, self._sq, self._count
        if self.stats == "global":
            count *= total.numel()
            total, squares = total.sum().expand_as(total), squares.sum().expand_as(squares)
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0.0)
        self.mean, self.std = mean.float(), var.sqrt().clamp_min(1e-5).float()

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (self.per_clip(features) - self.mean[:, None]) / self.std[:, None]

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return {"mean": self.mean.clone(), "std": self.std.clone()} if self.fitted else None


class AudioPipeline:
    """Turns an audio file into a normalised (and, in training, augmented) [1, n_mels, frames] tensor.

    Features: `kind` (logmel; `waveform` builds a WaveformPipeline), `sample_rate`, `duration` (seconds;
    clips are cropped or padded to it), `n_mels`, `n_fft`, `win_length`, `hop_length` (samples), `f_min`,
    `f_max`, `clip_norm` (per-clip normalisation before the training statistics), `stats` (per_mel | global
    training statistics; see Normalizer).
    Augmentation (training only): `freq_masks`/`freq_mask_width` and `time_masks`/`time_mask_width`
    (SpecAugment; widths are drawn from 0..width), `gain_db` (uniform in ±gain_db), `noise_snr_db`
    ([low, high]: white noise at a uniform SNR, with probability `noise_prob`). `normalizer` is the
    checkpoint's statistics.
    """

    kind = "logmel"

    def __new__(cls, kind: str = "logmel", **settings: Any) -> Any:
        """A log-mel pipeline, or for `kind=waveform` a WaveformPipeline from the settings it takes."""
        require_choice("data.features.kind", kind, KINDS)
        if kind == "waveform":
            return WaveformPipeline(**{k: v for k, v in settings.items() if k not in LOGMEL_SETTINGS})
        return super().__new__(cls)

    def __init__(self, kind: str = "logmel", sample_rate: int = 16000, duration: float = 2.0, n_mels: int = 64,
                 n_fft: int = 512, win_length: int | None = 400, hop_length: int = 160, f_min: float = 20.0,
                 f_max: float | None = None, clip_norm: str = "none", stats: str = "per_mel", freq_masks: int = 2,
                 freq_mask_width: int = 8, time_masks: int = 2,
                 time_mask_width: int = 20, gain_db: float = 0.0, noise_snr_db: Sequence[float] | None = None,
                 noise_prob: float = 0.5, normalizer: dict[str, torch.Tensor] | None = None,
                 **waveform_settings: Any) -> None:
        unknown = sorted(set(waveform_settings) - set(WAVEFORM_SETTINGS))
        if unknown:
            raise TypeError(f"data.features / data.augment: unknown audio setting(s) {unknown}")
        check_clip_settings(sample_rate, duration, gain_db, noise_snr_db)
        checks = {"features.n_mels": (n_mels, 2), "features.n_fft": (n_fft, 16), "features.hop_length": (hop_length, 1),
                  "augment.freq_masks": (freq_masks, 0), "augment.time_masks": (time_masks, 0),
                  "augment.freq_mask_width": (freq_mask_width, 0), "augment.time_mask_width": (time_mask_width, 0)}
        for key, (value, low) in checks.items():
            require_range(f"data.{key}", value, low)
        if win_length is not None:
            require_range("data.features.win_length", win_length, 1, n_fft, note=f"(n_fft={n_fft})")
        self.sample_rate, self.duration, self.n_mels = int(sample_rate), float(duration), int(n_mels)
        self.n_fft, self.win_length, self.hop_length = int(n_fft), win_length or int(n_fft), int(hop_length)
        self.f_min, self.f_max = float(f_min), float(f_max) if f_max is not None else sample_rate / 2
        self.freq_masks, self.freq_mask_width = freq_masks, min(freq_mask_width, n_mels)
        self.time_masks, self.time_mask_width = time_masks, time_mask_width
        self.gain_db, self.noise_snr_db, self.noise_prob = float(gain_db), noise_snr_db, float(noise_prob)
        self.num_frames = int(self.duration * self.sample_rate) // self.hop_length + 1
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=self.n_fft, win_length=self.win_length, hop_length=self.hop_length,
            f_min=self.f_min, f_max=self.f_max, n_mels=self.n_mels, power=2.0)
        profile = self.mel.mel_scale.fb.sum(dim=0)  # white noise's mel power per bin, up to a constant
        self._noise_profile = profile / profile.mean()
        self.read = ClipReader(self.sample_rate)
        self.normalizer = Normalizer(**(normalizer or {}), clip_norm=clip_norm, stats=stats)

    # ---- un-augmented, full-length features (what the cache stores) --------------------------
    def feature_config(self) -> dict[str, Any]:
        """Everything `extract` depends on (the cache key)."""
        return {"version": CACHE_VERSION, "sample_rate": self.sample_rate, "n_mels": self.n_mels,
                "n_fft": self.n_fft, "win_length": self.win_length, "hop_length": self.hop_length,
                "f_min": self.f_min, "f_max": self.f_max, "log_floor": LOG_FLOOR}

    def feature_key(self) -> str:
        return settings_key(self.feature_config())

    def load(self, path: str | Path) -> torch.Tensor:
        """Mono waveform at `sample_rate` (resampled when the file has another rate)."""
        return self.read(path)

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """[n_mels, frames] natural-log mel power; a clip shorter than one window is zero-padded to it."""
        if wave.shape[-1] < self.n_fft:
            wave = torch.nn.functional.pad(wave, (0, self.n_fft - wave.shape[-1]))
        with torch.no_grad():
            return torch.log(self.mel(wave) + LOG_FLOOR)

    def extract(self, path: str | Path) -> torch.Tensor:
        """The full-length, un-augmented, un-normalised log-mel of one file."""
        return self.logmel(self.load(path))

    # ---- per-example transform ------------------------------------------------------------
    def crop(self, features: torch.Tensor, train: bool) -> torch.Tensor:
        """`num_frames` frames: a random window in training, the centre one otherwise; short clips
        are padded at the end with silence."""
        frames = features.shape[1]
        if frames > self.num_frames:
            start = window_start(frames, self.num_frames, train)
            return features[:, start:start + self.num_frames]
        if frames < self.num_frames:
            return torch.nn.functional.pad(features, (0, self.num_frames - frames), value=math.log(LOG_FLOOR))
        return features

    def _gain_and_noise(self, features: torch.Tensor) -> torch.Tensor:
        if self.gain_db > 0:
            shift = (torch.rand(()) * 2 - 1) * self.gain_db * math.log(10) / 10
            features = features + shift
        if self.noise_snr_db is not None and float(torch.rand(())) < self.noise_prob:
            low, high = self.noise_snr_db
            snr = low + float(torch.rand(())) * (high - low)
            power = (features.exp() - LOG_FLOOR).clamp_min(0.0)
            level = power.mean() * 10 ** (-snr / 10)
            noise = torch.empty_like(power).exponential_() * self._noise_profile[:, None] * level
            features = torch.log(power + noise + LOG_FLOOR)
        return features

    def _spec_augment(self, features: torch.Tensor) -> torch.Tensor:
        features = features.clone()
        n_mels, frames = features.shape
        for count, width, size, axis in ((self.freq_masks, self.freq_mask_width, n_mels, 0),
                                         (self.time_masks, min(self.time_mask_width, frames), frames, 1)):
            for _ in range(count):
                w = int(torch.randint(0, width + 1, ()))
                start = int(torch.randint(0, size - w + 1, ()))
                if axis == 0:
                    features[start:start + w, :] = 0.0
                else:
                    features[:, start:start + w] = 0.0
        return features

    def transform(self, features: torch.Tensor, train: bool) -> torch.Tensor:
        """Cropped/padded, augmented (train only) and normalised [1, n_mels, num_frames] features."""
        if not self.normalizer.fitted:
            raise RuntimeError("the audio normaliser is not fitted: set up the data (training split) first")
        x = self.crop(features, train)
        if train:
            x = self._gain_and_noise(x)
        x = self.normalizer(x)
        if train:
            x = self._spec_augment(x)
        return x.unsqueeze(0)

    def __call__(self, path: str | Path, train: bool = False) -> torch.Tensor:
        return self.transform(self.extract(path), train)


def clip_statistics(pipeline: AudioPipeline | WaveformPipeline, raw: torch.Tensor) -> torch.Tensor:
    """Per-mel-bin mean and std over time of a clip's full-length log-mel ([2 * n_mels]): the fixed representation
    the linear baseline reads (metrics/class_baselines.py). `raw` is what `pipeline.extract` gives; a waveform
    pipeline's waveform becomes a log-mel of the default settings at its sample rate."""
    features = raw if pipeline.kind == "logmel" else AudioPipeline(sample_rate=pipeline.sample_rate).logmel(raw)
    features = features.reshape(-1, features.shape[-1]).double()
    return torch.cat([features.mean(dim=-1), features.std(dim=-1, correction=0)]).float()


class FeatureCache:
    """Full-length, un-augmented log-mels (or a WaveformPipeline's waveforms) on disk:
    `<directory>/<feature key>/<file key>.pt`, memory-mapped when read (a dataset holds views of the files, not
    copies in RAM).

    The feature key hashes the feature config; the file key hashes the file's resolved path, size
    and modification time, so an edited file is recomputed. Writes are atomic.
    """

    def __init__(self, directory: str | Path, pipeline: AudioPipeline | WaveformPipeline) -> None:
        self.pipeline = pipeline
        self.directory = Path(directory).expanduser() / pipeline.feature_key()
        self.hits = self.misses = 0
        self.mapped = True  # False once the OS refused a mapping (vm.max_map_count): later files are read whole

    def _file(self, path: Path) -> Path:
        return self.directory / (settings_key(file_ident(path), 24) + ".pt")

    def _read(self, target: Path) -> torch.Tensor:
        """The stored tensor, memory-mapped while the OS allows more mappings."""
        if self.mapped:
            try:
                return torch.load(target, weights_only=True, mmap=True)
            except Exception as exc:
                features = torch.load(target, weights_only=True)  # a damaged file raises again here
                self.mapped = False  # readable but not mappable: the OS's limit of mappings (vm.max_map_count)
                log.warning("audio feature cache: cannot memory-map %s (%s); reading the remaining cached features "
                            "into memory (raise vm.max_map_count to map them all)", target, exc)
                return features
        return torch.load(target, weights_only=True)

    def get(self, path: str | Path) -> torch.Tensor:
        """The cached features of `path` (memory-mapped), computed and stored on a miss."""
        from ..runs.atomic import atomic_save

        path = Path(path)
        if not path.is_file():
            raise AudioReadError(f"{path}: audio file not found")
        target = self._file(path)
        if target.is_file():
            try:
                features = self._read(target)
                self.hits += 1
                return features
            except Exception:  # a damaged cache entry is recomputed, never trusted
                target.unlink(missing_ok=True)
        features = self.pipeline.extract(path)
        atomic_save(features.clone(), target)
        self.misses += 1
        try:
            return self._read(target)
        except Exception:  # written but unreadable (e.g. the disk went away): the computed features are right
            return features
