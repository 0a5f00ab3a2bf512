"""Text classification data: single texts or sentence pairs from JSONL/CSV/TSV, tokenized once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from . import tokenizers as toks
from .readers import check_file, field, read_lines, read_rows
from .synthetic import make_text_emotion

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class EncodedDataset(Dataset):
    """Pre-tokenized examples: dicts of `input_ids`, optional `token_type_ids`, optional `label`."""

    def __init__(self, examples: list[dict[str, Any]], texts: list[str]) -> None:
        self.examples = examples
        self.texts = texts

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


class TextClassificationData:
    """Reads a text classification task and builds what the model and policy need.

    Labels may be class ids or names; class names come from `class_names` or are inferred from
    the training split, and are stored in the checkpoint. With `tokenizer=None` a WordPiece
    tokenizer is trained on the training split (cached by content in `tokenizer_cache_dir`) and
    saved in the run dir; otherwise the pretrained tokenizer of that name or directory is used.
    `state` (from a checkpoint) fixes classes and tokenizer, for resume, evaluate and predict.
    """

    def __init__(self, files: dict[str, str | None], text_field: Any = "text", text_pair_field: Any = None,
                 label_field: Any = "label", class_names: Sequence[str] | None = None, format: str | None = None,
                 has_header: bool = True, tokenizer: str | None = None, vocab_size: int = 8000,
                 max_length: int = 128, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, demo: bool = False, tokenizer_cache_dir: str | None = None,
                 balanced_sampling: bool = False, state: dict[str, Any] | None = None) -> None:
        if max_length < 8:
            raise ValueError(f"data.max_length={max_length} is out of range; allowed: >= 8")
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} is out of range; allowed: >= 1")
        self.files = dict(files)
        self.text_field, self.text_pair_field, self.label_field = text_field, text_pair_field, label_field
        self.format, self.has_header = format, has_header
        self.tokenizer_name, self.vocab_size, self.max_length = tokenizer, vocab_size, max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.demo = demo
        self.tokenizer_cache_dir = tokenizer_cache_dir
        self.balanced_sampling = balanced_sampling
        state = state or {}
        self.class_names: list[str] | None = list(state.get("class_names") or class_names or []) or None
        self.class_counts: list[int] | None = state.get("class_counts")
        self._tokenizer_json: str | None = state.get("tokenizer_json")
        self.tokenizer = None
        self.datasets: dict[str, EncodedDataset] = {}

    # ---- set-up -------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read the requested splits, fix the classes, build the tokenizer, tokenize."""
        if self.demo and splits and self.files.get("train"):
            make_text_emotion(Path(str(self.files["train"])).parent)
        raw = {s: self._read(s) for s in splits if self.files.get(s) or s == "train"}
        if self.class_names is None:
            self.class_names = self._infer_classes(raw["train"][2])
        labelled = {s: (texts, pairs, self._label_ids(s, labels)) for s, (texts, pairs, labels) in raw.items()}
        if "train" in labelled:
            ids = labelled["train"][2]
            self.class_counts = [ids.count(c) for c in range(len(self.class_names))]
        self._build_tokenizer(labelled.get("train"), run_dir)
        for split, (texts, pairs, labels) in labelled.items():
            self.datasets[split] = self._encode(texts, pairs, labels)
        log.info("data: %s; %d classes %s", {s: len(d) for s, d in self.datasets.items()},
                 len(self.class_names), self.class_names)

    def _read(self, split: str) -> tuple[list[str], list[str] | None, list[tuple[Any, Path, int]]]:
        key = f"data.files.{split}"
        path = check_file(self.files.get(split), key)
        texts, pairs, labels = [], [] if self.text_pair_field is not None else None, []
        for lineno, row in read_rows(path, self.format, self.has_header):
            texts.append(str(field(row, self.text_field, path, lineno, "data.text_field")))
            if pairs is not None:
                pairs.append(str(field(row, self.text_pair_field, path, lineno, "data.text_pair_field")))
            labels.append((field(row, self.label_field, path, lineno, "data.label_field"), path, lineno))
        if not texts:
            raise ValueError(f"{key}: split '{split}' is empty: {path} has no rows")
        return texts, pairs, labels

    @staticmethod
    def _infer_classes(labels: list[tuple[Any, Path, int]]) -> list[str]:
        values = [v for v, _, _ in labels]
        if all(_as_int(v) is not None for v in values):
            return [str(i) for i in range(max(_as_int(v) for v in values) + 1)]
        return sorted({str(v) for v in values})

    def _label_ids(self, split: str, labels: list[tuple[Any, Path, int]]) -> list[int]:
        index = {name: i for i, name in enumerate(self.class_names)}
        ids = []
        for value, path, lineno in labels:
            if str(value) in index:
                ids.append(index[str(value)])
            elif (as_int := _as_int(value)) is not None and 0 <= as_int < len(self.class_names):
                ids.append(as_int)
            else:
                raise ValueError(f"{path}:{lineno}: label {value!r} is not one of the classes "
                                 f"{self.class_names} (ids 0..{len(self.class_names) - 1}); fix the row "
                                 "or set data.class_names")
        return ids

    def _build_tokenizer(self, train: tuple | None, run_dir: str | Path | None) -> None:
        if self._tokenizer_json is None and self.tokenizer_name:
            self.tokenizer = toks.from_pretrained(self.tokenizer_name, key="data.tokenizer")
            return
        if self._tokenizer_json is None:
            if train is None:
                raise ValueError("a tokenizer must be trained but no training split was read (data.files.train)")
            texts, pairs, _ = train
            self._tokenizer_json = toks.train_wordpiece_cached(texts + (pairs or []), self.tokenizer_cache_dir,
                                                               vocab_size=self.vocab_size)
        self.tokenizer = toks.from_json(self._tokenizer_json)
        if run_dir is not None:
            self.tokenizer.save_pretrained(str(Path(run_dir) / "tokenizer"))

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
    def dataset(self, split: str) -> EncodedDataset | None:
        return self.datasets.get(split)

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
        pad = self.tokenizer.pad_token_id
        width = max(len(ex["input_ids"]) for ex in examples)
        ids = torch.full((len(examples), width), pad, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex["input_ids"])
            ids[row, :n] = torch.tensor(ex["input_ids"])
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in examples[0]:
            types = torch.zeros_like(ids)
            for row, ex in enumerate(examples):
                types[row, : len(ex["token_type_ids"])] = torch.tensor(ex["token_type_ids"])
            batch["token_type_ids"] = types
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def sample_weights(self) -> list[float] | None:
        """With `balanced_sampling`, draw training examples in inverse proportion to class size."""
        if not self.balanced_sampling:
            return None
        return [1.0 / self.class_counts[ex["label"]] for ex in self.datasets["train"].examples]

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.class_names), "vocab_size": len(self.tokenizer),
                "pad_token_id": self.tokenizer.pad_token_id}

    def policy_kwargs(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "class_counts": self.class_counts}

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "class_counts": self.class_counts,
                "tokenizer_json": self._tokenizer_json}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
