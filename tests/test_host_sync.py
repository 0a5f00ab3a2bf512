"""No host synchronisation per optimizer step: the trainer reads device values (finiteness flags, grad
norms, losses) only on logging steps and before validations and checkpoint saves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import emotionsumm
from emotionsumm.training.checkpoint import load_checkpoint
from emotionsumm.training.ema import EMA
from emotionsumm.training.trainer import Trainer

from .tiny_task import RecordingLogger, TinyPolicy, tiny_data

PACKAGE = Path(emotionsumm.__file__).parent
INDEX_LISTS = PACKAGE / "training" / "sampling.py"  # CPU index permutations of the data order, never on a device
assert INDEX_LISTS.is_file(), INDEX_LISTS  # a moved module would silently count its reads
READS = ("item", "__float__", "__int__", "__bool__", "__index__", "cpu", "tolist", "numpy")
# 16 batches per epoch, 2 per optimizer step: epochs end at steps 8 and 16 (and save there)
OPTIONS = {"max_steps": 20, "accumulate_grad_batches": 2, "gradient_clip_val": 1.0, "log_every_n_steps": 5,
           "checkpoint_every_n_steps": 4, "val_every_n_steps": 10, "test_after_fit": False}
CHECKED = {5, 10, 15, 20} | {4, 8, 12, 16, 20} | {10, 20} | {8, 16}  # log, checkpoint, validation, epoch end


def fit_counting(run_dir: Path, monkeypatch: pytest.MonkeyPatch, policy: TinyPolicy) -> tuple[Trainer, list]:
    """Fit with every host read of a tensor by package code counted; returns the (step, reads so far) seen
    at the start of each micro-batch (when its batch is collated)."""
    reads, windows = [0], []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = Path(sys._getframe(1).f_code.co_filename)
            if PACKAGE in caller.parents and caller != INDEX_LISTS:
                reads[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    data = tiny_data()
    collate = data.collate

    def collate_and_note(examples):
        windows.append((trainer.state.step, reads[0]))
        return collate(examples)

    data.collate = collate_and_note
    trainer = Trainer(run_dir=run_dir, progress_bar=False, accelerator="cpu", logger=RecordingLogger,
                      ema=lambda module: EMA(module, decay=0.9), **OPTIONS)
    try:
        trainer.fit(policy, data, torch.optim.AdamW(policy.parameters(), lr=1e-2))
    finally:
        windows.append((trainer.state.step, reads[0]))
    return trainer, windows


def reads_per_step(windows: list) -> dict[int, int]:
    """Host reads between consecutive micro-batches, by the step reached at the end of each window."""
    per_step: dict[int, int] = {}
    for (_, before), (step, after) in zip(windows, windows[1:]):
        per_step[step] = per_step.get(step, 0) + after - before
    return per_step


def test_steps_that_neither_log_nor_save_read_nothing_from_the_device(tmp_path, monkeypatch):
    torch.manual_seed(0)
    trainer, windows = fit_counting(tmp_path, monkeypatch, TinyPolicy())
    per_step = reads_per_step(windows)
    assert sorted(per_step) == list(range(21))  # (step 0: the first micro-batch, before any step)
    quiet = {step: n for step, n in per_step.items() if step not in CHECKED}
    assert quiet == dict.fromkeys(quiet, 0)
    assert all(per_step[step] > 0 for step in (5, 15))  # the counter sees the reads of log steps
    logged = trainer.logger.scalars
    assert [s for s in sorted(logged) if "train/grad_norm" in logged[s]] == [5, 10, 15, 20]
    assert all(isinstance(logged[s]["train/grad_norm"], float) and logged[s]["train/grad_norm"] > 0
               for s in (5, 10, 15, 20))


def test_a_non_finite_loss_between_checks_stops_naming_its_step_and_no_checkpoint_holds_it(tmp_path, monkeypatch):
    calls = [0]
    forward = TinyPolicy.forward

    def nan_from_step_11(self, batch):  # micro-batch 21 = the first of step 11 (epoch 1, batch 5)
        calls[0] += 1
        loss = forward(self, batch)
        return loss * float("nan") if calls[0] >= 21 else loss

    monkeypatch.setattr(TinyPolicy, "forward", nan_from_step_11)
    torch.manual_seed(0)
    last = tmp_path / "checkpoints/last.ckpt"
    with pytest.raises(FloatingPointError, match=rf"loss is nan at optimizer step 11 \(epoch 1, batch 5\); "
                                                 rf"training stopped and the last good checkpoint is {last}"):
        fit_counting(tmp_path, monkeypatch, TinyPolicy())
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 10  # the check before step 12's save raised: nothing after the NaN was written
    assert all(int(p.name.split("step")[1][:7]) <= 10 for p in (tmp_path / "checkpoints").glob("epoch*.ckpt"))
    for weights in (ckpt["policy"], ckpt["ema"]["module"]):
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_under_ddp_steps_that_do_not_wait_get_the_previous_steps_agreement(tmp_path):
    from emotionsumm.training.stop import StopRequest

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        stop, fine, nan = StopRequest(), torch.tensor(False), torch.tensor(True)
        assert stop.agree(fine, wait=False) == (False, 0)  # nothing agreed before the first step
        stop.signum = 15  # arrives during step 2
        assert stop.agree(fine, wait=False) == (False, 0)  # step 2 hears step 1's agreement
        assert stop.agree(fine, wait=False) == (False, 15)  # step 3 hears step 2's: every rank stops after step 3
        assert stop.agree(nan, wait=True) == (True, 15)  # a log step or a save waits for its own
        assert stop.agree(fine, wait=False) == (False, 0)  # nothing left over from the step that waited
    finally:
        torch.distributed.destroy_process_group()
