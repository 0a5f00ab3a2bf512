"""Face-image emotion data: class folders (`<class>/*.png|jpg`) or a FER2013 CSV (`emotion, pixels, Usage`).

Splits are random (stratified), predefined (FER2013's Usage column, or `<root>/<train|val|test>/<class>/`
folders) or by group: a regex on the file name (e.g. the `S<subject>` prefix of CK+) keeps all frames
of one subject inside one split. Images are decoded once, converted to `channels`, resized, and kept
as uint8 in memory (`preload`); augmentation and normalisation happen per item (`ImagePipeline`).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .classification import ClassificationData, Label
from .image_transforms import ImagePipeline, ImageReadError
from .readers import check_file, check_on_error, read_lines, read_rows
from .readers import field as row_field
from .splits import SPLITS, split_indices
from .synthetic import demo_directory
from .synthetic_image import make_image_emotion

log = logging.getLogger(__name__)

LAYOUTS = ("folders", "fer2013_csv")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# FER2013's Usage column → our split names (train/val/test are accepted as they are)
USAGE = {"training": "train", "publictest": "val", "privatetest": "test", "train": "train", "val": "val",
         "validation": "val", "test": "test"}
SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "validation", "valid"), "test": ("test",)}


@dataclass
class Rows:
    """What was read: per row an image (a path, or already decoded pixels), its label and where it came from."""

    sources: list[Path | torch.Tensor] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    predefined: list[str] = field(default_factory=list)

    def add(self, source: Path | torch.Tensor, label: Any, where: str, split: str | None = None) -> None:
        self.sources.append(source)
        self.labels.append(Label(label, where))
        self.names.append(where)
        if split is not None:
            self.predefined.append(split)


class ImageDataset(Dataset):
    """Images (uint8 tensors or paths) and class ids; `train=True` only on the training split (augments)."""

    def __init__(self, sources: list[Path | torch.Tensor], labels: list[int | None], names: list[str],
                 pipeline: ImagePipeline, train: bool = False) -> None:
        self.sources, self.labels, self.names = sources, labels, names
        self.pipeline, self.train = pipeline, train

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"pixels": self.pipeline(self.sources[index], train=self.train)}
        if self.labels[index] is not None:
            item["label"] = self.labels[index]
        return item


class ImageClassificationData(ClassificationData):
    """Reads an image emotion dataset and builds what the model (`num_classes`, `in_channels`) and policy need.

    `root` is the folder of class folders (layout `folders`) or the CSV file (layout `fer2013_csv`).
    Unreadable images, and images smaller than `min_image_size` pixels (capped at `image_size`), raise an
    error naming the file, or with `on_error=skip` are left out and counted. With `demo`, the demo faces
    are generated into `demo_dir`, and `root` must lie there.
    The split is computed on the full file list (before skipping), so it is the same whichever splits
    are read. Normalisation statistics (computed on the training split unless `normalize=imagenet|none`
    or given as `mean`/`std`) are part of `state_dict()`, hence of the checkpoint.
    """

    def __init__(self, root: str, layout: str = "folders", split: str = "random",
                 split_ratios: Sequence[float] = (0.8, 0.1, 0.1), group_regex: str | None = None,
                 channels: int = 1, image_size: int | Sequence[int] = 48, augment: Mapping[str, Any] | None = None,
                 normalize: str = "train", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 equalize: bool = False, min_image_size: int = 8, on_error: str = "raise", preload: bool = True,
                 label_column: str = "emotion", pixels_column: str = "pixels", split_column: str = "Usage",
                 demo: bool = False, demo_dir: str | None = None, state: dict[str, Any] | None = None,
                 **common: Any) -> None:
        super().__init__(state=state, **common)
        if layout not in LAYOUTS:
            raise ValueError(f"data.layout={layout!r} is not allowed; choose one of {list(LAYOUTS)}")
        check_on_error(on_error)
        self.root, self.layout, self.split, self.split_ratios = root, layout, split, list(split_ratios)
        self.group_pattern = self._compile(group_regex)
        self.on_error, self.preload, self.demo, self.demo_dir = on_error, preload, demo, demo_dir
        self.label_column, self.pixels_column, self.split_column = label_column, pixels_column, split_column
        self.normalize = normalize
        state = state or {}
        self.pipeline = ImagePipeline(channels, image_size, augment, state.get("mean", mean), state.get("std", std),
                                      equalize, min_image_size)
        self.skipped: list[str] = []

    @staticmethod
    def _compile(pattern: str | None) -> re.Pattern | None:
        if not pattern:
            return None
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"data.group_regex={pattern!r} is not a valid regular expression: {exc}") from None

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read the rows, split them, fix the classes, decode the requested splits, fit the normalisation."""
        if self.demo:
            make_image_emotion(demo_directory(self.demo_dir, {"data.root": self.root}))
        rows = self._read_csv() if self.layout == "fer2013_csv" else self._read_folders()
        if not rows.sources:
            expected = {"fer2013_csv": "CSV rows", "folders": "<class>/*.png|jpg"}[self.layout]
            if self.layout == "folders" and self.split == "predefined":
                expected = "<train|val|test>/<class>/*.png|jpg (data.split=predefined)"
            raise ValueError(f"data.root: no image found in {self.root}; expected {expected}")
        self.fix_classes(rows.labels)
        ids = self.label_ids(rows.labels)
        groups = self._groups(rows.names) if self.group_pattern else None
        parts = split_indices(len(ids), self.split, self.split_ratios, seed=self.seed, labels=ids, groups=groups,
                              predefined=rows.predefined or None)
        if self.num_folds:  # also when only val is read (evaluate split=val): the fold's held-out rows
            parts = self._fold(parts, ids, groups)
        wanted = [s for s in SPLITS if s in splits or (s == "train" and self._needs_train_stats())]
        picked = {s: self._decode(rows, parts[s], ids) for s in wanted if parts[s]}
        if "train" in picked:
            self.count_classes(picked["train"][1])
        self.pipeline.choose_normalization(self.normalize,
                                           (lambda: picked["train"][0]) if "train" in picked else None)
        self.datasets = {s: ImageDataset(*picked[s], self.pipeline, train=s == "train")
                         for s in picked if s in splits}
        if groups is not None:
            log.info("group split on data.group_regex: %s groups", {s: len({groups[i] for i in parts[s]})
                                                                      for s in SPLITS})
        if self.skipped:
            log.warning("data.on_error=skip: skipped %d unreadable image(s) (corrupt, empty, or smaller than "
                        "data.min_image_size=%d), e.g. %s", len(self.skipped), self.pipeline.min_size,
                        self.skipped[:3])
        log.info("data: %s; %d classes %s; normalisation mean=%s std=%s", {s: len(d) for s, d in self.datasets.items()},
                 len(self.class_names), self.class_names, self.pipeline.mean, self.pipeline.std)

    def _needs_train_stats(self) -> bool:
        return self.normalize == "train" and self.pipeline.mean is None

    def _fold(self, parts: dict[str, list[int]], ids: list[int], groups: list[str] | None) -> dict[str, list[int]]:
        """Fold `fold` of `num_folds` inside the training split replaces the validation split."""
        train = parts["train"]
        keep, held = self.take_fold([ids[i] for i in train], [groups[i] for i in train] if groups else None)
        log.info("fold %d of %d: %d training images, %d held out for validation", self.fold, self.num_folds,
                 len(keep), len(held))
        return {"train": [train[p] for p in keep], "val": [train[p] for p in held], "test": parts["test"]}

    def _groups(self, names: list[str]) -> list[str]:
        """The group of each row: the regex's first capture group (or whole match) in the file name."""
        out = []
        for name in names:
            match = self.group_pattern.search(Path(name).name)
            if match is None:
                raise ValueError(f"{name}: data.group_regex={self.group_pattern.pattern!r} does not match the file "
                                 "name; fix the pattern (it is searched in the base name)")
            out.append(match.group(1) if match.groups() else match.group(0))
        return out

    def _read_folders(self) -> Rows:
        root = Path(str(self.root)).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.root: folder not found: {root} (set data.root=<folder of class folders>)")
        rows = Rows()
        if self.split == "predefined":
            for split, names in SPLIT_DIRS.items():
                for name in names:
                    if (root / name).is_dir():
                        self._scan_classes(root / name, rows, split)
        else:
            self._scan_classes(root, rows, None)
        return rows

    @staticmethod
    def _scan_classes(root: Path, rows: Rows, split: str | None) -> None:
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in EXTENSIONS and not path.name.startswith("."):
                    rows.add(path, class_dir.name, str(path), split)

    def _read_csv(self) -> Rows:
        path = check_file(self.root, "data.root")
        rows = Rows()
        for lineno, row in read_rows(path, "csv"):
            where = f"{path}:{lineno}"
            label = row_field(row, self.label_column, path, lineno, "data.label_column")
            pixels = row_field(row, self.pixels_column, path, lineno, "data.pixels_column")
            split = None
            if self.split == "predefined":
                usage = str(row_field(row, self.split_column, path, lineno, "data.split_column")).strip()
                split = USAGE.get(usage.lower())
                if split is None:
                    raise ValueError(f"{where}: {self.split_column}={usage!r} is not a known split; allowed: "
                                     "Training, PublicTest, PrivateTest (or train, val, test) (data.split_column)")
            try:
                image = self.pipeline.from_array(parse_pixels(pixels), where)
            except ValueError as exc:
                if self.on_error == "raise":
                    reason = exc.reason if isinstance(exc, ImageReadError) else exc
                    raise ValueError(f"{where}: {reason}; fix the row or set data.on_error=skip") from None
                self.skipped.append(where)
                continue
            rows.add(image, label, where, split)
        return rows

    def _decode(self, rows: Rows, indices: list[int], ids: list[int]) -> tuple[list, list[int], list[str]]:
        """Decode (or check) the images of one split; unreadable ones raise or are skipped."""
        sources, labels, names = [], [], []
        for i in indices:
            source = rows.sources[i]
            if isinstance(source, Path):
                try:
                    image = self.pipeline.load(source)
                except ImageReadError as exc:
                    if self.on_error == "raise":
                        raise ImageReadError(exc.where, f"{exc.reason}; fix or remove the file, or set "
                                             "data.on_error=skip") from None
                    self.skipped.append(str(source))
                    continue
                source = image if self.preload else source
            sources.append(source)
            labels.append(ids[i])
            names.append(rows.names[i])
        return sources, labels, names

    # ---- what the trainer, model and policy need ----------------------------------------------
    def predict_dataset(self, source: str) -> ImageDataset:
        """Inputs for `predict`: one image path per line of a file or stdin ('-'); every one must be readable."""
        paths = read_lines(source)
        images = []
        for lineno, line in enumerate(paths, start=1):
            try:
                images.append(self.pipeline.load(Path(line.strip()).expanduser()))
            except ImageReadError as exc:
                raise ImageReadError(f"input line {lineno}: {exc.where}", exc.reason) from None
        return ImageDataset(images, [None] * len(images), paths, self.pipeline)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"pixels": torch.stack([ex["pixels"] for ex in examples])}
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "in_channels": self.pipeline.channels}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mean": self.pipeline.mean, "std": self.pipeline.std}


def parse_pixels(text: Any) -> np.ndarray:
    """A FER2013 `pixels` string (space-separated 0..255, a square number of them) as a uint8 [H, W] array."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # older numpy only warns on unparsable text
        try:
            array = np.fromstring(str(text), dtype=np.int64, sep=" ")  # 10x faster than int() per value
        except (ValueError, DeprecationWarning):
            bad = next((v for v in str(text).split() if not v.lstrip("-").isdigit()), str(text)[:20])
            raise ValueError(f"malformed pixels: {bad[:20]!r} is not an integer") from None
    side = int(round(array.size ** 0.5))
    if array.size == 0 or side * side != array.size:
        raise ValueError(f"malformed pixels: {array.size} values do not form a square image")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"malformed pixels: values must lie in 0..255, found {array.min()}..{array.max()}")
    return array.astype(np.uint8).reshape(side, side)
