"""Dialogue summarization data: DialogSum / SAMSum rows, a BPE tokenizer, length-bucketed batches.

Rows come from JSONL or JSON (SAMSum's list) files with a dialogue field and one or more summary
fields: the first present is the training target, all present are references (DialogSum's test
split has `summary1..3`). A dialogue given as a list of strings is one turn per item, joined with
newlines (DialogSum's own form); any other list or object, in the dialogue or a summary, is a bad row
(never its Python repr). Sources and targets are truncated to `max_source_length` /
`max_target_length` tokens (counted and logged); labels are padded with -100.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config.core import require_choice, require_range
from . import tokenizers as toks
from .readers import ON_ERROR, check_file, log_skipped, read_rows, skip_or_raise, text_value
from .token_cache import CHUNK, LazyList, Ragged, TokenCache

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABEL_PAD = -100
PREDICT_SUFFIXES = ("", ".jsonl", ".json", ".txt", ".text")


class Dialogue(NamedTuple):
    """One row: its id, the dialogue, its reference summaries (may be empty for prediction)."""

    id: str
    dialogue: str
    references: list[str]


class SummaryDataset(Dataset):
    """Tokenized examples (`input_ids`, `labels`) in `order` (positions in the split), the ids held as Ragged arrays
    (memory-mapped when cached); evaluation examples also carry their texts (`rows`)."""

    def __init__(self, sources: Ragged, targets: Ragged | None, order: Sequence[int],
                 rows: list[Dialogue] | None = None) -> None:
        self.sources, self.targets, self.order, self.rows = sources, targets, order, rows

    @property
    def examples(self) -> LazyList:
        """The examples in dataset order, each built on access."""
        return LazyList(len(self), self.__getitem__)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(self.order[index])
        ex: dict[str, Any] = {"input_ids": self.sources[i]}
        if self.targets is not None:
            ex["labels"] = self.targets[i]
        if self.rows is not None:
            row = self.rows[i]
            ex.update(index=i, id=row.id, dialogue=row.dialogue, references=row.references)
        return ex


def length_buckets(lengths: Sequence[int], batch_size: int, bucket_width: float = 0.2,
                   seed: int = 0) -> list[list[int]]:
    """Fixed training batches (lists of example indices) of similar source length.

    Examples are grouped into length bins `bucket_width` wide (relative: 0.2 = lengths within 20 % of
    each other), shuffled inside each bin with a seeded RNG and cut into batches of `batch_size` (the
    leftovers of all bins, in length order, make the last batches). Padding stays small while a batch
    still mixes unrelated dialogues (exact sorting would group near-identical ones). The batches are
    fixed once; the trainer shuffles their order every epoch (as fairseq does), deterministically per
    seed and epoch, resumable mid-epoch (`Data.train_batches`).
    """
    require_range("data.bucket_width", bucket_width, 0.01)
    rng = random.Random(seed)
    bins: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        bins.setdefault(math.floor(math.log(length) / math.log1p(bucket_width)), []).append(i)
    batches, leftovers = [], []
    for key in sorted(bins):
        members = bins[key]
        rng.shuffle(members)
        full = len(members) - len(members) % batch_size
        batches += [members[s : s + batch_size] for s in range(0, full, batch_size)]
        leftovers += members[full:]
    leftovers.sort(key=lambda i: lengths[i])
    return batches + [leftovers[s : s + batch_size] for s in range(0, len(leftovers), batch_size)]


class DialogueSummaryData:
    """Reads a summarization task and builds what the model and policy need.

    With `tokenizer=None` a byte-level BPE is trained on the training split (cached by content,
    speaker tags matching `keep_whole` kept as single tokens) and saved in the run dir; otherwise
    the pretrained tokenizer of that name or directory is used. With `token_cache_dir` each split's ids
    are cached there by content and memory-mapped (token_cache.py): a second set-up skips tokenisation.
    `state` (from a checkpoint) fixes the tokenizer, so evaluate and predict need only the checkpoint.
    With `bucket_by_length`, `train_batches()` gives fixed batches of `batch_size` training examples
    of similar length (see `length_buckets`), which the trainer shuffles as units. `max_eval_examples`
    keeps a fixed random subset of the validation split (generation is slow on CPU); the test split is
    always whole.
    """

    def __init__(self, files: dict[str, str | None], format: str | None = None, dialogue_field: str = "dialogue",
                 summary_fields: Sequence[str] = ("summary",), id_field: str | None = None,
                 tokenizer: str | None = None, vocab_size: int = 8000, min_frequency: int = 2,
                 keep_whole: str | None = r"#\w+#", tokenizer_cache_dir: str | None = None,
                 token_cache_dir: str | None = None,
                 max_source_length: int = 512, max_target_length: int = 128, batch_size: int = 16,
                 eval_batch_size: int | None = None, num_workers: int = 0, bucket_by_length: bool = True,
                 bucket_width: float = 0.2,
                 max_eval_examples: int | None = None, on_error: str = "raise", demo: bool = False,
                 demo_dir: str | None = None, seed: int = 0, state: dict[str, Any] | None = None) -> None:
        require_choice("data.on_error", on_error, ON_ERROR)
        require_range("data.batch_size", batch_size, 1)
        require_range("data.num_workers", num_workers, 0)
        require_range("data.max_source_length", max_source_length, 8)
        require_range("data.max_target_length", max_target_length, 4)
        if not summary_fields:
            raise ValueError("data.summary_fields is empty; name at least one summary field (e.g. [summary])")
        self.files = dict(files)
        self.format, self.dialogue_field, self.id_field = format, dialogue_field, id_field
        self.summary_fields = [summary_fields] if isinstance(summary_fields, str) else list(summary_fields)
        self.tokenizer_name, self.vocab_size, self.min_frequency = tokenizer, vocab_size, min_frequency
        self.keep_whole, self.tokenizer_cache_dir = keep_whole, tokenizer_cache_dir
        self.token_cache = TokenCache(token_cache_dir)
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.bucket_by_length, self.bucket_width = bucket_by_length, bucket_width
        self.batch_size = batch_size
        self._train_batches: list[list[int]] | None = None
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.max_eval_examples, self.on_error, self.demo, self.seed = max_eval_examples, on_error, demo, seed
        self.demo_dir = demo_dir
        self._tokenizer_json: str | None = (state or {}).get("tokenizer_json")
        self.tokenizer: Any = None
        self.datasets: dict[str, Dataset] = {}
        self.stats: dict[str, dict[str, int]] = {}

    # ---- reading ------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read the requested splits, build the tokenizer, tokenize (and bucket the training split)."""
        rows = {s: self.read(s) for s in splits if self.files.get(s) or s == "train"}
        self._build_tokenizer(rows.get("train"), run_dir)
        for split, split_rows in rows.items():
            sources, targets = self._encode(split_rows, split, self.token_cache)
            lengths = sources.lengths()
            order: Sequence[int] = range(len(split_rows))
            if split == "train" and self.bucket_by_length:  # in file order: the batches are index groups
                self._train_batches = length_buckets(lengths, self.batch_size, self.bucket_width, self.seed)
            else:  # sorted by length (less padding); `index` restores the file order of evaluation splits
                order = np.argsort(np.asarray(lengths), kind="stable")
            self.datasets[split] = SummaryDataset(sources, targets, order, split_rows if split != "train" else None)
        log.info("data: %s", {s: self.stats[s] for s in rows})

    def _make_demo(self) -> None:
        """With `demo`, generate the demo set into `demo_dir` (every file must lie there)."""
        if self.demo:
            from ..demo.dialogue import make_dialogues
            from ..demo.store import demo_directory

            make_dialogues(demo_directory(self.demo_dir, {f"data.files.{s}": p for s, p in self.files.items()}))

    def read(self, split: str) -> list[Dialogue]:
        """The rows of a split; a bad row names its file and line (or is skipped and counted).

        The validation split is cut to a fixed random `max_eval_examples` rows, for models and
        baselines alike, so that their scores compare.
        """
        self._make_demo()
        key = f"data.files.{split}"
        path = check_file(self.files.get(split), key)
        rows: list[Dialogue] = []
        skipped: list[str] = []
        total = 0
        def bad_row(lineno: int, message: str) -> None:
            nonlocal total
            total += 1
            skip_or_raise(self.on_error, f"{path}:{lineno}: {message}", skipped)

        for lineno, row in read_rows(path, self.format, bad_fields=bad_row):
            total += 1
            try:
                rows.append(self._row(row, split, lineno, need_summary=True))
            except ValueError as exc:
                skip_or_raise(self.on_error, f"{path}:{lineno}: {exc}", skipped)
        log_skipped(key, skipped, total)
        if not rows:
            raise ValueError(f"{key}: split '{split}' is empty: {path} has no usable rows")
        if split == "val" and self.max_eval_examples and len(rows) > self.max_eval_examples:
            keep = sorted(random.Random(self.seed).sample(range(len(rows)), self.max_eval_examples))
            log.info("val: a fixed random %d of %d dialogues (data.max_eval_examples)", len(keep), len(rows))
            rows = [rows[i] for i in keep]
        self.stats[split] = {"rows": len(rows), "skipped": len(skipped), "source_truncated": 0, "target_truncated": 0}
        return rows

    def _row(self, row: dict[str, Any], split: str, lineno: int, need_summary: bool) -> Dialogue:
        dialogue = row.get(self.dialogue_field)
        if dialogue is None and self.dialogue_field not in row:
            raise ValueError(f"no field {self.dialogue_field!r} (data.dialogue_field); fields are {list(row)}")
        if isinstance(dialogue, list) and all(isinstance(turn, str) for turn in dialogue):
            dialogue = "\n".join(turn.strip() for turn in dialogue)  # a list of turns: one turn per line
        dialogue = text_value(dialogue, f"data.dialogue_field={self.dialogue_field!r}") or ""
        dialogue = dialogue.replace("\r\n", "\n").strip()
        if not dialogue:
            raise ValueError(f"empty dialogue (null, empty or only whitespace; data.dialogue_field="
                             f"{self.dialogue_field!r})")
        refs = [(text_value(row[f], f"data.summary_fields: {f!r}") or "").strip() for f in self.summary_fields
                if row.get(f) is not None]
        if need_summary and (not refs or not all(refs)):
            what = "empty summary" if refs else f"no summary: the fields {self.summary_fields} are missing or null"
            raise ValueError(f"{what} (data.summary_fields)")
        ident = row.get(self.id_field) if self.id_field else row.get("fname", row.get("id"))
        return Dialogue(str(ident) if ident is not None else f"{split}_{lineno}", dialogue, refs)

    # ---- tokenizing ---------------------------------------------------------------------
    def _build_tokenizer(self, train: list[Dialogue] | None, run_dir: str | Path | None) -> None:
        texts = [r.dialogue for r in train] + [r.references[0] for r in train] if train is not None else None
        self.tokenizer, self._tokenizer_json = toks.build(
            self._tokenizer_json, self.tokenizer_name,
            (lambda: toks.train_bpe_cached(texts, self.tokenizer_cache_dir, self.vocab_size, self.min_frequency,
                                           self.keep_whole)) if texts is not None else None, run_dir)

    def _truncated_ids(self, texts: list[str], max_length: int) -> tuple[Ragged, int]:
        """Token ids cut to `max_length` (special tokens kept) and how many texts were cut; CHUNK texts a call."""
        parts, cut = [], 0
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            enc = self.tokenizer(chunk, truncation=True, max_length=max_length, return_overflowing_tokens=True,
                                 return_attention_mask=False)
            ids: list[list[int]] = [[] for _ in chunk]
            pieces = [0] * len(chunk)
            for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
                pieces[sample] += 1
                if pieces[sample] == 1:
                    ids[sample] = enc["input_ids"][row]
            parts.append(Ragged.from_lists(ids))
            cut += sum(n > 1 for n in pieces)
        return Ragged.concat(parts), cut

    def _encode(self, rows: list[Dialogue], split: str, cache: TokenCache | None = None
                ) -> tuple[Ragged, Ragged | None]:
        """(source ids, target ids or None when a row has no reference), from `cache` when it holds them (keyed by
        the dialogues, first references, tokenizer and maximum lengths); the truncation counts go to `stats`."""
        dialogues = [r.dialogue for r in rows]
        references = [r.references[0] for r in rows] if all(r.references for r in rows) else None

        def tokenize() -> tuple[dict[str, Ragged], dict[str, Any]]:
            sources, cut_sources = self._truncated_ids(dialogues, self.max_source_length)
            arrays, meta = {"input_ids": sources}, {"source_truncated": cut_sources}
            if references is not None:
                arrays["labels"], meta["target_truncated"] = self._truncated_ids(references, self.max_target_length)
            return arrays, meta

        settings = {"max_source_length": self.max_source_length, "max_target_length": self.max_target_length}
        arrays, meta = (cache or TokenCache(None)).tokenized("dialogue", self.tokenizer, settings,
                                                             (dialogues, references), tokenize)
        stats = self.stats.setdefault(split, {"rows": len(rows), "skipped": 0})
        stats.update(meta)
        if cut := meta["source_truncated"]:
            log.info("%s: %d of %d dialogues truncated to data.max_source_length=%d tokens", split, cut,
                     len(rows), self.max_source_length)
        return arrays["input_ids"], arrays.get("labels")

    def collate(self, examples: list[Any]) -> dict[str, Any]:
        """Pad to the longest example of the batch; labels with -100; texts as lists."""
        ids, mask = toks.pad_ids([ex["input_ids"] for ex in examples], self.tokenizer.pad_token_id)
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "labels" in examples[0]:
            labels = torch.full((len(examples), max(len(ex["labels"]) for ex in examples)), LABEL_PAD,
                                dtype=torch.long)
            for row, ex in enumerate(examples):
                labels[row, : len(ex["labels"])] = torch.tensor(ex["labels"])
            batch["labels"] = labels
        if "index" in examples[0]:
            batch["index"] = torch.tensor([ex["index"] for ex in examples], dtype=torch.long)
            batch["ids"] = [ex["id"] for ex in examples]
            batch["dialogues"] = [ex["dialogue"] for ex in examples]
            batch["references"] = [ex["references"] for ex in examples]
        return batch

    # ---- prediction inputs --------------------------------------------------------------
    def predict_dataset(self, source: str) -> SummaryDataset:
        """Inputs for `predict`: JSONL (or a JSON list) with a dialogue field, or one plain-text
        dialogue, from a file or stdin ('-'); anything else says what was expected."""
        expected = (f"expected JSONL with a {self.dialogue_field!r} field per line (data.dialogue_field), "
                    "or a plain-text dialogue")
        name = "stdin" if source == "-" else source
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"input: file not found: {path} (set input=<file> or input=- for stdin)")
            if path.suffix.lower() not in PREDICT_SUFFIXES:
                raise ValueError(f"input: {path} has suffix {path.suffix!r}; {expected} (.jsonl, .json or .txt)")
            raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"input: {name} is not UTF-8 text; {expected}") from None
        if not text.strip() or "\x00" in text:
            raise ValueError(f"input: {name} {'is empty' if not text.strip() else 'is binary'}; {expected}")
        if text.lstrip()[0] in "{[":
            rows = self._json_inputs(text, name, expected)
        else:
            rows = [Dialogue("0", text.replace("\r\n", "\n").strip(), [])]
        sources, targets = self._encode(rows, "predict")
        return SummaryDataset(sources, targets, range(len(rows)), rows)

    def _json_inputs(self, text: str, name: str, expected: str) -> list[Dialogue]:
        stripped = text.lstrip()
        if stripped[0] == "[":
            try:
                items = list(enumerate(json.loads(stripped), start=1))
            except json.JSONDecodeError as exc:
                raise ValueError(f"input: {name} is not valid JSON ({exc.msg}); {expected}") from None
        else:
            items = []
            for lineno, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    items.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"input: {name}:{lineno}: not valid JSON ({exc.msg}); {expected}") from None
        rows = []
        for lineno, item in items:
            if not isinstance(item, dict):
                raise ValueError(f"input: {name}:{lineno}: a JSON {type(item).__name__}, not an object; {expected}")
            try:
                rows.append(self._row(item, "predict", lineno, need_summary=False))
            except ValueError as exc:
                raise ValueError(f"input: {name}:{lineno}: {exc}; {expected}") from None
        return rows

    # ---- what the trainer, model and policy need ------------------------------------------
    def train_batches(self) -> list[list[int]] | None:
        """With `bucket_by_length`, the fixed length buckets (indices into `dataset("train")`); else None."""
        return self._train_batches if "train" in self.datasets else None

    def sample_weights(self) -> list[float] | None:
        return None

    def dataset(self, split: str) -> Dataset | None:
        return self.datasets.get(split)

    def model_kwargs(self) -> dict[str, Any]:
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        return {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "bos_token_id": bos, "eos_token_id": eos,
                "max_source_length": self.max_source_length, "max_target_length": self.max_target_length}

    def policy_kwargs(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer}

    def state_dict(self) -> dict[str, Any]:
        return {"tokenizer_json": self._tokenizer_json}
