"""Trainer overhead vs a hand-written PyTorch loop (and Lightning, if installed); EMA memory cost.

Every run trains a freshly seeded copy of the same policy (small BERT on the demo emotion data)
with AdamW + cosine warmup and the same batch order (sample order = randperm seeded by
seed + epoch, as the Trainer's sampler does), so raw and Trainer runs end with bit-identical
weights (`same_weights` checks it). Configs:
  bare: no logger, no EMA, no checkpoints, no validation;
  full: TensorBoard scalars every 50 steps + EMA (the raw loop: loss.item(), lr and
        SummaryWriter.add_scalar every 50 steps, EMA.update() every step).

Timing: a forward pre-hook on the policy (same in every loop) stamps each step. A run has
warmup + window + 1 steps and its step time is (stamp[warmup + window] - stamp[warmup]) / window:
set-up (loader, scheduler, SummaryWriter, EMA copy) and the first steps are excluded, while the
window (a multiple of 50) holds the same log steps and epoch boundary for every loop. Runs
are interleaved (run r: bare then full, loop order reversed on odd r, so drift hits all
loops alike); the ratio is median(Trainer) / median(raw) over the runs.

Memory: two subprocesses run the Trainer (bare, larger model so the signal beats RSS noise)
with EMA off and on and report peak RSS (getrusage ru_maxrss); the EMA-on one also counts the
bytes of the EMA copy (parameters, buffers and any gradients) against the policy's.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from emotionsumm.data.text import TextClassificationData
from emotionsumm.ema import EMA
from emotionsumm.loggers import TensorBoardLogger
from emotionsumm.models.text import TextClassifier
from emotionsumm.optim import param_groups
from emotionsumm.policies.classification import ClassificationPolicy
from emotionsumm.sampling import ShardedSampler
from emotionsumm.schedulers import cosine_with_warmup
from emotionsumm.trainer import Trainer

try:
    import lightning
except ImportError:
    lightning = None

CLASSES = ["sadness", "joy", "love", "anger", "fear", "surprise"]
DEMO_DIR = Path(__file__).resolve().parents[1] / ".cache" / "demo" / "text_emotion"
SEED, LOG_EVERY, LR_WARMUP, EMA_DECAY = 0, 50, 20, 0.999
TARGETS = {"bare": 1.03, "full": 1.10}
Runner = Callable[[TextClassificationData, nn.Module, int, bool, Path], None]


def make_data() -> TextClassificationData:
    data = TextClassificationData(files={"train": str(DEMO_DIR / "train.jsonl"), "val": None, "test": None},
                                  demo=True, class_names=CLASSES, vocab_size=2000, max_length=64, batch_size=32)
    data.setup(None, splits=("train",))
    return data


def make_policy(data: TextClassificationData, hidden: int, layers: int) -> ClassificationPolicy:
    torch.manual_seed(SEED)
    model = TextClassifier(**data.model_kwargs(), hidden_size=hidden, num_layers=layers, num_heads=4,
                           intermediate_size=2 * hidden)
    return ClassificationPolicy(model, **data.policy_kwargs())


def make_optimizer(policy: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(policy, weight_decay=0.01), lr=1e-3)


def raw_loop(data: TextClassificationData, policy: nn.Module, steps: int, full: bool, run_dir: Path) -> None:
    """The loop a user would write by hand (with EMA and TensorBoard when `full`)."""
    optimizer = make_optimizer(policy)
    scheduler = cosine_with_warmup(optimizer, total_steps=steps, warmup_steps=LR_WARMUP)
    ema = EMA(policy, decay=EMA_DECAY) if full else None
    writer = SummaryWriter(str(run_dir / "tb")) if full else None
    dataset, step, epoch = data.dataset("train"), 0, 0
    policy.train()
    while step < steps:
        gen = torch.Generator().manual_seed(SEED + epoch)
        order = torch.randperm(len(dataset), generator=gen).tolist()
        for batch in DataLoader(dataset, data.batch_size, sampler=order, collate_fn=data.collate, generator=gen):
            loss = policy(batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if ema is not None:
                ema.update()
            if writer is not None and step % LOG_EVERY == 0:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            if step == steps:
                break
        epoch += 1
    if writer is not None:
        writer.close()


def trainer_run(data: TextClassificationData, policy: nn.Module, steps: int, full: bool, run_dir: Path) -> Trainer:
    """The same training through emotionsumm's Trainer; returns it (its EMA is inspected)."""
    trainer = Trainer(run_dir=run_dir, max_steps=steps, max_epochs=-1, gradient_clip_val=None,
                      val_every_n_epochs=None, save_top_k=0, save_last=False, test_after_fit=False,
                      progress_bar=False, log_every_n_steps=LOG_EVERY, seed=SEED, accelerator="cpu",
                      logger=functools.partial(TensorBoardLogger, histogram_every_n_steps=0) if full else None,
                      ema=functools.partial(EMA, decay=EMA_DECAY) if full else None)
    trainer.fit(policy, data, make_optimizer(policy),
                functools.partial(cosine_with_warmup, warmup_steps=LR_WARMUP))
    return trainer


def lightning_run(data: TextClassificationData, policy: nn.Module, steps: int, full: bool, run_dir: Path) -> None:
    """The same training through lightning.Trainer (EMA as a callback); only if Lightning is installed."""
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = self.policy(batch)
            if full:
                self.log("train/loss", loss)
            return loss

        def configure_optimizers(self) -> dict:
            optimizer = make_optimizer(self.policy)
            schedule = cosine_with_warmup(optimizer, total_steps=steps, warmup_steps=LR_WARMUP)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    class EMACallback(pl.Callback):
        def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.ema = EMA(policy, decay=EMA_DECAY)

        def on_train_batch_end(self, *args: object) -> None:
            self.ema.update()

    dataset = data.dataset("train")
    loader = DataLoader(dataset, data.batch_size, sampler=ShardedSampler(len(dataset), shuffle=True, seed=SEED),
                        collate_fn=data.collate)
    pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, log_every_n_steps=LOG_EVERY,
               logger=pl.loggers.TensorBoardLogger(str(run_dir)) if full else False,
               callbacks=[EMACallback()] if full else [], enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, use_distributed_sampler=False).fit(Module(), loader)


RUNNERS: dict[str, Runner] = {"raw": raw_loop, "trainer": trainer_run}
if lightning is not None:
    RUNNERS["lightning"] = lightning_run


def timed_run(kind: str, full: bool, data: TextClassificationData, args: argparse.Namespace) -> tuple[float, float]:
    """One run on a fresh seeded policy: (steady seconds per step, fingerprint of the final weights)."""
    policy = make_policy(data, args.hidden, args.layers)
    stamps: list[float] = []
    policy.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))
    with tempfile.TemporaryDirectory() as tmp:
        RUNNERS[kind](data, policy, args.warmup + args.window + 1, full, Path(tmp))
    per_step = (stamps[args.warmup + args.window] - stamps[args.warmup]) / args.window
    return per_step, float(sum(p.detach().double().sum() for p in policy.parameters()))


def tensor_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of distinct tensors (shared storage counted once)."""
    return sum({t.data_ptr(): t.numel() * t.element_size() for t in tensors if t is not None}.values())


def memory_child(ema_on: bool, args: argparse.Namespace) -> dict:
    """(Subprocess) a bare Trainer run with EMA off/on: peak RSS and what the EMA copy holds."""
    data = make_data()
    policy = make_policy(data, args.mem_hidden, args.mem_layers)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run_dir=tmp, max_steps=args.mem_steps, max_epochs=-1, val_every_n_epochs=None,
                          save_top_k=0, save_last=False, test_after_fit=False, progress_bar=False,
                          accelerator="cpu", ema=functools.partial(EMA, decay=EMA_DECAY) if ema_on else None)
        trainer.fit(policy, data, make_optimizer(policy), None)
    out = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "param_buffer_bytes": tensor_bytes([*policy.parameters(), *policy.buffers()])}
    if ema_on:
        copy = trainer.ema.module
        opt_state = {id(t) for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)}
        opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        out["ema_grad_bytes"] = tensor_bytes([p.grad for p in copy.parameters()])
        out["ema_extra_bytes"] = tensor_bytes([*copy.parameters(), *copy.buffers()]) + out["ema_grad_bytes"]
        out["ema_in_optimizer"] = any(id(t) in opt_state | opt_params for t in [*copy.parameters(), *copy.buffers()])
    return out


def measure_memory(args: argparse.Namespace) -> dict:
    """Run the memory child with EMA off and on (alternating, median peak RSS per setting)."""
    results: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.mem_runs):
        for setting in results:
            cmd = [sys.executable, __file__, "--memory-child", setting, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[setting].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rss = {k: statistics.median(r["peak_rss_bytes"] for r in v) for k, v in results.items()}
    mem = {k: v for k, v in results["on"][0].items() if k != "peak_rss_bytes"}
    mem.update(peak_rss_ema_off_bytes=rss["off"], peak_rss_ema_on_bytes=rss["on"],
               rss_delta_bytes=rss["on"] - rss["off"])
    mem["ema_ratio"] = round(mem["ema_extra_bytes"] / mem["param_buffer_bytes"], 4)
    mem["rss_delta_ratio"] = round(mem["rss_delta_bytes"] / mem["param_buffer_bytes"], 3)
    return mem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per loop and config (>= 3)")
    parser.add_argument("--window", type=int, default=100, help="timed steps per run (a multiple of 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps at the start of each run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--mem-hidden", type=int, default=512)
    parser.add_argument("--mem-layers", type=int, default=4)
    parser.add_argument("--mem-steps", type=int, default=8)
    parser.add_argument("--mem-runs", type=int, default=1, help="EMA off/on subprocess pairs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child == "on", args)))
        return
    if args.runs < 3 or args.window % LOG_EVERY:
        parser.error(f"need --runs >= 3 and --window a multiple of {LOG_EVERY}")

    data = make_data()
    kinds, configs = list(RUNNERS), {"bare": False, "full": True}
    args_warm = argparse.Namespace(**{**vars(args), "window": 5})
    timed_run("raw", False, data, args_warm)  # one-off warm-up (allocator, lazy init), not reported
    times = {c: {k: [] for k in kinds} for c in configs}
    prints = {c: {k: [] for k in kinds} for c in configs}
    for run in range(args.runs):
        for config, full in configs.items():
            for kind in kinds if run % 2 == 0 else kinds[::-1]:
                seconds, fingerprint = timed_run(kind, full, data, args)
                times[config][kind].append(seconds * 1e3)
                prints[config][kind].append(fingerprint)

    result: dict = {"runs": args.runs, "steps_per_run": args.warmup + args.window + 1, "timed_steps": args.window,
                    "threads": args.threads, "model": {"hidden": args.hidden, "layers": args.layers},
                    "lightning": lightning is not None, "runs_ms": times}
    print(f"{'config':<8}" + "".join(f"{k + ' ms':>14}" for k in kinds)
          + "".join(f"{k + '/raw':>16}" for k in kinds[1:]) + f"{'target':>9}")
    for config in configs:
        med = {k: statistics.median(v) for k, v in times[config].items()}
        ratios = {k: med[k] / med["raw"] for k in kinds[1:]}
        result[f"ratio_{config}"] = round(ratios["trainer"], 4)
        result[f"ratio_{config}_paired"] = round(statistics.median(
            t / r for t, r in zip(times[config]["trainer"], times[config]["raw"])), 4)
        if lightning is not None:
            result[f"ratio_{config}_lightning"] = round(ratios["lightning"], 4)
        result[f"ms_{config}"] = {k: round(v, 3) for k, v in med.items()}
        result[f"target_{config}_met"] = ratios["trainer"] <= TARGETS[config]
        print(f"{config:<8}" + "".join(f"{med[k]:>14.2f}" for k in kinds)
              + "".join(f"{ratios[k]:>16.3f}" for k in kinds[1:]) + f"{'<= ' + str(TARGETS[config]):>9}")
    result["same_weights"] = all(p["trainer"] == p["raw"] for p in prints.values())
    print(f"raw and Trainer runs end with identical weights: {result['same_weights']}")

    if not args.skip_memory:
        mem = measure_memory(args)
        result["memory"] = mem
        mb = 2.0**20
        print(f"memory (hidden {args.mem_hidden}, {args.mem_layers} layers): params+buffers "
              f"{mem['param_buffer_bytes'] / mb:.1f} MiB; EMA copy {mem['ema_extra_bytes'] / mb:.1f} MiB "
              f"(x{mem['ema_ratio']}, grads {mem['ema_grad_bytes']} B, in optimizer: {mem['ema_in_optimizer']}); "
              f"peak RSS EMA off {mem['peak_rss_ema_off_bytes'] / mb:.1f} MiB, on "
              f"{mem['peak_rss_ema_on_bytes'] / mb:.1f} MiB, delta {mem['rss_delta_bytes'] / mb:.1f} MiB "
              f"(x{mem['rss_delta_ratio']} params+buffers)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
