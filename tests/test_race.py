"""benchmarks/race.py: how it reads an emotionsumm run's phases, its subsets, cadence and schedule."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("race", ROOT / "benchmarks" / "race.py")
race = importlib.util.module_from_spec(_spec)
sys.modules["race"] = race  # dataclasses look their module up
_spec.loader.exec_module(race)

T0 = 1_790_000_000.0  # an epoch second; log lines carry it as local time with milliseconds


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def fake_run(run_dir: Path, val_steps: tuple[int, ...] = (10, 20), log_steps: tuple[int, ...] = (10, 20)) -> None:
    """A finished run: training from t=5 s to t=65 s, validations of 4 s (step 10) and 6 s (step 20),
    the test ending 9 s after the stop line."""
    run_dir.mkdir()
    (run_dir / "train.log").write_text(
        f"[{stamp(0)}][__main__][INFO] - run dir: {run_dir}\nconfig\n├── seed\n"
        f"[{stamp(5)}][emotionsumm.training.trainer][INFO] - training 20 optimizer steps "
        "(500 batches/epoch, accumulate 1)\n"
        f"[{stamp(30)}][emotionsumm.training.trainer][INFO] - step 10: val/acc=0.5\n"
        f"[{stamp(65)}][emotionsumm.training.trainer][INFO] - training stopped at step 20 (epoch 0): "
        "reached max_steps\n")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    train_wall = {10: T0 + 26, 20: T0 + 58}
    for step in log_steps:
        writer.add_scalar("train/loss", 1.0, step, walltime=train_wall[step])
    ends = {10: T0 + 30, 20: T0 + 64}
    for step in val_steps:
        writer.add_scalar("val/acc", 0.5, step, walltime=ends[step] - 1)
        writer.add_scalar("val_raw/acc", 0.5, step, walltime=ends[step])
    writer.add_scalar("test/acc", 0.9, 20, walltime=T0 + 72)
    writer.add_scalar("test_raw/acc", 0.8, 20, walltime=T0 + 74)
    writer.close()
    (run_dir / "metrics.json").write_text(json.dumps({"test/acc": 0.9, "test/macro_f1": 0.8, "test_raw/acc": 0.85,
                                                      "val/acc": 0.5}))


def test_emotionsumm_phases_from_log_and_tensorboard(tmp_path: Path) -> None:
    fake_run(tmp_path / "run")
    phases = race.emotionsumm_phases(tmp_path / "run", "text", steps=20, batch_size=32)
    assert phases["val_round_s"] == [4.0, 6.0]
    assert phases["val_s"] == pytest.approx(10.0, abs=1e-3)
    assert phases["train_s"] == pytest.approx(60.0 - 10.0, abs=1e-3)  # the loop (5 s .. 65 s) minus validations
    assert phases["test_s"] == pytest.approx(9.0, abs=1e-3)  # stop line to the last test event
    assert phases["samples"] == 640
    assert phases["quality"] == {"acc": 0.9, "macro_f1": 0.8}
    assert phases["quality_raw_weights"] == {"acc": 0.85}


def test_validation_without_a_log_step_is_refused(tmp_path: Path) -> None:
    fake_run(tmp_path / "run", log_steps=(20,))
    with pytest.raises(ValueError, match=r"validations at steps \[10\].*log_every_n_steps"):
        race.emotionsumm_phases(tmp_path / "run", "text", steps=20, batch_size=32)


def test_log_without_training_lines_names_the_file(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(f"[{stamp(0)}][__main__][INFO] - run dir: x\n")
    with pytest.raises(ValueError, match=r"train\.log.*'start', 'stop'"):
        race.log_times(log)


def test_subset_file_is_fixed_and_in_file_order(tmp_path: Path) -> None:
    source = tmp_path / "all.jsonl"
    source.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(50)))
    first = race.subset_file(source, 7, tmp_path / "a.jsonl")
    again = race.subset_file(source, 7, tmp_path / "b.jsonl")
    rows = [json.loads(line)["i"] for line in first.read_text().splitlines()]
    assert len(rows) == 7 and rows == sorted(rows) and rows != list(range(7))
    assert first.read_text() == again.read_text()
    assert race.subset_file(source, 50, tmp_path / "c.jsonl") == source  # no smaller: the file itself


def test_logging_cadence_is_aligned_with_validation() -> None:
    shipped = race.Task("text", "emotion_text_minilm", 500)
    race.aligned_logging(shipped, 250)  # 250 and 500 are multiples of the shipped 25: nothing changes
    assert shipped.overrides == []
    odd = race.Task("text", "emotion_text_minilm", 30)
    race.aligned_logging(odd, 15)
    assert odd.overrides == ["trainer.log_every_n_steps=5"]
    race.aligned_logging(shipped, 40)  # log every gcd(25, 40, 500) = 5 steps
    assert shipped.overrides == ["trainer.log_every_n_steps=5"]


@pytest.mark.skipif(not all((race.SHARED / path).exists() for split in race.SPLITS.values() for path in split.values()),
                    reason="needs ../shared/data (dair emotion and DialogSum)")
def test_plan_runs_the_recipes_as_shipped_or_quick_on_fixed_subsets(tmp_path: Path) -> None:
    def plan(quick: bool) -> list:
        args = argparse.Namespace(tasks=["text", "dialogsum"], quick=quick, text_steps=None, dialogsum_steps=None,
                                  dialogsum_test=None)
        return race.plan(args, tmp_path)

    def rows(task: race.Task, split: str) -> int:
        path = next(o.split("=", 1)[1] for o in task.overrides if o.startswith(f"data.files.{split}="))
        return len(Path(path).read_text().splitlines())

    text, dialogsum = plan(quick=False)
    assert text.overrides == ["trainer.max_steps=500"]  # validation every 250, logging every 25: as shipped
    assert rows(dialogsum, "test") == 100 and dialogsum.overrides[-1] == "trainer.max_steps=500"
    text, dialogsum = plan(quick=True)
    assert [rows(text, s) for s in ("train", "val", "test")] == [2000, 32, 64]
    assert text.overrides[-3:] == ["trainer.val_every_n_steps=10", "trainer.max_steps=20",
                                   "trainer.log_every_n_steps=5"]  # the validation at step 10 is a log step
    assert [rows(dialogsum, s) for s in ("train", "val", "test")] == [2000, 6, 6]
    assert dialogsum.overrides[-1] == "trainer.log_every_n_steps=5"  # validations at 15 and 30 are log steps
