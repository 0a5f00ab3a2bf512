"""Optimisation: learning-rate schedules, parameter groups (decay, per-part lr), gradual unfreezing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from emotionsumm.training.optim import param_groups
from emotionsumm.training.schedulers import constant_with_warmup, cosine_with_warmup, step_decay


def _lrs(factory, total, **kwargs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, total_steps=total, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt.param_groups[0]["lr"]


def test_cosine_warmup_values():
    lrs, final = _lrs(cosine_with_warmup, 100, warmup_steps=10, min_lr_ratio=0.1)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)  # end of warmup: the base lr
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert final == pytest.approx(0.1)  # end of the run: min_lr_ratio * base lr


def test_constant_and_step_schedules_and_warmup_cap(caplog):
    lrs, _ = _lrs(constant_with_warmup, 20, warmup_steps=4)
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0]) and lrs[-1] == 1.0
    lrs, _ = _lrs(step_decay, 30, step_size=10, gamma=0.5)
    assert lrs[9] == 1.0 and lrs[10] == 0.5 and lrs[29] == 0.25
    with caplog.at_level("WARNING"):
        lrs, _ = _lrs(cosine_with_warmup, 50, warmup_steps=500)
    assert "capped to 5" in caplog.text
    assert lrs[4] == pytest.approx(1.0)


def test_param_groups_exclude_bias_and_norm_from_decay_and_set_part_lr():
    class Policy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            encoder = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
            self.model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(3, 2)})

        def param_parts(self):
            return {"encoder": ("model.encoder.",), "head": ("model.head.",)}

    groups = param_groups(Policy(), weight_decay=0.1, group_lr={"encoder": 1e-5})
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == 1e-5 and by_name["encoder"]["weight_decay"] == 0.1
    assert len(by_name["encoder"]["params"]) == 1  # the linear weight only
    assert by_name["encoder_no_decay"]["weight_decay"] == 0.0
    assert len(by_name["encoder_no_decay"]["params"]) == 3  # the linear bias, the norm weight and bias
    assert "lr" not in by_name["default"]  # the head uses the optimizer's lr
    with pytest.raises(ValueError, match="unknown parts"):
        param_groups(Policy(), 0.1, {"decoder": 1.0})


def test_gradual_unfreezing_schedule():
    from emotionsumm.models.text import TextClassifier

    model = TextClassifier(num_classes=3, vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                           intermediate_size=32, freeze_encoder=True, unfreeze_at_epochs={1: 1, 2: -1})

    def trainable_layers():
        return [all(p.requires_grad for p in layer.parameters()) for layer in model.encoder.encoder.layer]

    assert trainable_layers() == [False, False, False]
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.on_epoch_start(1) and trainable_layers() == [False, False, True]
    assert not model.encoder.embeddings.word_embeddings.weight.requires_grad
    assert model.on_epoch_start(2) and trainable_layers() == [True, True, True]
    assert model.encoder.embeddings.word_embeddings.weight.requires_grad
    assert not model.on_epoch_start(3)
