"""From outside the repository, with the wheel installed: train, a lab's own project, and trust.

The wheel is built from a copy of the sources (no build/ left in the checkout), installed with
`pip install --target` and put first on PYTHONPATH, so the editable install of the checkout cannot
shadow it; every command runs from a temporary directory with the same interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emotionsumm.config.core import PROJECT_ROOT

pytestmark = pytest.mark.slow

TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "data.vocab_size=400", "scheduler.warmup_steps=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "logger=none"]
LAB = ["hydra.searchpath=[pkg://mylab.conf]", "experiment=mylab_text"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The wheel installed into <tmp>/site; <tmp>/work is where the user runs the commands."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    for name in ("emotionsumm", "conf"):
        shutil.copytree(PROJECT_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((root / "wheel").glob("emotionsumm-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    (root / "work").mkdir()
    return {"site": root / "site", "work": root / "work"}


def run(installed: dict[str, Path], *args: str, stdin: str | None = None,
        extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """`python <args>` from the work dir, importing emotionsumm from the installed wheel only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EMOTIONSUMM_SHARED")}
    paths = [str(installed["site"])] + ([str(extra_path)] if extra_path else [])
    env.update(PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=installed["work"], env=env, input=stdin, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_holds_the_configs_and_runs_from_anywhere(installed):
    probe = run(installed, "-c", "import emotionsumm.config.core as c; print(c.__file__); print(c.CONFIG_DIR)")
    module, config_dir = probe.stdout.split()
    assert module.startswith(str(installed["site"])) and config_dir == str(installed["site"] / "emotionsumm/conf")
    assert (installed["site"] / "emotionsumm/conf/experiment/emotion_text.yaml").is_file()
    entry_points = (next(installed["site"].glob("emotionsumm-*.dist-info")) / "entry_points.txt").read_text()
    for script in ("train", "evaluate", "predict", "report", "init"):
        assert f"emotionsumm-{script} = emotionsumm.{script}:main" in entry_points
    # composing the job imports none of the optional dependencies
    probe = run(installed, "-c", "import runpy, sys\nsys.argv = ['train', '--cfg', 'job']\ntry:\n"
                "    runpy.run_module('emotionsumm.train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'optuna', 'submitit', 'torch'}),"
                " file=sys.stderr)")
    assert probe.returncode == 0 and probe.stderr.strip().splitlines()[-1] == "[]", probe.stderr[-2000:]
    assert f"root_dir: {installed['work']}" not in probe.stdout  # printed unresolved, resolved at run time


def test_default_experiment_trains_into_the_working_directory(installed):
    proc = run(installed, "-m", "emotionsumm.train", "trainer.max_steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (installed["work"] / "outputs" / "emotion_text").iterdir()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (installed["work"] / ".cache" / "demo").is_dir()
    assert not (installed["site"] / "outputs").exists() and not (installed["site"] / ".cache").exists()
    # stderr is not a terminal: progress is plain lines, no carriage-return bar updates
    assert "\r" not in proc.stderr and "epoch 0: 5/5 (100%)" in proc.stderr


def test_a_lab_project_trains_evaluates_predicts_and_resumes_its_own_class(installed):
    lab = installed["work"] / "mylab"
    assert run(installed, "-m", "emotionsumm.init", str(lab)).returncode == 0
    first = installed["work"] / "outputs" / "lab"
    proc = run(installed, "-m", "emotionsumm.train", *LAB, *TINY, "trainer.max_steps=3", f"hydra.run.dir={first}",
               extra_path=lab)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "testing the best checkpoint" in proc.stderr and "test/acc" in (first / "metrics.json").read_text()
    ckpt = first / "checkpoints" / "last.ckpt"

    proc = run(installed, "-m", "emotionsumm.evaluate", f"ckpt={ckpt}", "trust=[mylab]", extra_path=lab)
    assert proc.returncode == 0 and '"test/acc"' in proc.stdout, proc.stderr[-3000:]
    proc = run(installed, "-m", "emotionsumm.predict", f"ckpt={ckpt}", "input=-", "trust=[mylab]",
               stdin="what a lovely day\ni feel so alone\n", extra_path=lab)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2, proc.stderr[-3000:]
    proc = run(installed, "-m", "emotionsumm.train", *LAB, *TINY, "trainer.max_steps=5", f"hydra.run.dir={first}",
               "trainer.resume=auto", extra_path=lab)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {ckpt} at step 3" in proc.stderr

    # the checkpoint stores trust: [mylab] and was trained with the lab's searchpath: neither trusts it for a
    # command that does not say so itself
    expected = "model._target_='mylab.models.MeanPoolText' is not an emotionsumm class"
    commands = {
        "evaluate": ["-m", "emotionsumm.evaluate", f"ckpt={ckpt}"],
        "predict": ["-m", "emotionsumm.predict", f"ckpt={ckpt}", "input=-"],
        "resume": ["-m", "emotionsumm.train", *TINY, f"trainer.resume={ckpt}",
                   f"hydra.run.dir={installed['work'] / 'outputs' / 'stranger'}"],
    }
    for name, command in commands.items():
        proc = run(installed, *command, stdin="hello\n", extra_path=lab)
        assert proc.returncode != 0, name
        assert expected in proc.stderr, (name, proc.stderr[-3000:])
        assert "add trust=[mylab] to the command" in proc.stderr and "nothing was run" in proc.stderr, name
    assert not (installed["work"] / "outputs" / "stranger" / "metrics.json").exists()
