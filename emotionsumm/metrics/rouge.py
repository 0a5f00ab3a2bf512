"""ROUGE-1/2/L/Lsum F-measure (x100) with the `rouge-score` package, stemming on, offline.

Scores are per-example F-measures averaged over the split (what `rouge-score` users report).
ROUGE-Lsum is computed on summaries split into one sentence per line. With several references
per example the primary keys are against the first reference and `<key>_mean_refs` is the mean
over the references (each example's F averaged over its references, then over examples).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
MEAN_REFS = "_mean_refs"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> str:
    """One sentence per line (existing lines are kept; a sentence ends at . ! or ? before a space)."""
    sentences = [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line)]
    return "\n".join(s for s in sentences if s)


@cache
def _scorer():  # noqa: ANN202 - rouge_score has no type hints
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(KEYS), use_stemmer=True)


def pair_scores(prediction: str, reference: str) -> dict[str, float]:
    """F-measure x100 of one prediction against one reference."""
    scores = _scorer().score(split_sentences(reference), split_sentences(prediction))
    return {key: 100.0 * scores[key].fmeasure for key in KEYS}


def rouge_scores(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> dict[str, float]:
    """Mean ROUGE F x100 of the predictions: vs the first reference, and `_mean_refs` when any
    example has more than one reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    if not predictions:
        return {}
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not r for r in refs):
        raise ValueError("every prediction needs at least one reference")
    first = {key: 0.0 for key in KEYS}
    mean = {key: 0.0 for key in KEYS}
    for prediction, example_refs in zip(predictions, refs):
        per_ref = [pair_scores(prediction, ref) for ref in example_refs]
        for key in KEYS:
            first[key] += per_ref[0][key]
            mean[key] += sum(s[key] for s in per_ref) / len(per_ref)
    n = len(predictions)
    metrics = {key: value / n for key, value in first.items()}
    if any(len(r) > 1 for r in refs):
        metrics.update({key + MEAN_REFS: value / n for key, value in mean.items()})
    return metrics
