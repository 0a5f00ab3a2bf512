"""The input a pretrained vision backbone expects, read from its Hugging Face image processor.

A model saved with `save_pretrained` next to its image processor (ViT, ConvNeXt, Swin, DINOv2, ...)
holds a `preprocessor_config.json`. The image pipeline needs two things from it: the final input
size (the centre crop's size if the processor crops, else its resize size) and the per-channel
mean/std (None when the processor does not normalise). Face images are already crops, so the
pipeline resizes straight to that size rather than resizing larger and cropping the face's edges.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..models.pretrained import pretrained_source

PROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class ProcessorInput:
    """What a pretrained processor feeds its model: (height, width), and the mean/std per channel."""

    size: tuple[int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


@functools.cache
def processor_input(name_or_path: str, key: str = "data.processor") -> ProcessorInput:
    """The input size and normalisation of the image processor in a local directory (or a hub name the
    user has cached); nothing is downloaded for a local directory. Errors name `key`."""
    from transformers import AutoImageProcessor

    name_or_path = str(name_or_path)
    source = pretrained_source(name_or_path, key, PROCESSOR_FILE, "image processor",
                               "save the model's AutoImageProcessor there, or set data.image_size and "
                               "data.normalize (train | imagenet | none) yourself")
    processor = AutoImageProcessor.from_pretrained(source)
    size = _final_size(processor, f"{key}={name_or_path}")
    if not getattr(processor, "do_normalize", True):
        return ProcessorInput(size, None, None)
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None:
        raise ValueError(f"{key}={name_or_path}: the image processor normalises but has no image_mean/image_std")
    return ProcessorInput(size, tuple(float(m) for m in _listed(mean)), tuple(float(s) for s in _listed(std)))


def _listed(values: Any) -> list[Any]:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _final_size(processor: Any, where: str) -> tuple[int, int]:
    """The crop size if the processor centre-crops, else its resize size: {height, width}, or a square
    side from shortest_edge / longest_edge (ConvNeXt, ResNet: the crop of `shortest_edge` pixels)."""
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    for size in (crop, getattr(processor, "size", None)):
        if size is None:
            continue
        if isinstance(size, int):
            return size, size
        get = size.get if isinstance(size, dict) else lambda name, s=size: getattr(s, name, None)
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
        edge = get("shortest_edge") or get("longest_edge")
        if edge:
            return int(edge), int(edge)
    raise ValueError(f"{where}: cannot tell the image processor's input size (no crop_size or size with "
                     "height/width or shortest_edge); set data.image_size yourself")
