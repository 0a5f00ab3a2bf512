"""tests/gpu/ on a machine without CUDA: collected, marked `gpu` and `slow`, every test skipped with the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ..conftest import PROJECT_ROOT
from ..gpu.conftest import NO_CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the tier runs: make test-gpu")
def test_the_gpu_tier_is_collected_marked_and_skipped_with_its_reason():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu and slow", "-rs",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert summary and all(line.endswith(NO_CUDA) for line in summary), proc.stdout[-3000:]
    skipped = sum(int(line.split("[")[1].split("]")[0]) for line in summary)
    assert skipped >= 8 and " skipped" in proc.stdout and " passed" not in proc.stdout  # marked gpu and slow
