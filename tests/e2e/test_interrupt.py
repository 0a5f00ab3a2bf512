"""Faults of real clusters: SIGTERM/SIGINT/SIGUSR1 stop after the step and save, one process per run dir,
an interrupted sweep job is unfinished (not failed), submitit requeues a preempted job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.runs.lock import LOCK_FILE, RunDirInUse, acquire, release
from emotionsumm.training.checkpoint import load_checkpoint, policy_weights

from ..conftest import TINY, cli, scalars

# 3 optimizer steps per epoch (5 batches, accumulation 2), validation every 3 steps, a checkpoint every 4
OVERRIDES = [*TINY, "trainer.max_steps=8", "trainer.limit_train_batches=5", "trainer.accumulate_grad_batches=2",
             "trainer.checkpoint_every_n_steps=4", "trainer.val_every_n_steps=3", "trainer.limit_val_batches=2",
             "trainer.test_after_fit=false", "ema.decay=0.9"]

# sends itself the listed signals just before micro-batch SIGNAL_AT_BATCH (1-based, counted over the run)
SIGNAL_DRIVER = """
import os, signal
from emotionsumm import train
from emotionsumm.training import step_checks
check, calls = step_checks.StepChecks.add, [0]
def check_then_signal(self, loss, position):
    calls[0] += 1
    if calls[0] == int(os.environ["SIGNAL_AT_BATCH"]):
        for name in os.environ["SIGNALS"].split(","):
            os.kill(os.getpid(), getattr(signal, name))
    return check(self, loss, position)
step_checks.StepChecks.add = check_then_signal
train.main()
"""


def run_driver(run_dir: Path, signals: str, at_batch: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIGNALS": signals, "SIGNAL_AT_BATCH": str(at_batch)}
    return subprocess.run([sys.executable, "-c", SIGNAL_DRIVER, *OVERRIDES, *extra, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("full") / "run"
    proc = cli("train", *OVERRIDES, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.parametrize(("name", "at_batch", "saved_step"), [
    ("SIGTERM", 8, 5),  # first micro-batch of step 5: step 5 is finished, never half-accumulated
    ("SIGINT", 5, 3),  # the last batch of epoch 0: step 3, its validation and the epoch end happen first
    ("SIGUSR1", 1, 1),
])
def test_signal_finishes_the_step_saves_and_resume_is_bitwise_identical(uninterrupted, tmp_path, name, at_batch,
                                                                        saved_step):
    run = tmp_path / "run"
    proc = run_driver(run, name, at_batch)
    signum = getattr(signal, name)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints/last.ckpt")["step"] == saved_step
    assert not (run / "metrics.json").exists()
    log = (run / "train.log").read_text()
    assert f"stopped by {name} at step {saved_step}" in log
    assert f"hydra.run.dir={run} trainer.resume=auto" in log  # the exact command to resume
    assert "Traceback" not in proc.stderr
    proc = cli("train", *OVERRIDES, f"hydra.run.dir={run}", "trainer.resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {run / 'checkpoints/last.ckpt'} at step {saved_step}" in proc.stderr
    a = load_checkpoint(uninterrupted / "checkpoints/last.ckpt")
    b = load_checkpoint(run / "checkpoints/last.ckpt")
    assert a["step"] == b["step"] == 8 and a["ema"]["num_updates"] == b["ema"]["num_updates"]
    for part in ("raw", "ema"):
        wa, wb = policy_weights(a, part), policy_weights(b, part)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert json.loads((run / "metrics.json").read_text()) == json.loads((uninterrupted / "metrics.json").read_text())
    assert scalars(run, "train/loss") == scalars(uninterrupted, "train/loss")
    assert scalars(run, "val/loss") == scalars(uninterrupted, "val/loss")


def test_a_second_ctrl_c_aborts_at_once_without_saving(tmp_path):
    run = tmp_path / "run"
    proc = run_driver(run, "SIGINT,SIGINT", 2, "trainer.checkpoint_every_n_steps=null")
    assert proc.returncode == -signal.SIGINT, proc.stderr[-3000:]
    assert "second SIGINT: aborting at once" in proc.stderr
    assert not (run / "checkpoints/last.ckpt").exists()


def test_save_last_false_still_saves_the_step_reached_at_a_signal(tmp_path):
    run = tmp_path / "run"
    proc = run_driver(run, "SIGTERM", 8, "trainer.save_last=false")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints/last.ckpt")["step"] == 5


def _wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _training_started(run: Path) -> bool:
    log = run / "train.log"
    return log.is_file() and "optimizer steps" in log.read_text()


def test_a_second_process_on_a_run_dir_fails_at_once_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "emotionsumm.train", *TINY, "trainer.max_steps=100000",
                              f"hydra.run.dir={run}"], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _training_started(run), "the first run to train")
        config = (run / ".hydra/overrides.yaml").read_text()
        log_size = (run / "train.log").stat().st_size
        second = cli("train", *TINY, "trainer.max_steps=3", f"hydra.run.dir={run}")
        assert second.returncode == 1
        assert "in use" in second.stderr and f"PID {first.pid}" in second.stderr and str(run) in second.stderr
        assert "Traceback" not in second.stderr
        assert (run / ".hydra/overrides.yaml").read_text() == config  # nothing of the second run was written
        assert "max_steps=3" not in (run / "train.log").read_text()[log_size:]
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert acquire(run)  # the OS dropped the dead holder's lock: no stale lock after SIGKILL
    release(run)


def test_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from emotionsumm.runs.lock import acquire; "
                               f"acquire({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirInUse, match=rf"in use by another process \(PID {holder.pid}\)"):
            acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert acquire(tmp_path) and not acquire(tmp_path)  # re-entrant: the second call is a no-op
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    release(tmp_path)


SWEEP_JOB = ["seed=3", *TINY, "trainer.limit_val_batches=1", "trainer.test_after_fit=false"]


def start_sweep(sweep: Path, args: list[str]) -> subprocess.Popen:
    """A one-job multirun in the background, returned once its job trains."""
    proc = subprocess.Popen([sys.executable, "-m", "emotionsumm.train", *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(_training_started(job) for job in sweep.glob("0-*")), "the sweep job to train", 240)
    return proc


def test_an_interrupted_sweep_job_is_unfinished_and_a_rerun_resumes_it(tmp_path):
    from emotionsumm.report import load_jobs

    sweep = tmp_path / "sweep"
    args = ["-m", *SWEEP_JOB, "trainer.max_steps=400", f"hydra.sweep.dir={sweep}"]
    proc = start_sweep(sweep, args)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    (job,) = load_jobs(sweep)
    assert job.status == "unfinished" and not (job.dir / "error.txt").exists()
    step = load_checkpoint(job.dir / "checkpoints/last.ckpt")["step"]
    assert 0 < step < 400
    assert f"rerun the same multirun command with hydra.sweep.dir={sweep}" in (job.dir / "train.log").read_text()
    rerun = cli("train", *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"at step {step}" in rerun.stderr and "resumed from" in rerun.stderr
    (job,) = load_jobs(sweep)
    assert job.status == "finished" and job.metrics["step"] == 400


def test_submitit_requeues_a_preempted_job_which_resumes_from_the_signal_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["launcher=submitit_local", *SWEEP_JOB, "trainer.max_steps=600", f"hydra.sweep.dir={sweep}"]
    proc = start_sweep(sweep, args)
    (job,) = sweep.glob("0-*")
    pid = int((job / LOCK_FILE).read_text())  # the job process (the lock file names its holder)
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends before a preemption or the time limit (--signal=USR2@…)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    log = (job / "train.log").read_text()
    stopped = re.search(r"stopped by SIGUSR2 at step (\d+)", log)
    assert stopped, log[-3000:]
    assert f"resumed from {job / 'checkpoints/last.ckpt'} at step {stopped.group(1)}" in log
    assert load_checkpoint(job / "checkpoints/last.ckpt")["step"] == 600 and (job / "metrics.json").is_file()


@pytest.mark.ddp
def test_ddp_ranks_agree_to_stop_at_one_step_when_only_one_rank_gets_the_signal(tmp_path):
    outputs = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "emotionsumm.train", *TINY, "trainer.max_steps=100000", f"paths.output_root={outputs}"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for(lambda: any(_training_started(run) for run in outputs.glob("emotion_text/*")), "DDP training", 240)
    (run,) = outputs.glob("emotion_text/*")
    ranks = {}
    for child in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = next((e.split(b"=")[1] for e in environ if e.startswith(b"RANK=")), None)
        ranks[int(rank)] = int(child)
    os.kill(ranks[1], signal.SIGTERM)  # rank 0 never sees a signal, yet must stop at the same step and save
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    log = (run / "train.log").read_text()
    stopped = re.search(r"stopped by SIGTERM at step (\d+)", log)
    assert stopped, stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoints/last.ckpt")
    assert ckpt["step"] == int(stopped.group(1)) and len(ckpt["rng"]) == 2


def test_a_second_launcher_of_the_same_sweep_stops_at_the_job_the_first_one_runs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *SWEEP_JOB, "trainer.max_steps=100000", f"hydra.sweep.dir={sweep}"]
    first = start_sweep(sweep, args)
    try:
        (job,) = sweep.glob("0-*")
        config = (job / ".hydra/config.yaml").read_text()
        second = cli("train", *args)
        assert second.returncode == 1
        assert f"run dir {job} is in use by another process (PID {first.pid})" in second.stderr
        assert not (job / "error.txt").exists() and first.poll() is None
        assert (job / ".hydra/config.yaml").read_text() == config
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
