"""`evaluate split=<s>` and `predict` set up only what they need: with one file per split (`split=files`) a broken
or missing training file does not stop them (the checkpoint fixes classes and tokenizer), while a split derived
from one table (`split=random`) still reads that table and names its bad line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from .conftest import make_cfg, run_train

pytestmark = pytest.mark.slow  # trains tiny models in-process (a few seconds each)

BROKEN = '{"text": null, "label": "joy"}\n'


def own_copies(tmp_path: Path, make_demo, names: dict[str, str]) -> dict[str, Path]:
    """The demo files of a modality copied to `tmp_path/data` (the user's files, not the demo dir)."""
    demo, data = tmp_path / "demo", tmp_path / "data"
    make_demo(demo)
    data.mkdir()
    return {split: Path(shutil.copy(demo / name, data / name)) for split, name in names.items()}


def last_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("*.ckpt"))[-1]


def evaluate_split(tmp_path: Path, ckpt: Path, split: str, name: str) -> dict:
    from emotionsumm.evaluate import evaluate

    (tmp_path / name).mkdir()
    return evaluate(make_cfg(tmp_path / name, [f"ckpt={ckpt}", f"split={split}", "progress_bar=false",
                                               f"paths.cache_dir={tmp_path / 'cache'}"], config_name="evaluate"))


def test_text_evaluate_and_predict_do_not_read_a_broken_training_file(tmp_path):
    from emotionsumm.demo.text import make_text_emotion
    from emotionsumm.predict import predict

    files = own_copies(tmp_path, make_text_emotion, {"train": "train.jsonl", "val": "validation.jsonl",
                                                     "test": "test.jsonl"})
    run_train(tmp_path / "run", ["data.demo=false", *(f"data.files.{s}={p}" for s, p in files.items()),
                                 "trainer.max_steps=2", "trainer.test_after_fit=false", "logger=none",
                                 f"paths.cache_dir={tmp_path / 'cache'}"])
    ckpt = last_checkpoint(tmp_path / "run")
    before = {s: evaluate_split(tmp_path, ckpt, s, f"before-{s}") for s in ("val", "test")}
    files["train"].write_text(BROKEN + files["train"].read_text())  # line 1 would stop any read of it
    after = {s: evaluate_split(tmp_path, ckpt, s, f"after-{s}") for s in ("val", "test")}
    files["train"].unlink()
    gone = evaluate_split(tmp_path, ckpt, "test", "gone")
    assert after == before and gone == before["test"] and set(before["test"]) > {"test/acc", "test/loss"}
    assert len(list((tmp_path / "cache" / "tokens").glob("*.json"))) == 3  # evaluate reused the training run's ids
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("i feel wonderful today\ni am so angry\n")
    (tmp_path / "predict").mkdir()
    rows = predict(make_cfg(tmp_path / "predict", [f"ckpt={ckpt}", f"input={inputs}",
                                                   f"paths.cache_dir={tmp_path / 'cache'}"], config_name="predict"))
    assert len(rows) == 2


def test_a_split_derived_from_one_table_still_needs_that_table(tmp_path):
    from emotionsumm.demo.text import make_text_emotion

    files = own_copies(tmp_path, make_text_emotion, {"train": "train.jsonl"})
    table = files["train"]
    run_train(tmp_path / "run", ["data.demo=false", "data.split=random", f"data.file={table}",
                                 "trainer.max_steps=2", "trainer.test_after_fit=false", "logger=none",
                                 f"paths.cache_dir={tmp_path / 'cache'}"])
    ckpt = last_checkpoint(tmp_path / "run")
    assert "test/acc" in evaluate_split(tmp_path, ckpt, "test", "before")
    table.write_text(BROKEN + table.read_text())
    with pytest.raises(ValueError, match=rf"{re.escape(str(table))}:1: null, empty or whitespace-only value"):
        evaluate_split(tmp_path, ckpt, "test", "after")


def test_summarization_evaluate_does_not_read_a_broken_training_file(tmp_path):
    from emotionsumm.demo.dialogue import make_dialogues

    from .test_summarization import train_tiny

    torch.set_num_threads(1)
    files = own_copies(tmp_path, make_dialogues, {"train": "train.jsonl", "val": "validation.jsonl",
                                                  "test": "test.jsonl"})
    train_tiny(tmp_path / "run", ["data.demo=false", *(f"data.files.{s}={p}" for s, p in files.items()),
                                  "trainer.max_steps=2", "trainer.test_after_fit=false", "logger=none",
                                  "policy.max_new_tokens=4", f"paths.cache_dir={tmp_path / 'cache'}"])
    ckpt = last_checkpoint(tmp_path / "run")
    before = evaluate_split(tmp_path, ckpt, "test", "before")
    files["train"].write_text(json.dumps({"dialogue": None, "summary": "x"}) + "\n")
    files["val"].unlink()
    after = evaluate_split(tmp_path, ckpt, "test", "after")
    assert after == before and "test/rougeL" in before
