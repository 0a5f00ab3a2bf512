"""A deterministic demo speech-emotion set: synthesised prosody, one WAV per clip and a labels CSV.

Each class has its own prosody (pitch level and contour, syllable rate, loudness, vibrato, voice
brightness); each speaker its own base pitch and timbre; each clip random variation around
both. Generated on first use so `experiment=emotion_audio` needs no download.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..runs.atomic import atomic_write_text


class Prosody(NamedTuple):
    pitch: float  # multiple of the speaker's base f0
    slope: float  # pitch change over the clip, in semitones
    rate: float  # syllables per second
    energy: float  # peak amplitude
    vibrato: float  # depth of a 6-8 Hz pitch tremor (fraction of f0)
    brightness: float  # decay of the harmonic amplitudes (higher = brighter voice)


PROSODY = {
    "neutral": Prosody(1.00, 0.0, 4.0, 0.45, 0.00, 0.55),
    "calm": Prosody(0.92, -1.0, 2.5, 0.30, 0.00, 0.45),
    "happy": Prosody(1.30, 3.0, 5.5, 0.65, 0.01, 0.70),
    "sad": Prosody(0.82, -3.0, 2.2, 0.25, 0.00, 0.35),
    "angry": Prosody(1.15, -0.5, 6.0, 0.85, 0.00, 0.85),
    "fearful": Prosody(1.40, 1.0, 5.0, 0.45, 0.04, 0.60),
}
EMOTIONS = list(PROSODY)
SPEAKER_F0 = [100.0, 112.0, 125.0, 140.0, 165.0, 185.0, 205.0, 225.0]  # base pitch of each speaker (Hz)


def synthesize_clip(rng: np.random.Generator, prosody: Prosody, f0: float, timbre: float, sample_rate: int,
          duration: float) -> np.ndarray:
    """One voiced utterance: harmonics of a moving f0 under a syllable envelope, plus breath noise."""
    t = np.arange(int(sample_rate * duration)) / sample_rate
    pitch = f0 * prosody.pitch * rng.uniform(0.93, 1.07)
    slope = prosody.slope + rng.uniform(-1.0, 1.0)
    vibrato = prosody.vibrato * np.sin(2 * np.pi * rng.uniform(6.0, 8.0) * t + rng.uniform(0, 2 * np.pi))
    f0_track = pitch * 2 ** (slope * t / duration / 12) * (1 + vibrato)
    phase = 2 * np.pi * np.cumsum(f0_track) / sample_rate
    brightness = np.clip(prosody.brightness * timbre * rng.uniform(0.9, 1.1), 0.1, 0.95)
    base, harmonic = np.exp(1j * phase), np.exp(1j * phase)
    voice = np.zeros_like(t)
    for h in range(1, 16):  # harmonics below Nyquist, amplitudes decaying by `brightness`
        if h * pitch * 1.2 >= sample_rate / 2:
            break
        voice += brightness ** (h - 1) * harmonic.imag
        harmonic = harmonic * base
    rate = prosody.rate * rng.uniform(0.85, 1.15)
    envelope = np.clip(np.sin(np.pi * rate * t + rng.uniform(0, np.pi)), 0, None) ** 0.7
    envelope *= np.clip(t / 0.05, 0, 1) * np.clip((duration - t) / 0.05, 0, 1)  # fade in/out
    signal = voice / np.abs(voice).max() * envelope + 0.02 * rng.standard_normal(t.shape) * envelope
    signal = signal / max(np.abs(signal).max(), 1e-9) * prosody.energy * rng.uniform(0.8, 1.2)
    return np.clip(signal + 0.003 * rng.standard_normal(t.shape), -1.0, 1.0).astype(np.float32)


def make_audio_emotion(directory: str | Path, clips_per_speaker: int = 8, num_speakers: int = 8,
                       sample_rate: int = 16000, duration: float = 1.0, seed: int = 0) -> Path:
    """Write `wav/*.wav` and `labels.csv` (`path, label, speaker`) unless labels.csv exists; return the dir.

    6 classes x `num_speakers` x `clips_per_speaker` clips (384 one-second clips at 16 kHz by default).
    labels.csv is written last, atomically: its presence means the set is complete.
    """
    import soundfile as sf

    directory = Path(directory)
    labels = directory / "labels.csv"
    if labels.is_file():
        return directory
    if num_speakers > len(SPEAKER_F0):
        raise ValueError(f"num_speakers={num_speakers} is out of range; allowed: 1..{len(SPEAKER_F0)}")
    (directory / "wav").mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", "speaker"])
    for s in range(num_speakers):
        speaker = f"spk{s:02d}"
        timbre = np.random.default_rng([seed, s]).uniform(0.85, 1.15)
        for c, emotion in enumerate(EMOTIONS):
            for k in range(clips_per_speaker):
                rng = np.random.default_rng([seed, s, c, k])
                wave = synthesize_clip(rng, PROSODY[emotion], SPEAKER_F0[s], timbre, sample_rate, duration)
                name = f"wav/{speaker}_{emotion}_{k:02d}.wav"
                tmp = directory / f"wav/.tmp-{os.getpid()}-{speaker}_{emotion}_{k:02d}.wav"
                sf.write(str(tmp), wave, sample_rate, subtype="PCM_16")
                os.replace(tmp, directory / name)
                writer.writerow([name, emotion, speaker])
    atomic_write_text(out.getvalue(), labels)
    return directory
