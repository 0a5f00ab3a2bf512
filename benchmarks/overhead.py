"""Trainer overhead vs a hand-written PyTorch loop (and Lightning, if installed); EMA memory cost.

Each loop trains a freshly seeded copy of one policy on the same batches with AdamW + cosine warmup, in
two configs: `bare` (no logger/EMA/checkpoints) and `full` (TensorBoard every 50 steps + EMA, the raw loop
doing the same). The loops of a run go in lockstep (a thread each, taking turns one optimizer step at a
time) so that this noisy shared VM slows them alike; step time = mean over the `window` steps after
`warmup` (set-up excluded); ratio = median over runs (Trainer) / median (raw). Memory: subprocesses
report peak RSS with EMA off/on and the bytes of the EMA copy vs the policy's. See benchmarks/README.md.
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
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from emotionsumm.data.text import TextClassificationData as Data
from emotionsumm.models.text import TextClassifier
from emotionsumm.policies.classification import ClassificationPolicy
from emotionsumm.tracking.loggers import TensorBoardLogger
from emotionsumm.training.ema import EMA
from emotionsumm.training.optim import param_groups
from emotionsumm.training.sampling import ShardedSampler
from emotionsumm.training.schedulers import cosine_with_warmup
from emotionsumm.training.trainer import Trainer

try:
    import lightning
except ImportError:
    lightning = None

CLASSES = ["sadness", "joy", "love", "anger", "fear", "surprise"]
DEMO_DIR = Path(__file__).resolve().parents[1] / ".cache" / "demo" / "text_emotion"
SEED, LOG_EVERY, LR_WARMUP, EMA_DECAY = 0, 50, 20, 0.999
MEM_HIDDEN, MEM_LAYERS, MEM_STEPS = 768, 4, 4  # memory runs: bigger model so EMA's share beats RSS noise
CONFIGS, TARGETS = {"bare": False, "full": True}, {"bare": 1.03, "full": 1.10}  # full = logging + EMA


def make_data() -> Data:
    data = Data(files={"train": str(DEMO_DIR / "train.jsonl"), "val": None, "test": None}, demo=True,
                demo_dir=str(DEMO_DIR), class_names=CLASSES, vocab_size=2000, max_length=64, batch_size=32)
    data.setup(None, splits=("train",))
    return data


def make_policy(data: Data, hidden: int, layers: int) -> ClassificationPolicy:
    """Seeded; dropout 0 so that no step draws from the global RNG the lockstep threads share."""
    torch.manual_seed(SEED)
    model = TextClassifier(**data.model_kwargs(), hidden_size=hidden, num_layers=layers, num_heads=4,
                           intermediate_size=2 * hidden, max_position_embeddings=128, dropout=0.0,
                           classifier_dropout=0.0)
    return ClassificationPolicy(model, **data.policy_kwargs())


def make_optimizer(policy: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(policy, weight_decay=0.01), lr=1e-3)


def raw_loop(data: Data, policy: nn.Module, steps: int, full: bool, run_dir: Path) -> None:
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


def trainer_run(data: Data, policy: nn.Module, steps: int, full: bool, run_dir: Path,
                ema: bool | None = None) -> Trainer:
    """The same training through emotionsumm's Trainer (checkpoints off); `ema` overrides `full`."""
    ema = full if ema is None else ema
    trainer = Trainer(run_dir=run_dir, max_steps=steps, max_epochs=-1, gradient_clip_val=None,
                      val_every_n_epochs=None, save_top_k=0, save_last=False, test_after_fit=False,
                      progress_bar=False, log_every_n_steps=LOG_EVERY, seed=SEED, accelerator="cpu",
                      logger=functools.partial(TensorBoardLogger, histogram_every_n_steps=0) if full else None,
                      ema=functools.partial(EMA, decay=EMA_DECAY) if ema else None)
    trainer.fit(policy, data, make_optimizer(policy), functools.partial(cosine_with_warmup, warmup_steps=LR_WARMUP))
    return trainer


def lightning_run(data: Data, policy: nn.Module, steps: int, full: bool, run_dir: Path) -> None:
    """The same training through lightning.Trainer (only when Lightning is installed)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoard

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.policy, self.ema = policy, EMA(policy, decay=EMA_DECAY) if full else None

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = self.policy(batch)
            if full:
                self.log("train/loss", loss)
            return loss

        def on_train_batch_end(self, *args: object) -> None:
            if self.ema is not None:
                self.ema.update()

        def configure_optimizers(self) -> dict:
            opt = make_optimizer(self.policy)
            sched = cosine_with_warmup(opt, total_steps=steps, warmup_steps=LR_WARMUP)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    dataset = data.dataset("train")
    sampler = ShardedSampler(len(dataset), shuffle=True, seed=SEED)  # Lightning calls its set_epoch
    pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, log_every_n_steps=LOG_EVERY,
               logger=LightningTensorBoard(str(run_dir)) if full else False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
               ).fit(Module(), DataLoader(dataset, data.batch_size, sampler=sampler, collate_fn=data.collate))


RUNNERS: dict[str, Callable[..., object]] = {"raw": raw_loop, "trainer": trainer_run}
if lightning is not None:
    RUNNERS["lightning"] = lightning_run


class Lockstep:
    """Loops in threads take turns, one optimizer step each, in A B B A A B ... order (so no loop always
    follows the same one); records each loop's step times (ms)."""

    def __init__(self, order: list[str]) -> None:
        self.order, self.turn, self.cond = list(order), order[0], threading.Condition()
        self.ms: dict[str, list[float]] = {name: [] for name in order}
        self.started: dict[str, float] = {}

    def hook(self, name: str) -> Callable[..., None]:
        """Forward pre-hook: end the step, pass the turn, wait for it (a closure: EMA deep-copies hooks)."""

        def pre_forward(*_: object) -> None:
            now = time.perf_counter()
            with self.cond:
                if name in self.started:
                    self.ms[name].append((now - self.started[name]) * 1e3)
                    self._pass(name)
                self.cond.wait_for(lambda: self.turn == name)
            self.started[name] = time.perf_counter()

        return pre_forward

    def _pass(self, name: str) -> None:
        index = self.order.index(name) + 1
        if index == len(self.order):
            self.order.reverse()
            index = 0
        self.turn = self.order[index]
        self.cond.notify_all()

    def leave(self, name: str) -> None:
        """Drop a finished (or failed) loop; if it held the turn, the next loop gets it."""
        with self.cond:
            index = self.order.index(name)
            self.order.remove(name)
            if self.turn == name and self.order:
                self.turn = self.order[index % len(self.order)]
                self.cond.notify_all()


def timed_run(run: int, full: bool, data: Data, args: argparse.Namespace) -> dict[str, tuple[list[float], float]]:
    """All loops in lockstep on fresh seeded policies: {loop: (ms of each timed step, weights fingerprint)}."""
    kinds = list(RUNNERS)[:: -1 if run % 2 else 1]  # odd runs build, start and go in reverse order
    policies = {kind: make_policy(data, args.hidden, args.layers) for kind in kinds}
    lockstep, errors = Lockstep(kinds), []
    for kind, policy in policies.items():
        policy.register_forward_pre_hook(lockstep.hook(kind))

    def train(kind: str) -> None:
        torch.set_num_threads(args.threads)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                RUNNERS[kind](data, policies[kind], args.warmup + args.window + 1, full, Path(tmp))
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)
        finally:
            lockstep.leave(kind)

    threads = [threading.Thread(target=train, args=(kind,)) for kind in kinds]  # none in the main thread:
    for thread in threads:  # it measured 1% slower than a worker (glibc's main malloc arena?)
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {kind: (lockstep.ms[kind][args.warmup : args.warmup + args.window],
                   float(sum(p.detach().double().sum() for p in policy.parameters())))
            for kind, policy in policies.items()}


def benchmark(data: Data, args: argparse.Namespace, result: dict) -> None:
    """Timed runs (after a warm-up run); medians and ratios into `result`, printed as a table."""
    timed_run(0, False, data, argparse.Namespace(**{**vars(args), "window": LOG_EVERY}))
    times = {config: {kind: [] for kind in RUNNERS} for config in CONFIGS}
    for run in range(args.runs):
        for config, full in CONFIGS.items():
            runs = timed_run(run, full, data, args)
            for kind, (steps, _) in runs.items():
                times[config][kind].append(statistics.fmean(steps))
            result["same_weights"] = result.get("same_weights", True) and runs["trainer"][1] == runs["raw"][1]
    kinds = list(RUNNERS)
    print(f"{'config':<8}" + "".join(f"{k + ' ms':>13}" for k in kinds)
          + "".join(f"{k + '/raw':>15}" for k in kinds[1:]) + f"{'paired':>8}  target")
    for config, runs in times.items():
        ms = {kind: statistics.median(v) for kind, v in runs.items()}
        ratios = {kind: ms[kind] / ms["raw"] for kind in kinds[1:]}
        per_run = [t / r for t, r in zip(runs["trainer"], runs["raw"])]
        paired = statistics.median(per_run)
        met = ratios["trainer"] <= TARGETS[config]
        result.update({f"ratio_{config}": round(ratios["trainer"], 4), f"ratio_{config}_paired": round(paired, 4),
                       f"ratio_{config}_runs": [round(r, 4) for r in per_run],
                       f"ms_{config}": {k: round(v, 3) for k, v in ms.items()}, f"target_{config}_met": met})
        if "lightning" in ratios:
            result[f"ratio_{config}_lightning"] = round(ratios["lightning"], 4)
        print(f"{config:<8}" + "".join(f"{ms[k]:>13.2f}" for k in kinds) + "".join(f"{ratios[k]:>15.3f}" for k in
              kinds[1:]) + f"{paired:>8.3f}  <= {TARGETS[config]} {'ok' if met else 'MISSED'}")
    result["runs_ms"] = {c: {k: [round(m, 2) for m in v] for k, v in runs.items()} for c, runs in times.items()}
    print(f"raw and Trainer runs end with identical weights: {result['same_weights']}")


def tensor_bytes(tensors: list[torch.Tensor | None]) -> int:
    """Bytes of distinct tensors (shared storage counted once)."""
    return sum({t.data_ptr(): t.numel() * t.element_size() for t in tensors if t is not None}.values())


def peak_rss() -> int:
    """Peak RSS: VmHWM on Linux, else ru_maxrss (which, after vfork + exec, includes the parent's peak)."""
    status = Path("/proc/self/status")
    if status.is_file() and "VmHWM:" in (text := status.read_text()):
        return int(text.split("VmHWM:")[1].split()[0]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def memory_child(ema_on: bool, args: argparse.Namespace) -> dict:
    """(Subprocess) a bare Trainer run with EMA off/on: peak RSS and what the EMA copy holds."""
    data = make_data()
    policy = make_policy(data, MEM_HIDDEN, MEM_LAYERS)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_run(data, policy, MEM_STEPS, False, Path(tmp), ema=ema_on)
    out = {"peak_rss_bytes": peak_rss(), "param_buffer_bytes": tensor_bytes([*policy.parameters(), *policy.buffers()])}
    if ema_on:
        copy = trainer.ema.module
        tensors = [*copy.parameters(), *copy.buffers()]
        in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        in_optimizer |= {id(t) for s in trainer.optimizer.state.values() for t in s.values()}
        out["ema_grad_bytes"] = tensor_bytes([p.grad for p in copy.parameters()])
        out["ema_extra_bytes"] = tensor_bytes(tensors) + out["ema_grad_bytes"]
        out["ema_in_optimizer"] = any(id(t) in in_optimizer for t in tensors)
    return out


def measure_memory(args: argparse.Namespace, result: dict) -> None:
    """Memory children with EMA off and on (alternating; median peak RSS of each) into `result`; print."""
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.mem_runs):
        for setting, outs in runs.items():
            cmd = [sys.executable, __file__, "--memory-child", setting, *sys.argv[1:]]
            outs.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1]))
    rss = {k: statistics.median(out["peak_rss_bytes"] for out in v) for k, v in runs.items()}
    mem = {k: v for k, v in runs["on"][0].items() if k != "peak_rss_bytes"}
    mem.update(peak_rss_ema_off_bytes=rss["off"], peak_rss_ema_on_bytes=rss["on"],
               rss_delta_bytes=rss["on"] - rss["off"],
               ema_ratio=round(mem["ema_extra_bytes"] / mem["param_buffer_bytes"], 4),
               rss_delta_ratio=round((rss["on"] - rss["off"]) / mem["param_buffer_bytes"], 3))
    result.update(mem)
    mib = {k: f"{v / 2**20:.1f} MiB" for k, v in mem.items() if k.endswith("bytes")}
    print(f"memory (hidden {MEM_HIDDEN}, {MEM_LAYERS} layers): params+buffers {mib['param_buffer_bytes']}; "
          f"EMA copy {mib['ema_extra_bytes']} (x{mem['ema_ratio']}; its grads {mem['ema_grad_bytes']} B; shared with "
          f"the optimizer: {mem['ema_in_optimizer']})\npeak RSS: EMA off {mib['peak_rss_ema_off_bytes']}, on "
          f"{mib['peak_rss_ema_on_bytes']}, delta {mib['rss_delta_bytes']} (x{mem['rss_delta_ratio']} params+buffers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--runs", type=int, default=5, help="timed runs per loop and config (>= 3)")
    add("--window", type=int, default=100, help="timed steps per run (a multiple of 50)")
    add("--warmup", type=int, default=10, help="untimed steps at the start of each run")
    add("--threads", type=int, default=1, help="torch threads (1 is robust on a shared box)")
    add("--hidden", type=int, default=128)
    add("--layers", type=int, default=2)
    add("--mem-runs", type=int, default=1, help="memory runs: EMA off/on subprocess pairs")
    add("--skip-memory", action="store_true")
    add("--memory-child", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child == "on", args), separators=(",", ":")))
        return
    if args.runs < 3 or args.window % LOG_EVERY:
        parser.error(f"need --runs >= 3 and --window a multiple of {LOG_EVERY}")
    start = time.perf_counter()
    result: dict = {"runs": args.runs, "steps_per_run": args.warmup + args.window + 1, "timed_steps": args.window,
                    "threads": args.threads, "lightning": lightning is not None,
                    "model": {"hidden": args.hidden, "layers": args.layers}}
    benchmark(make_data(), args, result)
    if not args.skip_memory:
        measure_memory(args, result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
