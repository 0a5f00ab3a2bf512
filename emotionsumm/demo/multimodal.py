"""A deterministic demo multimodal emotion set in which no single modality is enough.

The four classes are the corners of valence × arousal: joy (+, high), calm (+, low), anger (−, high),
sadness (−, low). The text tells valence only (positive or negative words, no hint of arousal), the
voice tells arousal only (loud, fast, high pitch versus quiet, slow, low), and the face carries a
faint, noisy smile or frown (valence again). So each modality alone gets at most about half of the
examples right while text + audio together get nearly all; the face helps when the text is missing.
About one row in ten lacks each modality (never all of them), to exercise masking.

Written as `train|val|test.jsonl` manifests (`text, audio, image, label`; media paths relative to the
manifest) with `audio/*.wav` and `image/*.png`, generated on first use, no download.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from .audio import SPEAKER_F0, Prosody, synthesize_clip
from .image import draw_face, random_subject
from .store import write_directory_once

FUSION_EMOTIONS = {"joy": (+1, "high"), "calm": (+1, "low"), "anger": (-1, "high"), "sadness": (-1, "low")}
_WORDS = {
    +1: ["good", "nice", "lovely", "pleasant", "wonderful", "fine", "great", "sweet"],
    -1: ["bad", "awful", "horrible", "unpleasant", "terrible", "rotten", "nasty", "poor"],
}
_OPENERS = ["that was", "it all felt", "honestly it was", "the day was", "this is", "everything seemed"]
_CONTEXT = ["at work", "with the family", "on the phone", "after lunch", "this morning", "at the station"]
_PROSODY = {"high": Prosody(1.20, 1.0, 5.5, 0.75, 0.0, 0.75), "low": Prosody(0.90, -1.0, 2.5, 0.30, 0.0, 0.45)}
_FACE = {+1: 0.3, -1: -0.3}  # mouth curve; brows and eyes neutral
SPLIT_SIZES = {"train": 336, "val": 72, "test": 72}


def _text(rng: random.Random, valence: int) -> str:
    return " ".join([rng.choice(_OPENERS), rng.choice(_WORDS[valence]), rng.choice(_CONTEXT)])


def make_multimodal_emotion(directory: str | Path, sizes: dict[str, int] | None = None, missing: float = 0.1,
                            sample_rate: int = 16000, duration: float = 1.0, image_size: int = 48,
                            seed: int = 0) -> Path:
    """Write the manifests and media unless the set is complete; return the directory."""
    sizes = sizes or SPLIT_SIZES

    def fill(tmp: Path) -> None:
        import soundfile as sf

        (tmp / "audio").mkdir()
        (tmp / "image").mkdir()
        rng = random.Random(seed)
        noise = np.random.default_rng(seed)
        people = [random_subject(rng) for _ in range(12)]
        labels = list(FUSION_EMOTIONS)
        index = 0
        for split, size in sizes.items():
            rows = []
            for i in range(size):
                label = labels[i % len(labels)]
                valence, arousal = FUSION_EMOTIONS[label]
                present = [rng.random() >= missing for _ in range(3)]
                if not any(present):
                    present[0] = True
                row: dict[str, str | None] = {"text": None, "audio": None, "image": None, "label": label}
                if present[0]:
                    row["text"] = _text(rng, valence)
                if present[1]:
                    wave = synthesize_clip(np.random.default_rng([seed, index]), _PROSODY[arousal],
                                           rng.choice(SPEAKER_F0), rng.uniform(0.85, 1.15), sample_rate, duration)
                    row["audio"] = f"audio/{index:05d}.wav"
                    sf.write(str(tmp / row["audio"]), wave, sample_rate, subtype="PCM_16")
                if present[2]:
                    face = {"curve": _FACE[valence], "open": 0.0, "width": 0.8, "asym": 0.0, "tilt": 0.0,
                            "lift": 0.0, "eye": 1.0}
                    row["image"] = f"image/{index:05d}.png"
                    draw_face(rng, noise, rng.choice(people), face, image_size).save(tmp / row["image"])
                rows.append(json.dumps(row))
                index += 1
            rng.shuffle(rows)
            (tmp / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")

    return write_directory_once(directory, fill, f"demo multimodal emotion set, {sizes}, seed {seed}")
