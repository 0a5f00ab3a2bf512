"""Interrupt a small real training at random moments and check that nothing is lost; then send crafted checkpoints
through resume, evaluate and predict and check that no file outside their runs is touched.

    .venv/bin/python benchmarks/faults.py             # 10 SIGKILL, 10 SIGTERM, 10 SIGINT + 7 checkpoints (~10 min)
    .venv/bin/python benchmarks/faults.py --kills 3 --terms 3 --ints 3 --seed 1
    .venv/bin/python benchmarks/faults.py --kills 0 --terms 0 --ints 0   # the crafted checkpoints only

Each trial starts `python -m emotionsumm.train` (the demo text experiment, a tiny model, gradient
accumulation, validation and periodic checkpoints; half the SIGKILL trials checkpoint every step so
that kills land inside saves), sends one signal at a random moment of training, then checks that
- every `.ckpt` left in the run dir loads with `weights_only=True` (else: a lost checkpoint), and after
  SIGTERM/SIGINT that `last.ckpt` holds at least the step at which the signal arrived;
- `trainer.resume=auto` runs to the end (else: a failed resume);
- the resumed run's final weights, EMA, optimizer state and metrics.json equal those of an
  uninterrupted run bit for bit (else: not identical).
Steps lost per SIGTERM/SIGINT = optimizer steps finished when the signal arrived (the trainer logs it)
minus the step in `last.ckpt`. The crafted checkpoints are `crafted_checkpoints.py`'s (see there); the last line
is JSON, with `files_touched_outside_run` (must be 0) beside the signal trials' keys.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from crafted_checkpoints import run_cases

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.training.checkpoint import CheckpointError, load_checkpoint, policy_weights

STEPS = 120
OVERRIDES = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "data.vocab_size=400", "data.batch_size=16", "trainer.progress_bar=false", "trainer.log_every_n_steps=5",
    "scheduler.warmup_steps=5", f"trainer.max_steps={STEPS}", "trainer.accumulate_grad_batches=2",
    "trainer.val_every_n_steps=25", "trainer.limit_val_batches=2", "trainer.test_after_fit=false",
    "ema.decay=0.9",
]


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emotionsumm.train", *OVERRIDES, *extra, f"hydra.run.dir={run_dir}"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)


def final_state(run_dir: Path) -> dict:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"ckpt": ckpt, "metrics": metrics}


def identical(a: dict, b: dict) -> bool:
    ca, cb = a["ckpt"], b["ckpt"]
    same = ca["step"] == cb["step"] and ca["ema"]["num_updates"] == cb["ema"]["num_updates"]
    same = same and a["metrics"] == b["metrics"]
    for part in ("raw", "ema"):
        wa, wb = policy_weights(ca, part), policy_weights(cb, part)
        same = same and all(torch.equal(wa[k], wb[k]) for k in wa)
    for key, state in ca["optimizer"]["state"].items():
        same = same and all(torch.equal(v, cb["optimizer"]["state"][key][n]) for n, v in state.items()
                            if torch.is_tensor(v))
    return bool(same)


def training_started(run_dir: Path) -> bool:
    log = run_dir / "train.log"
    return log.is_file() and "optimizer steps" in log.read_text()


def interrupt(run_dir: Path, signum: int | None, delay: float, extra: list[str]) -> tuple[int, float]:
    """Start a run, send `signum` (None: none) `delay` s into training; return (exit status, s from then to exit)."""
    proc = subprocess.Popen(train_cmd(run_dir, *extra), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not training_started(run_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    sent = time.perf_counter()
    if proc.poll() is None and signum is not None:
        proc.send_signal(signum)
    code = proc.wait()
    return code, time.perf_counter() - sent


def check_checkpoints(run_dir: Path) -> tuple[int, list[Path]]:
    """(checkpoints that do not load, half-written temp files left by a kill)."""
    directory = run_dir / "checkpoints"
    bad = 0
    for path in directory.glob("*.ckpt"):
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            print(f"  LOST {path}: {err}")
            bad += 1
    return bad, list(directory.glob(".tmp-*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--terms", type=int, default=10)
    parser.add_argument("--ints", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the run dirs (printed) for a look")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="faults-"))
    print(f"threads per run: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; run dirs in {root}")

    reference_dir = root / "reference"
    code, train_seconds = interrupt(reference_dir, None, 0.0, ["trainer.checkpoint_every_n_steps=10"])
    if code != 0:
        sys.exit(f"the uninterrupted run failed (exit {code}); see {reference_dir / 'train.log'}")
    reference = final_state(reference_dir)
    print(f"uninterrupted run: {train_seconds:.1f} s from the start of training to the exit, step "
          f"{reference['ckpt']['step']}; signals are sent at a uniformly random moment of its first 80 %")

    plan = ([signal.SIGKILL] * args.kills + [signal.SIGTERM] * args.terms + [signal.SIGINT] * args.ints)
    rng.shuffle(plan)
    rows, lost_ckpts, failed, not_same, steps_lost, during_save = [], 0, 0, 0, [], 0
    print(f"{'#':>3} {'signal':8} {'delay s':>7} {'exit':>5} {'stop s':>6} {'at':>4} {'saved':>5} {'lost':>4} "
          f"{'tmp':>3} {'resume':>6} {'same':>5}")
    for i, signum in enumerate(plan):
        run_dir = root / f"trial{i:02d}"
        every = 1 if signum == signal.SIGKILL and i % 2 == 0 else 10
        extra = [f"trainer.checkpoint_every_n_steps={every}"]
        delay = rng.uniform(0.0, 0.8 * train_seconds)  # the measured span ends at the process exit, after training
        code, stop_s = interrupt(run_dir, signum, delay, extra)
        bad, leftovers = check_checkpoints(run_dir)
        during_save += bool(leftovers)
        lost = bad
        at = saved = None
        step_lost = None
        finished = (run_dir / "metrics.json").is_file()  # the signal came after the run ended (in its teardown)
        if signum != signal.SIGKILL and not finished:
            text = (run_dir / "train.log").read_text()
            found = re.search(r"stopped by SIG\w+ at step (\d+)(?: \(signal received at step (\d+)\))?", text)
            last = run_dir / "checkpoints" / "last.ckpt"
            saved = load_checkpoint(last)["step"] if last.is_file() and not bad else None
            if found is None or saved is None:
                lost += 1
            else:
                at = int(found.group(2) or found.group(1))
                step_lost = max(0, at - saved)
                steps_lost.append(step_lost)
                lost += int(step_lost > 0)
        lost_ckpts += lost
        resumed = run(train_cmd(run_dir, *extra, "trainer.resume=auto"))
        ok = resumed.returncode == 0
        failed += not ok
        same = ok and identical(reference, final_state(run_dir))
        not_same += not same
        name = signal.Signals(signum).name
        rows.append({"signal": name, "delay_s": round(delay, 2), "exit": code, "finished": finished,
                     "stop_s": round(stop_s, 2),
                     "signal_step": at, "saved_step": saved, "lost": lost, "resume_ok": ok, "identical": same})
        print(f"{i:>3} {name:8} {delay:7.2f} {code:>5} {stop_s:6.2f} {at if at is not None else '-':>4} "
              f"{saved if saved is not None else '-':>5} {lost:>4} {len(leftovers):>3} {'ok' if ok else 'FAIL':>6} "
              f"{'yes' if same else 'NO':>5}", flush=True)
        if not ok:
            print(resumed.stderr[-2000:])

    graceful = [r for r in rows if r["signal"] != "SIGKILL"]
    summary = {
        "kills": {name: sum(r["signal"] == name for r in rows) for name in ("SIGKILL", "SIGTERM", "SIGINT")},
        "kills_during_save": during_save,
        "finished_before_signal": sum(r["finished"] for r in rows),
        "graceful_exit_codes": sorted({r["exit"] for r in graceful if not r["finished"]}),
        "lost_checkpoints": lost_ckpts,
        "failed_resumes": failed,
        "not_identical": not_same,
        "steps_lost_median": statistics.median(steps_lost) if steps_lost else None,
        "steps_lost_max": max(steps_lost) if steps_lost else None,
        "stop_seconds_max": max((r["stop_s"] for r in graceful if not r["finished"]), default=None),
    }
    crafted = run_cases(root / "crafted")
    summary.update({k: v for k, v in crafted.items() if k != "touched"})
    if crafted["touched"]:
        print("touched outside their runs:\n  " + "\n  ".join(crafted["touched"]))
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
