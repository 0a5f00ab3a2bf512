"""Learning rate per encoder: a pretrained encoder config's `lr` reaches its part of a fusion (or text) model,
fresh heads keep optimizer.lr, and group_lr from the command line overrides either."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from emotionsumm.training.optim import param_groups

from .conftest import SHARED, make_cfg

MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
needs_minilm = pytest.mark.skipif(not (MINILM / "config.json").is_file(), reason=f"{MINILM} not found")
SWAP = "model@model.encoders.text=text_minilm"
# what MELD's data gives the model (text alone; the pretrained tokenizer's vocabulary)
MELD_KWARGS = {"num_classes": 7, "modalities": ["text"], "encoder_kwargs": {"text": {"vocab_size": 30522,
                                                                                     "pad_token_id": 0}}}
DEMO_KWARGS = {"num_classes": 4, "modalities": ["text", "audio", "image"],
               "encoder_kwargs": {"text": {"vocab_size": 30522, "pad_token_id": 0}, "audio": {"n_mels": 8},
                                  "image": {"in_channels": 1}}}


def optimizer_lrs(overrides: list[str], model_kwargs: dict) -> tuple[torch.nn.Module, float, dict[int, float]]:
    """The model built from the composed config, optimizer.lr, and the lr the optimizer gives each parameter."""
    cfg = make_cfg(Path("unused"), overrides)
    model = instantiate(cfg.model, **model_kwargs)
    policy = instantiate(cfg.policy, model=model, class_names=[str(i) for i in range(model_kwargs["num_classes"])])
    optimizer = instantiate(cfg.optimizer)(param_groups(policy, cfg.optimizer.weight_decay, cfg.get("group_lr")))
    return model, cfg.optimizer.lr, {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def lrs_of(module: torch.nn.Module, lr_of: dict[int, float]) -> set[float]:
    return {lr_of[id(p)] for p in module.parameters()}


@needs_minilm
def test_swapped_in_pretrained_encoder_trains_at_its_config_lr_and_group_lr_overrides_it():
    model, base, lr_of = optimizer_lrs(["experiment=emotion_fusion_meld", SWAP], MELD_KWARGS)
    assert base == 1e-3  # the fusion recipe's lr, meant for fresh parameters
    assert lrs_of(model.encoders.text.encoder, lr_of) == {5e-5}  # text_minilm.yaml's lr
    for fusion_part in (model.head, model.project, model.score):
        assert lrs_of(fusion_part, lr_of) == {base}
    assert lr_of[id(model.modality_embedding)] == base

    model, _, lr_of = optimizer_lrs(["experiment=emotion_fusion_meld", SWAP, "group_lr={text: 3e-5, fusion: 2e-3}"],
                                    MELD_KWARGS)
    assert lrs_of(model.encoders.text, lr_of) == {3e-5} and lrs_of(model.head, lr_of) == {2e-3}

    model, _, lr_of = optimizer_lrs(["experiment=emotion_fusion_meld", SWAP, "model.encoders.text.lr=2e-5"],
                                    MELD_KWARGS)
    assert lrs_of(model.encoders.text, lr_of) == {2e-5} and lrs_of(model.head, lr_of) == {1e-3}


@needs_minilm
def test_late_fusion_heads_are_fusion_parameters_and_other_encoders_keep_optimizer_lr():
    model, base, lr_of = optimizer_lrs(["experiment=emotion_fusion", SWAP, "model.fusion=late",
                                        "group_lr={audio: 1e-4}"], DEMO_KWARGS)
    assert lrs_of(model.encoders.text.encoder, lr_of) == {5e-5}
    assert lrs_of(model.encoders.audio, lr_of) - lrs_of(model.encoders.audio.head, lr_of) == {1e-4}
    assert lrs_of(model.encoders.image, lr_of) == {base}
    for m in ("text", "audio", "image"):  # each encoder's own head is fresh: a fusion parameter
        assert lrs_of(model.encoders[m].head, lr_of) == {base}
    assert lr_of[id(model.weights)] == base
    parts = model.param_parts()
    assert set(parts) == {"text", "audio", "image", "fusion"} and "encoders.text.head." in parts["fusion"]


@needs_minilm
def test_single_text_model_uses_its_lr_for_the_encoder_only():
    model, base, lr_of = optimizer_lrs(["model=text_minilm", "optimizer.lr=2e-3"],
                                       {"num_classes": 3, "vocab_size": 30522, "pad_token_id": 0})
    assert lrs_of(model.encoder, lr_of) == {5e-5} and lrs_of(model.head, lr_of) == {base} == {2e-3}


def test_unknown_part_and_bad_encoder_lr_are_errors_that_name_them():
    small = ["experiment=emotion_fusion"]
    with pytest.raises(ValueError, match=r"unknown parts \['encoder'\]; this policy has parts "
                                         r"\['audio', 'fusion', 'image', 'text'\]"):
        optimizer_lrs([*small, "group_lr={encoder: 1e-4}"], {**DEMO_KWARGS, "encoder_kwargs": {
            "text": {"vocab_size": 50, "pad_token_id": 0}, "audio": {"n_mels": 8}, "image": {"in_channels": 1}}})
    with pytest.raises(Exception, match=r"model.encoders.text.lr=-0.001 is out of range"):  # via hydra's wrapper
        optimizer_lrs([*small, "model.encoders.text.lr=-1e-3"], DEMO_KWARGS)


def test_meld_minilm_experiment_composes_the_pretrained_encoder_with_its_lr_and_tokenizer():
    cfg = make_cfg(Path("unused"), ["experiment=emotion_fusion_meld_minilm"])
    text = cfg.model.encoders.text
    assert text.pretrained.endswith("all-MiniLM-L6-v2") and text.lr == 5e-5 and cfg.optimizer.lr == 1e-3
    assert cfg.data.text.tokenizer == text.pretrained and cfg.trainer.monitor == "val/weighted_f1"
