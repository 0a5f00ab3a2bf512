"""A BERT-style text encoder with [CLS] pooling and a classification head."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..config.core import require_range
from .freezing import set_trainable, top_layers_to_train
from .pretrained import pretrained_source

log = logging.getLogger(__name__)


def load_pretrained_encoder(name_or_path: str, key: str = "model.pretrained") -> nn.Module:
    """`AutoModel.from_pretrained` for a hub name or local dir; a missing local dir names `key`."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(pretrained_source(name_or_path, key))


class TextClassifier(nn.Module):
    """Encoder (built from a small BertConfig, or pretrained) + dropout + linear head on [CLS].

    `freeze_encoder` freezes the whole encoder; `unfreeze_at_epochs` ({epoch: k}) then trains
    its top k layers from that epoch on (-1 = everything, embeddings included). `lr` is the
    encoder's default learning rate (a pretrained one wants a small one; the head keeps
    `optimizer.lr`); `group_lr.encoder` overrides it, null leaves the encoder at `optimizer.lr`.
    """

    def __init__(self, num_classes: int, vocab_size: int = 8000, pad_token_id: int = 0,
                 pretrained: str | None = None, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 2,
                 intermediate_size: int = 256, max_position_embeddings: int = 512, dropout: float = 0.1,
                 classifier_dropout: float = 0.1, freeze_encoder: bool = False,
                 unfreeze_at_epochs: dict[Any, int] | None = None, lr: float | None = None) -> None:
        super().__init__()
        self.encoder_lr = check_lr(lr, "model.lr")
        if pretrained:
            self.encoder = load_pretrained_encoder(pretrained)
        else:
            from transformers import BertConfig, BertModel

            if hidden_size % num_heads:
                raise ValueError(f"model.hidden_size={hidden_size} must be divisible by model.num_heads={num_heads}")
            config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                num_attention_heads=num_heads, intermediate_size=intermediate_size,
                                max_position_embeddings=max_position_embeddings, hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id)
            self.encoder = BertModel(config, add_pooling_layer=False)
        hidden = self.encoder.config.hidden_size
        self.pooled = nn.Identity()  # hook point: its output is the pooled embedding (predict export_embeddings)
        self.head = nn.Sequential(nn.Dropout(classifier_dropout), nn.Linear(hidden, num_classes))
        self.freeze_encoder = freeze_encoder
        self.unfreeze_at_epochs = dict(unfreeze_at_epochs or {})
        self.on_epoch_start(0)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled [CLS] representation (what embeddings are exported from)."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self.pooled(out.last_hidden_state[:, 0])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask, token_type_ids))

    def _layers(self) -> nn.ModuleList:
        for name, module in self.encoder.named_modules():
            if isinstance(module, nn.ModuleList) and name.endswith("layer"):
                return module
        raise ValueError("cannot find the encoder's layer list for gradual unfreezing")

    def on_epoch_start(self, epoch: int) -> bool:
        """Apply the freezing schedule for `epoch`; True if the trainable set changed."""
        top = top_layers_to_train(self.unfreeze_at_epochs, epoch, self.freeze_encoder)
        others = [m for n, m in self.encoder.named_children() if n not in ("embeddings", "encoder")]
        changed = set_trainable(getattr(self.encoder, "embeddings", None), self._layers(), others, top)
        if changed and epoch > 0:
            log.info("epoch %d: encoder trains %s", epoch, "all layers" if top is None else f"top {top} layer(s)")
        return changed

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("encoder.",), "head": ("head.",)}

    def param_lrs(self) -> dict[str, float]:
        """Default learning rates of parts (`group_lr` overrides them; other parts use optimizer.lr)."""
        return {"encoder": self.encoder_lr} if self.encoder_lr is not None else {}


def check_lr(lr: Any, key: str) -> float | None:
    """A model config's `lr`: null or a number > 0 (`key` names it in the error)."""
    if lr is None:
        return None
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ValueError(f"{key}={lr!r} is not a valid float (expected null or a float > 0, e.g. {key}=5e-5)")
    require_range(key, lr, 0, low_open=True, note="(or null: optimizer.lr)")
    return float(lr)
