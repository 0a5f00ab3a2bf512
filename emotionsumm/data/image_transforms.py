"""One image's way from a file (or a pixel array) to a normalised tensor, independent of labels.

`ImagePipeline` loads with PIL, converts to the configured channels (RGB, RGBA, palette, grey all
accepted), resizes, augments in training only (torchvision v2, torch's global RNG, so a seeded run is
reproducible) and normalises with a per-channel mean/std. The classification data and the
multimodal data both use it, so an image is treated the same whatever dataset it comes from.
A pretrained backbone's own input (size, mean/std) can come from its Hugging Face image processor
(`processor`, with `image_size=processor` and `normalize=processor`; see image_processor.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from ..config.core import require_choice, require_range

NORMALIZE = ("train", "imagenet", "processor", "none")
# the statistics torchvision's ImageNet weights were trained with (per RGB channel)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENT_KEYS = ("crop_scale", "crop_ratio", "hflip", "rotation", "brightness", "contrast")


class ImageReadError(ValueError):
    """An image file that is missing, empty, corrupt or not an image; the message names the file."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: cannot read the image ({reason})")
        self.where, self.reason = where, reason


def pair(size: int | Sequence[int], key: str = "data.image_size") -> tuple[int, int]:
    """(height, width) from an int or a [height, width] pair."""
    hw = (int(size), int(size)) if isinstance(size, int | float) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"{key}={size!r} is out of range; allowed: a positive int or [height, width]")
    return hw


def stats_for_channels(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel statistics for `channels`: as given when the counts match, one value repeated, or the
    average of RGB statistics for a grey (1-channel) input."""
    if len(mean) == channels:
        return [float(m) for m in mean], [float(s) for s in std]
    if len(mean) == 1:
        return [float(mean[0])] * channels, [float(std[0])] * channels
    return [float(np.mean(mean))], [float(np.mean(std))]


def imagenet_stats(channels: int) -> tuple[list[float], list[float]]:
    """ImageNet mean/std for 3 channels, or their average for a grey (1-channel) input."""
    return stats_for_channels(IMAGENET_MEAN, IMAGENET_STD, channels)


def build_augmentation(size: tuple[int, int], augment: Mapping[str, Any] | None) -> v2.Transform | None:
    """Training-time augmentation on uint8 tensors: random resized crop, horizontal flip, small rotation,
    brightness/contrast jitter (lighting differs between subjects and cameras).

    `augment` keys: `crop_scale` [min, max] area fraction (null = no crop), `crop_ratio` [min, max]
    aspect ratio, `hflip` probability, `rotation` max degrees, `brightness`/`contrast` max relative
    change (0.2 = ±20 %). None or {} = no augmentation.
    """
    augment = dict(augment or {})
    unknown = set(augment) - set(AUGMENT_KEYS)
    if unknown:
        raise ValueError(f"data.augment has unknown key(s) {sorted(unknown)}; allowed: {list(AUGMENT_KEYS)}")
    steps: list[v2.Transform] = []
    if augment.get("crop_scale"):
        scale = tuple(float(s) for s in augment["crop_scale"])
        ratio = tuple(float(r) for r in augment.get("crop_ratio") or (0.9, 1.1))
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"data.augment.crop_scale={list(scale)} is out of range; allowed: [min, max] in (0, 1]")
        steps.append(v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True))
    hflip = float(augment.get("hflip") or 0.0)
    require_range("data.augment.hflip", hflip, 0, 1)
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    rotation = float(augment.get("rotation") or 0.0)
    require_range("data.augment.rotation", rotation, 0, note="degrees")
    if rotation > 0:
        steps.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR))
    jitter = {k: float(augment.get(k) or 0.0) for k in ("brightness", "contrast")}
    for key, value in jitter.items():
        require_range(f"data.augment.{key}", value, 0, 1, high_open=True)
    if any(jitter.values()):
        steps.append(v2.ColorJitter(brightness=jitter["brightness"] or None, contrast=jitter["contrast"] or None))
    return v2.Compose(steps) if steps else None


def thumbnail(image: torch.Tensor, side: int = 16) -> torch.Tensor:
    """A uint8 [C, H, W] image averaged down to side x side pixels in 0..1, flattened ([C * side * side]): the
    fixed representation the linear baseline reads (metrics/class_baselines.py)."""
    small = torch.nn.functional.interpolate(image[None].float() / 255, size=(side, side), mode="area")
    return small.flatten()


class PixelMoments:
    """Running per-channel sums of pixels in [0, 1] and their squares over uint8 [C, H, W] images, added in
    order (the same order gives the same float64 sums, so the same statistics bit for bit)."""

    def __init__(self, channels: int) -> None:
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.count = self.images = 0

    def add(self, image: torch.Tensor) -> None:
        pixels = image.double().div_(255).flatten(1)
        self.total += pixels.sum(1)
        self.squares += pixels.square().sum(1)
        self.count += pixels.shape[1]
        self.images += 1

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, population std) per channel."""
        if self.count == 0:
            raise ValueError("cannot compute data.mean/data.std: the training split has no image")
        mean = self.total / self.count
        std = (self.squares / self.count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
        return mean.tolist(), std.tolist()


class ImagePipeline:
    """Load → convert channels → resize (→ histogram-equalise) (uint8 [C, H, W]); then augment (training)
    → normalise (float).

    `load`/`from_array` give the deterministic uint8 image (what a dataset may keep in memory);
    calling the pipeline on it (or on a path) gives the model's input. `mean`/`std` are set by
    `fit_normalization` on the training images, or given (e.g. the pretrained weights' own).
    `processor` (a directory or hub name with a Hugging Face image processor) gives the size for
    `image_size="processor"` and the statistics for `normalize="processor"`.
    `equalize` (histogram equalisation, per image and channel) evens out skin tone, lighting and camera
    contrast between subjects, a classic step of facial-expression pipelines.
    An image whose height or width is below `min_size` pixels (capped at `image_size`; 0 = no check) is
    a broken export or a thumbnail, not a face: it raises ImageReadError instead of being upscaled.
    """

    def __init__(self, channels: int = 1, image_size: int | Sequence[int] | str = 48,
                 augment: Mapping[str, Any] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, equalize: bool = False, min_size: int = 8,
                 processor: str | None = None) -> None:
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels} is not allowed; choose 1 (grey) or 3 (RGB)")
        require_range("data.min_image_size", min_size, 0, note="(0 = no check)")
        self.channels = channels
        self.processor = processor
        self.size = self.processor_input("data.image_size").size if image_size == "processor" else pair(image_size)
        self.min_size = min(int(min_size), *self.size)
        self.augmentation = build_augmentation(self.size, augment)
        self.equalize = equalize
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        if mean is not None or std is not None:
            self.set_normalization(mean, std)

    # ---- decoding (deterministic) ------------------------------------------------------------
    def load(self, path: str | Path, where: str | None = None) -> torch.Tensor:
        """The file as uint8 [C, H, W] at the configured size; ImageReadError names `where` (or the path)."""
        from PIL import Image, UnidentifiedImageError

        where = where or str(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # a face is never that large
                with Image.open(path) as image:
                    image.load()
                    self._check_size(image.size, where)
                    return self._from_pil(image)
        except ImageReadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(where, f"too large to decode safely (downscale it if it is genuine): {exc}") from None
        except FileNotFoundError:
            raise ImageReadError(where, "file not found") from None
        except UnidentifiedImageError:
            size = Path(path).stat().st_size if Path(path).is_file() else 0
            raise ImageReadError(where, "empty file" if size == 0 else "not an image PIL can decode") from None
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise ImageReadError(where, f"corrupt image data: {exc}") from None

    def from_array(self, array: np.ndarray, where: str = "<array>") -> torch.Tensor:
        """A uint8 [H, W] or [H, W, C] array (e.g. a FER2013 `pixels` row) as uint8 [C, H, W]."""
        from PIL import Image

        self._check_size((array.shape[1], array.shape[0]), where)
        return self._from_pil(Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)))

    def _check_size(self, width_height: tuple[int, int], where: str) -> None:
        width, height = width_height
        if min(width, height) < self.min_size:
            raise ImageReadError(where, f"{width}x{height} pixels is smaller than data.min_image_size="
                                 f"{self.min_size}: a broken export or thumbnail? replace the file, or lower "
                                 "data.min_image_size")

    def _from_pil(self, image: Any) -> torch.Tensor:
        from PIL import Image

        if image.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit/float greys: rescale to 8 bits
            values = np.asarray(image, dtype=np.float64)
            top = values.max() if values.max() > 0 else 1.0
            image = Image.fromarray(np.round(values / top * 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)  # transparent pixels become black, not random
        image = image.convert("L" if self.channels == 1 else "RGB")
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
        if tuple(tensor.shape[-2:]) != self.size:
            tensor = v2.functional.resize(tensor, list(self.size), antialias=True)
        return v2.functional.equalize(tensor) if self.equalize else tensor

    def processor_input(self, needed_by: str) -> Any:
        """The pretrained image processor's input (size, mean/std); `needed_by` names the key that asked."""
        from .image_processor import processor_input

        if not self.processor:
            raise ValueError(f"{needed_by}=processor needs data.processor: a model directory (or hub name) with "
                             "a Hugging Face image processor; model=image_hf takes it from model.pretrained: set "
                             "model.pretrained=<dir saved with save_pretrained>")
        return processor_input(self.processor)

    # ---- normalisation -----------------------------------------------------------------------
    def set_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        mean_l = [float(m) for m in (mean or [])]
        std_l = [float(s) for s in (std or [])]
        if len(mean_l) != self.channels or len(std_l) != self.channels or min(std_l) <= 0:
            raise ValueError(f"data.mean={mean_l} / data.std={std_l} need {self.channels} value(s) each "
                             f"(data.channels={self.channels}) and a positive std")
        self.mean, self.std = mean_l, std_l

    def choose_normalization(self, mode: str, train_images: Callable[[], Iterable[Any]] | None) -> None:
        """Statistics for `data.normalize`: `train` (computed on the training images), `imagenet`
        (torchvision's ImageNet weights' own), `processor` (a pretrained image processor's image_mean/std)
        or `none`. Statistics already set (given, or from a checkpoint) win."""
        require_choice("data.normalize", mode, NORMALIZE)
        if self.mean is not None or mode == "none":
            return
        if mode == "imagenet":
            self.set_normalization(*imagenet_stats(self.channels))
            return
        if mode == "processor":
            wanted = self.processor_input("data.normalize")
            if wanted.mean is not None:  # a processor that does not normalise: neither do we
                self.set_normalization(*stats_for_channels(wanted.mean, wanted.std, self.channels))
            return
        if train_images is None:
            raise ValueError("data.normalize=train needs the training split (or statistics from a checkpoint)")
        self.fit_normalization(train_images())

    def fit_normalization(self, images: Iterable[torch.Tensor | str | Path]) -> None:
        """Per-channel mean and (population) std of the pixels in [0, 1] of the given, unaugmented images."""
        moments = PixelMoments(self.channels)
        for image in images:
            moments.add(self._uint8(image))
        self.mean, self.std = moments.result()

    # ---- the model's input -------------------------------------------------------------------
    def _uint8(self, image: torch.Tensor | str | Path) -> torch.Tensor:
        return image if isinstance(image, torch.Tensor) else self.load(image)

    def __call__(self, image: torch.Tensor | str | Path, train: bool = False) -> torch.Tensor:
        """Float [C, H, W]: augmented only when `train`, then normalised (if statistics are set)."""
        tensor = self._uint8(image)
        if train and self.augmentation is not None:
            tensor = self.augmentation(tensor)
        out = tensor.float().div_(255)
        if self.mean is not None:
            mean = torch.tensor(self.mean).view(-1, 1, 1)
            std = torch.tensor(self.std).view(-1, 1, 1)
            out = out.sub_(mean).div_(std)
        return out
