"""Extractive baselines scored by the same ROUGE code as the models: lead-k (the first k turns).

`python -m emotionsumm.evaluate baseline=lead3 experiment=dialogsum split=test`; `baseline=majority|linear`
scores a classification baseline instead (class_baselines.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

_LEAD = re.compile(r"^lead(\d+)$")


def lead_k(dialogue: str, k: int = 3) -> str:
    """The first `k` non-empty turns (lines) of a dialogue, one per line, speaker tags kept."""
    turns = [line.strip() for line in dialogue.splitlines() if line.strip()]
    return "\n".join(turns[:k])


def baseline(name: str) -> Callable[[str], str]:
    """The summarizer a baseline name stands for (`lead<k>`, e.g. lead3)."""
    match = _LEAD.match(str(name))
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"baseline={name!r} is not allowed; choose lead<k> with k >= 1 (e.g. lead3) for "
                         "summarization, or majority / linear for classification")
    k = int(match.group(1))
    return lambda dialogue: lead_k(dialogue, k)


def evaluate_baseline(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Score `cfg.baseline` on `cfg.split` of the experiment's data (`cfg.data`) with ROUGE (lead<k>; writes
    `predictions_<split>.jsonl` into `run_dir` and returns `<split>/rouge…` metrics), or with the classification
    metrics (majority, linear: `<split>/acc`, …).
    """
    from hydra.utils import instantiate

    from ..runs.atomic import atomic_write_text
    from .class_baselines import CLASS_BASELINES, evaluate_class_baseline
    from .rouge import rouge_scores

    if cfg.get("data") is None:
        raise ValueError(f"baseline={cfg.baseline} needs an experiment's data: add experiment=<name> "
                         "(e.g. experiment=dialogsum, or experiment=emotion_text for majority / linear)")
    if str(cfg.baseline) in CLASS_BASELINES:
        return evaluate_class_baseline(cfg, run_dir)
    summarize = baseline(cfg.baseline)
    data = instantiate(cfg.data)
    if not hasattr(data, "read"):
        raise ValueError(f"baseline={cfg.baseline} scores summaries; {cfg.data._target_} is not summarization "
                         "data (use experiment=summarization, dialogsum, …)")
    rows = data.read(cfg.split)
    predictions = [summarize(row.dialogue) for row in rows]
    scores = rouge_scores(predictions, [row.references for row in rows])
    lines = [json.dumps({"id": row.id, "prediction": pred, "references": row.references}, ensure_ascii=False)
             for row, pred in zip(rows, predictions)]
    atomic_write_text("\n".join(lines) + "\n", run_dir / f"predictions_{cfg.split}.jsonl")
    return {**{f"{cfg.split}/{k}": v for k, v in scores.items()}, "baseline": str(cfg.baseline),
            "examples": len(rows)}
