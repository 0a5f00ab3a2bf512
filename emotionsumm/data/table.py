"""One table of rows and one split/fold plan for every classification modality.

A row is what a modality reads for one example (a text, a file path, a manifest row's values), its raw
label, an optional group (a speaker, a subject) and an optional split, with where it came from
("file:line" or the path) for error messages. `TableData.setup` runs the same steps for every modality:

  rows (one file per split, or one table) → split (`files`, `random` stratified by label, `predefined`
  split names, or `group`: no group in two splits) → classes (given, from a checkpoint, or inferred from
  the training rows) → k-fold (fold `fold` of the training split replaces validation) → load the requested
  splits (a bad row raises naming its file and line, or with `on_error=skip` is left out and counted) →
  fit on the training split (tokenizer, normaliser, statistics) → one Dataset per split.

A modality that supports it (`tasks`) may read a regression task instead (`task=regression`): each label is
a number, there are no classes, and the model gets one output (GLUE's STS-B similarity score).

A modality subclass only says how to read a row (`parse`, or `read` for a folder scan), load and
transform one example, fit, and collate; see docs/extending.md "Add a modality". Splits and folds are pure functions
of the rows and `seed` (`splits`), so the same data always gives the same splits, folds and class ids.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import Dataset

from ..config.core import require_choice, require_range
from .readers import ON_ERROR, BadRow, check_file, column, log_skipped, read_rows, text_value
from .splits import SPLITS, STRATEGIES, kfold_indices, split_indices

log = logging.getLogger(__name__)

# split names accepted in a split column (FER2013's Usage values too)
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "publictest": "val", "test": "test", "privatetest": "test"}


class Row(NamedTuple):
    """One example as read: what the modality loads, where it was read, its raw label, group and split."""

    item: Any
    where: str
    label: Any = None
    group: str | None = None
    split: str | None = None


@dataclass
class Examples:
    """The rows of one split with their loaded inputs and class ids, kept in step."""

    rows: list[Row]
    inputs: list[Any]
    ids: list[int]


class TableDataset(Dataset):
    """Loaded examples of one split: `transform(input, train)` gives the model's input dict (random
    augmentation only when `train`, set on the training split), plus `label` when the example has one.
    A modality overrides `transform` (or passes one); `names` say where each example was read."""

    def __init__(self, inputs: Sequence[Any], labels: Sequence[int | None] | None, names: Sequence[str],
                 transform: Callable[[Any, bool], dict[str, Any]] | None = None, train: bool = False) -> None:
        self.inputs, self.names = list(inputs), list(names)
        self.labels = list(labels) if labels is not None else [None] * len(self.inputs)
        self._transform, self.train = transform, train

    def transform(self, value: Any, train: bool) -> dict[str, Any]:
        return self._transform(value, train)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.transform(self.inputs[index], self.train)
        if self.labels[index] is not None:
            example["label"] = self.labels[index]
        return example


def as_int(value: Any) -> int | None:
    """An int label id from an int or a digit string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def retyped(exc: Exception, message: str) -> Exception:
    """`message` as an exception of `exc`'s type, so callers can still catch e.g. AudioReadError."""
    error = type(exc).__new__(type(exc))
    error.args = (message,)
    error.__dict__.update(vars(exc))
    return error


def picked(values: Sequence[Any], rows: Sequence[int] | None) -> Sequence[Any]:
    """`values`, or only those at `rows` (in that order) when rows are given."""
    return values if rows is None else [values[i] for i in rows]


def groups_of(rows: Sequence[Row]) -> list[str] | None:
    """Every row's group, or None unless every row has one."""
    return [r.group for r in rows] if rows and all(r.group is not None for r in rows) else None


# ---- the pipeline ---------------------------------------------------------------------------------
class TableData:
    """Base of the emotion data objects (text, audio, image, multimodal); see the module docstring.

    Sources: `split=files` reads `files.train|val|test` (one file per split); any other `split` reads the
    modality's one table (`table_source`) and splits it: `random` (stratified by label, `split_ratios`),
    `predefined` (`split_column`, e.g. FER2013's Usage) or `group` (`group_column`, else `group_regex` on
    the file name; `val_groups`/`test_groups` name the groups of val/test, the others train). Tables are
    read with `format`, `has_header` and `delimiter`. With `num_folds`, the training split is dealt into
    folds (stratified by class, or whole groups when every row has one) and fold `fold` replaces the
    validation split (a val file is then not read).
    """

    label_key = "data.label_column"  # the config key that names the label column (for messages)
    tasks: tuple[str, ...] = ("classification",)  # data.task values this modality supports (its collate's labels)
    load_errors: tuple[type[Exception], ...] = ()  # what `load` raises for an unreadable example
    load_fix = "fix or remove the file"
    noun = "row(s)"

    def __init__(self, files: dict[str, str | None] | None = None, split: str = "files",
                 split_ratios: Sequence[float] = (0.8, 0.1, 0.1), split_column: Any = "split",
                 group_column: Any = None, group_regex: str | None = None, val_groups: Sequence[Any] | None = None,
                 test_groups: Sequence[Any] | None = None, label_column: Any = "label", format: str | None = None,
                 has_header: bool = True, delimiter: str | None = None, class_names: Sequence[str] | None = None,
                 on_error: str = "raise", demo: bool = False, demo_dir: str | None = None, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, balanced_sampling: bool = False,
                 num_folds: int | None = None, fold: int = 0, seed: int = 0, task: str = "classification",
                 score_metrics: Sequence[str] | None = None, state: dict[str, Any] | None = None) -> None:
        split = "group" if split == "speaker_independent" else split
        require_choice("data.split", split, STRATEGIES)
        require_choice("data.task", task, self.tasks)
        require_choice("data.on_error", on_error, ON_ERROR)
        require_range("data.batch_size", batch_size, 1)
        require_range("data.num_workers", num_workers, 0)
        if num_folds is not None:
            require_range("data.num_folds", num_folds, 2)
            require_range("data.fold", fold, 0, num_folds - 1)
        state = state or {}
        self.class_names: list[str] | None = list(state.get("class_names") or class_names or []) or None
        self.class_counts: list[int] | None = state.get("class_counts")
        self.task, self.score_metrics = task, list(score_metrics) if score_metrics else None
        if self.regression:
            if class_names or balanced_sampling:
                raise ValueError("data.task=regression has no classes: set data.class_names=null and "
                                 "data.balanced_sampling=false")
            self.class_names = []
        self.files = dict(files or {})
        self.split, self.split_ratios, self.split_column = split, list(split_ratios), split_column
        self.group_column, self.group_pattern = group_column, _compile(group_regex)
        self.val_groups = [str(g) for g in val_groups] if val_groups else []
        self.test_groups = [str(g) for g in test_groups] if test_groups else []
        self.label_column, self.format, self.has_header, self.delimiter = label_column, format, has_header, delimiter
        self.on_error, self.demo, self.demo_dir = on_error, demo, demo_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.balanced_sampling = num_workers, balanced_sampling
        self.num_folds, self.fold, self.seed = num_folds, fold, seed
        self.datasets: dict[str, Dataset] = {}
        self.skipped: dict[str, int] = {}  # split ("all": the table before splitting) -> rows left out
        self.skipped_rows: list[str] = []  # where each left-out row was read

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    # ---- what a modality provides -----------------------------------------------------------
    def table_source(self) -> tuple[str | Path | None, str]:
        """(path, config key) of the one table that `split=random|predefined|group` splits."""
        return getattr(self, "file", None), "data.file"

    def make_demo(self, directory: Path) -> None:
        """Generate the demo set into `directory` (with `demo=true`)."""

    def read(self, path: str | Path | None, key: str, split: str | None) -> list[Row]:
        """The rows of one source (a CSV/JSONL/TSV here; a modality may scan a folder instead)."""
        return self.read_table(check_file(path, key), key, split)

    def parse(self, record: dict[Any, Any], where: str, path: Path) -> Any:
        """What `load` needs for one table row (raise BadRow for an unusable row)."""
        raise NotImplementedError

    def load(self, item: Any) -> Any:
        """The example's input (decoded, checked or cached); raises one of `load_errors` if unreadable."""
        return item

    def needs_fit(self) -> bool:
        """Whether the training split must be loaded to fit statistics (not known from a checkpoint)."""
        return False

    def fit_rows(self, train: list[Row]) -> None:
        """What the training rows decide before anything is loaded (e.g. the modalities present)."""

    def fit(self, train: Examples | None, run_dir: str | Path | None) -> None:
        """Statistics of the loaded training split (None when it was not read: from the checkpoint)."""

    def make_dataset(self, split: str, examples: Examples) -> Dataset:
        raise NotImplementedError

    def describe(self) -> str:
        """Extra words for the log line that ends set-up."""
        return ""

    # ---- reading ------------------------------------------------------------------------------
    def read_table(self, path: Path, key: str, split: str | None, labelled: bool = True) -> list[Row]:
        """Rows of a CSV/JSONL/TSV table: label, group and split columns here, the rest via `parse`."""
        rows, bad, total = [], [], 0

        def malformed(lineno: int, message: str) -> None:
            nonlocal total
            total += 1
            self.reject(bad, f"{path}:{lineno}", f"{path}:{lineno}: {message}", "fix the row")

        for lineno, record in read_rows(path, self.format, self.has_header, self.delimiter, bad_fields=malformed):
            total += 1
            where = f"{path}:{lineno}"
            try:
                label = self._label(record) if labelled else None
                item = self.parse(record, where, path)
            except BadRow as exc:
                self.reject(bad, where, f"{where}: {exc}", exc.fix)
                continue
            rows.append(Row(item, where, label, self._group(record, item, where), self._split_of(record, split, where)))
        self.count_skipped(split or "all", f"{key}={path}", bad, total)
        return rows

    def _label(self, record: dict[Any, Any]) -> Any:
        """The row's raw label: a class name (text) or id (integer); a number for a regression task. A bool,
        a float (JSON 1.5, NaN; CSV "2.0", "nan") or a list would silently become a class of its own."""
        value = record.get(self.label_column)
        what = f"{self.label_key}={self.label_column!r}"
        if text_value(value, what) is None:
            raise BadRow(f"no label in column {self.label_column!r} (null, empty or missing; {self.label_key}); "
                         f"columns are {list(record)}")
        if self.regression or (self.class_names and str(value) in self.class_names):
            return value
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadRow(f"label {value!r} in {what} is a {type(value).__name__}; a label is a class name (text) or "
                         "a class id (integer)", fix="fix the row (e.g. 2, not 2.0), or set data.class_names")
        if isinstance(value, str) and as_int(value) is None and _is_number(value):
            raise BadRow(f"label {value!r} in {what} is a number that is not an integer (a float or NaN); a label "
                         "is a class name or a class id (integer)",
                         fix="fix the row (e.g. 2, not 2.0), or list it in data.class_names if it is a class")
        return value

    def _group(self, record: dict[Any, Any], item: Any, where: str) -> str | None:
        if self.group_column not in (None, "") and (self.group_column in record or self.split == "group"):
            return str(column(record, self.group_column, where, "data.group_column"))
        return self.group_from_name(item.name if isinstance(item, Path) else Path(where).name, where)

    def group_from_name(self, name: str, where: str) -> str | None:
        """The `group_regex` match in a file name: its first capture group, or the whole match."""
        if self.group_pattern is None:
            return None
        match = self.group_pattern.search(name)
        if match is None:
            raise ValueError(f"{where}: data.group_regex={self.group_pattern.pattern!r} does not match the file "
                             "name; fix the pattern (it is searched in the base name)")
        return match.group(1) if match.groups() else match.group(0)

    def _split_of(self, record: dict[Any, Any], split: str | None, where: str) -> str | None:
        if split is not None or self.split != "predefined":
            return split
        value = str(column(record, self.split_column, where, "data.split_column")).strip()
        if value.lower() not in SPLIT_NAMES:
            raise ValueError(f"{where}: {self.split_column}={value!r} is not a known split; allowed: train, val, "
                             "test (or Training, PublicTest, PrivateTest, validation, dev) (data.split_column)")
        return SPLIT_NAMES[value.lower()]

    def reject(self, bad: list[tuple[str, str]], where: str, message: str, fix: str,
               exc: Exception | None = None) -> None:
        """A bad row: raise naming it and the fix (data.on_error=raise; `exc`'s type), or note it in `bad`."""
        if self.on_error != "skip":
            full = f"{message}; {fix}, or set data.on_error=skip to skip and count such rows"
            raise (retyped(exc, full) if exc is not None else ValueError(full)) from None
        bad.append((where, message))

    def count_skipped(self, split: str, what: str, bad: list[tuple[str, str]], total: int) -> None:
        if bad:
            self.skipped[split] = self.skipped.get(split, 0) + len(bad)
            self.skipped_rows += [where for where, _ in bad]
            log_skipped(what, [message for _, message in bad], total, self.noun if split != "all" else "row(s)")

    # ---- set-up -------------------------------------------------------------------------------
    def source_paths(self) -> dict[str, Any]:
        """Config key -> path of every configured source (checked to lie in data.demo_dir with demo=true)."""
        path, key = self.table_source()
        return {**{f"data.files.{s}": p for s, p in self.files.items()}, **({key: path} if path else {})}

    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read and split the rows, fix the classes, fold, load the requested splits, fit, build datasets."""
        loaded: dict[str, Examples] = {}
        if splits:
            if self.demo:
                from ..demo.store import demo_directory

                self.make_demo(demo_directory(self.demo_dir, self.source_paths()))
            loaded = self._load(self._plan(splits), splits)
        train = loaded.get("train")
        self.fit(train, run_dir)
        if train is not None:
            self.class_counts = [train.ids.count(c) for c in range(len(self.class_names))]
        self.datasets = {s: self.make_dataset(s, loaded[s]) for s in SPLITS if s in splits and loaded.get(s)
                         and loaded[s].rows}
        if not self.regression:
            self.warn_missing_classes({s: e.ids for s, e in loaded.items() if e.rows})
        kind = ("regression: one score per example" if self.regression
                else f"{len(self.class_names or [])} classes {self.class_names}")
        log.info("data: %s; %s%s", {s: len(d) for s, d in self.datasets.items()}, kind, self.describe())

    def _load_train(self, splits: Sequence[str]) -> bool:
        return "train" in splits or self.needs_fit()

    def _plan(self, splits: Sequence[str]) -> dict[str, list[Row]]:
        """The rows of each split (after k-fold); fixes the classes from the training rows on the way."""
        folds = bool(self.num_folds) and (self._load_train(splits) or "val" in splits)
        parts = self._split_rows(self._read_sources(splits))
        train = parts["train"]
        if self.class_names is None:
            self.fix_classes([r.label for r in train])
        if train:
            self.fit_rows(train)
        if folds:
            groups = groups_of(train)
            keep, held = kfold_indices(list(range(len(train))), self.num_folds, self.fold, seed=self.seed,
                                       labels=None if self.regression else self.label_ids(train), groups=groups)
            if parts["val"]:
                log.warning("data.num_folds: the %d rows of the val split are not used (the held-out fold replaces "
                            "it); give val no share (data.split_ratios, data.val_groups) to train on them",
                            len(parts["val"]))
            parts["train"], parts["val"] = [train[p] for p in keep], [train[p] for p in held]
            log.info("fold %d of %d: %d training rows, %d held out for validation%s", self.fold, self.num_folds,
                     len(keep), len(held), " (by group)" if groups else "")
        return parts

    def _read_sources(self, splits: Sequence[str]) -> list[Row]:
        """The rows of the one table, or of the per-split files that set-up needs."""
        if self.split != "files":
            path, key = self.table_source()
            rows = self.read(path, key, None)
            if not rows:
                raise ValueError(f"{key}: no usable rows in {path}{self.expected()}")
            return rows
        folds = bool(self.num_folds)
        need_train = self._load_train(splits) or self.class_names is None or (folds and "val" in splits)
        rows = []
        for s in SPLITS:
            if (s == "train" and need_train) or (s in splits and self.files.get(s) and not (folds and s == "val")):
                found = self.read(self.files.get(s), f"data.files.{s}", s)
                if not found:
                    raise ValueError(f"data.files.{s}: split '{s}' is empty: {self.files.get(s)} has no usable rows")
                rows += found
        return rows

    def expected(self) -> str:
        """What a source should hold, for the error on an empty one."""
        return ""

    def _split_rows(self, rows: list[Row]) -> dict[str, list[Row]]:
        if self.split == "group" and (self.val_groups or self.test_groups):
            known = sorted({str(r.group) for r in rows if r.group is not None})
            for key, chosen in (("data.val_groups", self.val_groups), ("data.test_groups", self.test_groups)):
                if unknown := [g for g in chosen if g not in known]:
                    raise ValueError(f"{key}: group(s) {unknown} not in the data; groups are {known}")
            where = {**{g: "val" for g in self.val_groups}, **{g: "test" for g in self.test_groups}}
            return {s: [r for r in rows if where.get(r.group, "train") == s] for s in SPLITS}
        predefined = None
        if self.split in ("files", "predefined"):
            if missing := next((r for r in rows if r.split is None), None):
                raise ValueError(f"data.split=predefined needs each row's split (data.split_column); {missing.where} "
                                 "has none: use a table with a split column, or data.split=random|group")
            predefined = [r.split for r in rows]
        labels = None if self.regression else [str(r.label) for r in rows]  # stratified by class
        index = split_indices(len(rows), self.split, self.split_ratios, seed=self.seed,
                              labels=labels, groups=groups_of(rows), predefined=predefined)
        return {s: [rows[i] for i in index[s]] for s in SPLITS}

    def _load(self, parts: dict[str, list[Row]], splits: Sequence[str]) -> dict[str, Examples]:
        loaded = {}
        for split in SPLITS:
            if split in splits or (split == "train" and self._load_train(splits)):
                rows = parts[split]
                loaded[split] = Examples(rows, [r.item for r in rows], self.label_ids(rows))
                self.apply(loaded[split], split, self.load)
        if "train" in loaded and not loaded["train"].rows:
            source = self.files.get("train") if self.split == "files" else self.table_source()[0]
            raise ValueError(f"the training split is empty after reading {source} (check data.split, "
                             "data.split_ratios, data.val_groups/test_groups)")
        return loaded

    def apply(self, examples: Examples, split: str, fn: Callable[[Any], Any]) -> None:
        """inputs[i] = fn(inputs[i]); a row whose fn raises one of `load_errors` raises naming the row, or
        with data.on_error=skip is dropped (rows, inputs and ids stay in step) and counted."""
        keep, bad = [], []
        for i, (row, value) in enumerate(zip(examples.rows, examples.inputs)):
            try:
                keep.append((i, fn(value)))
            except self.load_errors as exc:
                text = str(exc)
                self.reject(bad, row.where, text if text.startswith(row.where) else f"{row.where}: {text}",
                            self.load_fix, exc)
        if bad:
            examples.rows = [examples.rows[i] for i, _ in keep]
            examples.ids = [examples.ids[i] for i, _ in keep]
        examples.inputs = [value for _, value in keep]
        self.count_skipped(split, f"split {split}", bad, len(keep) + len(bad))

    # ---- classes ------------------------------------------------------------------------------
    def warn_missing_classes(self, ids: dict[str, list[int]]) -> None:
        """Warn about a task of one class, and a split that lacks some of the task's classes: its accuracy and
        loss are not the task's (one class gives acc 1.0 and loss 0.0), and nothing else would say so."""
        names = self.class_names or []
        if len(names) < 2:
            log.warning("data: the task has %d class %s (data.class_names, or inferred from the training labels): "
                        "accuracy is trivially 1.0 and the loss 0.0; check %s and the files", len(names), names,
                        self.label_key)
            return
        for split, split_ids in ids.items():
            present = sorted(set(split_ids))
            if len(present) < len(names):
                log.warning("data: split %s has %d of the task's %d classes: %s; the task's classes are %s (its "
                            "metrics do not measure the missing ones; check the split: data.split, "
                            "data.split_ratios, data.val_groups/test_groups)", split, len(present), len(names),
                            [names[i] for i in present], names)

    def fix_classes(self, labels: Iterable[Any]) -> None:
        """Class names from the training labels: ids -> "0".."n-1", else the sorted names."""
        values = list(labels)
        if values and all(as_int(v) is not None for v in values):
            self.class_names = [str(i) for i in range(max(as_int(v) for v in values) + 1)]
        else:
            self.class_names = sorted({str(v) for v in values})

    def label_ids(self, rows: Sequence[Row]) -> list[int] | list[float]:
        """Class ids of the rows' labels (names or ids); an unknown label names its file and line. The numbers
        themselves for a regression task."""
        if self.regression:
            return [self._number(row) for row in rows]
        index = {name: i for i, name in enumerate(self.class_names)}
        ids = []
        for row in rows:
            if str(row.label) in index:
                ids.append(index[str(row.label)])
            elif (number := as_int(row.label)) is not None and 0 <= number < len(self.class_names):
                ids.append(number)
            else:
                raise ValueError(f"{row.where}: label {row.label!r} is not one of the classes {self.class_names} "
                                 f"(ids 0..{len(self.class_names) - 1}); fix the row or set data.class_names")
        return ids

    def _number(self, row: Row) -> float:
        try:
            value = float(str(row.label).strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{row.where}: label {row.label!r} is not a finite number, which data.task=regression "
                             f"needs ({self.label_key}); fix the row")
        return value

    # ---- what the trainer, model and policy need ----------------------------------------------
    def dataset(self, split: str) -> Dataset | None:
        return self.datasets.get(split)

    def train_batches(self) -> list[list[int]] | None:
        """Batches are drawn freely (no fixed groups)."""
        return None

    def sample_weights(self) -> list[float] | None:
        """With `balanced_sampling`, draw training examples in inverse proportion to class size."""
        if not self.balanced_sampling:
            return None
        return [1.0 / self.class_counts[y] for y in self.datasets["train"].labels]

    def model_kwargs(self) -> dict[str, Any]:
        """A regression task's model has one output (its score)."""
        return {"num_classes": 1 if self.regression else len(self.class_names)}

    def policy_kwargs(self) -> dict[str, Any]:
        kwargs = {"class_names": list(self.class_names), "class_counts": self.class_counts, "task": self.task}
        return {**kwargs, "score_metrics": self.score_metrics} if self.score_metrics else kwargs

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "class_counts": self.class_counts}


def _compile(pattern: str | None) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"data.group_regex={pattern!r} is not a valid regular expression: {exc}") from None
