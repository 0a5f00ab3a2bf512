"""Seq2seq policy: teacher-forced cross-entropy for training, beam search + ROUGE for evaluation."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config.core import require_range
from ..metrics.rouge import rouge_scores
from ..runs.atomic import atomic_write_text
from . import ModelHooks

LABEL_PAD = -100


def _cell(text: str, limit: int = 600) -> str:
    """A Markdown table cell: escaped, one line, shortened."""
    text = text if len(text) <= limit else text[:limit] + " …"
    return html.escape(text).replace("|", "&#124;").replace("\n", "<br>")


class Seq2SeqPolicy(ModelHooks, nn.Module):
    """Wraps a summarizer (see models/seq2seq.py) and the tokenizer that decodes its output.

    Validation and test generate with the configured beam search and score ROUGE against the
    raw reference texts (never against the padded label ids); the teacher-forced loss per
    target token is reported as `loss`, and `encoder_gain` is how much higher that loss is when
    each summary is paired with another dialogue of its batch: near 0 means the decoder ignores
    the dialogue (a collapsed encoder), the typical failure of small encoder-decoders from scratch.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, label_smoothing: float = 0.0, num_beams: int = 4,
                 length_penalty: float = 1.0, no_repeat_ngram_size: int = 3, max_new_tokens: int = 128,
                 min_new_tokens: int = 0, early_stopping: bool = True, use_cache: bool = True,
                 num_logged_samples: int = 5) -> None:
        super().__init__()
        require_range("policy.label_smoothing", label_smoothing, 0.0, 0.99)
        require_range("policy.num_beams", num_beams, 1)
        require_range("policy.max_new_tokens", max_new_tokens, 1)
        decoder_positions = model.max_positions()[1]
        if max_new_tokens + 1 > decoder_positions:
            raise ValueError(f"policy.max_new_tokens={max_new_tokens} needs {max_new_tokens + 1} decoder positions "
                             f"but the model has {decoder_positions}; lower policy.max_new_tokens")
        self.model = model
        self.tokenizer = tokenizer
        self._labels_start_with_start: bool | None = None  # decided on the first batch (see targets)
        self.label_smoothing = label_smoothing
        self.generation = {"num_beams": num_beams, "length_penalty": length_penalty,
                           "no_repeat_ngram_size": no_repeat_ngram_size, "max_new_tokens": max_new_tokens,
                           "min_new_tokens": min_new_tokens, "early_stopping": early_stopping,
                           "use_cache": use_cache}
        self.num_logged_samples = num_logged_samples

    # ---- training -----------------------------------------------------------------------
    def targets(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder inputs, labels): labels without a leading decoder-start token (BERT's [CLS],
        our BPE's <s>), decoder inputs = start token + labels shifted right, pads for -100."""
        start = self.model.decoder_start_token_id
        if self._labels_start_with_start is None:  # a tokenizer adds the start token to every summary or to none:
            # read once, not per micro-batch (a host sync that stalls a GPU)
            self._labels_start_with_start = labels.size(1) > 1 and bool((labels[:, 0] == start).all())
        if self._labels_start_with_start and labels.size(1) > 1:
            labels = labels[:, 1:]
        inputs = labels.new_full(labels.shape, start)
        inputs[:, 1:] = labels[:, :-1]
        inputs.masked_fill_(inputs == LABEL_PAD, self.model.pad_token_id)
        return inputs, labels

    def _loss(self, batch: dict[str, Any], reduction: str = "mean",
              sources: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the labels given the batch's dialogues (or the rows `sources` of them)."""
        decoder_inputs, labels = self.targets(batch["labels"])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if sources is not None:
            ids, mask = ids[sources], mask[sources]
        labelled = labels != LABEL_PAD
        if ids.device.type == "cpu":  # logits of labelled positions only: padded summary rows cost nothing
            # (selecting them needs their count on the host: free on CPU, a pipeline stall on a GPU)
            logits, labels = self.model(ids, mask, decoder_inputs, labelled), labels[labelled]
        else:
            logits, labels = self.model(ids, mask, decoder_inputs).flatten(0, 1), labels.flatten()
        loss = F.cross_entropy(logits.float(), labels, ignore_index=LABEL_PAD, reduction=reduction,
                               label_smoothing=self.label_smoothing)
        return loss, labelled.sum()

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._loss(batch)[0]

    def summary_metrics(self) -> tuple[str, ...]:
        """What the one-line validation log shows (besides the monitored metric)."""
        return ("loss", "encoder_gain")

    # ---- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, Any], **overrides: Any) -> torch.Tensor:
        """Generated ids (batch, length); `overrides` replace the configured decoding options."""
        options = {**self.generation, **overrides}
        if options["num_beams"] == 1:  # greedy: beam-only options would only draw warnings
            options.pop("early_stopping")
            options.pop("length_penalty")
        return self.model.generate(batch["input_ids"], batch["attention_mask"], **options)

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def summarize(self, batch: dict[str, Any], **overrides: Any) -> list[str]:
        return self.decode(self.generate(batch, **overrides))

    def predict_rows(self, batch: dict[str, Any]) -> list[str]:
        """One summary per dialogue, on one line (what `predict` prints)."""
        return [" ".join(text.split()) for text in self.summarize(batch)]

    # ---- evaluation ---------------------------------------------------------------------
    def eval_state(self) -> dict[str, Any]:
        zero = torch.zeros((), dtype=torch.float64)
        return {"loss_sum": zero.clone(), "tokens": zero.clone(), "generated_tokens": zero.clone(),
                "encoder_gain_sum": zero.clone(), "encoder_gain_tokens": zero.clone(),
                "index": [], "ids": [], "dialogues": [], "references": [], "predictions": []}

    @torch.no_grad()
    def evaluation_step(self, batch: dict[str, Any], state: dict[str, Any]) -> None:
        if "labels" in batch:
            loss, tokens = self._loss(batch, reduction="sum")
            state["loss_sum"] += loss.double().cpu()
            state["tokens"] += tokens.double().cpu()
            if len(batch["input_ids"]) > 1:  # each summary with the next row's dialogue
                rolled = torch.roll(torch.arange(len(batch["input_ids"]), device=batch["input_ids"].device), 1)
                mismatched, _ = self._loss(batch, reduction="sum", sources=rolled)
                state["encoder_gain_sum"] += (mismatched - loss).double().cpu()
                state["encoder_gain_tokens"] += tokens.double().cpu()
        generated = self.generate(batch)
        pad = self.model.pad_token_id
        state["generated_tokens"] += (generated[:, 1:] != pad).sum().double().cpu()
        state["predictions"] += self.decode(generated)
        state["index"] += batch["index"].tolist()
        for key in ("ids", "dialogues", "references"):
            state[key] += list(batch[key])

    def compute_metrics(self, state: dict[str, Any]) -> dict[str, float]:
        metrics = rouge_scores(state["predictions"], state["references"])
        n = max(1, len(state["predictions"]))
        metrics["gen_len"] = float(state["generated_tokens"]) / n
        if float(state["tokens"]):
            metrics["loss"] = float(state["loss_sum"] / state["tokens"])
        if float(state["encoder_gain_tokens"]):
            metrics["encoder_gain"] = float(state["encoder_gain_sum"] / state["encoder_gain_tokens"])
        return metrics

    def log_artifacts(self, state: dict[str, Any], logger: Any, prefix: str, step: int,
                      run_dir: str | Path | None) -> None:
        """`predictions_<prefix>.jsonl` (file order) in the run dir and a sample table in TensorBoard."""
        order = sorted(range(len(state["index"])), key=lambda i: state["index"][i])
        if run_dir is not None:
            lines = [json.dumps({"id": state["ids"][i], "prediction": state["predictions"][i],
                                 "references": state["references"][i]}, ensure_ascii=False) for i in order]
            atomic_write_text("\n".join(lines) + "\n", Path(run_dir) / f"predictions_{prefix}.jsonl")
        rows = ["| dialogue | reference | prediction |", "|---|---|---|"]
        for i in order[: self.num_logged_samples]:
            rows.append(f"| {_cell(state['dialogues'][i])} | {_cell(state['references'][i][0])} | "
                        f"{_cell(state['predictions'][i])} |")
        logger.log_text(f"{prefix}/samples", "\n".join(rows), step)
