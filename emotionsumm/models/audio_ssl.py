"""A self-supervised speech encoder (wav2vec2, HuBERT, WavLM through `transformers`) with SUPERB-style
layer pooling, frame pooling and a linear head.

The input is raw waveforms ([B, samples], or [B, 1, 1, samples] as the waveform pipeline batches them)
with optional `lengths` (samples before zero padding); without them (fusion passes only the waveforms)
the trailing zeros are taken as padding. Layer pooling: a learned softmax-weighted sum of all hidden
states (`layer: weighted`; layer 0 is the projected CNN features, then one per transformer layer) or one
of them (`layer: k`, negative counts from the top). Frame pooling (`mean` or `attention`) covers the
valid frames only, counted by the model's own conv arithmetic (`_get_feat_extract_output_lengths`).
The encoder gets an attention mask only when its feature extractor says `return_attention_mask`
(wav2vec2-base style models were trained on zero padding without one).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..config.core import require_choice
from .audio import POOLING, AttentivePooling, AudioCNN
from .freezing import set_trainable, top_layers_to_train
from .pretrained import pretrained_source
from .text import check_lr, load_pretrained_encoder

log = logging.getLogger(__name__)


def wants_attention_mask(pretrained: str, config: Any) -> bool:
    """The feature extractor's `return_attention_mask`; without a saved extractor, what transformers does
    for these models: a mask for layer-norm feature encoders (`feat_extract_norm: layer`), none for group norm."""
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(pretrained_source(pretrained, "model.pretrained", None))
        return bool(getattr(extractor, "return_attention_mask", False))
    except (OSError, ValueError):
        guess = getattr(config, "feat_extract_norm", "group") == "layer"
        log.warning("%s has no feature extractor (preprocessor_config.json): %s attention mask "
                    "(feat_extract_norm=%s)", pretrained, "with an" if guess else "without an",
                    getattr(config, "feat_extract_norm", None))
        return guess


def ignored(cnn_settings: dict[str, Any]) -> None:
    """Accept the log-mel CNN's own settings (an experiment tuned for it sets them) with a warning; any other
    unknown key is an error naming it."""
    unknown = sorted(set(cnn_settings) - set(inspect.signature(AudioCNN).parameters))
    if unknown:
        raise TypeError(f"model: unknown setting(s) {unknown} for audio_ssl (conf/model/audio_ssl.yaml lists them)")
    if cnn_settings:
        log.warning("model: %s are settings of the log-mel CNN (audio_cnn); audio_ssl ignores them",
                    ", ".join(f"{k}={v}" for k, v in sorted(cnn_settings.items())))


def receptive_field(config: Any) -> int:
    """Samples that one output frame of the CNN feature encoder sees (the shortest input it accepts)."""
    field = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        field = (field - 1) * stride + kernel
    return field


class SpeechSSLClassifier(nn.Module):
    """A pretrained speech encoder (`pretrained`: local dir or Hugging Face name) + layer pooling (`layer`)
    + frame pooling (`pooling`) + dropout and a linear head.

    `freeze_feature_encoder` keeps the CNN feature encoder frozen; `freeze_encoder` freezes the whole
    encoder (it then runs in eval mode, as SUPERB's frozen upstreams do), and `unfreeze_at_epochs`
    ({epoch: k}) trains its top k transformer layers from that epoch on (-1 = everything but a frozen
    feature encoder). `lr` is the encoder's default learning rate (group_lr.encoder, or in fusion
    group_lr.audio, overrides it). `preprocessing` (kind: waveform, feature_extractor) is read by the
    audio data configs only; `n_mels` is given by the data (1 for waveforms) and checked. Settings of the
    log-mel CNN (`cnn_settings`: width, depth, ... that experiments written for it set, e.g.
    experiment=emotion_audio) are ignored with a warning, so `model=audio_ssl` swaps the model in any of them.
    """

    def __init__(self, num_classes: int, pretrained: str | None = None, layer: int | str = "weighted",
                 pooling: str = "mean", freeze_feature_encoder: bool = True, freeze_encoder: bool = True,
                 unfreeze_at_epochs: dict[Any, int] | None = None, classifier_dropout: float = 0.1,
                 lr: float | None = None, preprocessing: Mapping[str, Any] | None = None,
                 n_mels: int | None = None, **cnn_settings: Any) -> None:
        super().__init__()
        ignored(cnn_settings)
        require_choice("model.pooling", pooling, POOLING)
        require_choice("model.preprocessing.kind", (preprocessing or {}).get("kind", "waveform"), ("waveform",))
        if n_mels not in (None, 1):
            raise ValueError(f"model=audio_ssl takes raw waveforms, but the data gives {n_mels}-bin log-mels: set "
                             "data.features.kind=waveform (data.audio.features.kind in multimodal data)")
        if not pretrained:
            raise ValueError("model.pretrained is not set: give the local directory or Hugging Face name of a "
                             "wav2vec2 / HuBERT / WavLM model, e.g. model.pretrained=facebook/wav2vec2-base")
        self.encoder_lr = check_lr(lr, "model.lr")
        self.encoder = load_pretrained_encoder(str(pretrained))
        config = self.encoder.config
        speech_parts = ("feature_extractor", "encoder", "_get_feat_extract_output_lengths")
        if not all(hasattr(self.encoder, a) for a in speech_parts) \
                or not isinstance(getattr(self.encoder.encoder, "layers", None), nn.ModuleList):
            raise ValueError(f"model.pretrained={pretrained}: {type(self.encoder).__name__} is not a wav2vec2-style "
                             "speech encoder (CNN feature encoder + transformer layers); use wav2vec2, HuBERT or WavLM")
        config.layerdrop = 0.0  # a skipped layer would leave a hidden state out of the weighted sum
        self.use_attention_mask = wants_attention_mask(str(pretrained), config)
        self.min_samples = receptive_field(config)
        states = config.num_hidden_layers + 1
        if layer == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(states))  # softmax(0) = the plain mean to start
            self.layer = None
        elif isinstance(layer, int) and not isinstance(layer, bool) and -states <= layer < states:
            self.layer = layer
        else:
            raise ValueError(f"model.layer={layer!r} is not allowed; choose 'weighted' or a hidden-state index in "
                             f"[{-states}, {states - 1}] (0 = the CNN features, {states - 1} = the last layer)")
        hidden = config.hidden_size
        self.pool = AttentivePooling(hidden) if pooling == "attention" else None
        self.pooled = nn.Identity()  # hook point: its output is the pooled embedding (predict export_embeddings)
        self.head = nn.Sequential(nn.Dropout(classifier_dropout), nn.Linear(hidden, num_classes))
        self.freeze_feature_encoder, self.freeze_encoder = freeze_feature_encoder, freeze_encoder
        self.unfreeze_at_epochs = dict(unfreeze_at_epochs or {})
        self.on_epoch_start(0)

    # ---- forward ------------------------------------------------------------------------------
    def _lengths(self, waves: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Valid samples per clip: `lengths`, else up to the last non-zero sample; at least one frame's worth."""
        if lengths is None:
            nonzero = waves != 0
            lengths = torch.where(nonzero.any(dim=1), waves.shape[1] - nonzero.flip(1).int().argmax(dim=1), 0)
        return lengths.to(waves.device).long().clamp(self.min_samples, waves.shape[1])

    def features(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled [B, hidden] representation of a batch of waveforms (what embeddings are exported from)."""
        waves = features.reshape(features.shape[0], -1)
        if waves.shape[1] < self.min_samples:  # shorter than one frame: pad, the padding is masked anyway
            waves = nn.functional.pad(waves, (0, self.min_samples - waves.shape[1]))
        valid = self._lengths(waves, lengths)
        positions = torch.arange(waves.shape[1], device=waves.device)
        mask = (positions[None] < valid[:, None]).long() if self.use_attention_mask else None
        out = self.encoder(waves, attention_mask=mask, output_hidden_states=True)
        if self.layer is None:
            weights = self.layer_weights.softmax(0).to(out.hidden_states[0].dtype)
            frames = torch.einsum("l,lbth->bth", weights, torch.stack(out.hidden_states))
        else:
            frames = out.hidden_states[self.layer]
        counts = self.encoder._get_feat_extract_output_lengths(valid).clamp(1, frames.shape[1])
        frame_mask = torch.arange(frames.shape[1], device=frames.device)[None] < counts[:, None]  # [B, T]
        if self.pool is not None:
            scores = self.pool.score(frames).squeeze(-1).masked_fill(~frame_mask, float("-inf"))
            pooled = (scores.softmax(dim=1).unsqueeze(-1) * frames).sum(dim=1)
        else:
            pooled = (frames * frame_mask.unsqueeze(-1)).sum(dim=1) / counts.unsqueeze(-1).to(frames.dtype)
        return self.pooled(pooled)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(features, lengths))

    # ---- freezing -----------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> bool:
        """Apply the freezing schedule for `epoch`; True if the trainable set changed."""
        top = top_layers_to_train(self.unfreeze_at_epochs, epoch, self.freeze_encoder)
        cnn = self.encoder.feature_extractor
        changed = set_trainable(None, self.encoder.encoder.layers, [self.encoder], top,
                                frozen=[cnn] if self.freeze_feature_encoder else [])
        if hasattr(cnn, "_requires_grad"):  # transformers' switch that makes a frozen CNN skip autograd
            cnn._requires_grad = any(p.requires_grad for p in cnn.parameters())
        if changed and epoch > 0:
            log.info("epoch %d: speech encoder trains %s", epoch,
                     "all layers" if top is None else f"top {top} layer(s)")
        if changed:
            self.train(self.training)
        return changed

    def train(self, mode: bool = True) -> SpeechSSLClassifier:
        """Train mode, except that a wholly frozen encoder stays in eval mode (no dropout, no masking)."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
        return self

    # ---- parameter parts ------------------------------------------------------------------------
    def param_parts(self) -> dict[str, tuple[str, ...]]:
        """`encoder` (the pretrained model), `pooling` (layer weights, attention pooling), `head`."""
        return {"encoder": ("encoder.",), "pooling": ("layer_weights", "pool."), "head": ("head.",)}

    def param_lrs(self) -> dict[str, float]:
        """Default learning rates of parts (`group_lr` overrides them; other parts use optimizer.lr)."""
        return {"encoder": self.encoder_lr} if self.encoder_lr is not None else {}
