"""Image emotion classifiers: a small CNN (default), a torchvision ResNet-18 adapted to the input, and
any `transformers` vision backbone (ViT, ConvNeXt, Swin, DINOv2, ResNet, ...) from a local directory.

Each is a backbone that maps `pixels` [B, C, H, W] to a pooled vector (exposed through
`self.pooled` for embedding export) and a dropout + linear head. The backbone can be frozen and
unfrozen stage by stage on a schedule, like the text encoder; frozen BatchNorm layers keep their
running statistics (they stay in eval mode while frozen). `lr` is the backbone's default learning
rate (a pretrained one wants a small one; the head keeps optimizer.lr; group_lr.backbone overrides it).
A pretrained model's config also states the input its weights expect (`preprocessing`: channels,
image_size, normalize, processor), which the image data configs read; the network itself ignores it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config.core import require_choice, require_range
from .freezing import set_trainable, top_layers_to_train
from .text import check_lr, load_pretrained_encoder

log = logging.getLogger(__name__)


class ImageClassifier(nn.Module):
    """Backbone → pooled features → dropout → linear head; subclasses build the backbone.

    `freeze_backbone` freezes the whole backbone; `unfreeze_at_epochs` ({epoch: k}) then trains its
    top k stages from that epoch on (-1 = everything, stem included). `lr`: the backbone's default
    learning rate (null = optimizer.lr).
    """

    def __init__(self, backbone: nn.Module, features: int, num_classes: int, dropout: float,
                 freeze_backbone: bool, unfreeze_at_epochs: dict[Any, int] | None, lr: float | None = None) -> None:
        super().__init__()
        require_range("model.dropout", dropout, 0, 1, high_open=True)
        self.backbone_lr = check_lr(lr, "model.lr")
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

    def param_lrs(self) -> dict[str, float]:
        """Default learning rates of parts (`group_lr` overrides them; other parts use optimizer.lr)."""
        return {"backbone": self.backbone_lr} if self.backbone_lr is not None else {}


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
                 unfreeze_at_epochs: dict[Any, int] | None = None, lr: float | None = None) -> None:
        if not widths or min(widths) < 1 or convs_per_block < 1 or pool_size < 1:
            raise ValueError(f"model.widths={list(widths)}, model.convs_per_block={convs_per_block} and "
                             f"model.pool_size={pool_size} must be positive")
        backbone = ConvBackbone(in_channels, widths, convs_per_block, pool_size)
        super().__init__(backbone, backbone.out_features, num_classes, dropout, freeze_backbone, unfreeze_at_epochs,
                         lr)
        self.on_epoch_start(0)

    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [], list(self.backbone.blocks)


class ResNet18Classifier(ImageClassifier):
    """torchvision ResNet-18: first conv takes `in_channels`, the head has `num_classes` outputs.

    `weights` is a local `.pth` state dict of torchvision's resnet18 (never downloaded). Its 3-channel
    first conv is summed over colours for a grey input; its `fc` is used only if it has `num_classes`
    outputs (otherwise the head starts random). `preprocessing` is read by the data config only.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, weights: str | None = None, dropout: float = 0.0,
                 freeze_backbone: bool = False, unfreeze_at_epochs: dict[Any, int] | None = None,
                 lr: float | None = None, preprocessing: Mapping[str, Any] | None = None) -> None:
        from torchvision.models import resnet18

        backbone = resnet18(weights=None)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        backbone.fc = nn.Identity()
        super().__init__(backbone, 512, num_classes, dropout, freeze_backbone, unfreeze_at_epochs, lr)
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


POOLINGS = ("auto", "pooler", "mean", "cls")
# names of the module list that holds a transformers vision model's layers or stages, input to output
STAGE_LISTS = ("layer", "layers", "stages", "blocks")


class HFVisionBackbone(nn.Module):
    """A `transformers` vision model mapping pixels [B, C, H, W] to a pooled [B, D] vector.

    `pooling`: `auto` = the model's pooler_output if it gives one (ViT's pooler, ConvNeXt's normed
    average, DINOv2's normed CLS), else the mean of last_hidden_state; `pooler`; `mean` (over tokens, or
    over the spatial grid of a conv net); `cls` (the first token; transformers only). A grey input is
    repeated over the model's 3 channels. Position embeddings are interpolated when the input size
    differs from the pretraining size (ViT, DeiT, Swin, CLIP), so faces may be fed smaller than 224.
    """

    def __init__(self, model: nn.Module, pooling: str, where: str) -> None:
        super().__init__()
        require_choice("model.pooling", pooling, POOLINGS)
        model = getattr(model, "vision_model", model)  # CLIP/SigLIP-style dual encoders: their image tower
        arguments = inspect.signature(model.forward).parameters
        if "pixel_values" not in arguments:
            raise ValueError(f"{where} is a {type(model).__name__} ({model.config.model_type}), not a vision "
                             "model: it takes no pixel_values; point it at an image backbone (ViT, ConvNeXt, ...)")
        self.model, self.pooling = model, pooling
        self.forward_kwargs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in arguments else {}
        config = model.config
        self.num_channels = int(getattr(config, "num_channels", 3))
        sizes = getattr(config, "hidden_sizes", None)
        self.out_features = int(sizes[-1] if sizes else config.hidden_size)
        self.stage_path = _stage_list_path(model)
        if self.stage_path is None:
            log.warning("%s: no list of layers or stages found (a module list named one of %s): the backbone "
                        "freezes and unfreezes as one stage", where, list(STAGE_LISTS))
        # a pooler the chosen pooling skips is frozen for good (DDP rejects trainable parameters left idle)
        pooler = getattr(model, "pooler", None)
        self.unused = [pooler] if pooling in ("mean", "cls") and isinstance(pooler, nn.Module) else []
        for module in self.unused:
            module.requires_grad_(False)

    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """(modules before the layer list, its layers from input to output); what follows the list (final
        norm, pooler) trains with the top layer."""
        if self.stage_path is None:
            return [], [self.model]
        before, after = _around(self.model, self.stage_path)
        after = [m for m in after if all(m is not u for u in self.unused)]
        layers = list(self.model.get_submodule(self.stage_path))
        return before, [*layers[:-1], nn.ModuleList([layers[-1], *after])]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[1] == 1 and self.num_channels == 3:
            pixels = pixels.expand(-1, 3, -1, -1)
        out = self.model(pixel_values=pixels, **self.forward_kwargs)
        pooled = getattr(out, "pooler_output", None) if self.pooling in ("auto", "pooler") else None
        if pooled is not None:
            return pooled.flatten(1)  # ResNet's is [B, C, 1, 1]
        if self.pooling == "pooler":
            raise ValueError(f"model.pooling=pooler: {type(self.model).__name__} gives no pooler_output; "
                             "use model.pooling=mean or cls")
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # a conv net's [B, C, H, W] map
            if self.pooling == "cls":
                raise ValueError(f"model.pooling=cls: {type(self.model).__name__} is a conv net without a CLS "
                                 "token; use model.pooling=auto or mean")
            return hidden.mean(dim=(2, 3))
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)


class HFImageClassifier(ImageClassifier):
    """A `transformers` vision backbone (`AutoModel.from_pretrained(pretrained)`: a local directory, or a
    hub name the user gives, which transformers fetches unless cached) with a fresh dropout + linear head.

    `unfreeze_at_epochs` counts the backbone's layers (ViT, DINOv2) or stages (ConvNeXt, Swin, ResNet);
    the embeddings (patchify stem) train only with -1. `in_channels` (the data's) must be the model's
    channel count, or 1 (grey, repeated). `preprocessing` is read by the data config only.
    """

    def __init__(self, num_classes: int, pretrained: str | None = None, in_channels: int = 3, pooling: str = "auto",
                 dropout: float = 0.1, freeze_backbone: bool = False,
                 unfreeze_at_epochs: dict[Any, int] | None = None, lr: float | None = None,
                 preprocessing: Mapping[str, Any] | None = None) -> None:
        if not pretrained:
            raise ValueError("model.pretrained is not set: give a directory saved with save_pretrained (or a "
                             "Hugging Face name you have cached), e.g. model.pretrained=/models/vit-base")
        backbone = HFVisionBackbone(load_pretrained_encoder(str(pretrained)), pooling,
                                    f"model.pretrained={pretrained}")
        if in_channels not in (1, backbone.num_channels):
            raise ValueError(f"data.channels={in_channels}, but model.pretrained={pretrained} takes "
                             f"{backbone.num_channels} channels: set data.channels={backbone.num_channels}")
        super().__init__(backbone, backbone.out_features, num_classes, dropout, freeze_backbone, unfreeze_at_epochs,
                         lr)
        self.on_epoch_start(0)

    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return self.backbone.stages()


def _stage_list_path(model: nn.Module) -> str | None:
    """The path of the outermost non-empty module list named like a layer/stage list (None if there is none)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and name.rpartition(".")[2] in STAGE_LISTS:
            return name
    return None


def _around(root: nn.Module, path: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """The modules registered before and after the module at `path`, at every level on the way down to it
    (registration order is forward order in transformers models: embeddings, encoder, final norm, pooler)."""
    before: list[nn.Module] = []
    after: list[nn.Module] = []
    node = root
    for part in path.split("."):
        children = list(node.named_children())
        index = [name for name, _ in children].index(part)
        before += [m for _, m in children[:index]]
        after = [m for _, m in children[index + 1:]] + after
        node = getattr(node, part)
    return before, after
