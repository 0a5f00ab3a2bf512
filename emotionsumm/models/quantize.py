"""Post-training dynamic int8 quantisation of the Linear layers, for faster CPU inference.

`quantize=int8` in evaluate/predict. Weights are stored as int8 and activations are quantised on
the fly per batch; embeddings, LayerNorms and attention score products stay float. torchao's
maintained `quantize_(model, Int8DynamicActivationInt8WeightConfig())` was measured slower than
fp32 on CPU in eager mode (torchao 0.18: 0.67x greedy, 0.93x beam 4; `benchmarks/generation.py
--torchao`), so this uses `torch.ao.quantization.quantize_dynamic` (1.4x), which PyTorch marks
deprecated: the warning is logged once here instead of being printed at every call. CPU only.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ..config.core import require_choice

log = logging.getLogger(__name__)

MODES = ("none", "int8")


def quantize(module: nn.Module, mode: str | None) -> nn.Module:
    """`module` with its Linear layers dynamically quantised to int8 (`mode=int8`), or unchanged."""
    mode = "none" if mode is None else str(mode)
    require_choice("quantize", mode, MODES)
    if mode == "none":
        return module
    if any(p.device.type != "cpu" for p in module.parameters()):
        raise ValueError("quantize=int8 runs on CPU only; move the model to CPU (accelerator=cpu)")
    log.warning("quantize=int8: torch.ao.quantization.quantize_dynamic (deprecated by PyTorch in favour of "
                "torchao, whose int8 is slower than fp32 on CPU in eager mode); Linear layers -> dynamic int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantized = torch.ao.quantization.quantize_dynamic(module.eval(), {nn.Linear}, dtype=torch.qint8)
    return quantized
