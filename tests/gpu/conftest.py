"""The GPU tier: every test here is marked `gpu` (and `slow`: it trains) and is skipped without CUDA.

`@pytest.mark.min_gpus(n)` skips a test on a machine with fewer than n CUDA devices (2-GPU DDP).
Run it with `make test-gpu` on a machine with a GPU; `make test` collects it too (skipped on CPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
NO_CUDA = "no CUDA device: the GPU tier runs with `make test-gpu` on a machine with one"


def skip_reason(cuda_available: bool, device_count: int, min_gpus: int = 1) -> str | None:
    """Why a GPU test cannot run here (None: it can)."""
    if not cuda_available:
        return NO_CUDA
    if device_count < min_gpus:
        return f"needs {min_gpus} CUDA devices (min_gpus={min_gpus}), this machine has {device_count}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:  # this hook sees the whole session's items
            continue
        item.add_marker(pytest.mark.gpu)
        item.add_marker(pytest.mark.slow)
        marker = item.get_closest_marker("min_gpus")
        reason = skip_reason(available, count, int(marker.args[0]) if marker else 1)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
