"""Text classification data: single texts or sentence pairs from JSONL/CSV/TSV, tokenized once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from . import tokenizers as toks
from .classification import ClassificationData, Label
from .readers import check_file, check_on_error, field, log_skipped, read_lines, read_rows, skip_or_raise, text_value
from .synthetic import demo_directory, make_text_emotion

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class EncodedDataset(Dataset):
    """Pre-tokenized examples: dicts of `input_ids`, optional `token_type_ids`, optional `label`."""

    def __init__(self, examples: list[dict[str, Any]], texts: list[str]) -> None:
        self.examples = examples
        self.texts = texts

    @property
    def labels(self) -> list[int | None]:
        return [ex.get("label") for ex in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


class TextClassificationData(ClassificationData):
    """Reads a text classification task and builds what the model and policy need.

    Labels may be class ids or names; class names come from `class_names` or are inferred from
    the training split, and are stored in the checkpoint. With `tokenizer=None` a WordPiece
    tokenizer is trained on the training split (cached by content in `tokenizer_cache_dir`) and
    saved in the run dir; otherwise the pretrained tokenizer of that name or directory is used.
    `state` (from a checkpoint) fixes classes and tokenizer, for resume, evaluate and predict.
    With `num_folds`, fold `fold` of the training file replaces the validation file.
    A row whose text (or pair, or label) is null, empty or only whitespace raises an error naming its
    file and line, or with `on_error=skip` is left out and counted. With `demo`, the demo set is
    generated into `demo_dir`, and every file must lie there.
    """

    def __init__(self, files: dict[str, str | None], text_field: Any = "text", text_pair_field: Any = None,
                 label_field: Any = "label", format: str | None = None, has_header: bool = True,
                 tokenizer: str | None = None, vocab_size: int = 8000, max_length: int = 128,
                 on_error: str = "raise", demo: bool = False, demo_dir: str | None = None,
                 tokenizer_cache_dir: str | None = None, state: dict[str, Any] | None = None, **common: Any) -> None:
        super().__init__(state=state, **common)
        if max_length < 8:
            raise ValueError(f"data.max_length={max_length} is out of range; allowed: >= 8")
        self.files = dict(files)
        self.text_field, self.text_pair_field, self.label_field = text_field, text_pair_field, label_field
        self.format, self.has_header = format, has_header
        self.tokenizer_name, self.vocab_size, self.max_length = tokenizer, vocab_size, max_length
        self.on_error, self.demo, self.demo_dir = check_on_error(on_error), demo, demo_dir
        self.skipped: dict[str, int] = {}
        self.tokenizer_cache_dir = tokenizer_cache_dir
        self._tokenizer_json: str | None = (state or {}).get("tokenizer_json")
        self.tokenizer = None

    # ---- set-up -------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read the requested splits, fix the classes, build the tokenizer, tokenize."""
        if self.demo and splits:
            make_text_emotion(demo_directory(self.demo_dir, {f"data.files.{s}": p for s, p in self.files.items()}))
        wanted = [s for s in splits if self.files.get(s) or s == "train"]
        if self.num_folds and "train" in splits:
            wanted = [s for s in wanted if s != "val"]
        raw = {s: self._read(s) for s in wanted}
        if "train" in raw:
            self.fix_classes(raw["train"][2])
        labelled = {s: (texts, pairs, self.label_ids(labels)) for s, (texts, pairs, labels) in raw.items()}
        if self.num_folds and "train" in labelled:
            labelled["train"], labelled["val"] = self._fold(*labelled["train"])
        if "train" in labelled:
            self.count_classes(labelled["train"][2])
        self._build_tokenizer(labelled.get("train"), run_dir)
        for split, (texts, pairs, labels) in labelled.items():
            self.datasets[split] = self._encode(texts, pairs, labels)
        log.info("data: %s; %d classes %s", {s: len(d) for s, d in self.datasets.items()},
                 len(self.class_names), self.class_names)

    def _fold(self, texts: list[str], pairs: list[str] | None, ids: list[int]) -> tuple[tuple, tuple]:
        train, held = self.take_fold(ids)

        def pick(rows: list[int]) -> tuple:
            return [texts[i] for i in rows], [pairs[i] for i in rows] if pairs else None, [ids[i] for i in rows]

        log.info("fold %d of %d: %d training rows, %d held out for validation", self.fold, self.num_folds,
                 len(train), len(held))
        return pick(train), pick(held)

    def _read(self, split: str) -> tuple[list[str], list[str] | None, list[Label]]:
        key = f"data.files.{split}"
        path = check_file(self.files.get(split), key)
        texts, pairs, labels = [], [] if self.text_pair_field is not None else None, []
        names = {"data.text_field": self.text_field, "data.label_field": self.label_field}
        if pairs is not None:
            names["data.text_pair_field"] = self.text_pair_field
        bad: list[str] = []
        total = 0
        for lineno, row in read_rows(path, self.format, self.has_header):
            total += 1
            values = {k: field(row, name, path, lineno, k) for k, name in names.items()}
            if empty := [f"{k}={names[k]!r}" for k, value in values.items() if text_value(value) is None]:
                skip_or_raise(self.on_error, f"{path}:{lineno}: null, empty or whitespace-only value in "
                              f"{', '.join(empty)}", bad)
                continue
            texts.append(str(values["data.text_field"]))
            if pairs is not None:
                pairs.append(str(values["data.text_pair_field"]))
            labels.append(Label(values["data.label_field"], f"{path}:{lineno}"))
        log_skipped(key, bad, total)
        self.skipped[split] = len(bad)
        if not texts:
            raise ValueError(f"{key}: split '{split}' is empty: {path} has no usable rows")
        return texts, pairs, labels

    def _build_tokenizer(self, train: tuple | None, run_dir: str | Path | None) -> None:
        texts = (train[0] + (train[1] or [])) if train is not None else None
        self.tokenizer, self._tokenizer_json = toks.build(
            self._tokenizer_json, self.tokenizer_name,
            (lambda: toks.train_wordpiece_cached(texts, self.tokenizer_cache_dir, vocab_size=self.vocab_size))
            if texts is not None else None, run_dir)

    def _encode(self, texts: list[str], pairs: list[str] | None, labels: list[int] | None) -> EncodedDataset:
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length,
                             return_token_type_ids=pairs is not None)
        examples = []
        for i, ids in enumerate(enc["input_ids"]):
            ex: dict[str, Any] = {"input_ids": ids}
            if pairs is not None:
                ex["token_type_ids"] = enc["token_type_ids"][i]
            if labels is not None:
                ex["label"] = labels[i]
            examples.append(ex)
        return EncodedDataset(examples, texts)

    # ---- what the trainer, model and policy need ------------------------------------------
    def predict_dataset(self, source: str) -> EncodedDataset:
        """Inputs for `predict`: one text per line of a file or stdin ('-')."""
        return self.encode_inputs(read_lines(source))

    def encode_inputs(self, lines: list[str]) -> EncodedDataset:
        """Unlabelled inputs for prediction; with a pair field, a tab separates text and pair."""
        if self.text_pair_field is None:
            return self._encode(lines, None, None)
        split = [line.split("\t", 1) + [""] for line in lines]
        return self._encode([s[0] for s in split], [s[1] for s in split], None)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of the batch (dynamic padding)."""
        ids, mask = toks.pad_ids([ex["input_ids"] for ex in examples], self.tokenizer.pad_token_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in examples[0]:
            types = torch.zeros_like(ids)
            for row, ex in enumerate(examples):
                types[row, : len(ex["token_type_ids"])] = torch.tensor(ex["token_type_ids"])
            batch["token_type_ids"] = types
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def model_kwargs(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {**super().model_kwargs(), "vocab_size": len(tok), "pad_token_id": tok.pad_token_id}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tokenizer_json": self._tokenizer_json}

