"""Deterministic demo faces (48×48 grey PNGs, one folder per emotion), generated on first use.

Each class has its own mouth curve/opening, brow tilt/height and eye opening; every fake subject
has its own face shape, brightness and feature spacing, and every image jitters position, size,
angle, the features themselves and pixel noise. File names follow CK+ (`S<subject>_<seq>_<frame>.png`),
so the demo exercises the subject-independent group split exactly like the real data.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from .store import write_directory_once

IMAGE_EMOTIONS = ["anger", "disgust", "fear", "happy", "neutral", "sadness", "surprise"]

# mouth curve (+ smile, - frown), mouth opening, mouth width, mouth asymmetry,
# brow tilt (+ inner ends down = frown), brow lift, eye opening
_CLASS_FACE: dict[str, dict[str, float]] = {
    "anger": {"curve": -0.15, "open": 0.0, "width": 0.65, "asym": 0.0, "tilt": 0.9, "lift": -0.5, "eye": 0.8},
    "disgust": {"curve": -0.35, "open": 0.05, "width": 0.7, "asym": 0.6, "tilt": 0.4, "lift": -0.3, "eye": 0.6},
    "fear": {"curve": -0.25, "open": 0.35, "width": 0.95, "asym": 0.0, "tilt": -0.6, "lift": 0.5, "eye": 1.35},
    "happy": {"curve": 0.75, "open": 0.15, "width": 1.0, "asym": 0.0, "tilt": 0.0, "lift": 0.1, "eye": 0.7},
    "neutral": {"curve": 0.0, "open": 0.0, "width": 0.8, "asym": 0.0, "tilt": 0.0, "lift": 0.0, "eye": 1.0},
    "sadness": {"curve": -0.7, "open": 0.0, "width": 0.8, "asym": 0.0, "tilt": -0.8, "lift": 0.1, "eye": 0.85},
    "surprise": {"curve": 0.0, "open": 0.75, "width": 0.5, "asym": 0.0, "tilt": 0.0, "lift": 0.9, "eye": 1.5},
}


def random_subject(rng: random.Random) -> dict[str, float]:
    """A fake person: face shape, skin and background brightness, feature spacing."""
    return {"face_w": rng.uniform(0.30, 0.38), "face_h": rng.uniform(0.40, 0.47), "skin": rng.uniform(150, 215),
            "bg": rng.uniform(20, 90), "eye_dx": rng.uniform(0.12, 0.16), "eye_y": rng.uniform(-0.10, -0.06),
            "mouth_y": rng.uniform(0.17, 0.23), "ink": rng.uniform(20, 60)}


def draw_face(rng: random.Random, noise: np.random.Generator, person: dict[str, float],
               face: dict[str, float], size: int) -> Any:
    """One face at 4× resolution, rotated, downsampled to `size`, with pixel noise."""
    from PIL import Image, ImageDraw

    big = size * 4
    jitter = {k: v + rng.gauss(0, 0.12) for k, v in face.items()}
    scale = big * rng.uniform(0.92, 1.08)
    cx, cy = big / 2 + rng.uniform(-2, 2) * 4, big / 2 + rng.uniform(-2, 2) * 4
    image = Image.new("L", (big, big), int(person["bg"]))
    draw = ImageDraw.Draw(image)
    fw, fh = person["face_w"] * scale, person["face_h"] * scale
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=int(person["skin"]))
    ink, line = int(person["ink"]), max(2, round(scale / 48))
    eye_y = cy + person["eye_y"] * scale
    for side in (-1, 1):
        ex = cx + side * person["eye_dx"] * scale
        ew, eh = 0.05 * scale, 0.028 * scale * max(0.2, jitter["eye"])
        draw.ellipse([ex - ew, eye_y - eh, ex + ew, eye_y + eh], fill=ink)
        brow_y = eye_y - (0.07 + 0.03 * jitter["lift"]) * scale
        inner, outer = ex - side * 0.06 * scale, ex + side * 0.07 * scale
        tilt = 0.035 * jitter["tilt"] * scale
        draw.line([inner, brow_y + tilt, outer, brow_y - tilt], fill=ink, width=line * 2)
    _draw_mouth(draw, cx, cy + person["mouth_y"] * scale, scale, jitter, ink, line)
    image = image.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BILINEAR, fillcolor=int(person["bg"]))
    small = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    small = small + noise.normal(0, rng.uniform(4, 12), small.shape)
    return Image.fromarray(np.clip(np.round(small), 0, 255).astype(np.uint8))


def _draw_mouth(draw: Any, mx: float, my: float, scale: float, face: dict[str, float], ink: int, line: int) -> None:
    """A curve (smile/frown, optionally lopsided) or, when open, a filled ellipse-like shape."""
    half = 0.12 * scale * max(0.3, face["width"])
    opening = max(0.0, face["open"]) * 0.09 * scale
    points_top, points_bottom = [], []
    for i in range(21):
        t = -1 + i / 10
        bend = face["curve"] * 0.06 * scale * (1 - t * t) + face["asym"] * 0.03 * scale * t
        x = mx + t * half
        y = my + bend
        points_top.append((x, y - opening * math.sqrt(max(0.0, 1 - t * t))))
        points_bottom.append((x, y + opening * math.sqrt(max(0.0, 1 - t * t))))
    if opening > line:
        draw.polygon(points_top + points_bottom[::-1], fill=ink)
    else:
        draw.line(points_top, fill=ink, width=line * 2, joint="curve")


def make_image_emotion(directory: str | Path, per_class: int = 80, subjects: int = 20, size: int = 48,
                       seed: int = 0) -> Path:
    """Write `<class>/S<subject>_<seq>_<frame>.png` for the demo emotions unless present; return the dir.

    Generated into a temporary sibling and renamed into place, so concurrent first uses (or a crash)
    never leave a half-written set.
    """

    def fill(tmp: Path) -> None:
        rng = random.Random(seed)
        noise = np.random.default_rng(seed)
        people = [random_subject(rng) for _ in range(subjects)]
        for seq, label in enumerate(IMAGE_EMOTIONS, start=1):
            (tmp / label).mkdir()
            for k in range(per_class):
                subject = k % subjects
                image = draw_face(rng, noise, people[subject], _CLASS_FACE[label], size)
                image.save(tmp / label / f"S{subject + 1:03d}_{seq:03d}_{k // subjects:08d}.png")

    return write_directory_once(directory, fill, f"demo faces: {len(IMAGE_EMOTIONS)} classes x {per_class}, "
                                                 f"seed {seed}")
