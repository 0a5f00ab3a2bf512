"""Validation that costs what it must: raw weights validated as `trainer.validate_raw` says, evaluation
under inference mode, length-sorted evaluation batches with the results of unsorted ones."""

from __future__ import annotations

import contextlib

import pytest
import torch

from emotionsumm.training.loaders import EvalLoader
from emotionsumm.training.scoring import evaluation_state

from .tiny_task import TinyPolicy, fit_tiny, tiny_data

VALIDATIONS = [2, 4, 6]  # val_every_n_steps=2, max_steps=6


def raw_validation_steps(trainer) -> list[int]:
    return [step for step, tags in sorted(trainer.logger.scalars.items()) if "val_raw/acc" in tags]


@pytest.mark.parametrize(("validate_raw", "raw_steps"), [("never", []), ("final", [6]), ("always", VALIDATIONS)])
def test_raw_weights_are_validated_never_at_the_end_or_always(tmp_path, validate_raw, raw_steps):
    trainer, metrics = fit_tiny(tmp_path, val_every_n_steps=2, validate_raw=validate_raw)
    assert [s for s, tags in sorted(trainer.logger.scalars.items()) if "val/acc" in tags] == VALIDATIONS
    assert raw_validation_steps(trainer) == raw_steps
    assert ("val_raw/acc" in metrics) == bool(raw_steps)  # the last validation's metrics
    assert ("test_raw/acc" in metrics) == (validate_raw != "never")
    assert "test/acc" in metrics and "best/val/acc" in metrics


def test_the_monitored_metric_and_the_best_checkpoint_do_not_depend_on_validate_raw(tmp_path):
    _, always = fit_tiny(tmp_path / "always", val_every_n_steps=2, validate_raw="always")
    _, never = fit_tiny(tmp_path / "never", val_every_n_steps=2, validate_raw="never")
    assert {k: v for k, v in always.items() if "_raw/" not in k} == never
    assert sorted(p.name for p in (tmp_path / "always/checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "never/checkpoints").iterdir())


def test_early_stopping_makes_its_validation_the_final_one_with_raw_weights(tmp_path):
    trainer, metrics = fit_tiny(tmp_path, max_steps=40, val_every_n_steps=1, early_stopping_patience=1,
                                early_stopping_min_delta=10.0, validate_raw="final")
    assert metrics["step"] == 2  # the second validation cannot improve by 10: stop
    assert raw_validation_steps(trainer) == [2] and "val_raw/acc" in metrics


def test_monitoring_raw_weights_needs_validate_raw_always(tmp_path):
    from emotionsumm.training.trainer import Trainer

    with pytest.raises(ValueError, match=r"trainer.monitor=val_raw/acc .*trainer.validate_raw=always \(not final\)"):
        Trainer(run_dir=tmp_path, monitor="val_raw/acc", validate_raw="final")
    with pytest.raises(ValueError, match=r"trainer.validate_raw"):
        Trainer(run_dir=tmp_path, validate_raw="sometimes")


def _evaluate(policy, data, limit=None):
    loader = EvalLoader(data, data.dataset("val"), seed=0, pin_memory=False, limit=limit)
    policy.padded_tokens = 0
    state = evaluation_state(policy, loader, torch.device("cpu"), contextlib.nullcontext, "val", False)
    return state, policy.compute_metrics(state), policy.padded_tokens, [len(b) for b in loader.batches]


@pytest.mark.parametrize("limit", [None, 2])
def test_length_sorted_evaluation_gives_the_results_of_unsorted_evaluation_with_less_padding(limit):
    torch.manual_seed(0)
    policy = TinyPolicy().eval()
    sorted_state, sorted_metrics, sorted_pad, sizes = _evaluate(policy, tiny_data(n_val=60, lengths=True), limit)
    plain_state, plain_metrics, plain_pad, plain_sizes = _evaluate(policy, tiny_data(n_val=60, lengths=False), limit)
    expected = list(range(60))[: 16 if limit else 60]  # a limit keeps the same examples: the first batches' worth
    assert plain_state["index"] == sorted_state["index"] == expected  # per-example lists back in file order
    assert sorted_state["predictions"] == plain_state["predictions"]
    assert torch.equal(sorted_state["confusion"], plain_state["confusion"])
    assert sorted_metrics["acc"] == plain_metrics["acc"]
    assert sorted_metrics["loss"] == pytest.approx(plain_metrics["loss"], rel=1e-6)  # float32 sums, other order
    assert sizes == plain_sizes
    assert sorted_pad < 0.7 * plain_pad


def test_evaluation_runs_under_inference_mode_and_training_continues_afterwards(tmp_path):
    seen = []
    step = TinyPolicy.evaluation_step

    def spy(self, batch, state):
        seen.append(torch.is_inference_mode_enabled())
        step(self, batch, state)

    TinyPolicy.evaluation_step = spy
    try:  # validations between training steps, EMA and BatchNorm buffers in play
        trainer, metrics = fit_tiny(tmp_path, max_steps=6, val_every_n_steps=1, validate_raw="always",
                                    test_after_fit=False)
    finally:
        TinyPolicy.evaluation_step = step
    assert seen and all(seen)
    assert metrics["step"] == 6 and trainer.policy.norm.num_batches_tracked.item() == 6
    assert not any(t.is_inference() for t in [*trainer.policy.state_dict().values(),
                                               *trainer.ema.module.state_dict().values()])


def _out_of_range(rule):
    """A value just outside a rule's range (below its low bound, else above its high one)."""
    return rule.low - 1 if rule.low is not None else rule.high + 1


def test_trainer_built_directly_refuses_every_trainer_range_of_the_table(tmp_path):
    """Trainer(...) (tests, benchmarks: no validate_config) checks the same table: every `trainer.*` rule names
    a Trainer argument, and a value outside its range is refused naming the key."""
    import inspect

    from emotionsumm.config.ranges import RANGES
    from emotionsumm.training.trainer import Trainer

    rules = {key.removeprefix("trainer."): rule for key, rule in RANGES.items() if key.startswith("trainer.")}
    assert set(rules) <= set(inspect.signature(Trainer).parameters)
    assert {"gradient_clip_val", "limit_train_batches", "limit_val_batches", "val_every_n_steps",
            "checkpoint_every_n_steps"} <= set(rules)
    for name, rule in rules.items():
        bad = _out_of_range(rule)
        with pytest.raises(ValueError, match=rf"^trainer\.{name}={bad} is out of range; allowed: "):
            Trainer(run_dir=tmp_path, **{name: bad})


def test_trainer_lists_every_bad_value_at_once(tmp_path):
    from emotionsumm.training.trainer import Trainer

    with pytest.raises(ValueError) as err:
        Trainer(run_dir=tmp_path, gradient_clip_val=-1.0, limit_train_batches=0, limit_val_batches=0.0,
                val_every_n_steps=0)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert [line.split(" is out of range; allowed: ")[0] for line in lines[1:]] == [
        "  trainer.gradient_clip_val=-1.0", "  trainer.val_every_n_steps=0", "  trainer.limit_train_batches=0",
        "  trainer.limit_val_batches=0.0"]


@pytest.mark.parametrize("clip", [None, 0, 0.0])
def test_gradient_clipping_off_values_train_without_clipping(tmp_path, clip):
    _, metrics = fit_tiny(tmp_path, max_steps=2, gradient_clip_val=clip, test_after_fit=False)
    assert metrics["step"] == 2


def test_ema_and_schedulers_refuse_with_the_table_messages():
    from torch import nn

    from emotionsumm.training.ema import EMA
    from emotionsumm.training.schedulers import cosine_with_warmup, step_decay

    with pytest.raises(ValueError, match=r"^ema.decay=1.0 is out of range; allowed: \[0, 1\) \(use ema.enabled=false"):
        EMA(nn.Linear(2, 2), decay=1.0)
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^scheduler.warmup_steps=-1 is out of range; allowed: >= 0$"):
        cosine_with_warmup(optimizer, total_steps=10, warmup_steps=-1)
    with pytest.raises(ValueError, match=r"^scheduler.min_lr_ratio=2.0 is out of range; allowed: \[0, 1\]$"):
        cosine_with_warmup(optimizer, total_steps=10, min_lr_ratio=2.0)
    with pytest.raises(ValueError, match=r"invalid settings:\n  scheduler.step_size=0 .*\n  scheduler.gamma=-0.1 "):
        step_decay(optimizer, total_steps=10, step_size=0, gamma=-0.1)
