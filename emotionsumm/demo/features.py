"""A deterministic demo corpus of precomputed features in which neither view is enough.

The four classes are the corners of valence x arousal (joy +/high, calm +/low, anger -/high, sadness -/low),
as in the multimodal demo. Two views, like a face tracker's and a speech front end's outputs:

- `visual_au`: one vector of 17 "action unit intensities" per utterance. Valence moves a few of them
  (a smile or a frown) against per-utterance noise; arousal leaves no trace.
- `audio_lld`: a sequence of 20 to 60 frames of 12 "low-level descriptors". Arousal raises energy and
  pitch in a voiced stretch (a third to a half of the frames, anywhere in the clip) on top of a
  per-utterance speaker offset; valence leaves no trace.

So each view alone tells one of the two bits (at most about half of the examples right) and together
they tell both. About one row in ten lacks each view (never both); a few vectors hold a NaN and a few
sequences NaN frames (a tracker dropping out), which the data masks (only where the other view is there).

Written as `train|val|test.jsonl` manifests (`visual_au, audio_lld, label`), in both storage layouts:
`visual_au` as one [N, 17] array per split (`visual_au_<split>.npy#<row>`), `audio_lld` as one
[T, 12] file per example (`audio_lld/<index>.npy`). Generated on first use, no download.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from .store import write_directory_once

CLASSES = {"joy": (+1, +1), "calm": (+1, -1), "anger": (-1, +1), "sadness": (-1, -1)}  # (valence, arousal)
VISUAL_DIM, AUDIO_DIM = 17, 12
FRAMES = (20, 60)
SPLIT_SIZES = {"train": 640, "val": 160, "test": 160}


def _visual(noise: np.random.Generator, valence: int, direction: np.ndarray, nan: bool) -> np.ndarray:
    vector = noise.normal(0.0, 1.0, VISUAL_DIM) + 1.0 * valence * direction
    if nan:
        vector[noise.integers(VISUAL_DIM)] = np.nan
    return vector.astype(np.float32)


def _audio(noise: np.random.Generator, arousal: int, direction: np.ndarray, nan_frames: bool) -> np.ndarray:
    length = int(noise.integers(FRAMES[0], FRAMES[1] + 1))
    frames = noise.normal(0.0, 1.0, (length, AUDIO_DIM)) + noise.normal(0.0, 0.5, AUDIO_DIM)  # + speaker offset
    voiced = int(length * noise.uniform(0.33, 0.5))
    start = int(noise.integers(0, length - voiced + 1))
    frames[start:start + voiced] += 1.0 * arousal * direction
    if nan_frames:
        frames[noise.choice(length, size=3, replace=False)] = np.nan
    return frames.astype(np.float32)


def make_feature_demo(directory: str | Path, sizes: dict[str, int] | None = None, missing: float = 0.1,
                      nan_rate: float = 0.05, seed: int = 0) -> Path:
    """Write the manifests and feature files unless the set is complete; return the directory."""
    sizes = sizes or SPLIT_SIZES

    def fill(tmp: Path) -> None:
        rng = random.Random(seed)
        noise = np.random.default_rng(seed)
        visual_direction = np.zeros(VISUAL_DIM)
        visual_direction[[3, 5, 11]] = [1.0, -1.0, 1.0]  # "cheek raiser, brow lowerer, lip corner puller"
        audio_direction = np.zeros(AUDIO_DIM)
        audio_direction[[0, 1, 6]] = 1.0  # "energy, pitch, spectral flux"
        (tmp / "audio_lld").mkdir()
        labels, index = list(CLASSES), 0
        for split, size in sizes.items():
            rows, visual = [], np.zeros((size, VISUAL_DIM), dtype=np.float32)
            for i in range(size):
                label = labels[i % len(labels)]
                valence, arousal = CLASSES[label]
                has_visual, has_audio = rng.random() >= missing, rng.random() >= missing
                if not (has_visual or has_audio):
                    has_visual = True
                row: dict[str, str | None] = {"visual_au": None, "audio_lld": None, "label": label}
                if has_visual:
                    visual[i] = _visual(noise, valence, visual_direction, has_audio and rng.random() < nan_rate)
                    row["visual_au"] = f"visual_au_{split}.npy#{i}"
                if has_audio:
                    frames = _audio(noise, arousal, audio_direction, has_visual and rng.random() < nan_rate)
                    row["audio_lld"] = f"audio_lld/{index:05d}.npy"
                    np.save(tmp / row["audio_lld"], frames)
                rows.append(json.dumps(row))
                index += 1
            np.save(tmp / f"visual_au_{split}.npy", visual)
            rng.shuffle(rows)
            (tmp / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")

    return write_directory_once(directory, fill, f"demo feature set, {sizes}, seed {seed}")
