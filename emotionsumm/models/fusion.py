"""Multimodal fusion: one encoder per modality (the single-modality models) and a fusion head.

Every encoder is a single-modality classifier built from its own model config (`model.encoders.<m>`),
so it brings `features(...)` (its pooled vector) and `head` (its own logits). A modality is any name the
data gives: text, audio, image, or a precomputed-feature modality (`data.features.<name>`, encoded by
`features_mlp` / `features_seq`); `inputs` (from the data) says which batch keys feed which encoder
arguments. Fusion:
- `late`: a learned softmax-weighted average of the per-modality logits over the present modalities;
- `concat`: the features (zeros where a modality is missing) concatenated into an MLP;
- `attention`: each modality's features projected to `hidden`, plus a learned modality embedding,
  scored, softmax over the present modalities, and the weighted sum classified by an MLP.
Modality dropout hides each present modality of a training example with probability
`modality_dropout` (never all of them), so the model learns to cope with missing ones.

Learning rates: the parts are the modalities' encoders (`text`, `audio`, `image`, each feature
modality's name; without their own heads) and `fusion` (everything that maps features to logits,
the encoders' heads in `late` fusion).
An encoder config may carry `lr:` (e.g. text_minilm's small one for the pretrained encoder): the
default of that encoder's part, which `group_lr.<part>` overrides; other parts use optimizer.lr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config.core import require_choice, require_range
from .text import check_lr

FUSIONS = ("late", "concat", "attention")
# what the data calls a media modality's inputs in a batch (`<modality>_<name>`) -> the encoder's argument;
# the data's `inputs` (model_kwargs) adds those of its feature modalities
INPUTS = {"text": {"input_ids": "input_ids", "attention_mask": "attention_mask"}, "audio": {"features": "features"},
          "image": {"pixels": "pixels"}}


class FusionClassifier(nn.Module):
    """`encoders[m]` (model configs) for each modality in `modalities`, fused by `fusion`; `inputs[m]` maps
    batch key suffixes to encoder arguments (default: INPUTS)."""

    def __init__(self, num_classes: int, modalities: Sequence[str], encoders: Mapping[str, Any],
                 encoder_kwargs: Mapping[str, Mapping[str, Any]] | None = None, fusion: str = "attention",
                 hidden: int = 128, dropout: float = 0.2, modality_dropout: float = 0.0,
                 inputs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        super().__init__()
        require_choice("model.fusion", fusion, FUSIONS)
        require_range("model.modality_dropout", modality_dropout, 0, 1, high_open=True)
        missing = [m for m in modalities if m not in encoders or encoders[m] is None]
        if missing:
            media = missing[0] in INPUTS
            raise ValueError(f"model.encoders has no config for modality {missing}; add e.g. "
                             f"{'' if media else '+'}model@model.encoders.{missing[0]}="
                             f"{'<model config>' if media else 'features_mlp (vectors) or features_seq (sequences)'}"
                             ", or drop it from data.modalities")
        known = {**INPUTS, **{m: dict(v) for m, v in (inputs or {}).items()}}
        if unknown := [m for m in modalities if m not in known]:
            raise ValueError(f"modality {unknown[0]!r}: the data gives no batch inputs for it (data.features "
                             "names the feature modalities)")
        if "fusion" in modalities:
            raise ValueError("a modality may not be called 'fusion' (the name of the fusion head's learning-rate "
                             "part); rename it under data.features")
        self.inputs = {m: known[m] for m in modalities}
        self.modalities, self.fusion, self.modality_dropout = list(modalities), fusion, modality_dropout
        kwargs = encoder_kwargs or {}
        # an encoder config's `lr` is this model's default for that part, not an argument of the encoder
        self.encoder_lrs = {m: lr for m in self.modalities
                            if (lr := check_lr(encoders[m].get("lr"), f"model.encoders.{m}.lr")) is not None}
        self.encoders = nn.ModuleDict({m: instantiate(_without_lr(encoders[m]), num_classes=num_classes,
                                                      **kwargs.get(m, {})) for m in self.modalities})
        dims = {m: self.encoders[m].head[-1].in_features for m in self.modalities}
        if fusion != "late":  # the encoders' own heads would be unused parameters (DDP rejects those)
            for encoder in self.encoders.values():
                encoder.head = nn.Identity()
        self.pooled = nn.Identity()  # hook point: its output is the fused embedding (predict export_embeddings)
        if fusion == "late":
            self.weights = nn.Parameter(torch.zeros(len(self.modalities)))
        elif fusion == "concat":
            self.head = _mlp(sum(dims.values()), hidden, num_classes, dropout)
        else:
            self.project = nn.ModuleDict({m: nn.Linear(dims[m], hidden) for m in self.modalities})
            self.modality_embedding = nn.Parameter(torch.zeros(len(self.modalities), hidden))
            self.score = nn.Sequential(nn.Tanh(), nn.Linear(hidden, 1))
            self.head = _mlp(hidden, hidden, num_classes, dropout)
        self.last_weights: torch.Tensor | None = None  # [B, M] fusion weights of the last batch (inspection)

    def _drop_modalities(self, present: torch.Tensor) -> torch.Tensor:
        """Training only: hide each present modality with probability p, keeping at least one per example."""
        if not self.training or self.modality_dropout == 0 or present.shape[1] == 1:
            return present
        draw = torch.rand(present.shape, device=present.device)
        keep = present & (draw >= self.modality_dropout)
        # an example that lost all its modalities keeps one present modality, chosen at random
        one = nn.functional.one_hot(draw.masked_fill(~present, -1).argmax(dim=1), present.shape[1]).bool()
        return torch.where(keep.any(dim=1, keepdim=True), keep, one & present)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        feats, present = {}, []
        for m in self.modalities:
            inputs = {arg: batch[f"{m}_{key}"] for key, arg in self.inputs[m].items()}
            feats[m] = self.encoders[m].features(**inputs)
            present.append(batch[f"{m}_mask"].bool())
        mask = self._drop_modalities(torch.stack(present, dim=1))  # [B, M]
        if self.fusion == "late":
            logits = torch.stack([self.encoders[m].head(feats[m]) for m in self.modalities], dim=1)  # [B, M, C]
            weights = self.weights.softmax(0).expand_as(mask).masked_fill(~mask, 0)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
            self.pooled(torch.cat([feats[m] * mask[:, i, None] for i, m in enumerate(self.modalities)], dim=1))
            self.last_weights = weights.detach()
            return (weights.unsqueeze(-1) * logits).sum(dim=1)
        if self.fusion == "concat":
            joint = torch.cat([feats[m] * mask[:, i, None] for i, m in enumerate(self.modalities)], dim=1)
            return self.head(self.pooled(joint))
        tokens = torch.stack([self.project[m](feats[m]) for m in self.modalities], dim=1) + self.modality_embedding
        scores = self.score(tokens).squeeze(-1).masked_fill(~mask, float("-inf"))  # [B, M]
        weights = scores.softmax(dim=1)
        self.last_weights = weights.detach()
        return self.head(self.pooled((weights.unsqueeze(-1) * tokens).sum(dim=1)))

    def on_epoch_start(self, epoch: int) -> bool:
        """Each encoder's own freezing schedule; True if any trainable set changed."""
        changed = [bool(getattr(enc, "on_epoch_start", lambda _e: False)(epoch)) for enc in self.encoders.values()]
        return any(changed)

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        """`<modality>` (its name): its encoder without its head; `fusion`: the rest (the heads in `late` fusion)."""
        parts = {m: tuple(f"encoders.{m}.{n}." for n, _ in self.encoders[m].named_children() if n != "head")
                 + tuple(f"encoders.{m}.{n}" for n, _ in self.encoders[m].named_parameters(recurse=False))
                 for m in self.modalities}
        heads = tuple(f"encoders.{m}.head." for m in self.modalities)
        parts["fusion"] = tuple(p for p in ("weights", "head.", "project.", "modality_embedding", "score.", *heads)
                                if any(n.startswith(p) for n, _ in self.named_parameters()))
        return parts

    def param_lrs(self) -> dict[str, float]:
        """Default learning rates of parts, from the encoder configs' `lr` (group_lr overrides them)."""
        return dict(self.encoder_lrs)


def _without_lr(node: Any) -> dict[str, Any]:
    """An encoder config without its `lr` (resolved in place first: its interpolations may reach the root)."""
    items = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: v for k, v in items.items() if k != "lr"}


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, outputs))
