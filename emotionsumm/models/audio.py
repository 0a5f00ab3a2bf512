"""A 2-D CNN over log-mel spectrograms with attentive or mean pooling over time."""

from __future__ import annotations

import torch
from torch import nn

from ..config.core import require_choice

POOLING = ("attention", "mean")


class ConvBlock(nn.Sequential):
    """`convs` 3x3 convolutions with batch norm and ReLU, then 2x2 max pooling (halves mels and frames)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, convs: int = 2) -> None:
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU()]
        super().__init__(*layers, nn.MaxPool2d(2), nn.Dropout2d(dropout) if dropout > 0 else nn.Identity())


class AttentivePooling(nn.Module):
    """Weighted mean over time with weights from a small scoring MLP (softmax over frames)."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(channels, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, C]."""
        weights = self.score(frames).softmax(dim=1)
        return (weights * frames).sum(dim=1)


class AudioCNN(nn.Module):
    """`depth` conv blocks (channels `width`, doubling per block up to `max_width`; `convs_per_block`
    convolutions each) over [B, 1, n_mels, T].

    The frequency axis is averaged out, time is pooled by `pooling` (attention|mean), and the pooled
    vector (`self.pooled`, the hook point for embedding export) goes through dropout and a linear head.
    """

    def __init__(self, num_classes: int, n_mels: int = 64, width: int = 32, depth: int = 4, max_width: int = 256,
                 convs_per_block: int = 2, dropout: float = 0.3, conv_dropout: float = 0.1,
                 pooling: str = "attention") -> None:
        super().__init__()
        require_choice("model.pooling", pooling, POOLING)
        if min(depth, width, convs_per_block) < 1:
            raise ValueError(f"model.depth={depth}, model.width={width} and model.convs_per_block={convs_per_block} "
                             "must be >= 1")
        if n_mels < 2**depth:
            raise ValueError(f"model.depth={depth} halves the {n_mels} mel bins {depth} times; use depth <= "
                             f"{n_mels.bit_length() - 1} or more mels (data.features.n_mels)")
        channels = [min(width * 2**i, max(max_width, width)) for i in range(depth)]
        self.blocks = nn.Sequential(*(ConvBlock(c_in, c_out, conv_dropout, convs_per_block)
                                      for c_in, c_out in zip([1, *channels[:-1]], channels)))
        self.pool = AttentivePooling(channels[-1]) if pooling == "attention" else None
        self.pooled = nn.Identity()  # hook point: its output is the pooled embedding (predict export_embeddings)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels[-1], num_classes))

    def features(self, features: torch.Tensor) -> torch.Tensor:
        """The pooled [B, C] representation of a batch of [B, 1, n_mels, T] log-mels."""
        maps = self.blocks(features)  # [B, C, mels', T']
        frames = maps.mean(dim=2).transpose(1, 2)  # [B, T', C]
        pooled = self.pool(frames) if self.pool is not None else frames.mean(dim=1)
        return self.pooled(pooled)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(features))

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("blocks.", "pool."), "head": ("head.",)}
