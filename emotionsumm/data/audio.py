"""Speech emotion data: a folder of WAV/FLAC files with a labels CSV, or RAVDESS-named files.

Rows are split randomly (stratified), by a predefined split column, or by group (a speaker is
never in two splits); the normaliser is fitted on the training split only and travels in the
checkpoint. Unreadable or truncated files raise an error naming them, or are skipped and counted
with `on_error=skip`. With `cache_features`, the full-length un-augmented log-mels are computed once
into a cache keyed by the feature config and held in memory; crops and augmentation still happen
per example, so training stays random.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from .audio_features import AudioPipeline, AudioReadError, FeatureCache, probe_audio
from .classification import ClassificationData, Label
from .readers import ON_ERROR, check_file, field, read_lines, read_rows
from .splits import SPLITS, split_indices
from .synthetic import demo_directory
from .synthetic_audio import make_audio_emotion

log = logging.getLogger(__name__)

LAYOUTS = ("csv", "ravdess")
AUDIO_SUFFIXES = (".wav", ".flac")
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}


class Row(NamedTuple):
    """One labelled clip and where it was listed ("file:line", or the file itself for RAVDESS)."""

    path: Path
    label: Label
    group: str | None
    split: str | None


def ravdess_row(path: Path) -> Row:
    """Emotion (3rd field) and actor (7th) from a RAVDESS name such as 03-01-05-01-02-01-12.wav."""
    fields = path.stem.split("-")
    if len(fields) != 7 or not all(f.isdigit() for f in fields) or fields[2] not in RAVDESS_EMOTIONS:
        raise AudioReadError(f"{path}: not a RAVDESS file name (expected 7 numeric fields like "
                             "03-01-05-01-02-01-12.wav, the 3rd an emotion code 01..08); set data.layout=csv")
    return Row(path, Label(RAVDESS_EMOTIONS[fields[2]], str(path)), fields[6], None)


class AudioDataset(Dataset):
    """Clips as pipeline inputs; `train` turns on random crops and augmentation (set on the train split only).

    `features` (from the cache) replaces reading the files; otherwise each item is decoded anew.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, pipeline: AudioPipeline,
                 train: bool = False, features: Sequence[torch.Tensor] | None = None) -> None:
        self.paths = list(paths)
        self._labels = list(labels) if labels is not None else None
        self.pipeline, self.train = pipeline, train
        self.features = list(features) if features is not None else None

    @property
    def labels(self) -> list[int | None]:
        return self._labels if self._labels is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.features[index] if self.features is not None else self.pipeline.extract(self.paths[index])
        example: dict[str, Any] = {"features": self.pipeline.transform(raw, self.train)}
        if self._labels is not None:
            example["label"] = self._labels[index]
        return example


class AudioClassificationData(ClassificationData):
    """Reads a speech emotion dataset and builds what the CNN and the classification policy need.

    `root` is the dataset folder; `layout=csv` reads `labels_file` (relative to root) with
    `path_column` (paths relative to root), `label_column` and optional `group_column` (speaker)
    and `split_column`; `layout=ravdess` finds every WAV/FLAC under root and reads emotion and
    actor from the name. `split=random|predefined|group` (`speaker_independent` = group);
    `val_groups`/`test_groups` name the groups of val/test explicitly (the rest train). With
    `num_folds`, train+val rows form the pool from which fold `fold` is held out for validation
    (group-aware when there are groups). `features`/`augment` configure the AudioPipeline.
    """

    def __init__(self, root: str, labels_file: str | None = "labels.csv", layout: str = "csv",
                 path_column: str = "path", label_column: str = "label", group_column: str | None = "speaker",
                 split: str = "random", split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
                 split_column: str = "split", val_groups: Sequence[Any] | None = None,
                 test_groups: Sequence[Any] | None = None, on_error: str = "raise", demo: bool = False,
                 demo_dir: str | None = None, cache_features: bool = False, cache_dir: str | None = None,
                 features: dict[str, Any] | None = None,
                 augment: dict[str, Any] | None = None, state: dict[str, Any] | None = None, **common: Any) -> None:
        super().__init__(state=state, **common)
        split = "group" if split == "speaker_independent" else split
        for key, value, allowed in (("layout", layout, LAYOUTS), ("on_error", on_error, ON_ERROR),
                                    ("split", split, ("random", "predefined", "group"))):
            if value not in allowed:
                raise ValueError(f"data.{key}={value!r} is not allowed; choose one of {list(allowed)}")
        if cache_features and not cache_dir:
            raise ValueError("data.cache_features=true needs data.cache_dir=<dir> (e.g. ${paths.cache_dir}/features)")
        self.root, self.labels_file, self.layout = Path(str(root)).expanduser(), labels_file, layout
        self.path_column, self.label_column, self.group_column = path_column, label_column, group_column
        self.split, self.split_ratios, self.split_column = split, list(split_ratios), split_column
        self.val_groups = [str(g) for g in val_groups] if val_groups else []
        self.test_groups = [str(g) for g in test_groups] if test_groups else []
        self.on_error, self.demo, self.demo_dir = on_error, demo, demo_dir
        normalizer = (state or {}).get("normalizer")
        self.pipeline = AudioPipeline(**dict(features or {}), **dict(augment or {}), normalizer=normalizer)
        self.cache = FeatureCache(cache_dir, self.pipeline) if cache_features else None
        self.skipped: dict[str, int] = {}

    # ---- reading ------------------------------------------------------------------------
    def _read_rows(self) -> list[Row]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root: dataset folder not found: {self.root} (set data.root=<dir>)")
        if self.layout == "ravdess":
            files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            rows = self._guard("all", files, lambda p: [ravdess_row(p)], None)
            return [r for found in rows for r in found]
        labels_path = check_file(self.root / str(self.labels_file) if self.labels_file else None, "data.labels_file")
        rows = []
        for lineno, values in read_rows(labels_path, "csv"):
            where = f"{labels_path}:{lineno}"
            path = self.root / str(field(values, self.path_column, labels_path, lineno, "data.path_column"))
            label = Label(field(values, self.label_column, labels_path, lineno, "data.label_column"), where)
            group = split = None
            if self.group_column and (self.group_column in values or self.split == "group"):
                group = str(field(values, self.group_column, labels_path, lineno, "data.group_column"))
            if self.split == "predefined":
                split = str(field(values, self.split_column, labels_path, lineno, "data.split_column"))
            rows.append(Row(path, label, group, split))
        if not rows:
            raise ValueError(f"data.labels_file: {labels_path} has no rows")
        return rows

    def _split(self, rows: list[Row]) -> dict[str, list[Row]]:
        groups = [r.group for r in rows] if rows[0].group is not None else None
        if self.split == "group" and (self.val_groups or self.test_groups):
            known = sorted(set(groups or []))
            for key, chosen in (("data.val_groups", self.val_groups), ("data.test_groups", self.test_groups)):
                if unknown := [g for g in chosen if g not in known]:
                    raise ValueError(f"{key}: group(s) {unknown} not in the data; groups are {known}")
            where = {**{g: "val" for g in self.val_groups}, **{g: "test" for g in self.test_groups}}
            return {s: [r for r in rows if where.get(r.group, "train") == s] for s in SPLITS}
        if self.split == "predefined" and self.layout == "ravdess":
            raise ValueError("data.split=predefined needs a split column: use data.layout=csv, or data.split=group")
        index = split_indices(len(rows), self.split, self.split_ratios, seed=self.seed,
                              labels=[str(r.label.value) for r in rows], groups=groups,
                              predefined=[r.split for r in rows] if self.split == "predefined" else None)
        return {s: [rows[i] for i in index[s]] for s in SPLITS}

    def _guard(self, split: str, items: Sequence[Any], fn: Callable[[Any], Any],
               where: Callable[[Any], str] | None) -> list[Any]:
        """fn(item) for every item; an AudioReadError raises naming the item, or with on_error=skip
        drops it and is counted (results of kept items are returned; None marks a dropped one)."""
        out, bad = [], []
        for item in items:
            try:
                out.append(fn(item))
            except AudioReadError as exc:
                message = f"{where(item)}: {exc}" if where else str(exc)
                if self.on_error == "raise":
                    raise AudioReadError(f"{message}; fix or remove the file, or set data.on_error=skip") from None
                bad.append(message)
                out.append(None)
        if bad:
            self.skipped[split] = self.skipped.get(split, 0) + len(bad)
            log.warning("split %s: skipped %d of %d file(s) (data.on_error=skip), e.g. %s", split, len(bad),
                        len(items), bad[0])
        return [o for o in out if o is not None]

    def _readable(self, split: str, rows: list[Row]) -> tuple[list[Row], list[torch.Tensor] | None]:
        """Rows whose audio can be read (with their cached features when caching)."""
        label_line = (lambda row: row.label.where) if self.layout == "csv" else None
        if self.cache is None:
            return [r for r in self._guard(split, rows, lambda r: probe_audio(r.path) or r, label_line)], None
        kept = self._guard(split, rows, lambda r: (r, self.cache.get(r.path)), label_line)
        return [r for r, _ in kept], [f for _, f in kept]

    # ---- set-up -------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read and split the rows, check the audio, fix classes, fit the normaliser, build datasets."""
        if not splits:
            return  # prediction only: classes and normaliser come from the checkpoint state
        if self.demo:
            make_audio_emotion(demo_directory(self.demo_dir, {"data.root": self.root}))
        parts = self._split(self._read_rows())
        if self.num_folds:
            parts = {"train": parts["train"] + parts["val"], "test": parts["test"]}
        need = [s for s in SPLITS if s in parts and (s in splits or (s == "train" and self._needs_train(splits)))]
        features: dict[str, list[torch.Tensor] | None] = {}
        for split in need:
            parts[split], features[split] = self._readable(split, parts[split])
        if "train" in need:
            self.fix_classes([r.label for r in parts["train"]])
        ids = {s: self.label_ids([r.label for r in parts[s]]) for s in need}
        if self.num_folds and "train" in need:
            self._fold(parts, features, ids)
            need.insert(1, "val")
        if "train" in need and not parts["train"]:
            raise ValueError(f"the training split is empty after reading {self.root} (check data.split, "
                             "data.split_ratios, data.val_groups/test_groups)")
        if "train" in need:
            self.count_classes(ids["train"])
            if not self.pipeline.normalizer.fitted:
                self._fit_normalizer(parts, features, ids)
        for split in need:
            if split in splits and parts[split]:
                self.datasets[split] = AudioDataset([r.path for r in parts[split]], ids[split], self.pipeline,
                                                    train=split == "train", features=features[split])
        cache = f"; feature cache {self.cache.directory} ({self.cache.hits} hits, {self.cache.misses} computed)" \
            if self.cache else ""
        log.info("data: %s; %d classes %s%s", {s: len(d) for s, d in self.datasets.items()}, len(self.class_names),
                 self.class_names, cache)

    def _needs_train(self, splits: Sequence[str]) -> bool:
        return "train" in splits or self.class_names is None or not self.pipeline.normalizer.fitted or \
            bool(self.num_folds and "val" in splits)

    def _fold(self, parts: dict[str, list[Row]], features: dict[str, list | None], ids: dict[str, list[int]]) -> None:
        pool, pool_features, pool_ids = parts["train"], features["train"], ids["train"]
        groups = [r.group for r in pool] if pool and pool[0].group is not None else None
        train, held = self.take_fold(pool_ids, groups)
        for split, rows in (("train", train), ("val", held)):
            parts[split] = [pool[i] for i in rows]
            ids[split] = [pool_ids[i] for i in rows]
            features[split] = [pool_features[i] for i in rows] if pool_features is not None else None
        log.info("fold %d of %d: %d training rows, %d held out for validation%s", self.fold, self.num_folds,
                 len(train), len(held), " (by group)" if groups else "")

    def _fit_normalizer(self, parts: dict[str, list[Row]], features: dict[str, list | None],
                        ids: dict[str, list[int]]) -> None:
        """Per-mel-bin statistics of the training split's full-length log-mels (nothing else)."""
        normalizer = self.pipeline.normalizer
        if features["train"] is not None:
            for feats in features["train"]:
                normalizer.update(feats)
        else:
            def add(item: tuple[Row, int]) -> tuple[Row, int]:
                normalizer.update(self.pipeline.extract(item[0].path))
                return item

            kept = self._guard("train", list(zip(parts["train"], ids["train"])), add, lambda it: it[0].label.where)
            parts["train"], ids["train"] = [r for r, _ in kept], [i for _, i in kept]
            self.count_classes(ids["train"])
        normalizer.finish()

    # ---- what the trainer, model and policy need ------------------------------------------
    def predict_dataset(self, source: str) -> AudioDataset:
        """Inputs for `predict`: one audio path per line of a file or stdin ('-')."""
        paths = [Path(line.strip()).expanduser() for line in read_lines(source)]
        for lineno, path in enumerate(paths, start=1):
            try:
                probe_audio(path)
            except AudioReadError as exc:
                raise AudioReadError(f"input line {lineno}: {exc}") from None
        return AudioDataset(paths, None, self.pipeline, train=False)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack the fixed-size features into [B, 1, n_mels, frames]."""
        batch = {"features": torch.stack([ex["features"] for ex in examples])}
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "n_mels": self.pipeline.n_mels}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "normalizer": self.pipeline.normalizer.state_dict()}
