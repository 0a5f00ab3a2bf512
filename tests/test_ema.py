"""The EMA: the reference formula with warmup, constant decay, integer buffers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emotionsumm.training.ema import EMA


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
