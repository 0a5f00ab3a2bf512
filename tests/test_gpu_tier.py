"""The GPU tier's CPU side: the skip reasons of tests/gpu/ (`min_gpus` counts devices), and
benchmarks/gpu_check.sh, which stops at once without a GPU and whose `--dry-run` lists commands that compose."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time

import pytest
from omegaconf import OmegaConf

from .conftest import PROJECT_ROOT, make_cfg
from .gpu.conftest import NO_CUDA, skip_reason

SCRIPT = PROJECT_ROOT / "benchmarks" / "gpu_check.sh"


def test_skip_reason_names_what_is_missing():
    assert skip_reason(False, 0) == NO_CUDA
    assert skip_reason(False, 0, min_gpus=2) == NO_CUDA
    assert skip_reason(True, 1) is None and skip_reason(True, 2, min_gpus=2) is None
    assert skip_reason(True, 1, min_gpus=2) == "needs 2 CUDA devices (min_gpus=2), this machine has 1"


def dry_run() -> list[list[str]]:
    """The override lists of the training commands `gpu_check.sh --dry-run` prints."""
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert commands and all(c[:3] == [".venv/bin/python", "-m", "emotionsumm.train"] for c in commands), commands
    return [c[3:] for c in commands]


def test_gpu_check_dry_run_lists_commands_that_compose(tmp_path):
    before = set(PROJECT_ROOT.glob("outputs/gpu_check/*"))
    runs: dict[str, list[list[str]]] = {}  # run dir name -> the override lists of its commands
    for overrides in dry_run():
        run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
        runs.setdefault(run_dir.rsplit("/", 1)[1], []).append(overrides)
    assert set(PROJECT_ROOT.glob("outputs/gpu_check/*")) == before  # a dry run writes nothing
    recipes = {"text": "emotion_text", "speech": "emotion_audio", "image": "emotion_image", "bart": "summarization"}
    names = [*(f"{r}-{{}}" for r in recipes), "resume-{}-full", "resume-{}-half"]
    assert sorted(runs) == sorted(n.format(p) for n in names for p in ("32", "bf16", "16"))

    def at(precision: str, overrides: list[str]) -> list[str]:
        return [o.replace("trainer.precision=32", f"trainer.precision={precision}").replace("-32", f"-{precision}")
                for o in overrides]

    for name in names:  # bf16 and fp16 run what fp32 runs but for trainer.precision
        assert runs[name.format("bf16")] == [at("bf16", o) for o in runs[name.format("32")]]
        assert runs[name.format("16")] == [at("16", o) for o in runs[name.format("32")]]
    # the fp32 commands composed as the CLI would (Hydra refuses a key or a config group that does not exist)
    for recipe, experiment in recipes.items():
        (overrides,) = runs[f"{recipe}-32"]
        cfg = make_cfg(tmp_path / "run", overrides)
        assert cfg.task_dir == experiment  # (resolved from the HydraConfig of the latest composition)
        assert cfg.trainer.accelerator == "cuda" and str(cfg.trainer.precision) == "32"
        assert cfg.trainer.max_steps > 10 and "csv" in cfg.logger  # samples/s are read from metrics.csv
    (full,), (half, resumed) = ([make_cfg(tmp_path / "run", o) for o in runs[name]]  # resumed: into half's dir
                                for name in ("resume-32-full", "resume-32-half"))
    assert half.trainer.max_steps * 2 == full.trainer.max_steps == resumed.trainer.max_steps
    assert resumed.trainer.resume == "auto" and full.trainer.resume is None and full.trainer.deterministic
    trainers = [OmegaConf.to_container(c.trainer) for c in (full, resumed)]
    trainers[1]["resume"] = None
    assert trainers[0] == trainers[1]  # nothing else differs
    assert full.scheduler._target_.endswith("constant_with_warmup")  # the lr does not depend on max_steps


def test_gpu_check_without_a_gpu_stops_at_once_and_writes_nothing(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the script would measure its GPU")
    before = set(PROJECT_ROOT.glob("outputs/gpu_check/*"))
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and time.monotonic() - start < 10
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr and proc.stdout == ""
    assert set(PROJECT_ROOT.glob("outputs/gpu_check/*")) == before
