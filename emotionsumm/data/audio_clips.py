"""What every speech pipeline shares: reading files as mono waveforms at a chosen sample rate, cheap checks
that a file is whole audio, the settings checks, the crop window and the cache key.

Used by the log-mel and the waveform pipelines. Every read failure is an `AudioReadError` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchaudio

from ..config.core import require_range


class AudioReadError(ValueError):
    """An audio file is missing, corrupt, empty or unreadable (the message names the file)."""


def _reason(exc: Exception) -> str:
    """libsndfile's own words (e.g. "Format not recognised.") without repeating the path."""
    return str(getattr(exc, "error_string", None) or exc)


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """(mono waveform [samples], sample rate) read with soundfile; channels are averaged."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(str(path)) as fh:
            expected, rate = fh.frames, fh.samplerate
            samples = fh.read(dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # soundfile's errors are RuntimeErrors
        raise AudioReadError(f"{path}: cannot read audio ({_reason(exc)})") from None
    if samples.shape[0] == 0:
        raise AudioReadError(f"{path}: audio file has no samples")
    if samples.shape[0] < expected:
        raise AudioReadError(truncated(path, expected, samples.shape[0]))
    check_wav_length(path)
    wave = torch.from_numpy(samples).mean(dim=1)
    if not torch.isfinite(wave).all():
        raise AudioReadError(f"{path}: audio has NaN or infinite samples")
    return wave, int(rate)


def probe_audio(path: str | Path) -> None:
    """Check cheaply (header, WAV data length, last frame of a compressed file) that a file is complete,
    readable audio with samples."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: audio file not found")
    tail = False
    try:
        with sf.SoundFile(str(path)) as fh:
            frames = fh.frames
            tail = bool(frames) and fh.format != "WAV"
            if tail:  # a cut compressed stream (FLAC, …) fails to seek to its last frame
                fh.seek(frames - 1)
                fh.read(1)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        hint = "; is the file truncated? re-download or re-export it" if tail else ""
        raise AudioReadError(f"{path}: cannot read audio ({_reason(exc)}){hint}") from None
    if frames == 0:
        raise AudioReadError(f"{path}: audio file has no samples")
    check_wav_length(path)


def truncated(path: Path, declared: int, present: int) -> str:
    """The message for a file with fewer frames than its header declares."""
    return (f"{path}: audio file is truncated: its header declares {declared} frames but only {present} are in "
            "the file (an interrupted download or copy?); re-download or re-export it")


def check_wav_length(path: Path) -> None:
    """A WAV whose data chunk is shorter than its header declares raises AudioReadError (libsndfile would
    silently read the shorter length). Other formats and streamed WAVs (size 0 or 0xFFFFFFFF) pass."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos, block = 12, 0
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(24)
            name, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if name == b"fmt " and len(chunk) >= 22:
                block = int.from_bytes(chunk[20:22], "little")  # bytes per frame (all channels)
            elif name == b"data":
                present = size - pos - 8
                if length not in (0, 0xFFFFFFFF) and length > present and block:
                    raise AudioReadError(truncated(path, length // block, present // block))
                return
            pos += 8 + length + (length & 1)


class ClipReader:
    """Mono waveforms at `sample_rate`: `read_audio`, resampled when a file has another rate (one
    torchaudio Resample per source rate, reused)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = int(sample_rate)
        self._resamplers: dict[int, torchaudio.transforms.Resample] = {}

    def __call__(self, path: str | Path) -> torch.Tensor:
        wave, rate = read_audio(path)
        if rate != self.sample_rate:
            if rate not in self._resamplers:
                self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.sample_rate)
            wave = self._resamplers[rate](wave)
        return wave


def check_clip_settings(sample_rate: int, duration: float, gain_db: float,
                        noise_snr_db: Sequence[float] | None) -> None:
    """The settings both pipelines take, each error naming its data key."""
    require_range("data.features.sample_rate", sample_rate, 1000)
    require_range("data.features.duration", duration, 0, low_open=True, note="(seconds)")
    require_range("data.augment.gain_db", gain_db, 0)
    if noise_snr_db is not None and (len(noise_snr_db) != 2 or noise_snr_db[0] > noise_snr_db[1]):
        raise ValueError(f"data.augment.noise_snr_db={list(noise_snr_db)} must be [low, high] in dB, or null")


def window_start(length: int, size: int, train: bool) -> int:
    """Where a `size`-long window of a `length`-long clip starts: random in training, centred otherwise
    (0 when the clip is not longer)."""
    extra = length - size
    if extra <= 0:
        return 0
    return int(torch.randint(0, extra + 1, ())) if train else extra // 2

