"""Time to result: emotionsumm's shipped recipes against a plain PyTorch loop (and Lightning / HF Trainer).

    .venv/bin/python benchmarks/race.py                               # both tasks (25+ min on 2 idle cores)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/race.py --quick --threads 1      # < 3 min, for development

Same model, same data, same optimizer steps and batch size (the plain loops even draw the trainer's batches in
its order: a permutation seeded by seed + epoch), same threads; one contender after the other,
each in its own subprocess (OMP_NUM_THREADS and torch.set_num_threads = `--threads`), so that the wall time
is everything a user waits for: imports, reading and tokenizing, building the model, training, validation,
checkpoints and the final test. Before the race the data files and weights are read once (page cache) and
DialogSum's BPE is trained into its cache, so that no contender pays for that alone.
- text: all-MiniLM-L6-v2 fine-tuned on dair emotion. `emotionsumm`: `python -m emotionsumm.train
  experiment=emotion_text_minilm trainer.max_steps=<steps>` as shipped (its validation cadence, EMA, raw-weight
  validation, TensorBoard, checkpoints, test after fit). `raw`: the 60-line loop a user would write (below):
  AutoModel + dropout + linear head on [CLS] (as emotionsumm/models/text.py), AdamW with the recipe's lrs per
  part and weight decay (none on biases and norms), the recipe's warmup + cosine (`cosine_with_warmup`),
  gradient clipping, no validation, no EMA, the test split evaluated at the end. `lightning` / `hf`: the same
  module and optimizer through `lightning.Trainer` / `transformers.Trainer` when importable (never project
  dependencies; else skipped).
- dialogsum: the shipped tiny BART (`experiment=dialogsum`). The plain loops build data, model and loss with
  emotionsumm's own classes (the same BPE tokenizer, truncation and length buckets: the fair way to train the
  very same model) and loop over them by hand; `hf` is `Seq2SeqTrainer` on the same BART (group_by_length).
  Quality: ROUGE (vs summary1) on a fixed random subset of the test split, every contender's summaries
  from `Seq2SeqPolicy.summarize` with the recipe's generation settings (emotionsumm: its test after fit).
Per contender: wall (launch to exit), train s (the training loop without validation), samples/s (trained
samples / train s), val s (validation during training), test s, quality. emotionsumm's phases come from its
run dir: the `train.log` lines "training N optimizer steps" and "training stopped" bound the loop, each
validation at step s runs from the TensorBoard `train/loss` event of step s (logged just before validating)
to the last `val*/` event of step s, the test from "training stopped" to the last `test*/` event.
The last line is JSON: per task `wall_vs_raw` (emotionsumm wall / raw wall) and every contender's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOTIONSUMM_SHARED", ROOT.parent / "shared"))
RESULT = "RACE_RESULT "  # a child's last stdout line: this prefix + JSON
OPTIONAL = {"lightning": ("lightning",), "hf": ("transformers", "accelerate")}  # contender: modules it needs
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[[^]]*\]\[\w+\] - (.*)$")
# the recipes' split files (under the shared dir) and, for --quick, steps and fixed random subsets of them
SPLITS = {"text": {"train": "data/emotion_text/dair/train.jsonl", "val": "data/emotion_text/dair/validation.jsonl",
                   "test": "data/emotion_text/dair/test.jsonl"},
          "dialogsum": {"train": "data/dialogsum/dialogsum.train.jsonl", "val": "data/dialogsum/dialogsum.dev.jsonl",
                        "test": "data/dialogsum/dialogsum.test.jsonl"}}
QUICK = {"text": {"steps": 20, "train": 2000, "val": 32, "test": 64},
         "dialogsum": {"steps": 30, "train": 2000, "val": 6, "test": 6}}
QUALITY = {"text": ("acc", "macro_f1"), "dialogsum": ("rouge1", "rouge2", "rougeL")}


@dataclass
class Task:
    """One race: the recipe, its length and the config overrides every contender shares."""

    name: str
    experiment: str
    steps: int
    val_every: int | None = None  # trainer.val_every_n_steps; None: as shipped
    overrides: list[str] = field(default_factory=list)  # data subsets, cadence; also composed by the children
    notes: list[str] = field(default_factory=list)


# ---- the race (parent) ------------------------------------------------------------------------------------
def subset_file(source: Path, rows: int | None, out: Path, seed: int = 0) -> Path:
    """A fixed random `rows` lines of a JSONL file (in file order), or the file itself when it has no more."""
    lines = source.read_text(encoding="utf-8").splitlines()
    if rows is None or rows >= len(lines):
        return source
    keep = sorted(random.Random(seed).sample(range(len(lines)), rows))
    out.write_text("".join(lines[i] + "\n" for i in keep), encoding="utf-8")
    return out


def recipe_trainer(experiment: str) -> dict[str, Any]:
    """The trainer keys as shipped for a recipe: conf/trainer/default.yaml updated by the experiment's."""
    trainer = yaml.safe_load((ROOT / "conf" / "trainer" / "default.yaml").read_text())
    experiment_node = yaml.safe_load((ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()) or {}
    return {**trainer, **(experiment_node.get("trainer") or {})}


def aligned_logging(task: Task, val_every: int | None) -> None:
    """Validation is timed from the `train/loss` event of its step: make every validation step a log step."""
    every = int(recipe_trainer(task.experiment)["log_every_n_steps"])
    needed = math.gcd(every, math.gcd(val_every or every, task.steps))
    if needed != every:
        task.overrides.append(f"trainer.log_every_n_steps={needed}")
        task.notes.append(f"trainer.log_every_n_steps={needed} (shipped {every}) so that validations are timed")


def plan(args: argparse.Namespace, workdir: Path) -> list[Task]:
    """The tasks to race: the recipes as shipped (their validation cadence too), or `--quick`: fixed random
    subsets of every split (a smaller training file is faster to read and tokenize) and validation twice."""
    tasks = []
    for name, experiment in (("text", "emotion_text_minilm"), ("dialogsum", "dialogsum")):
        if name not in args.tasks:
            continue
        steps = getattr(args, f"{name}_steps") or (QUICK[name]["steps"] if args.quick else 500)
        task = Task(name, experiment, steps)
        rows = {split: QUICK[name][split] if args.quick else None for split in ("train", "val", "test")}
        if name == "dialogsum":
            rows["test"] = args.dialogsum_test or rows["test"] or 100
        for split, count in rows.items():
            if count is not None:
                subset = subset_file(SHARED / SPLITS[name][split], count, workdir / f"{name}_{split}.jsonl")
                task.overrides.append(f"data.files.{split}={subset}")
        if args.quick:
            task.val_every = max(1, steps // 2)
            task.overrides.append(f"trainer.val_every_n_steps={task.val_every}")
            task.notes.append(f"quick: train/val/test subsets of {rows['train']}/{rows['val']}/{rows['test']} rows, "
                              f"validation every {task.val_every} steps")
        if name == "dialogsum":
            task.notes.append(f"ROUGE vs summary1 on a fixed random {rows['test']} of the 500 test dialogues")
        task.overrides.append(f"trainer.max_steps={steps}")
        aligned_logging(task, task.val_every or recipe_trainer(experiment)["val_every_n_steps"])
        tasks.append(task)
    return tasks


def child_env(threads: int) -> dict[str, str]:
    """The same threads for everyone (torch, OpenMP/MKL, the Rust tokenizers), and offline."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
        env[key] = str(threads)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def run_logged(cmd: list[str], threads: int, log_path: Path) -> tuple[float, str]:
    """(wall seconds, stdout) of a subprocess; stderr goes to `log_path`, whose tail a failure shows."""
    start = time.perf_counter()
    with open(log_path, "w") as err:
        proc = subprocess.run(cmd, cwd=ROOT, env=child_env(threads), stdout=subprocess.PIPE, stderr=err, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited with {proc.returncode}; end of {log_path}:\n{tail}")
    return wall, proc.stdout


def log_times(log_file: Path) -> dict[str, float]:
    """Epoch seconds of the training loop's start and stop lines of an emotionsumm `train.log`."""
    times: dict[str, float] = {}
    for line in log_file.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        message = match.group(2)
        if re.match(r"training \d+ optimizer steps", message):
            times["start"] = stamp
        elif message.startswith("training stopped at step"):
            times["stop"] = stamp
    missing = {"start", "stop"} - set(times)
    if missing:
        raise ValueError(f"{log_file}: no 'training N optimizer steps' / 'training stopped' line ({sorted(missing)}); "
                         "was the run's log level raised above INFO?")
    return times


def tb_phases(tb_dir: Path, stop: float) -> dict[str, Any]:
    """Validation seconds (from the step's `train/loss` event to its last `val*/` event) and test seconds
    (from `stop` to the last `test*/` event) from a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    train_at: dict[int, float] = {}
    val_end: dict[int, float] = {}
    test_end = None
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            if tag == "train/loss":
                train_at[event.step] = event.wall_time
            elif tag.startswith(("val/", "val_raw/")):
                val_end[event.step] = max(val_end.get(event.step, 0.0), event.wall_time)
            elif tag.startswith(("test/", "test_raw/")):
                test_end = max(test_end or 0.0, event.wall_time)
    unaligned = sorted(set(val_end) - set(train_at))
    if unaligned:
        raise ValueError(f"{tb_dir}: validations at steps {unaligned} have no train/loss event of their step "
                         "(make trainer.val_every_n_steps and max_steps multiples of trainer.log_every_n_steps)")
    rounds = {step: end - train_at[step] for step, end in sorted(val_end.items())}
    return {"val_s": sum(rounds.values()), "val_rounds": len(rounds),
            "val_round_s": [round(s, 2) for s in rounds.values()],
            "test_s": test_end - stop if test_end is not None else 0.0}


def emotionsumm_phases(run_dir: Path, task: str, steps: int, batch_size: int) -> dict[str, Any]:
    """train/val/test seconds and test quality of a finished emotionsumm run, read from its run dir."""
    times = log_times(run_dir / "train.log")
    phases = tb_phases(run_dir / "tb", times["stop"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    quality = {k: metrics[f"test/{k}"] for k in QUALITY[task] if f"test/{k}" in metrics}
    quality_raw = {k: metrics[f"test_raw/{k}"] for k in QUALITY[task] if f"test_raw/{k}" in metrics}
    return {"train_s": times["stop"] - times["start"] - phases["val_s"], "samples": steps * batch_size,
            "quality": quality, "quality_raw_weights": quality_raw, **phases}


def run_emotionsumm(task: Task, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """`python -m emotionsumm.train experiment=...` as shipped (plus the task's overrides)."""
    from common import compose_experiment

    extra = ["trainer.progress_bar=false", f"hydra.run.dir={run_dir}"]
    if args.validate_raw:
        extra.append(f"trainer.validate_raw={args.validate_raw}")
    cmd = [sys.executable, "-m", "emotionsumm.train", f"experiment={task.experiment}", *task.overrides, *extra]
    wall, _ = run_logged(cmd, args.threads, run_dir.parent / f"{run_dir.name}.stderr")
    batch_size = int(compose_experiment(task.experiment, task.overrides).data.batch_size)
    result = emotionsumm_phases(run_dir, task.name, task.steps, batch_size)
    if not args.keep:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return {"wall_s": wall, **result}


def run_child(task: Task, contender: str, args: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    """A plain/peer contender: this file again, as `--child`, in its own process."""
    spec = {"task": task.name, "experiment": task.experiment, "steps": task.steps, "overrides": task.overrides,
            "threads": args.threads, "workdir": str(workdir / tag)}
    cmd = [sys.executable, __file__, "--child", contender, "--spec", json.dumps(spec)]
    wall, out = run_logged(cmd, args.threads, workdir / f"{tag}.stderr")
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f"{contender} ({task.name}) printed no result line; see {workdir / f'{tag}.stderr'}")
    return {"wall_s": wall, **json.loads(lines[-1][len(RESULT):])}


def missing_modules(contender: str) -> list[str]:
    return [m for m in OPTIONAL.get(contender, ()) if importlib.util.find_spec(m) is None]


def warm_up(task: Task) -> None:
    """Fill what no contender should pay for alone: the page cache of the data files and pretrained weights,
    and the trained-BPE cache (DialogSum's tokenizer is trained on the training split once, then cached)."""
    from common import compose_experiment
    from hydra.utils import instantiate

    cfg = compose_experiment(task.experiment, task.overrides)
    pretrained = cfg.model.get("pretrained")
    files = [Path(f) for f in cfg.data.files.values() if f] + \
        ([f for f in Path(pretrained).iterdir() if f.is_file()] if pretrained else [])
    for path in files:
        path.read_bytes()
    if task.name == "dialogsum":
        instantiate(cfg.data).setup(None, splits=("train",))


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of each number of a contender."""
    out = {}
    for name, runs in results.items():
        if isinstance(runs, str):
            out[name] = {"skipped": runs}
            continue
        first = runs[0]
        row = {k: statistics.median(r[k] for r in runs) for k in first if isinstance(first[k], (int, float))}
        row["samples_per_s"] = row["samples"] / max(row["train_s"], 1e-9)
        row["other_s"] = row["wall_s"] - row["train_s"] - row["val_s"] - row["test_s"]
        row["quality"] = {k: statistics.median(r["quality"][k] for r in runs) for k in first["quality"]}
        for key in ("quality_raw_weights", "val_round_s"):
            if key in first:
                row[key] = first[key] if len(runs) == 1 else [r[key] for r in runs]
        row["walls_s"] = [round(r["wall_s"], 1) for r in runs]
        out[name] = row
    return out


def print_table(task: Task, rows: dict[str, Any]) -> None:
    print(f"\n== {task.name}: {task.experiment}, {task.steps} optimizer steps ==")
    for note in task.notes:
        print(f"   ({note})")
    keys = QUALITY[task.name]
    print(f"{'contender':<12} {'wall s':>8} {'train s':>8} {'samples/s':>9} {'val s':>7} {'test s':>7} "
          f"{'other s':>7} {'vs raw':>6}  " + " ".join(f"{k:>8}" for k in keys))
    raw_wall = rows.get("raw", {}).get("wall_s")
    for name, row in rows.items():
        if "skipped" in row:
            print(f"{name:<12} skipped: {row['skipped']}")
            continue
        ratio = f"{row['wall_s'] / raw_wall:6.3f}" if raw_wall else "     -"
        scale = 100.0 if task.name == "text" else 1.0  # accuracy in %, ROUGE is x100 already
        quality = " ".join(f"{row['quality'].get(k, float('nan')) * scale:8.2f}" for k in keys)
        print(f"{name:<12} {row['wall_s']:8.1f} {row['train_s']:8.1f} {row['samples_per_s']:9.2f} "
              f"{row['val_s']:7.1f} {row['test_s']:7.1f} {row['other_s']:7.1f} {ratio}  {quality}")
    if "val_round_s" in rows.get("emotionsumm", {}):
        print(f"emotionsumm validations (s each): {rows['emotionsumm']['val_round_s']}")


def race(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="race-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.validate_raw and "validate_raw" not in recipe_trainer("emotion_text_minilm"):  # older trainers
        print(f"note: this trainer has no trainer.validate_raw; --validate-raw={args.validate_raw} ignored")
        args.validate_raw = None
    report: dict[str, Any] = {"threads": args.threads, "quick": args.quick, "repeats": args.repeats}
    try:
        for task in plan(args, workdir):
            contenders: list[str] = []
            results: dict[str, Any] = {}
            for name in args.contenders:
                missing = missing_modules(name)
                if missing:
                    results[name] = f"{', '.join(missing)} not importable (optional; never a project dependency)"
                    print(f"note: {task.name}: {name} skipped: {results[name]}")
                else:
                    contenders.append(name)
                    results[name] = []
            warm_up(task)
            for repeat in range(args.repeats):  # ABBA order over repeats
                for name in contenders if repeat % 2 == 0 else contenders[::-1]:
                    tag = f"{task.name}-{name}-{repeat}"
                    print(f"running {tag} ...", flush=True)
                    try:
                        if name == "emotionsumm":
                            results[name].append(run_emotionsumm(task, args, workdir / tag))
                        else:
                            results[name].append(run_child(task, name, args, workdir, tag))
                    except RuntimeError as exc:
                        if name in ("emotionsumm", "raw"):
                            raise
                        print(f"note: {name} failed, left out: {exc}")
                        results[name] = f"failed: {str(exc).splitlines()[0]}"
                        contenders.remove(name)
            rows = summarize(results)
            print_table(task, rows)
            entry: dict[str, Any] = {"steps": task.steps, "notes": task.notes, **rows}
            raw = rows.get("raw", {})
            for name, row in rows.items():
                if name != "raw" and "wall_s" in row and "wall_s" in raw:
                    prefix = "" if name == "emotionsumm" else f"{name}_"
                    entry[f"{prefix}wall_vs_raw"] = row["wall_s"] / raw["wall_s"]
                    entry[f"{prefix}quality_minus_raw"] = {
                        k: row["quality"][k] - raw["quality"][k] for k in row["quality"] if k in raw["quality"]}
            report[task.name] = entry
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


# ---- the contenders (children) ----------------------------------------------------------------------------
def adamw(named: list[tuple[str, Any]], lr_of: dict[str, float], default_lr: float, opt_cfg: Any) -> Any:
    """AdamW, a group per (part, decay): lr by name prefix (`lr_of`), no weight decay on biases and norms."""
    import torch

    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in named:
        part = next((p for p in lr_of if name.startswith(p)), "")
        decay = param.ndim > 1 and "norm" not in name.lower()
        group = groups.setdefault((part, decay), {"params": [], "lr": lr_of.get(part, default_lr),
                                                  "weight_decay": opt_cfg.weight_decay if decay else 0.0})
        group["params"].append(param)
    return torch.optim.AdamW(list(groups.values()), lr=default_lr, betas=tuple(opt_cfg.betas), eps=opt_cfg.eps)


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """A permutation of `count` items seeded by seed + epoch (what emotionsumm's sampler draws in one process)."""
    import torch

    return torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


class TextRun:
    """The plain text recipe: MiniLM + [CLS] head on the recipe's data, optimizer and schedule."""

    def __init__(self, cfg: Any, steps: int) -> None:
        import torch
        from torch import nn
        from transformers import AutoModel, AutoTokenizer

        from emotionsumm.training.schedulers import cosine_with_warmup

        self.cfg, self.steps = cfg, steps
        data = cfg.data
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.pretrained)
        self.train_set = self.read(data.files.train)
        self.test_set = self.read(data.files.test)
        torch.manual_seed(cfg.seed)

        class Classifier(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = AutoModel.from_pretrained(cfg.model.pretrained)
                self.head = nn.Sequential(nn.Dropout(cfg.model.classifier_dropout),
                                          nn.Linear(self.encoder.config.hidden_size, len(data.class_names)))

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return self.head(hidden[:, 0])

        self.model = Classifier()
        group_lr = dict(cfg.group_lr or {})
        encoder_lr = group_lr.get("encoder", cfg.model.get("lr") or cfg.optimizer.lr)
        lr_of = {"encoder.": encoder_lr, "head.": group_lr.get("head", cfg.optimizer.lr)}
        self.optimizer = adamw(list(self.model.named_parameters()), lr_of, cfg.optimizer.lr, cfg.optimizer)
        self.scheduler = cosine_with_warmup(self.optimizer, steps, cfg.scheduler.warmup_steps,  # the same schedule
                                            cfg.scheduler.get("min_lr_ratio", 0.0))
        self.clip = cfg.trainer.gradient_clip_val

    def read(self, path: str) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        data = self.cfg.data
        enc = self.tokenizer([r[data.text_field] for r in rows], truncation=True, max_length=data.max_length)
        return [{"input_ids": ids, "label": int(r[data.label_field])} for ids, r in zip(enc["input_ids"], rows)]

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad to the batch's longest text."""
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["label"] for r in rows])}

    def loader(self, epoch: int = 0) -> Any:
        """Batches of a permutation seeded by seed + epoch: the very batches emotionsumm's trainer draws."""
        from torch.utils.data import DataLoader

        return DataLoader(self.train_set, self.cfg.data.batch_size, sampler=epoch_order(len(self.train_set),
                                                                                         self.cfg.seed, epoch),
                          collate_fn=self.collate)

    def loss(self, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(self.model(batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def test(self) -> dict[str, float]:
        import torch

        from emotionsumm.metrics.classification import classification_metrics

        classes = len(self.cfg.data.class_names)
        confusion = torch.zeros(classes, classes, dtype=torch.long)
        self.model.eval()
        size = self.cfg.data.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(self.test_set), size):
                batch = self.collate(self.test_set[start : start + size])
                predicted = self.model(batch["input_ids"], batch["attention_mask"]).argmax(-1)
                confusion += torch.bincount(batch["labels"] * classes + predicted,
                                            minlength=classes * classes).view(classes, classes)
        metrics = classification_metrics(confusion, list(self.cfg.data.class_names))
        return {k: metrics[k] for k in QUALITY["text"]}


class SummaryRun:
    """The plain DialogSum recipe: emotionsumm's data module (BPE, truncation, length buckets), BART and
    loss (`Seq2SeqPolicy`), the recipe's optimizer and schedule; ROUGE of greedy/beam summaries on the test subset."""

    def __init__(self, cfg: Any, steps: int) -> None:
        import torch
        from hydra.utils import instantiate

        from emotionsumm.config.builders import build_policy
        from emotionsumm.training.optim import param_groups
        from emotionsumm.training.schedulers import cosine_with_warmup

        self.cfg, self.steps = cfg, steps
        self.data = instantiate(cfg.data)
        self.data.setup(None, splits=("train", "test"))
        torch.manual_seed(cfg.seed)
        self.policy = build_policy(cfg, self.data)
        self.model = self.policy
        groups = param_groups(self.policy, cfg.optimizer.weight_decay, cfg.group_lr)  # the recipe's optimizer
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas),
                                           eps=cfg.optimizer.eps)
        self.scheduler = cosine_with_warmup(self.optimizer, steps, cfg.scheduler.warmup_steps,  # the same schedule
                                            cfg.scheduler.get("min_lr_ratio", 0.0))
        self.clip = cfg.trainer.gradient_clip_val
        self.train_set = self.data.dataset("train")

    def loader(self, epoch: int = 0) -> Any:
        """The data module's fixed length buckets in the order emotionsumm's trainer draws them (seed + epoch)."""
        from torch.utils.data import DataLoader

        buckets = self.data.train_batches()
        if buckets is None:
            return DataLoader(self.train_set, self.cfg.data.batch_size, collate_fn=self.data.collate,
                              sampler=epoch_order(len(self.train_set), self.cfg.seed, epoch))
        return (self.data.collate([self.train_set[i] for i in buckets[b]])
                for b in epoch_order(len(buckets), self.cfg.seed, epoch))

    def loss(self, batch: dict[str, Any]) -> Any:
        return self.policy(batch)

    def test(self) -> dict[str, float]:
        import torch

        from emotionsumm.metrics.rouge import rouge_scores

        test, size = self.data.dataset("test"), self.cfg.data.eval_batch_size
        predictions, references = [], []
        self.policy.eval()
        with torch.inference_mode():
            for start in range(0, len(test), size):
                batch = self.data.collate([test[i] for i in range(start, min(start + size, len(test)))])
                predictions += self.policy.summarize(batch)
                references += batch["references"]
        metrics = rouge_scores(predictions, references)
        return {k: metrics[k] for k in QUALITY["dialogsum"]}


def train_raw(run: Any) -> tuple[float, int]:
    """The hand-written loop: forward, backward, clip, step, schedule; (seconds, samples trained)."""
    import torch

    step, samples, epoch, start = 0, 0, 0, time.perf_counter()
    run.model.train()
    while step < run.steps:
        for batch in run.loader(epoch):
            loss = run.loss(batch)
            loss.backward()
            if run.clip:
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.clip)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            step, samples = step + 1, samples + len(batch["input_ids"])
            if step == run.steps:
                break
        epoch += 1
    return time.perf_counter() - start, samples


def train_lightning(run: Any) -> tuple[float, int]:
    """The same module, loss, optimizer and schedule through `lightning.Trainer` (no validation, no checkpoints)."""
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.samples = run.model, 0

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
            self.samples += len(batch["input_ids"])
            return run.loss(batch)

        def configure_optimizers(self) -> dict[str, Any]:
            return {"optimizer": run.optimizer, "lr_scheduler": {"scheduler": run.scheduler, "interval": "step"}}

    from torch.utils.data import DataLoader

    if isinstance(run, SummaryRun):  # Lightning wants a DataLoader: the buckets as a batch sampler
        buckets = run.data.train_batches()
        loader = DataLoader(run.train_set, batch_sampler=_Shuffled(buckets), collate_fn=run.data.collate) \
            if buckets is not None else run.loader()
    else:
        loader = run.loader()
    module = Module()
    run.model.train()  # from_pretrained returns eval mode, and Lightning keeps submodules' modes
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=run.steps, gradient_clip_val=run.clip or None,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start, module.samples


class _Shuffled:
    """Fixed batches (lists of indices) in a new random order every epoch: a batch sampler."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        import torch

        return iter([self.batches[b] for b in torch.randperm(len(self.batches)).tolist()])


def train_hf(run: Any) -> tuple[float, int]:
    """The same model, optimizer and schedule through `transformers.Trainer` (`Seq2SeqTrainer` for BART)."""
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

    summary = isinstance(run, SummaryRun)
    if summary:  # decoder inputs as DataCollatorForSeq2Seq gives them (HF's label smoother pops the labels)
        model = run.policy.model.net

        def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
            batch = run.data.collate(rows)
            decoder_inputs, labels = run.policy.targets(batch["labels"])
            return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                    "decoder_input_ids": decoder_inputs, "labels": labels}
    else:
        class WithLoss(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = run.model

            def forward(self, input_ids: Any, attention_mask: Any, labels: Any) -> dict[str, Any]:
                logits = self.inner(input_ids, attention_mask)
                return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

        model = WithLoss()
        collate = run.collate

    args_type, trainer_type = (Seq2SeqTrainingArguments, Seq2SeqTrainer) if summary else (TrainingArguments, Trainer)
    names = {f.name for f in fields(args_type)}
    grouped = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in names  # transformers 5
               else {"group_by_length": True}) if summary else {}
    args = args_type(output_dir=str(run.workdir / "hf"), max_steps=run.steps,
                     per_device_train_batch_size=run.cfg.data.batch_size, max_grad_norm=run.clip or 0.0,
                     logging_steps=run.cfg.trainer.log_every_n_steps, save_strategy="no", eval_strategy="no",
                     report_to="none", use_cpu=True, seed=run.cfg.seed, dataloader_num_workers=0,
                     remove_unused_columns=False, disable_tqdm=True, **grouped,
                     label_smoothing_factor=run.cfg.policy.label_smoothing if summary else 0.0)
    trainer = trainer_type(model=model, args=args, train_dataset=run.train_set, data_collator=collate,
                           optimizers=(run.optimizer, run.scheduler))
    counted = {"samples": 0}  # rows the model trained on (the DataLoader collates ahead)

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        counted["samples"] += len(kwargs["input_ids"]) if module.training else 0

    model.register_forward_pre_hook(count, with_kwargs=True)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, counted["samples"]


TRAINERS = {"raw": train_raw, "lightning": train_lightning, "hf": train_hf}


def child(contender: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one contender and return its timings and test quality."""
    import torch
    from common import compose_experiment

    torch.set_num_threads(spec["threads"])
    cfg = compose_experiment(spec["experiment"], spec["overrides"])
    run_type = TextRun if spec["task"] == "text" else SummaryRun
    run = run_type(cfg, spec["steps"])
    run.workdir = Path(spec["workdir"])  # scratch space (the HF Trainer's output_dir)
    train_s, samples = TRAINERS[contender](run)
    start = time.perf_counter()
    quality = run.test()
    return {"train_s": train_s, "samples": samples, "val_s": 0.0, "test_s": time.perf_counter() - start,
            "quality": quality}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=["text", "dialogsum"], default=["text", "dialogsum"])
    parser.add_argument("--contenders", nargs="+", choices=["emotionsumm", "raw", "lightning", "hf"],
                        default=["emotionsumm", "raw", "lightning", "hf"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every contender (OMP_NUM_THREADS)")
    parser.add_argument("--quick", action="store_true", help="few steps, small val/test subsets: < 3 min")
    parser.add_argument("--text-steps", type=int, help="optimizer steps of the text race (500; quick 20)")
    parser.add_argument("--dialogsum-steps", type=int, help="optimizer steps of the DialogSum race (500; quick 30)")
    parser.add_argument("--dialogsum-test", type=int, help="test dialogues scored (100; quick 6)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender (ABBA order); medians reported")
    parser.add_argument("--validate-raw", choices=["never", "final", "always"],
                        help="pass trainer.validate_raw to emotionsumm (default: as shipped; ignored if absent)")
    parser.add_argument("--workdir", help="where subsets and run dirs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (logs, run dirs, checkpoints)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT + json.dumps(child(args.child, json.loads(args.spec))), flush=True)
        return
    for name in ("threads", "repeats", "text_steps", "dialogsum_steps", "dialogsum_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
    needs = {"text": ["data/emotion_text/dair", "models/all-MiniLM-L6-v2"], "dialogsum": ["data/dialogsum"]}
    missing = [str(SHARED / p) for task in args.tasks for p in needs[task] if not (SHARED / p).exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)} (set EMOTIONSUMM_SHARED to the shared dir)")
    start = time.perf_counter()
    report = race(args)
    report["race_s"] = time.perf_counter() - start
    print(f"\nrace took {report['race_s']:.0f} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
