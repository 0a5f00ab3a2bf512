"""What the program prints works where the user is: plain progress lines in logs, a runnable resume command."""

from __future__ import annotations

import io
import shlex
import sys

import pytest
from tqdm import tqdm

from emotionsumm.tracking import progress as progress_module
from emotionsumm.tracking.progress import LineProgress, progress
from emotionsumm.training.stop import resume_hint

from .conftest import make_cfg


def test_line_progress_prints_plain_lines_every_n_steps():
    out = io.StringIO()
    bar = LineProgress(total=100, desc="train", initial=20, every_seconds=1e9, file=out)
    bar.set_description("epoch 1")
    for _ in range(25):
        bar.update()
        bar.set_postfix(loss="0.5000")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(",")[0] for line in lines] == ["epoch 1: 30/100 (30%)", "epoch 1: 40/100 (40%)",
                                                      "epoch 1: 45/100 (45%)"]
    assert lines[-1].endswith("it/s, loss=0.5000")


def test_line_progress_prints_after_every_seconds(monkeypatch):
    clock = iter([0.0, 5.0, 31.0, 31.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="val", every_seconds=30.0, file=out)
    bar.update()  # 5 s: quiet
    bar.update()  # 31 s: a line
    assert out.getvalue().startswith("val: 2/1000 (0%)") and out.getvalue().count("\n") == 1


def test_progress_is_a_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress(10, "train", True), LineProgress)
    silent = progress(10, "train", False)
    assert isinstance(silent, tqdm) and silent.disable

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress(10, "train", True)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()


@pytest.mark.parametrize("interpreter", ["/opt/my venv/bin/python3", "/usr/bin/python3.11"])
def test_resume_command_starts_with_this_interpreter_and_keeps_the_config_dirs(tmp_path, monkeypatch, interpreter):
    monkeypatch.setattr(sys, "executable", interpreter)
    conf = tmp_path / "lab conf"
    conf.mkdir()
    make_cfg(tmp_path / "x", [f"hydra.searchpath=[file://{conf}]", "trainer.max_steps=5"])
    run = tmp_path / "run dir"
    words = shlex.split(resume_hint(run))
    assert words[:3] == [interpreter, "-m", "emotionsumm.train"]
    assert f"hydra.searchpath=[file://{conf}]" in words and "trainer.max_steps=5" in words
    assert words[-2:] == [f"hydra.run.dir={run}", "trainer.resume=auto"]
