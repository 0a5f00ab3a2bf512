"""The demo text-emotion set: template sentences with an emotion cue (and sometimes a distractor)."""

from __future__ import annotations

import random
from pathlib import Path

from .store import write_jsonl_splits

EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]

_CUES = {
    "sadness": ["lonely", "heartbroken", "gloomy", "miserable", "hopeless", "tearful", "down", "grieving"],
    "joy": ["happy", "cheerful", "delighted", "thrilled", "glad", "joyful", "content", "excited"],
    "love": ["affectionate", "tender", "adored", "cherished", "romantic", "caring", "devoted", "fond"],
    "anger": ["furious", "irritated", "annoyed", "outraged", "bitter", "resentful", "enraged", "cranky"],
    "fear": ["scared", "anxious", "terrified", "nervous", "afraid", "worried", "panicked", "uneasy"],
    "surprise": ["amazed", "astonished", "shocked", "stunned", "startled", "speechless", "curious", "impressed"],
}
_OPENERS = ["i feel", "today i am", "honestly i feel", "i have been feeling", "right now i am", "i keep feeling"]
_CONTEXT = ["after the meeting", "about my family", "at work", "when i think of the weekend", "since yesterday",
            "about the news", "with my friends", "on the train home", "after that phone call", "about school"]
_FILLER = ["and i do not know why", "a little", "very", "so", "kind of", "really", "again", "more than usual"]


def _sentence(rng: random.Random, label: str, ambiguity: float) -> str:
    cue = rng.choice(_CUES[label])
    if rng.random() < ambiguity:  # a distractor cue from another class makes the task non-trivial
        other = rng.choice([e for e in EMOTIONS if e != label])
        parts = [rng.choice(_OPENERS), rng.choice(_FILLER), cue, "but also", rng.choice(_CUES[other])]
    else:
        parts = [rng.choice(_OPENERS), rng.choice(_FILLER), cue]
    parts.append(rng.choice(_CONTEXT))
    return " ".join(parts)


def make_text_emotion(directory: str | Path, sizes: dict[str, int] | None = None, seed: int = 0,
                      ambiguity: float = 0.3, label_noise: float = 0.05) -> Path:
    """Write `train/validation/test.jsonl` (`text, label`) unless they exist; return the dir."""

    def row(rng: random.Random, split: str, i: int) -> dict:
        label = EMOTIONS[i % len(EMOTIONS)]
        text = _sentence(rng, label, ambiguity)
        if rng.random() < label_noise:
            label = rng.choice(EMOTIONS)
        return {"text": text, "label": label}

    return write_jsonl_splits(directory, sizes or {"train": 2400, "validation": 300, "test": 300}, seed, row,
                              shuffle=True)
