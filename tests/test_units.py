"""Unit tests of the small pieces: EMA, schedules, metrics, parameter groups, sampler, freezing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from emotionsumm.ema import EMA
from emotionsumm.metrics import classification_metrics, confusion_matrix
from emotionsumm.optim import param_groups
from emotionsumm.sampling import ShardedSampler
from emotionsumm.schedulers import constant_with_warmup, cosine_with_warmup, step_decay


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))


def test_ema_matches_reference_formula_with_warmup_and_int_buffers():
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, decay=0.9, warmup=True)
    reference = {k: v.clone().double() for k, v in net.state_dict().items() if v.is_floating_point()}
    for n in range(20):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net.counter += 1
        ema.update()
        decay = min(0.9, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                reference[k] = decay * reference[k] + (1 - decay) * v.double()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), reference[k], rtol=1e-5, atol=1e-6)
    assert int(ema.module.counter) == 20  # integer buffers are copied, not averaged
    assert ema.num_updates == 20
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_without_warmup_uses_constant_decay():
    net = Net()
    ema = EMA(net, decay=0.5, warmup=False)
    before = net.lin.weight.detach().clone()
    with torch.no_grad():
        net.lin.weight.add_(2.0)
    ema.update()
    torch.testing.assert_close(ema.module.lin.weight, before + 1.0)
    with pytest.raises(ValueError, match="ema.decay"):
        EMA(net, decay=1.5)


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


def test_classification_metrics_from_confusion_matrix():
    preds = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    target = torch.tensor([0, 0, 1, 2, 2, 2, 1, 1])
    cm = confusion_matrix(preds, target, 3)
    assert cm.tolist() == [[2, 0, 0], [1, 1, 1], [0, 1, 2]]
    m = classification_metrics(cm, ["a", "b", "c"])
    assert m["acc"] == pytest.approx(5 / 8)
    f1 = [2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3), 2 * (2 / 3) * (2 / 3) / (4 / 3)]
    assert [m["f1_a"], m["f1_b"], m["f1_c"]] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * f1[0] + 3 * f1[1] + 3 * f1[2]) / 8)
    assert m["uar"] == pytest.approx((1 + 1 / 3 + 2 / 3) / 3)


def test_param_groups_exclude_bias_and_norm_from_decay_and_set_part_lr():
    class Policy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.ModuleDict({"encoder": Net(), "head": nn.Linear(3, 2)})

        def param_parts(self):
            return {"encoder": ("model.encoder.",), "head": ("model.head.",)}

    groups = param_groups(Policy(), weight_decay=0.1, group_lr={"encoder": 1e-5})
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == 1e-5 and by_name["encoder"]["weight_decay"] == 0.1
    assert len(by_name["encoder"]["params"]) == 1  # lin.weight only
    assert by_name["encoder_no_decay"]["weight_decay"] == 0.0
    assert len(by_name["encoder_no_decay"]["params"]) == 3  # lin.bias, norm.weight, norm.bias
    assert "lr" not in by_name["default"]  # the head uses the optimizer's lr
    with pytest.raises(ValueError, match="unknown parts"):
        param_groups(Policy(), 0.1, {"decoder": 1.0})


def test_sampler_shards_reshuffles_and_resumes_mid_epoch():
    full = [ShardedSampler(10, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in full:
        s.set_epoch(1)
    shards = [list(s) for s in full]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    resumed = ShardedSampler(10, shuffle=True, seed=3, rank=0, world_size=2)
    resumed.set_epoch(1)
    resumed.set_start(2)
    assert list(resumed) == shards[0][2:] and len(resumed) == 3
    other_epoch = ShardedSampler(10, shuffle=True, seed=3)
    other_epoch.set_epoch(2)
    first = ShardedSampler(10, shuffle=True, seed=3)
    first.set_epoch(1)
    assert list(other_epoch) != list(first)
    uneven = [list(ShardedSampler(5, shuffle=False, rank=r, world_size=2, pad=False)) for r in range(2)]
    assert uneven == [[0, 2, 4], [1, 3]]  # evaluation never counts a sample twice


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


def test_group_split_keeps_each_group_in_one_split_and_stratified_split_keeps_balance():
    from emotionsumm.data.splits import kfold_indices, split_indices

    groups = [f"spk{i % 8}" for i in range(400)]
    parts = split_indices(400, "group", (0.75, 0.125, 0.125), seed=1, groups=groups)
    seen = [{groups[i] for i in parts[s]} for s in ("train", "val", "test")]
    assert [len(s) for s in seen] == [6, 1, 1] and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(400))
    labels = [i % 4 for i in range(400)]
    parts = split_indices(400, "random", (0.8, 0.1, 0.1), seed=2, labels=labels)
    assert [sum(labels[i] == c for i in parts["test"]) for c in range(4)] == [10, 10, 10, 10]
    predefined = split_indices(3, "predefined", predefined=["train", "test", "val"])
    assert predefined == {"train": [0], "val": [2], "test": [1]}
    folds = [kfold_indices(list(range(100)), 5, f, labels=labels[:100]) for f in range(5)]
    held = [set(h) for _, h in folds]
    assert set().union(*held) == set(range(100)) and sum(len(h) for h in held) == 100  # disjoint and covering
    assert all(set(t).isdisjoint(h) for t, h in folds)
    gfolds = [kfold_indices(list(range(400)), 4, f, groups=groups)[1] for f in range(4)]
    assert all({groups[i] for i in a}.isdisjoint({groups[i] for i in b}) for a in gfolds for b in gfolds if a is not b)
    with pytest.raises(ValueError, match="data.fold=5 is out of range"):
        kfold_indices(list(range(10)), 5, 5)


def test_weighted_sampler_balances_classes_deterministically():
    labels = [0] * 90 + [1] * 10
    weights = [1 / 90 if y == 0 else 1 / 10 for y in labels]
    sampler = ShardedSampler(100, shuffle=True, seed=0, weights=weights)
    draws = [labels[i] for epoch in range(20) for i in (sampler.set_epoch(epoch) or list(sampler))]
    assert 0.4 < sum(draws) / len(draws) < 0.6
    sampler.set_epoch(3)
    again = ShardedSampler(100, shuffle=True, seed=0, weights=weights)
    again.set_epoch(3)
    again.set_start(10)
    assert list(again) == list(sampler)[10:]
