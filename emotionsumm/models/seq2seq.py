"""Encoder–decoder summarizers: BART (from a config preset or pretrained) and a warm-started BERT2BERT.

Both wrap a Hugging Face model as `self.net` behind one interface the seq2seq policy uses:
`forward(input_ids, attention_mask, decoder_input_ids[, positions]) -> logits`, `generate(...)`,
`decoder_start_token_id`, plus freezing (embeddings and/or the first k encoder layers until
`unfreeze_at_epoch`). Sequence limits are checked against the position tables at construction,
i.e. before any training step.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..config.core import require_range
from .pretrained import pretrained_source

log = logging.getLogger(__name__)


class Summarizer(nn.Module):
    """What every summarizer shares: limits, generation, pooled encoder features, freezing."""

    net: nn.Module
    encoder_prefix: str
    decoder_prefix: str

    def _finish(self, max_source_length: int, max_target_length: int, freeze_embeddings: bool,
                freeze_encoder_layers: int, unfreeze_at_epoch: int | None) -> None:
        self.pooled = nn.Identity()  # hook point: masked mean of the encoder states (predict export_embeddings)
        enc_positions, dec_positions = self.max_positions()
        for key, value, limit in (("data.max_source_length", max_source_length, enc_positions),
                                  ("data.max_target_length", max_target_length, dec_positions)):
            if value > limit:
                raise ValueError(f"{key}={value} exceeds the model's {limit} position embeddings "
                                 f"(model.max_position_embeddings); lower {key} or use a model with more positions")
        layers = self._encoder_layers()
        require_range("model.freeze_encoder_layers", freeze_encoder_layers, 0, len(layers),
                      note=f"(the encoder has {len(layers)} layers)")
        self.freeze_embeddings, self.freeze_encoder_layers = freeze_embeddings, freeze_encoder_layers
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.on_epoch_start(0)

    def _set_special_tokens(self, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> None:
        """Decoding starts at `bos`, ends at `eos`, pads with `pad`: in the model config and its generation config."""
        from transformers import GenerationConfig

        self.net.config.decoder_start_token_id = bos_token_id
        self.net.config.eos_token_id, self.net.config.pad_token_id = eos_token_id, pad_token_id
        self.net.generation_config = GenerationConfig(
            decoder_start_token_id=bos_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id)

    # ---- what subclasses define -----------------------------------------------------------
    def max_positions(self) -> tuple[int, int]:
        """(encoder, decoder) position limits."""
        raise NotImplementedError

    def _encoder_layers(self) -> nn.ModuleList:
        for name, module in self.net.get_encoder().named_modules():
            if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "layer"):
                return module
        raise ValueError("cannot find the encoder's layer list for freezing")

    # ---- the interface the policy uses ----------------------------------------------------
    @property
    def decoder_start_token_id(self) -> int:
        return int(self.net.generation_config.decoder_start_token_id)

    @property
    def pad_token_id(self) -> int:
        return int(self.net.generation_config.pad_token_id)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced next-token logits (batch, target length, vocab); with a boolean `positions` mask
        (batch, target length) only those rows (n, vocab)."""
        logits = self.net(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                          use_cache=False).logits
        return logits if positions is None else logits[positions]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """Encoder outputs; their masked mean goes through `self.pooled` (the exported embedding)."""
        out = self.net.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        self.pooled((out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1))
        return out

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **options: Any) -> torch.Tensor:
        """Generated token ids (batch, length), starting with the decoder start token."""
        encoder_outputs = self.encode(input_ids, attention_mask)
        return self.net.generate(encoder_outputs=encoder_outputs, attention_mask=attention_mask, **options)

    # ---- freezing -------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> bool:
        """Apply the freezing schedule for `epoch`; True if the trainable set changed."""
        frozen = self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch
        before = [p.requires_grad for p in self.parameters()]
        self.requires_grad_(True)
        if frozen and self.freeze_embeddings:
            for name, param in self.net.named_parameters():
                if "embed" in name or "shared" in name:
                    param.requires_grad_(False)
        if frozen:
            for layer in list(self._encoder_layers())[: self.freeze_encoder_layers]:
                layer.requires_grad_(False)
        changed = before != [p.requires_grad for p in self.parameters()]
        if changed and epoch > 0:
            log.info("epoch %d: every parameter of the summarizer trains now", epoch)
        return changed

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": (self.encoder_prefix,), "decoder": (self.decoder_prefix,)}


class BartSummarizer(Summarizer):
    """`BartForConditionalGeneration` built from a config preset (random init) or pretrained.

    From scratch, targets are `<s> summary </s>` and decoding starts at `<s>` (the policy drops
    the leading `<s>` from the labels); a pretrained BART keeps its own start/forced-BOS setup.
    """

    encoder_prefix, decoder_prefix = "net.model.encoder.", "net.model.decoder."

    def __init__(self, vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int,
                 max_source_length: int = 512, max_target_length: int = 128, pretrained: str | None = None,
                 d_model: int = 256, encoder_layers: int = 3, decoder_layers: int = 3, attention_heads: int = 4,
                 ffn_dim: int = 1024, max_position_embeddings: int = 1024, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, scale_embedding: bool = False,
                 init_std: float = 0.02, freeze_embeddings: bool = False, freeze_encoder_layers: int = 0,
                 unfreeze_at_epoch: int | None = None) -> None:
        super().__init__()
        from transformers import BartConfig, BartForConditionalGeneration

        if pretrained:
            self.net = BartForConditionalGeneration.from_pretrained(pretrained_source(pretrained, "model.pretrained"))
        else:
            if d_model % attention_heads:
                raise ValueError(f"model.d_model={d_model} must be divisible by model.attention_heads="
                                 f"{attention_heads}")
            config = BartConfig(
                vocab_size=vocab_size, d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                encoder_attention_heads=attention_heads, decoder_attention_heads=attention_heads,
                encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim, max_position_embeddings=max_position_embeddings,
                dropout=dropout, attention_dropout=attention_dropout, activation_dropout=activation_dropout,
                scale_embedding=scale_embedding, init_std=init_std, pad_token_id=pad_token_id,
                bos_token_id=bos_token_id, eos_token_id=eos_token_id, decoder_start_token_id=bos_token_id,
                forced_bos_token_id=None, forced_eos_token_id=None, tie_word_embeddings=True)
            self.net = BartForConditionalGeneration(config)
            self._set_special_tokens(bos_token_id, eos_token_id, pad_token_id)
        self._finish(max_source_length, max_target_length, freeze_embeddings, freeze_encoder_layers,
                     unfreeze_at_epoch)

    def max_positions(self) -> tuple[int, int]:
        n = int(self.net.config.max_position_embeddings)
        return n, n

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """As `Summarizer.forward`, but with `positions` the LM head (the vocabulary projection, the costliest
        layer of a small BART) runs on those rows only: `BartForConditionalGeneration`'s head, applied here."""
        hidden = self.net.model(input_ids=input_ids, attention_mask=attention_mask,
                                decoder_input_ids=decoder_input_ids, use_cache=False).last_hidden_state
        if positions is not None:
            hidden = hidden[positions]
        return self.net.lm_head(hidden) + self.net.final_logits_bias.to(hidden.device)


class Bert2BertSummarizer(Summarizer):
    """`EncoderDecoderModel` warm-started from one BERT-style checkpoint for encoder and decoder.

    The decoder gets causal self-attention and new (randomly initialised) cross-attention;
    decoding starts at `[CLS]` and ends at `[SEP]`, padding is the tokenizer's pad id (0).
    """

    encoder_prefix, decoder_prefix = "net.encoder.", "net.decoder."

    def __init__(self, pretrained: str, vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int,
                 max_source_length: int = 512, max_target_length: int = 128, tie_encoder_decoder: bool = False,
                 freeze_embeddings: bool = False, freeze_encoder_layers: int = 0,
                 unfreeze_at_epoch: int | None = None) -> None:
        super().__init__()
        from transformers import EncoderDecoderModel

        path = pretrained_source(pretrained, "model.pretrained")
        self.net = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path,
                                                                       tie_encoder_decoder=tie_encoder_decoder)
        if self.net.config.decoder.vocab_size != vocab_size:
            raise ValueError(f"model.pretrained={pretrained} has {self.net.config.decoder.vocab_size} tokens but "
                             f"the tokenizer has {vocab_size}; set data.tokenizer to the same pretrained model")
        self._set_special_tokens(bos_token_id, eos_token_id, pad_token_id)
        self._finish(max_source_length, max_target_length, freeze_embeddings, freeze_encoder_layers,
                     unfreeze_at_epoch)

    def max_positions(self) -> tuple[int, int]:
        return (int(self.net.config.encoder.max_position_embeddings),
                int(self.net.config.decoder.max_position_embeddings))
