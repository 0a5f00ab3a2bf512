"""Speech emotion data: a folder of WAV/FLAC files with a labels CSV (or one per split), or RAVDESS-named files.

Rows go through the shared table (`TableData`): split randomly (stratified), by a predefined split column,
by group (a speaker is never in two splits) or by per-split label files, k-fold, `on_error`. The
normaliser is fitted on the training split only and travels in the checkpoint. Unreadable or truncated
files raise an error naming them (and their labels line), or are skipped and counted with
`on_error=skip`. With `cache_features`, the full-length un-augmented log-mels are computed once into a
cache keyed by the feature config and held in memory; crops and augmentation still happen per example,
so training stays random. With `features.kind=waveform` (what `model=audio_ssl` selects) examples are raw
waveforms for a self-supervised speech encoder instead (see audio_waveform.py): normalised per clip (no
training statistics), cached as full-length waveforms, batched with their `lengths` before zero padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config.core import require_choice
from .audio_features import (
    AudioPipeline,
    AudioReadError,
    FeatureCache,
    WaveformPipeline,
    clip_statistics,
    probe_audio,
)
from .readers import check_file, column, read_lines
from .table import Examples, Row, TableData, TableDataset, picked

LAYOUTS = ("csv", "ravdess")
AUDIO_SUFFIXES = (".wav", ".flac")
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}


def ravdess_row(path: Path) -> Row:
    """Emotion (3rd field) and actor (7th) from a RAVDESS name such as 03-01-05-01-02-01-12.wav."""
    fields = path.stem.split("-")
    if len(fields) != 7 or not all(f.isdigit() for f in fields) or fields[2] not in RAVDESS_EMOTIONS:
        raise AudioReadError(f"{path}: not a RAVDESS file name (expected 7 numeric fields like "
                             "03-01-05-01-02-01-12.wav, the 3rd an emotion code 01..08); set data.layout=csv")
    return Row(path, str(path), RAVDESS_EMOTIONS[fields[2]], fields[6])


class AudioDataset(TableDataset):
    """Clips as pipeline inputs: cached full-length log-mels or waveforms (`features`), or `paths` decoded
    anew per item. A waveform example also carries its `length` before zero padding."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, pipeline: AudioPipeline | WaveformPipeline,
                 train: bool = False, features: Sequence[torch.Tensor] | None = None,
                 names: Sequence[str] | None = None) -> None:
        super().__init__(features if features is not None else paths, labels,
                         names if names is not None else [str(p) for p in paths], train=train)
        self.paths, self.pipeline = list(paths), pipeline
        self.features = self.inputs if features is not None else None

    def transform(self, value: Path | torch.Tensor, train: bool) -> dict[str, Any]:
        raw = value if isinstance(value, torch.Tensor) else self.pipeline.extract(value)
        if isinstance(self.pipeline, WaveformPipeline):
            wave, length = self.pipeline.transform_clip(raw, train)
            return {"features": wave, "length": length}
        return {"features": self.pipeline.transform(raw, train)}


class AudioClassificationData(TableData):
    """Reads a speech emotion dataset and builds what the CNN and the classification policy need.

    `root` is the dataset folder; `layout=csv` reads `labels_file` (relative to root; or `files.<split>`
    with `split=files`) with `path_column` (paths relative to root), `label_column` and optional
    `group_column` (speaker) and `split_column`; `layout=ravdess` finds every WAV/FLAC under root and reads
    emotion and actor from the name. `split=random|predefined|group|files` (`speaker_independent` = group),
    `val_groups`/`test_groups`, k-fold, `on_error`: see TableData. `features`/`augment` configure the
    AudioPipeline (`features.kind`: logmel for the CNNs, waveform for self-supervised speech encoders).
    """

    load_errors = (AudioReadError,)
    noun = "file(s)"

    def __init__(self, root: str, labels_file: str | None = "labels.csv", layout: str = "csv",
                 path_column: str = "path", label_column: str = "label", group_column: str | None = "speaker",
                 split: str = "random", cache_features: bool = False, cache_dir: str | None = None,
                 features: dict[str, Any] | None = None, augment: dict[str, Any] | None = None,
                 state: dict[str, Any] | None = None, **common: Any) -> None:
        require_choice("data.layout", layout, LAYOUTS)
        super().__init__(split=split, label_column=label_column, group_column=group_column, state=state, **common)
        if cache_features and not cache_dir:
            raise ValueError("data.cache_features=true needs data.cache_dir=<dir> (e.g. ${paths.cache_dir}/features)")
        self.root, self.labels_file, self.layout = Path(str(root)).expanduser(), labels_file, layout
        self.path_column = path_column
        normalizer = (state or {}).get("normalizer")
        self.pipeline = AudioPipeline(**dict(features or {}), **dict(augment or {}), normalizer=normalizer)
        self.cache = FeatureCache(cache_dir, self.pipeline) if cache_features else None

    # ---- rows ---------------------------------------------------------------------------------
    def table_source(self) -> tuple[str | Path | None, str]:
        return (self.root, "data.root") if self.layout == "ravdess" else (self.labels_file, "data.labels_file")

    def source_paths(self) -> dict[str, Any]:
        return {"data.root": self.root, **{f"data.files.{s}": self.root / str(p) for s, p in self.files.items() if p}}

    def make_demo(self, directory: Path) -> None:
        from ..demo.audio import make_audio_emotion

        make_audio_emotion(directory)

    def read(self, path: str | Path | None, key: str, split: str | None) -> list[Row]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root: dataset folder not found: {self.root} (set data.root=<dir>)")
        if self.layout == "csv":
            return self.read_table(check_file(self.root / str(path) if path else None, key), key, split)
        rows, bad = [], []
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        for file in files:
            try:
                rows.append(ravdess_row(file)._replace(split=split))
            except AudioReadError as exc:
                self.reject(bad, str(file), str(exc), self.load_fix, exc)
        self.count_skipped(split or "all", f"{key}={self.root}", bad, len(files))
        return rows

    def parse(self, record: dict[Any, Any], where: str, path: Path) -> Path:
        return self.root / str(column(record, self.path_column, where, "data.path_column"))

    # ---- one example --------------------------------------------------------------------------
    def load(self, path: Path) -> Path | torch.Tensor:
        """The cached full-length log-mel, or (no cache) the path once the file is checked to be whole audio."""
        if self.cache is not None:
            return self.cache.get(path)
        probe_audio(path)
        return path

    def needs_fit(self) -> bool:
        return not self.pipeline.normalizer.fitted

    def fit(self, train: Examples | None, run_dir: str | Path | None) -> None:
        """Per-mel-bin statistics of the training split's full-length log-mels (nothing else; waveforms are
        normalised per clip, so their normaliser is fitted from the start)."""
        normalizer = self.pipeline.normalizer
        if train is None or normalizer.fitted:
            return
        if self.cache is not None:
            for features in train.inputs:
                normalizer.update(features)
        else:
            self.apply(train, "train", lambda path: normalizer.update(self.pipeline.extract(path)) or path)
        normalizer.finish()

    def make_dataset(self, split: str, examples: Examples) -> AudioDataset:
        return AudioDataset([r.item for r in examples.rows], examples.ids, self.pipeline, train=split == "train",
                            features=examples.inputs if self.cache is not None else None,
                            names=[r.where for r in examples.rows])

    def describe(self) -> str:
        cache = self.cache
        return f"; feature cache {cache.directory} ({cache.hits} hits, {cache.misses} computed)" if cache else ""

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
        """Stack the features into [B, 1, n_mels, frames]; waveforms ([B, 1, 1, samples]) are zero-padded to the
        longest and come with their `lengths` (samples before padding)."""
        if "length" in examples[0]:
            longest = max(ex["features"].shape[-1] for ex in examples)
            batch = {"features": torch.stack([nn.functional.pad(ex["features"], (0, longest - ex["features"].shape[-1]))
                                              for ex in examples]),
                     "lengths": torch.tensor([ex["length"] for ex in examples], dtype=torch.long)}
        else:
            batch = {"features": torch.stack([ex["features"] for ex in examples])}
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def baseline_views(self, split: str, rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Per-clip mean and std of each mel bin of the full-length log-mels (cached ones with cache_features)."""
        extract = self.pipeline.extract
        return {"audio": np.stack([clip_statistics(self.pipeline, v if isinstance(v, torch.Tensor) else extract(v))
                                   .numpy() for v in picked(self.datasets[split].inputs, rows)])}

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "n_mels": self.pipeline.n_mels}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "normalizer": self.pipeline.normalizer.state_dict()}
