"""Image emotion classifiers: a small CNN (default) and a torchvision ResNet-18 adapted to the input.

Both are a backbone that maps `pixels` [B, C, H, W] to a pooled vector (exposed through
`self.pooled` for embedding export) and a dropout + linear head. The backbone can be frozen and
unfrozen stage by stage on a schedule, like the text encoder; frozen BatchNorm layers keep their
running statistics (they stay in eval mode while frozen).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import require_range
from .freezing import set_trainable, top_layers_to_train

log = logging.getLogger(__name__)


class ImageClassifier(nn.Module):
    """Backbone → pooled features → dropout → linear head; subclasses build the backbone.

    `freeze_backbone` freezes the whole backbone; `unfreeze_at_epochs` ({epoch: k}) then trains its
    top k stages from that epoch on (-1 = everything, stem included).
    """

    def __init__(self, backbone: nn.Module, features: int, num_classes: int, dropout: float,
                 freeze_backbone: bool, unfreeze_at_epochs: dict[Any, int] | None) -> None:
        super().__init__()
        require_range("model.dropout", dropout, 0, 1, high_open=True)
        self.backbone = backbone
        self.pooled = nn.Identity()  # hook point: its output is the pooled embedding (predict export_embeddings)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.freeze_backbone = freeze_backbone
        self.unfreeze_at_epochs = dict(unfreeze_at_epochs or {})

    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """(stem modules, stages from input to output) of the backbone, for gradual unfreezing."""
        raise NotImplementedError

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pooled [B, features] representation (what embeddings are exported from, and fusion uses)."""
        return self.pooled(self.backbone(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))

    def on_epoch_start(self, epoch: int) -> bool:
        """Apply the freezing schedule for `epoch`; True if the trainable set changed."""
        top = top_layers_to_train(self.unfreeze_at_epochs, epoch, self.freeze_backbone)
        stem, stages = self.stages()
        changed = set_trainable(None, nn.ModuleList(stages), stem, top)
        if changed and epoch > 0:
            log.info("epoch %d: backbone trains %s", epoch, "all stages" if top is None else f"top {top} stage(s)")
        self.train(self.training)  # frozen BatchNorm layers switch to eval, unfrozen ones back
        return changed

    def train(self, mode: bool = True) -> ImageClassifier:
        """Like nn.Module.train, but BatchNorm layers without trainable parameters stay in eval mode."""
        super().train(mode)
        if mode:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine \
                        and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {"backbone": ("backbone.",), "head": ("head.",)}


class ConvBackbone(nn.Module):
    """Blocks of (3×3 conv, BatchNorm, ReLU) × n then 2×2 max-pool; then an average pool to a
    `pool_size`×`pool_size` grid, flattened (1 = global average; a coarse grid keeps where a feature is,
    which matters for faces: brows are at the top, the mouth at the bottom)."""

    def __init__(self, in_channels: int, widths: Sequence[int], convs_per_block: int, pool_size: int = 1) -> None:
        super().__init__()
        blocks, channels = [], in_channels
        for width in widths:
            layers: list[nn.Module] = []
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.out_features = channels * pool_size * pool_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels
        for block in self.blocks:
            x = block(x)
        return self.pool(x).flatten(1)


class SmallCNN(ImageClassifier):
    """A small CNN for 48×48-ish faces (the default image model; ~0.1 M parameters with 32/64/128)."""

    def __init__(self, num_classes: int, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128),
                 convs_per_block: int = 1, pool_size: int = 3, dropout: float = 0.3, freeze_backbone: bool = False,
                 unfreeze_at_epochs: dict[Any, int] | None = None) -> None:
        if not widths or min(widths) < 1 or convs_per_block < 1 or pool_size < 1:
            raise ValueError(f"model.widths={list(widths)}, model.convs_per_block={convs_per_block} and "
                             f"model.pool_size={pool_size} must be positive")
        backbone = ConvBackbone(in_channels, widths, convs_per_block, pool_size)
        super().__init__(backbone, backbone.out_features, num_classes, dropout, freeze_backbone, unfreeze_at_epochs)
        self.on_epoch_start(0)

    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [], list(self.backbone.blocks)


class ResNet18Classifier(ImageClassifier):
    """torchvision ResNet-18: first conv takes `in_channels`, the head has `num_classes` outputs.

    `weights` is a local `.pth` state dict of torchvision's resnet18 (never downloaded). Its 3-channel
    first conv is summed over colours for a grey input; its `fc` is used only if it has `num_classes`
    outputs (otherwise the head starts random).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, weights: str | None = None, dropout: float = 0.0,
                 freeze_backbone: bool = False, unfreeze_at_epochs: dict[Any, int] | None = None) -> None:
        from torchvision.models import resnet18

        backbone = resnet18(weights=None)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        backbone.fc = nn.Identity()
        super().__init__(backbone, 512, num_classes, dropout, freeze_backbone, unfreeze_at_epochs)
        if weights:
            self.load_weights(weights, in_channels)
        self.on_epoch_start(0)

    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        b = self.backbone
        return [b.conv1, b.bn1], [b.layer1, b.layer2, b.layer3, b.layer4]

    def load_weights(self, path: str, in_channels: int, key: str = "model.weights") -> None:
        """Load a torchvision resnet18 state dict, adapting the first conv and (if it fits) the head."""
        file = Path(str(path)).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"{key}: weights file not found: {file} (set {key}=<path to a resnet18 .pth "
                                    f"state dict> or {key}=null to start from random weights)")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file gets the same clear message
            raise ValueError(f"{key}: cannot load {file} as a state dict ({exc})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise ValueError(f"{key}: {file} does not hold a state dict (got {type(state).__name__})")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        conv = state.get("conv1.weight")
        if conv is not None and conv.shape[1] != in_channels:
            if in_channels == 1:
                state["conv1.weight"] = conv.sum(dim=1, keepdim=True)  # grey = R + G + B response
            else:
                raise ValueError(f"{key}: {file} has a {conv.shape[1]}-channel first conv; the data has "
                                 f"{in_channels} channel(s) (data.channels)")
        fc_w, fc_b = state.pop("fc.weight", None), state.pop("fc.bias", None)
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{key}: {file} is not a resnet18 state dict: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        linear = self.head[-1]
        if fc_w is not None and fc_w.shape == linear.weight.shape:
            linear.weight.data.copy_(fc_w)
            if fc_b is not None:
                linear.bias.data.copy_(fc_b)
            log.info("model.weights: loaded backbone and head from %s", file)
        else:
            log.info("model.weights: loaded the backbone from %s; the %d-class head starts random", file,
                     linear.out_features)
