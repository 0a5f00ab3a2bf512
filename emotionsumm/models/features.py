"""Encoders of precomputed features, the fusion model's encoders for `data.features` modalities.

`FeatureMLP` maps a vector [B, D] through an MLP; `SequenceEncoder` maps frames [B, T, D] (padded at the
end, `frame_mask` True on real frames) through a per-frame projection, optionally a bidirectional GRU or
a small Transformer, and masked mean or attention pooling, so padding never changes an example's output.
Both follow the encoder interface fusion uses: `features(...)` (the pooled vector, through `pooled`, the
hook point for embedding export), `head` (dropout + linear: the logits) and `param_parts`. `input_dim` and
`sequence` come from the data; an encoder given the other kind of input says which config to use.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.core import require_choice, require_range

SEQUENCE_ENCODERS = ("none", "gru", "transformer")
POOLING = ("mean", "attention")


def _head(hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class FeatureMLP(nn.Module):
    """`num_layers` Linear-GELU-dropout layers of width `hidden` over a per-example vector [B, input_dim]
    (num_layers=0: the vector itself), then the head.

    For small feature sets (hundreds of rows) the input itself is regularised in training: `input_dropout`
    zeroes each (standardised) input value with that probability, `input_noise` adds Gaussian noise of that
    standard deviation (in units of the training split's std when the data normalises the modality)."""

    def __init__(self, num_classes: int, input_dim: int, sequence: bool = False, hidden: int = 128,
                 num_layers: int = 2, dropout: float = 0.1, classifier_dropout: float = 0.1,
                 input_dropout: float = 0.0, input_noise: float = 0.0) -> None:
        super().__init__()
        if sequence:
            raise ValueError("model=features_mlp encodes per-example vectors [D], but this modality holds "
                             "sequences [T, D]: use model@model.encoders.<name>=features_seq")
        require_range("model.num_layers", num_layers, 0)
        require_range("model.hidden", hidden, 1)
        require_range("model.input_noise", input_noise, 0)
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.input_noise = input_noise
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(input_dim if i == 0 else hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
        self.encoder = nn.Sequential(*layers)
        self.pooled = nn.Identity()  # hook point: its output is the embedding (predict export_embeddings)
        self.head = _head(hidden if num_layers else input_dim, num_classes, classifier_dropout)

    def features(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, hidden]."""
        if self.training and self.input_noise:
            features = features + self.input_noise * torch.randn_like(features)
        return self.pooled(self.encoder(self.input_dropout(features)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(features))

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("encoder.",), "head": ("head.",)}


class MaskedAttentionPooling(nn.Module):
    """Softmax-weighted mean over the real frames (scores from a small MLP)."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(channels, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, C], [B, T] (True = real, at least one per row) -> [B, C]."""
        weights = self.score(frames).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(dim=1)
        return (weights.unsqueeze(-1) * frames).sum(dim=1)


def sinusoidal_positions(length: int, channels: int, device: torch.device) -> torch.Tensor:
    """[length, channels] fixed sine/cosine position codes (any length, no parameters)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, channels, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / channels))
    codes = torch.zeros(length, channels, device=device)
    codes[:, 0::2] = torch.sin(position * rate)
    codes[:, 1::2] = torch.cos(position * rate[: channels // 2])
    return codes


class SequenceEncoder(nn.Module):
    """Frames [B, T, input_dim] -> Linear-GELU to `hidden` -> `encoder` (none | gru: a bidirectional GRU over
    the real frames only | transformer: `num_layers` layers of `num_heads` heads with sine positions and a
    padding mask) -> `pooling` (mean | attention over the real frames) -> the head. An example without
    frames (a missing modality) gets a zero vector."""

    def __init__(self, num_classes: int, input_dim: int, sequence: bool = True, hidden: int = 128,
                 encoder: str = "gru", num_layers: int = 1, num_heads: int = 4, pooling: str = "attention",
                 dropout: float = 0.1, classifier_dropout: float = 0.1) -> None:
        super().__init__()
        if not sequence:
            raise ValueError("model=features_seq encodes sequences [T, D], but this modality holds per-example "
                             "vectors [D]: use model@model.encoders.<name>=features_mlp")
        require_choice("model.encoder", encoder, SEQUENCE_ENCODERS)
        require_choice("model.pooling", pooling, POOLING)
        require_range("model.num_layers", num_layers, 1)
        if encoder == "gru" and hidden % 2:
            raise ValueError(f"model.hidden={hidden} must be even with model.encoder=gru (two directions of "
                             "hidden/2)")
        if encoder == "transformer" and hidden % num_heads:
            raise ValueError(f"model.hidden={hidden} must be divisible by model.num_heads={num_heads}")
        self.kind = encoder
        self.project = nn.Sequential(nn.Linear(input_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        if encoder == "gru":
            self.encoder = nn.GRU(hidden, hidden // 2, num_layers, batch_first=True, bidirectional=True,
                                  dropout=dropout if num_layers > 1 else 0.0)
        elif encoder == "transformer":
            layer = nn.TransformerEncoderLayer(hidden, num_heads, 2 * hidden, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.pool = MaskedAttentionPooling(hidden) if pooling == "attention" else None
        self.pooled = nn.Identity()  # hook point: its output is the embedding (predict export_embeddings)
        self.head = _head(hidden, num_classes, classifier_dropout)

    def features(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D] frames and their [B, T] mask (padding at the end) -> [B, hidden]."""
        has_frames = frame_mask.any(dim=1)
        mask = frame_mask.clone()
        mask[~has_frames, 0] = True  # a missing example reads one (zero) frame; its output is zeroed below
        frames = self.project(features)
        if self.kind == "gru":
            lengths = mask.sum(dim=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
            frames = nn.utils.rnn.pad_packed_sequence(self.encoder(packed)[0], batch_first=True,
                                                      total_length=frames.shape[1])[0]
        elif self.kind == "transformer":
            frames = frames + sinusoidal_positions(frames.shape[1], frames.shape[2], frames.device)
            frames = self.encoder(frames, src_key_padding_mask=~mask)
        if self.pool is not None:
            pooled = self.pool(frames, mask)
        else:
            weights = mask.unsqueeze(-1).to(frames.dtype)
            pooled = (frames * weights).sum(dim=1) / weights.sum(dim=1)
        return self.pooled(pooled * has_frames.unsqueeze(-1).to(pooled.dtype))

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(features, frame_mask))

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("project.", "encoder.", "pool."), "head": ("head.",)}
