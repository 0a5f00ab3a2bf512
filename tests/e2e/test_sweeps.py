"""Sweeps: resumable grid multirun (killed and rerun), Optuna, launchers, failures, pre-flight checks.

Every multirun is a subprocess (Python + torch start-up dominates), so one killed-and-rerun 2×2
grid is shared by several tests, and each launcher is exercised once.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from emotionsumm.config.core import CONFIG_DIR, PROJECT_ROOT, register_resolvers
from emotionsumm.runs.layout import job_subdir, override_hash
from emotionsumm.runs.sweep import SweepError, check_launcher, check_swept_keys

from ..conftest import TINY, cli

# a few optimizer steps and one validation batch: a job takes seconds once torch is imported
FAST = [*TINY, "trainer.max_steps=4", "trainer.limit_val_batches=1", "trainer.test_after_fit=false"]
GRID = ["optimizer.lr=1e-3,2e-3", "seed=0,1"]
JOB_DIR = re.compile(r"(\d+)-([0-9a-f]{8})")


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if JOB_DIR.fullmatch(p.name)), key=lambda p: int(p.name.split("-")[0]))


def compose_train(overrides: list[str]):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    """A 2×2 grid, SIGKILLed once job 0 has finished and job 1 has a checkpoint, then rerun as is."""
    sweep = tmp_path_factory.mktemp("grid") / "sweep"
    args = ["-m", *GRID, *FAST, "trainer.checkpoint_every_n_steps=2", f"hydra.sweep.dir={sweep}"]
    with open(sweep.parent / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "emotionsumm.train", *args], cwd=PROJECT_ROOT,
                                stdout=log, stderr=log)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if list(sweep.glob("0-*/metrics.json")) and list(sweep.glob("1-*/checkpoints/last.ckpt")):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = {p.name: (p / "metrics.json").is_file() for p in job_dirs(sweep)}
    # the step of job 1's newest checkpoint at the kill: 2, or 4 if its final save landed first
    last = list(sweep.glob("1-*/checkpoints/last.ckpt"))
    killed_step = torch.load(last[0], weights_only=True)["step"] if last else None
    first = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in job_dirs(sweep) if (p / "metrics.json").exists()}
    rerun = cli("train", *args)
    return {"sweep": sweep, "killed": killed, "killed_step": killed_step, "first": first, "rerun": rerun}


def test_killed_sweep_rerun_skips_the_finished_job_and_resumes_the_rest(grid):
    assert list(grid["killed"].values()) == [True, False], grid["killed"]  # job 0 done, job 1 started
    rerun = grid["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    dirs = job_dirs(grid["sweep"])
    assert [int(p.name.split("-")[0]) for p in dirs] == [0, 1, 2, 3]
    assert all((p / "metrics.json").is_file() for p in dirs)
    job0 = dirs[0]
    assert f"skipping finished job {job0.name}" in rerun.stderr
    assert (job0 / "metrics.json").stat().st_mtime_ns == grid["first"][job0.name]  # not retrained
    job1_log = (dirs[1] / "train.log").read_text()
    assert grid["killed_step"] in (2, 4), grid["killed_step"]
    assert re.search(rf"resumed from .*last\.ckpt at step {grid['killed_step']}\b", job1_log), job1_log[-2000:]


def test_job_dirs_are_named_by_number_and_override_hash(grid):
    for path in job_dirs(grid["sweep"]):
        overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text())
        assert path.name.endswith("-" + override_hash(overrides))
    lrs = {yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text())[0] for p in job_dirs(grid["sweep"])}
    assert lrs == {"optimizer.lr=0.001", "optimizer.lr=0.002"}


def test_sweep_ends_with_a_report_of_every_job(grid):
    sweep = grid["sweep"]
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert sorted((r["optimizer.lr"], r["seed"]) for r in rows) == [("0.001", "0"), ("0.001", "1"),
                                                                   ("0.002", "0"), ("0.002", "1")]
    groups = list(csv.DictReader((sweep / "report_groups.csv").open()))
    assert [(g["optimizer.lr"], g["n"]) for g in groups] == [("0.001", "2"), ("0.002", "2")]
    md = (sweep / "report.md").read_text()
    assert "Mean ± std over seed" in md and "metric_vs_optimizer.lr.png" in md
    for name in ("metric_vs_optimizer.lr.png", "metric_vs_seed.png", "learning_curves.png"):
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_job_logs_its_overrides_to_the_tensorboard_hparams_view(grid):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for path in job_dirs(grid["sweep"]):
        acc = EventAccumulator(str(path / "tb"))
        acc.Reload()
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()))
        assert hparams["optimizer.lr"].number_value == float(overrides["optimizer.lr"])
        assert hparams["seed"].number_value == float(overrides["seed"])


def test_job_subdir_finds_a_job_again_by_its_overrides_after_the_grid_changed(tmp_path):
    a = ["optimizer.lr=0.001", "seed=1"]
    assert override_hash(a) == override_hash(list(reversed(a))) != override_hash(["optimizer.lr=0.001", "seed=2"])
    assert job_subdir(str(tmp_path / "none"), 3, a) == f"3-{override_hash(a)}"
    (tmp_path / f"1-{override_hash(a)}").mkdir()
    assert job_subdir(str(tmp_path), 5, a) == f"1-{override_hash(a)}"  # now job 5 of a larger grid
    assert job_subdir(str(tmp_path), 0, ["seed=2"]) == f"0-{override_hash(['seed=2'])}"


def test_optuna_search_of_3_trials_writes_best_params(tmp_path):
    sweep = tmp_path / "optuna"
    res = cli("train", "hparams_search=emotion_text_optuna", "hydra.sweeper.n_trials=3", *FAST,
              f"hydra.sweep.dir={sweep}", "hydra.callbacks.sweep.report=false")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Directions: ['maximize']" in res.stderr  # from trainer.mode=max
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    space = {**OmegaConf.load(PROJECT_ROOT / "conf/hparams_search/optuna.yaml").hydra.sweeper.params,
             **OmegaConf.load(PROJECT_ROOT / "conf/hparams_search/emotion_text_optuna.yaml").hydra.sweeper.params}
    assert set(best["best_params"]) == set(space) - {"scheduler.warmup_steps"}  # fixed by FAST
    values = [yaml.safe_load((p / "metrics.json").read_text())["best/val/acc"] for p in job_dirs(sweep)]
    assert len(values) == 3 and best["best_value"] == max(values)


def test_failing_job_in_a_joblib_sweep_with_dataloader_workers_is_listed_and_the_rest_finish(tmp_path):
    sweep = tmp_path / "joblib"
    res = cli("train", "launcher=joblib", "data.num_workers=2", "trainer.precision=32,16", *FAST,
              f"hydra.sweep.dir={sweep}", "hydra.callbacks.sweep.report=false")
    assert res.returncode == 1, res.stderr[-3000:]
    ok, failed = job_dirs(sweep)
    assert (ok / "metrics.json").is_file() and not (ok / "error.txt").exists()
    assert not (failed / "metrics.json").exists()
    assert "needs a CUDA device" in (failed / "error.txt").read_text()
    listing = res.stderr[res.stderr.index("1 of 2 jobs failed"):]
    assert f"{failed.name} [trainer.precision=16]: ValueError: trainer.precision=16 needs a CUDA device" in listing


def test_submitit_local_runs_a_job_in_its_own_process_in_the_stamped_sweep_dir(tmp_path):
    # no hydra.sweep.dir: the `${run_stamp:}` sweep dir must be the same in the submitit job process
    res = cli("train", "launcher=submitit_local", *FAST, f"paths.output_root={tmp_path}",
              "hydra.callbacks.sweep.report=false")
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    (job,) = job_dirs(sweep)
    assert (job / "metrics.json").is_file() and list((sweep / ".submitit").iterdir())
    assert "1 of 1 jobs finished" in res.stderr


def test_slurm_launcher_without_slurm_fails_fast_saying_what_to_do(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    res = subprocess.run([sys.executable, "-m", "emotionsumm.train", "launcher=slurm", f"hydra.sweep.dir={tmp_path}/s"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120)
    assert res.returncode == 1
    assert "no `sbatch` on PATH" in res.stderr and "launcher=submitit_local" in res.stderr
    assert not (tmp_path / "s").exists()


def test_slurm_launcher_config_runs_one_process_per_gpu(monkeypatch):
    cfg = compose_train(["launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and cfg.hydra.mode.name == "MULTIRUN"
    assert (launcher.tasks_per_node, launcher.nodes) == (4, 2)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SweepError, match="launcher=slurm"):
        check_launcher(cfg)


def test_search_space_with_an_unknown_key_is_refused_with_suggestions():
    cfg = compose_train(["hparams_search=emotion_text_optuna"])
    assert cfg.hydra.sweeper.direction == "maximize"
    assert compose_train(["hparams_search=optuna", "trainer.mode=min"]).hydra.sweeper.direction == "minimize"
    check_swept_keys(cfg)
    with open_dict(cfg):
        cfg.hydra.sweeper.params["optimizer.lrr"] = "interval(1e-4, 1e-2)"
    with pytest.raises(SweepError) as err:
        check_swept_keys(cfg)
    message = str(err.value)
    assert "`optimizer.lrr`" in message and "conf/hparams_search/emotion_text_optuna.yaml" in message
    assert "Did you mean optimizer.lr" in message


SEARCH_SPACES = {  # each hparams_search config and the experiments it is written for
    "optuna": ["emotion_text", "emotion_audio_emodb", "emotion_image_ckplus", "emotion_fusion", "dialogsum"],
    "emotion_text_optuna": ["emotion_text", "emotion_text_dair"],
    "emotion_audio_optuna": ["emotion_audio", "emotion_audio_emodb"],
    "emotion_image_optuna": ["emotion_image", "emotion_image_ckplus"],
    "emotion_fusion_optuna": ["emotion_fusion", "emotion_fusion_meld"],
    "summarization_optuna": ["summarization", "dialogsum"],
}


def test_every_search_space_config_is_checked_below():
    assert {p.stem for p in (PROJECT_ROOT / "conf/hparams_search").glob("*.yaml")} == set(SEARCH_SPACES)


@pytest.mark.parametrize(("search", "experiment"), [(s, e) for s, exps in sorted(SEARCH_SPACES.items()) for e in exps])
def test_search_space_names_keys_of_its_experiment_and_follows_the_monitor(search, experiment):
    cfg = compose_train([f"hparams_search={search}", f"experiment={experiment}"])
    check_swept_keys(cfg)
    assert len(cfg.hydra.sweeper.params) >= 3, "at least lr, weight decay and warmup"
    assert cfg.hydra.sweeper.direction == f"{cfg.trainer.mode}imize"


def test_slurm_task_environment_becomes_torch_distributed_environment(monkeypatch):
    from emotionsumm.training.distributed import _adopt_slurm_env, first_slurm_host

    assert first_slurm_host("gpu[007-009,12],cpu1") == "gpu007"
    assert first_slurm_host("node12,node13") == "node12"
    assert first_slurm_host("login") == "login"
    # _adopt_slurm_env writes RANK, MASTER_ADDR, … into os.environ: give it a copy so nothing leaks into
    # the subprocesses of later tests
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    slurm = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)",
             "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_JOB_ID": "123456"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    _adopt_slurm_env()
    got = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")}
    assert got == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu007"}
    assert os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000)


def test_make_targets_run_a_multirun_all_folds_and_the_report():
    def make(*args: str) -> str:
        res = subprocess.run(["make", "--no-print-directory", "-n", *args], capture_output=True, text=True,
                             cwd=PROJECT_ROOT)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip().splitlines()[-1]

    assert make("sweep", "ARGS=optimizer.lr=1e-4,3e-4 seed=0,1,2").endswith(
        "-m emotionsumm.train --multirun optimizer.lr=1e-4,3e-4 seed=0,1,2")
    cv = make("cv", "K=3", "ARGS=trainer.max_steps=4")
    assert cv.endswith("--multirun data.num_folds=3 'data.fold=range(0,3)' trainer.max_steps=4")
    assert make("report", "DIR=/some/sweep").endswith("-m emotionsumm.report /some/sweep")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    folds = OverridesParser.create().parse_override("data.fold=range(0,3)").sweep_iterator()
    assert list(folds) == [0, 1, 2]
