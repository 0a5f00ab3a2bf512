"""`trainer.compile`: the training forward runs compiled, everything else sees the plain policy (checkpoint
names, EMA, evaluation), compiled and eager runs resume each other, and the compile warm-up is no throughput.

These use torch.compile's `eager` backend (dynamo capture without code generation, so they are quick and
exactly as precise as eager); tests/e2e/test_compile.py trains with the real inductor backend."""

from __future__ import annotations

import time

import pytest
import torch

from emotionsumm.training.checkpoint import load_checkpoint

from .tiny_task import fit_tiny, tiny_data

COMPILE_SECONDS = 1000.0  # what a simulated compile costs on the meter's clock


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with a backend that counts its compilations and costs COMPILE_SECONDS of (fake) clock."""
    clock = {"offset": 0.0, "compiles": 0}
    real_counter = time.perf_counter
    monkeypatch.setattr("emotionsumm.training.step_checks.time.perf_counter", lambda: real_counter() + clock["offset"])

    def slow_eager(graph, example_inputs):
        clock["offset"] += COMPILE_SECONDS
        clock["compiles"] += 1
        return graph.forward

    torch._dynamo.reset()
    real_compile = torch.compile
    backends = clock["backends"] = []

    def compile_eagerly(model, backend="inductor", **kwargs):  # the trainer's trainer.compile_backend is noted
        backends.append(backend)
        return real_compile(model, backend=slow_eager, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    yield clock
    torch._dynamo.reset()


def _last(run_dir):
    return load_checkpoint(run_dir / "checkpoints/last.ckpt")


def test_a_compiled_run_trains_like_eager_and_saves_plain_names(tmp_path, eager_compile):
    options = {"max_steps": 6, "val_every_n_steps": 3, "test_after_fit": True}
    compiled, compiled_metrics = fit_tiny(tmp_path / "compiled", compile=True, **options)
    assert eager_compile["compiles"] >= 1 and eager_compile["backends"] == ["inductor"]  # trainer.compile_backend
    assert isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    _, eager_metrics = fit_tiny(tmp_path / "eager", compile=False, **options)
    assert compiled_metrics == eager_metrics  # evaluation and test work and see the same weights
    a, b = _last(tmp_path / "compiled"), _last(tmp_path / "eager")
    assert list(a["policy"]) == list(b["policy"]) and not any("_orig_mod" in k for k in a["policy"])
    assert list(a["ema"]["module"]) == list(b["ema"]["module"])
    assert all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"])


@pytest.mark.parametrize(("first", "then"), [(True, False), (False, True)])
def test_compiled_and_eager_runs_resume_each_other(tmp_path, eager_compile, first, then):
    options = {"val_every_n_steps": 4, "checkpoint_every_n_steps": 3, "test_after_fit": False}
    fit_tiny(tmp_path / "full", max_steps=8, compile=False, **options)
    fit_tiny(tmp_path / "cut", max_steps=3, compile=first, **options)
    trainer, _ = fit_tiny(tmp_path / "cut", max_steps=8, compile=then, resume="auto", **options)
    assert trainer.state.step == 8
    a, b = _last(tmp_path / "full"), _last(tmp_path / "cut")
    for part in ("policy", "ema"):
        wa = a[part] if part == "policy" else a[part]["module"]
        wb = b[part] if part == "policy" else b[part]["module"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part


def test_the_compile_warm_up_is_left_out_of_the_logged_throughput(tmp_path, eager_compile):
    trainer, _ = fit_tiny(tmp_path, data=tiny_data(), max_steps=8, log_every_n_steps=2, compile=True,
                          test_after_fit=False)
    logged = [trainer.logger.scalars[s].get("train/samples_per_s") for s in (2, 4, 6, 8)]
    assert eager_compile["offset"] >= COMPILE_SECONDS  # compiles happened, each "taking" 1000 s
    rates = [r for r in logged if r is not None]
    assert rates and all(r > 4 / 10 for r in rates)  # with a compile inside, a window would be < 16 / 1000 samples/s
