"""Why a run ends is one value, `Trainer.stopping`, set by the trainer and read by the loop: max steps or
epochs, early stopping, or a stop signal (then the run saves and exits 128 + signal)."""

from __future__ import annotations

import signal

import pytest
import torch

from emotionsumm.training.stop import Interrupted, StopRequest
from emotionsumm.training.trainer import Stop

from .tiny_task import TinyPolicy, fit_tiny


def test_max_steps_and_max_epochs_are_the_stop_reason(tmp_path):
    trainer, metrics = fit_tiny(tmp_path / "steps", max_steps=5)
    assert trainer.stopping == Stop("reached trainer.max_steps=5") and metrics["step"] == 5
    trainer, metrics = fit_tiny(tmp_path / "epochs", max_steps=-1, max_epochs=1)
    assert trainer.stopping == Stop("reached trainer.max_epochs=1") and metrics["epoch"] == 1


def test_early_stopping_is_the_stop_reason_even_at_max_steps(tmp_path):
    trainer, metrics = fit_tiny(tmp_path, max_steps=2, val_every_n_steps=1, early_stopping_patience=1,
                                early_stopping_min_delta=10.0)
    assert metrics["step"] == 2 and trainer.stopping.signum is None
    assert trainer.stopping.reason.startswith("early stopping"), trainer.stopping


def test_a_signal_stops_right_after_its_step_with_the_signal_in_the_decision(tmp_path, monkeypatch):
    stop, calls = StopRequest(), [0]
    forward = TinyPolicy.forward

    def signal_in_step_3(self, batch):  # max_steps=6, accumulation 1: the third micro-batch is step 3
        calls[0] += 1
        if calls[0] == 3:
            stop.signum = int(signal.SIGTERM)  # what the handler records
        return forward(self, batch)

    monkeypatch.setattr(TinyPolicy, "forward", signal_in_step_3)
    with pytest.raises(Interrupted) as raised:
        fit_tiny(tmp_path, stop=stop, val_every_n_steps=100)
    assert raised.value.code == 128 + signal.SIGTERM and raised.value.step == 3
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["step"] == 3
