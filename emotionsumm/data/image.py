"""Face-image emotion data: class folders (`<class>/*.png|jpg`) or a FER2013 CSV (`emotion, pixels, Usage`).

Rows go through the shared table (`TableData`): split randomly (stratified), predefined (FER2013's Usage
column, or `<root>/<train|val|test>/<class>/` folders), by group (a regex on the file name, e.g. the
`S<subject>` prefix of CK+, keeps all frames of one subject inside one split) or one source per split
(`split=files`), k-fold, `on_error`. Images are decoded once, converted to `channels`, resized, and kept
as uint8 in memory (`preload`: true, false, or `auto`: when their decoded size fits `preload_budget_mb`);
augmentation and normalisation happen per item (`ImagePipeline`). Without preload, what set-up learns about
the files (readable or not, the training statistics) is cached by content under `cache_dir`
(`image_checks.ImageCheckCache`), so a second run does not decode them again.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.core import require_choice, require_range
from .image_checks import ImageCheckCache
from .image_transforms import NORMALIZE, ImagePipeline, ImageReadError, PixelMoments, thumbnail
from .readers import check_file, column, read_lines
from .splits import SPLITS
from .table import Examples, Row, TableData, TableDataset, picked

log = logging.getLogger(__name__)

LAYOUTS = ("folders", "fer2013_csv")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PRELOAD = (True, False, "auto")
SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "validation", "valid"), "test": ("test",)}


class ImageDataset(TableDataset):
    """Images (uint8 tensors, or paths without `preload`) and class ids; augmented only when `train`."""

    def __init__(self, sources: list[Path | torch.Tensor], labels: list[int | None], names: list[str],
                 pipeline: ImagePipeline, train: bool = False) -> None:
        super().__init__(sources, labels, names, train=train)
        self.pipeline = pipeline

    @property
    def sources(self) -> list[Path | torch.Tensor]:
        return self.inputs

    def transform(self, value: Path | torch.Tensor, train: bool) -> dict[str, Any]:
        return {"pixels": self.pipeline(value, train=train)}


class ImageClassificationData(TableData):
    """Reads an image emotion dataset and builds what the model (`num_classes`, `in_channels`) and policy need.

    `root` is the folder of class folders (layout `folders`) or the CSV file (layout `fer2013_csv`; or
    `files.<split>` with `split=files`). Unreadable images, and images smaller than `min_image_size` pixels
    (capped at `image_size`), raise an error naming the file, or with `on_error=skip` are left out and
    counted. With `demo`, the demo faces are generated into `demo_dir`, and `root` must lie there.
    The split is computed on the full file list (before skipping), so it is the same whichever splits are
    read. Normalisation statistics (computed on the training split unless `normalize=imagenet|processor|none`
    or given as `mean`/`std`) are part of `state_dict()`, hence of the checkpoint. `processor` is a
    pretrained model's directory (or hub name) whose Hugging Face image processor gives the size for
    `image_size=processor` and the statistics for `normalize=processor`; the shipped data configs take
    channels, image_size, normalize and processor from the model config's `preprocessing` block when it
    has one (model=image_hf, image_resnet18), and an explicit data.<key> override wins.

    `preload`: true keeps every decoded image (uint8) in memory, false keeps paths and decodes each item when
    it is drawn, `auto` preloads when the decoded size of the rows to load (rows x channels x H x W bytes)
    is at most `preload_budget_mb` (10^6 bytes), and logs its choice. Without preload, the verdict of each
    file's check and the training statistics are cached under `cache_dir` (None = no cache).
    """

    load_errors = (ValueError,)  # ImageReadError, or malformed FER2013 pixels
    noun = "image(s)"

    def __init__(self, root: str | None = None, layout: str = "folders", split: str = "random",
                 group_regex: str | None = None, channels: int = 1, image_size: int | Sequence[int] | str = 48,
                 augment: Mapping[str, Any] | None = None, normalize: str = "train",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, equalize: bool = False,
                 min_image_size: int = 8, preload: bool | str = True, preload_budget_mb: float = 2048,
                 cache_dir: str | None = None, label_column: str = "emotion", pixels_column: str = "pixels",
                 split_column: str = "Usage", processor: str | None = None, state: dict[str, Any] | None = None,
                 **common: Any) -> None:
        require_choice("data.layout", layout, LAYOUTS)
        require_choice("data.normalize", normalize, NORMALIZE)
        if not (isinstance(preload, bool) or preload == "auto"):
            require_choice("data.preload", preload, PRELOAD)
        require_range("data.preload_budget_mb", preload_budget_mb, 0, note="(MB of decoded images for preload=auto)")
        super().__init__(split=split, group_regex=group_regex, label_column=label_column, split_column=split_column,
                         state=state, **common)
        self.root, self.layout, self.normalize = root, layout, normalize
        self.preload_setting, self.preload = preload, preload is True  # `preload` is decided at set-up for auto
        self.preload_budget_mb, self.cache_dir = preload_budget_mb, cache_dir
        self.checks: ImageCheckCache | None = None
        self.moments: PixelMoments | None = None  # of the training images the checks decode (see `apply`)
        self.pixels_column = pixels_column
        self.load_fix = "fix the row" if layout == "fer2013_csv" else self.load_fix
        state = state or {}
        self.pipeline = ImagePipeline(channels, image_size, augment, state.get("mean", mean), state.get("std", std),
                                      equalize, min_image_size, processor)

    # ---- rows ---------------------------------------------------------------------------------
    def table_source(self) -> tuple[str | Path | None, str]:
        return self.root, "data.root"

    def make_demo(self, directory: Path) -> None:
        from ..demo.image import make_image_emotion

        make_image_emotion(directory)

    def expected(self) -> str:
        if self.layout == "fer2013_csv":
            return "; expected CSV rows"
        if self.split == "predefined":
            return "; expected <train|val|test>/<class>/*.png|jpg (data.split=predefined)"
        return "; expected <class>/*.png|jpg"

    def read(self, path: str | Path | None, key: str, split: str | None) -> list[Row]:
        if self.layout == "fer2013_csv":
            return self.read_table(check_file(path, key), key, split)
        root = Path(str(path)).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{key}: folder not found: {root} (set {key}=<folder of class folders>)")
        if split is not None or self.split != "predefined":
            return self._scan(root, split)
        return [row for name, dirs in SPLIT_DIRS.items() for d in dirs if (root / d).is_dir()
                for row in self._scan(root / d, name)]

    def _scan(self, root: Path, split: str | None) -> list[Row]:
        """`<class>/<image>` under root, in sorted order; the class is the folder name."""
        rows = []
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in EXTENSIONS and not path.name.startswith("."):
                    rows.append(Row(path, str(path), class_dir.name, self.group_from_name(path.name, str(path)), split))
        return rows

    def parse(self, record: dict[Any, Any], where: str, path: Path) -> str:
        return column(record, self.pixels_column, where, "data.pixels_column")

    # ---- one example --------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """TableData's set-up; what was learnt about the files is saved even when a bad image stops it."""
        try:
            super().setup(run_dir, splits)
        finally:
            if self.checks is not None:
                self.checks.save()
                log.info("data: image checks: %s from the cache %s, %s decoded", f"{self.checks.hits:,}",
                         self.checks.path, f"{self.checks.misses:,}")
                self.checks = None

    def _load(self, parts: dict[str, list[Row]], splits: Sequence[str]) -> dict[str, Examples]:
        rows = sum(len(parts[s]) for s in SPLITS if s in splits or (s == "train" and self._load_train(splits)))
        self.preload = self.choose_preload(rows) if self.preload_setting == "auto" else bool(self.preload_setting)
        if not self.preload and self.cache_dir and self.layout == "folders":
            sources = [str(Path(str(p)).expanduser().resolve()) for p in self.source_paths().values() if p]
            settings = {"channels": self.pipeline.channels, "size": list(self.pipeline.size),
                        "min_size": self.pipeline.min_size, "equalize": self.pipeline.equalize}
            self.checks = ImageCheckCache(Path(self.cache_dir), sources, settings)
        return super()._load(parts, splits)

    def choose_preload(self, rows: int) -> bool:
        """data.preload=auto: preload when the decoded images of `rows` rows fit data.preload_budget_mb; logs why."""
        height, width = self.pipeline.size
        each = self.pipeline.channels * height * width
        total, budget = rows * each, self.preload_budget_mb * 1e6
        what = f"data: preload=auto: {rows:,} images x {_size(each)} = {_size(total)}"
        if self.layout == "fer2013_csv":
            log.info("%s: decoded into memory (a CSV's pixels have no image file to read again)", what)
            return True
        if total <= budget:
            log.info("%s <= data.preload_budget_mb=%g: decoded into memory once", what, self.preload_budget_mb)
            return True
        log.info("%s > data.preload_budget_mb=%g: read from disk each epoch (data.preload=true forces it)", what,
                 self.preload_budget_mb)
        return False

    def apply(self, examples: Examples, split: str, fn: Callable[[Any], Any]) -> None:
        """TableData's; without preload, the training images decoded for their check also give the
        normalisation statistics (`fit`), so they are not decoded a second time."""
        if split == "train" and fn == self.load and not self.preload and self.needs_fit():
            self.moments = PixelMoments(self.pipeline.channels)
            fn = partial(self.load, moments=self.moments)
        super().apply(examples, split, fn)

    def load(self, item: Path | str, moments: PixelMoments | None = None) -> Path | torch.Tensor:
        """uint8 [C, H, W] (the path itself without `preload`, once checked: the verdict cached by content
        when there is a cache; a decoded image is added to `moments`); FER2013 pixels are parsed."""
        if isinstance(item, Path):
            if self.preload:
                return self.pipeline.load(item)

            def check(path: Path) -> None:
                image = self.pipeline.load(path)
                if moments is not None:
                    moments.add(image)

            reason = self.checks.verdict(item, check) if self.checks is not None else check(item)
            if reason is not None:
                raise ImageReadError(str(item), reason)
            return item
        try:
            return self.pipeline.from_array(parse_pixels(item))
        except ImageReadError as exc:
            raise ValueError(exc.reason) from None

    def needs_fit(self) -> bool:
        return self.normalize == "train" and self.pipeline.mean is None

    def fit(self, train: Examples | None, run_dir: str | Path | None) -> None:
        moments, self.moments = self.moments, None
        if train is None or self.preload or not train.inputs or not self.needs_fit():
            self.pipeline.choose_normalization(self.normalize, (lambda: train.inputs) if train is not None else None)
            return

        def statistics() -> tuple[list[float], list[float]]:  # from the checks' decodes when they saw every image
            if moments is not None and moments.images == len(train.inputs):
                return moments.result()
            self.pipeline.fit_normalization(train.inputs)
            return list(self.pipeline.mean or []), list(self.pipeline.std or [])

        self.pipeline.set_normalization(*(self.checks.statistics(train.inputs, statistics)
                                          if self.checks is not None else statistics()))

    def make_dataset(self, split: str, examples: Examples) -> ImageDataset:
        return ImageDataset(examples.inputs, examples.ids, [r.where for r in examples.rows], self.pipeline,
                            train=split == "train")

    def describe(self) -> str:
        size = "x".join(map(str, self.pipeline.size))
        return (f"; {self.pipeline.channels} channel(s) at {size}, normalisation mean={self.pipeline.mean} "
                f"std={self.pipeline.std}")

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

    def baseline_views(self, split: str, rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """The images averaged down to 16 x 16 pixels (the preloaded ones, else read again)."""
        load = self.pipeline.load
        return {"image": np.stack([thumbnail(v if isinstance(v, torch.Tensor) else load(v)).numpy()
                                   for v in picked(self.datasets[split].inputs, rows)])}

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "in_channels": self.pipeline.channels}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mean": self.pipeline.mean, "std": self.pipeline.std}


def _size(n: float) -> str:
    """A byte count in decimal units: 2.3 KB, 26 MB, 45 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{n:.0f} B"


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
