"""Checkpoints crafted to touch files outside their run, sent through resume, evaluate and predict.

    .venv/bin/python benchmarks/crafted_checkpoints.py            # ~2 min on 2 cores
    .venv/bin/python benchmarks/crafted_checkpoints.py --keep     # keep the dirs (printed) for a look

A tiny text run is trained; copies of its `last.ckpt` are then edited as anyone who shares a checkpoint
could edit them (each payload only uses classes and paths that the target allow-list lets through):
- `delete-absolute`, `delete-relative`: the top-k ranking (`callbacks.checkpointer.best`) names a file outside
  the run, by absolute path or `../`; the checkpointer deletes ranked files that fall out of the top k;
- `nested-csv-logger`: `model.tracker` = emotionsumm's CSVLogger writing into another run's dir;
- `nested-mlflow-logger`: `data.tracker` = emotionsumm's MLflowLogger with a database in another run's dir;
- `demo-dir`: `data.demo_dir` and `data.files.*` inside the victim dir (demo data is generated there);
- `cache-dirs`: `data.tokenizer_cache_dir` inside the victim dir;
- `stored-data-path`: `data.demo=false` with `data.files.test` = a file in the victim dir (read, never written).
Every case runs `train trainer.resume=<ckpt>` (in a new run dir), `evaluate ckpt=<ckpt>` and
`predict ckpt=<ckpt>`. The victim dir (another run's files, a file to delete, an empty folder) is made anew
and hashed before every command and hashed after it. The last line is JSON: `files_touched_outside_run` must be 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from emotionsumm.config.core import PROJECT_ROOT

TINY = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "data.vocab_size=400", "data.batch_size=16", "trainer.progress_bar=false", "scheduler.warmup_steps=1",
    "trainer.val_every_n_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "trainer.save_top_k=1", "logger=csv",
]
Edit = Callable[[dict, Path], None]


def _ranking(name: Callable[[Path], str]) -> Edit:
    def edit(ckpt: dict, victim: Path) -> None:  # the worst score: it falls out of the top k at the next save
        ckpt["callbacks"]["checkpointer"]["best"].append([-1e9, name(victim)])
    return edit


def _nested(node: str, target: str, **kwargs: Callable[[Path], str]) -> Edit:
    def edit(ckpt: dict, victim: Path) -> None:
        ckpt["config"][node]["tracker"] = {"_target_": target, **{k: f(victim) for k, f in kwargs.items()}}
    return edit


def _demo_dir(ckpt: dict, victim: Path) -> None:
    data = ckpt["config"]["data"]
    data["demo_dir"] = str(victim / "empty")
    data["files"] = {split: str(victim / "empty" / Path(path).name) for split, path in data["files"].items()}


def _cache_dirs(ckpt: dict, victim: Path) -> None:
    ckpt["config"]["data"]["tokenizer_cache_dir"] = str(victim / "empty" / "tokenizers")
    ckpt.pop("data")  # no stored tokenizer: a rebuilt data object would train and cache one


def _stored_path(ckpt: dict, victim: Path) -> None:
    ckpt["config"]["data"]["demo"] = False
    ckpt["config"]["data"]["files"]["test"] = str(victim / "secret.txt")


CASES: dict[str, Edit] = {
    "delete-absolute": _ranking(lambda v: str(v / "delete_me.txt")),
    "delete-relative": _ranking(lambda v: "../../../victim/delete_me.txt"),
    "nested-csv-logger": _nested("model", "emotionsumm.tracking.loggers.CSVLogger", run_dir=lambda v: str(v / "run")),
    "nested-mlflow-logger": _nested("data", "emotionsumm.tracking.mlflow_logger.MLflowLogger",
                                    run_dir=lambda v: str(v / "run"),
                                    tracking_uri=lambda v: f"sqlite:///{v / 'run' / 'mlflow.db'}"),
    "demo-dir": _demo_dir,
    "cache-dirs": _cache_dirs,
    "stored-data-path": _stored_path,
}


def make_victim(victim: Path) -> None:
    """Another run's files, a file to delete and an empty folder to write into."""
    (victim / "run").mkdir(parents=True)
    (victim / "run" / "metrics.csv").write_text("step,name,value\n1,train/loss,1.0\n")
    (victim / "run" / "mlflow_run.json").write_text('{"run_id": "precious"}\n')
    (victim / "delete_me.txt").write_text("precious\n")
    (victim / "secret.txt").write_text("SECRET-LINE-1\nSECRET-LINE-2\n")
    (victim / "empty").mkdir()


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content hash ('dir' for folders) of everything under root."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def touched(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)


def run_cases(root: Path, python: str = sys.executable, verbose: bool = True) -> dict:
    """Train a source run in `root`, craft every case and run it through resume, evaluate and predict."""
    source = root / "source"
    proc = run([python, "-m", "emotionsumm.train", *TINY, "trainer.max_steps=4", f"hydra.run.dir={source}"])
    if proc.returncode != 0:
        sys.exit(f"the source run failed:\n{proc.stderr[-3000:]}")
    victim = root / "victim"
    inputs = root / "inputs.txt"
    inputs.write_text("i feel so lonely today\nwhat a wonderful surprise\n")
    rows, all_touched = [], []
    for case, edit in CASES.items():
        ckpt = torch.load(source / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        edit(ckpt, victim)
        crafted = root / "crafted" / f"{case}.ckpt"
        crafted.parent.mkdir(exist_ok=True)
        torch.save(ckpt, crafted)
        runs = root / "runs"
        commands = {
            "resume": [python, "-m", "emotionsumm.train", *TINY, "trainer.max_steps=8", f"trainer.resume={crafted}",
                       f"hydra.run.dir={runs / f'{case}-resume'}"],
            "evaluate": [python, "-m", "emotionsumm.evaluate", f"ckpt={crafted}", "progress_bar=false",
                         f"hydra.run.dir={runs / f'{case}-evaluate'}"],
            "predict": [python, "-m", "emotionsumm.predict", f"ckpt={crafted}", f"input={inputs}",
                        f"hydra.run.dir={runs / f'{case}-predict'}"],
        }
        for command, cmd in commands.items():
            shutil.rmtree(victim, ignore_errors=True)
            make_victim(victim)
            before = snapshot(victim)
            proc = run(cmd)
            changed = touched(before, snapshot(victim))
            all_touched += [f"{case}/{command}: {path}" for path in changed]
            echoed = "SECRET-LINE" in proc.stdout + proc.stderr
            rows.append({"case": case, "command": command, "exit": proc.returncode, "touched": changed,
                         "echoed_victim_content": echoed})
            if verbose:
                last = (proc.stderr.strip().splitlines() or [""])[-1][:150]
                print(f"{case:22} {command:9} exit {proc.returncode:>3} touched {len(changed)} "
                      f"{'ECHOED ' if echoed else ''}| {last}", flush=True)
    return {"checkpoint_cases": len(CASES), "checkpoint_runs": len(rows),
            "checkpoint_runs_refused": sum(r["exit"] != 0 for r in rows),
            "victim_content_echoed": sum(r["echoed_victim_content"] for r in rows),
            "files_touched_outside_run": len(all_touched), "touched": all_touched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the dirs (printed) for a look")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="crafted-"))
    print(f"dirs in {root}")
    summary = run_cases(root)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
