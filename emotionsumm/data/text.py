"""Text classification (or regression) data: single texts or sentence pairs from JSONL/CSV/TSV (any delimiter),
tokenized once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config.core import require_range
from . import tokenizers as toks
from .readers import column, read_lines, text_value
from .table import BadRow, Examples, TableData, TableDataset, picked
from .token_cache import CHUNK, LazyList, Ragged, TokenCache

log = logging.getLogger(__name__)


class TextDataset(TableDataset):
    """Token ids (`input_ids`, optional `token_type_ids`) of texts, held as Ragged arrays (memory-mapped when
    cached); `inputs[i]` is example i's dict of id lists. `texts` (and `pairs`) are the texts themselves."""

    def __init__(self, ids: Ragged, types: Ragged | None, labels: list[int] | None, texts: list[str],
                 names: list[str], pairs: list[str] | None = None) -> None:
        super().__init__((), labels if labels is not None else [None] * len(ids), names)
        self.ids, self.types = ids, types
        self.inputs = LazyList(len(ids), self._example)  # not a list: the ids stay in their arrays
        self.texts, self.pairs = texts, pairs

    def _example(self, index: int) -> dict[str, Any]:
        example: dict[str, Any] = {"input_ids": self.ids[index]}
        if self.types is not None:
            example["token_type_ids"] = self.types[index]
        return example

    def transform(self, value: dict[str, Any], train: bool) -> dict[str, Any]:
        return dict(value)

    def lengths(self) -> list[int]:
        """Token counts: evaluation batches length-sorted examples so that little padding is computed."""
        return self.ids.lengths()


class TextClassificationData(TableData):
    """Reads a text classification task and builds what the model and policy need.

    Rows come from one file per split (`files.train|val|test`, `split=files`) or from one table `file` split by
    `split=random|predefined|group` (see TableData): JSONL, CSV or TSV, or any delimited text with `delimiter`;
    `text_field` (and `text_pair_field` for sentence pairs) and `label_field` name the columns (indices without a
    header). Labels may be class ids or names; class names come from `class_names` or are inferred from the training
    split, and are stored in the checkpoint. With `tokenizer=None` a WordPiece tokenizer is trained on the training
    split (cached by content in `tokenizer_cache_dir`) and saved in the run dir; otherwise the pretrained tokenizer
    of that name or directory is used. With `token_cache_dir` the ids of each split are cached there by content and
    memory-mapped (token_cache.py), so a second set-up skips tokenisation. `state` (from a checkpoint) fixes classes
    and tokenizer. A row whose text (or pair, or label) is null, empty, only whitespace or a JSON list/object raises
    naming its file, line and key, or with `on_error=skip` is left out and counted. With `demo`, the demo set is
    generated into `demo_dir`, and every file must lie there. Sentence pairs are encoded as one sequence with
    `token_type_ids` (0 for the text, 1 for the pair), the longer side truncated first to fit `max_length`.
    `task=regression` reads numeric labels (e.g. a similarity score) for a one-output model.
    """

    label_key = "data.label_field"
    tasks = ("classification", "regression")

    def __init__(self, files: dict[str, str | None] | None = None, file: str | None = None,
                 text_field: Any = "text", text_pair_field: Any = None, label_field: Any = "label",
                 tokenizer: str | None = None, vocab_size: int = 8000, max_length: int = 128,
                 tokenizer_cache_dir: str | None = None, token_cache_dir: str | None = None,
                 state: dict[str, Any] | None = None, **common: Any) -> None:
        super().__init__(files=files, label_column=label_field, state=state, **common)
        require_range("data.max_length", max_length, 8)
        self.file = file
        self.text_field, self.text_pair_field = text_field, text_pair_field
        self.tokenizer_name, self.vocab_size, self.max_length = tokenizer, vocab_size, max_length
        self.tokenizer_cache_dir = tokenizer_cache_dir
        self.token_cache = TokenCache(token_cache_dir)
        self._tokenizer_json: str | None = (state or {}).get("tokenizer_json")
        self.tokenizer = None

    # ---- one example ----------------------------------------------------------------------------
    def make_demo(self, directory: Path) -> None:
        from ..demo.text import make_text_emotion

        make_text_emotion(directory)

    def parse(self, record: dict[Any, Any], where: str, path: Path) -> tuple[str, str | None]:
        """(text, pair); a null, empty or whitespace-only one is a bad row."""
        names = {"data.text_field": self.text_field}
        if self.text_pair_field is not None:
            names["data.text_pair_field"] = self.text_pair_field
        values = {key: column(record, name, where, key) for key, name in names.items()}
        if empty := [f"{key}={names[key]!r}" for key, value in values.items()
                     if text_value(value, f"{key}={names[key]!r}") is None]:
            raise BadRow(f"null, empty or whitespace-only value in {', '.join(empty)}")
        pair = values.get("data.text_pair_field")
        return str(values["data.text_field"]), str(pair) if pair is not None else None

    def needs_fit(self) -> bool:
        return self._tokenizer_json is None and not self.tokenizer_name

    def fit(self, train: Examples | None, run_dir: str | Path | None) -> None:
        """The tokenizer: the checkpoint's, the pretrained one, or a WordPiece trained on the training texts."""
        texts = None
        if train is not None:
            texts = [text for text, _ in train.inputs]
            if self.text_pair_field is not None:
                texts += [pair for _, pair in train.inputs]
        self.tokenizer, self._tokenizer_json = toks.build(
            self._tokenizer_json, self.tokenizer_name,
            (lambda: toks.train_wordpiece_cached(texts, self.tokenizer_cache_dir, vocab_size=self.vocab_size))
            if texts is not None else None, run_dir)

    def make_dataset(self, split: str, examples: Examples) -> TextDataset:
        return self._encode([t for t, _ in examples.inputs],
                            [p for _, p in examples.inputs] if self.text_pair_field is not None else None,
                            examples.ids, [r.where for r in examples.rows], self.token_cache)

    def _encode(self, texts: list[str], pairs: list[str] | None, labels: list[int] | None,
                names: list[str], cache: TokenCache | None = None) -> TextDataset:
        """The texts' ids, from `cache` when it holds them (keyed by the texts, tokenizer and max_length)."""
        settings = {"max_length": self.max_length, "truncation": "longest_first", "pairs": pairs is not None}
        arrays, _ = (cache or TokenCache(None)).tokenized("text", self.tokenizer, settings, (texts, pairs),
                                                          lambda: (self._tokenize(texts, pairs), {}))
        return TextDataset(arrays["input_ids"], arrays.get("token_type_ids"), labels, texts, names, pairs)

    def _tokenize(self, texts: list[str], pairs: list[str] | None) -> dict[str, Ragged]:
        """`input_ids` (and `token_type_ids` for pairs), tokenised CHUNK texts at a time."""
        ids, types = [], []
        for start in range(0, len(texts), CHUNK):
            enc = self.tokenizer(texts[start:start + CHUNK], pairs[start:start + CHUNK] if pairs is not None else None,
                                 truncation="longest_first", max_length=self.max_length,
                                 return_token_type_ids=pairs is not None, return_attention_mask=False)
            ids.append(Ragged.from_lists(enc["input_ids"]))
            if pairs is not None:
                types.append(Ragged.from_lists(enc["token_type_ids"]))
        arrays = {"input_ids": Ragged.concat(ids)}
        return {**arrays, "token_type_ids": Ragged.concat(types)} if pairs is not None else arrays

    # ---- what the trainer, model and policy need ------------------------------------------
    def predict_dataset(self, source: str) -> TextDataset:
        """Inputs for `predict`: one text per line of a file or stdin ('-')."""
        return self.encode_inputs(read_lines(source))

    def encode_inputs(self, lines: list[str]) -> TextDataset:
        """Unlabelled inputs for prediction; with a pair field, a tab separates text and pair."""
        names = [f"input line {i}" for i in range(1, len(lines) + 1)]
        if self.text_pair_field is None:
            return self._encode(lines, None, None, names)
        split = [line.split("\t", 1) + [""] for line in lines]
        return self._encode([s[0] for s in split], [s[1] for s in split], None, names)

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
            batch["labels"] = torch.tensor([ex["label"] for ex in examples],
                                           dtype=torch.float32 if self.regression else torch.long)
        return batch

    def baseline_views(self, split: str, rows: Sequence[int] | None = None) -> dict[str, Sequence[str]]:
        """The texts (and pairs) of a split, for the bag-of-words baseline."""
        dataset = self.datasets[split]
        return {"text": picked(dataset.texts, rows),
                **({"text_pair": picked(dataset.pairs, rows)} if dataset.pairs is not None else {})}

    def model_kwargs(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {**super().model_kwargs(), "vocab_size": len(tok), "pad_token_id": tok.pad_token_id}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tokenizer_json": self._tokenizer_json}
