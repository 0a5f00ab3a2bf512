"""Trainer overhead vs a hand-written PyTorch loop (and Lightning, if installed); EMA memory cost.

Every run trains a freshly seeded copy of one policy (small BERT, demo emotion data) with AdamW + cosine
warmup on the Trainer's batch order, so raw and Trainer runs end with bit-identical weights. `bare`: no
logger/EMA/checkpoints/validation; `full`: TensorBoard every 50 steps + EMA (raw loop: loss.item() and lr
to a SummaryWriter every 50 steps, EMA.update() every step).

Timing: a forward pre-hook on the policy stamps each step; only the `window` steps after `warmup` count
(set-up excluded), and every loop's window holds the same log steps (every 50) and epoch boundary. As
every run feeds the same batch at step i, the headline estimate (`step-min`, `ratio_*`) takes for each
step the fastest of the runs, then the mean over steps: this machine's noise comes in slow phases of
1-3 s (+50%) that only add time, and a per-step minimum removes them while keeping every bit of
deterministic per-step and log-step work. `run-median` (`ratio_*_median`) is the median over runs of
each run's mean step time; `ratio_*_paired` the median of per-run Trainer/raw ratios. Runs interleave
(loop order reversed on odd runs). One torch thread: on a shared 2-core box 2 threads swing 10x.

Memory: subprocesses run the bare Trainer (a larger model so the signal beats RSS noise) with EMA off and
on for peak RSS, and count the bytes of the EMA copy (params, buffers, grads) vs the policy's.
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
from collections.abc import Callable
from pathlib import Path

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
CONFIGS = {"bare": False, "full": True}  # config -> logging + EMA on
MEM_LAYERS = 4
Data = TextClassificationData


def make_data() -> Data:
    data = Data(files={"train": str(DEMO_DIR / "train.jsonl"), "val": None, "test": None}, demo=True,
                class_names=CLASSES, vocab_size=2000, max_length=64, batch_size=32)
    data.setup(None, splits=("train",))
    return data


def make_policy(data: Data, hidden: int, layers: int) -> ClassificationPolicy:
    torch.manual_seed(SEED)
    model = TextClassifier(**data.model_kwargs(), hidden_size=hidden, num_layers=layers, num_heads=4,
                           intermediate_size=2 * hidden, max_position_embeddings=128)
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
        for batch in DataLoader(dataset, data.batch_size, sampler=order, collate_fn=data.collate,
                                generator=gen):
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
    trainer = Trainer(run_dir=run_dir, max_steps=steps, max_epochs=-1, gradient_clip_val=None,
                      val_every_n_epochs=None, save_top_k=0, save_last=False, test_after_fit=False,
                      progress_bar=False, log_every_n_steps=LOG_EVERY, seed=SEED, accelerator="cpu",
                      logger=functools.partial(TensorBoardLogger, histogram_every_n_steps=0) if full else None,
                      ema=functools.partial(EMA, decay=EMA_DECAY) if (full if ema is None else ema) else None)
    schedule = functools.partial(cosine_with_warmup, warmup_steps=LR_WARMUP)
    trainer.fit(policy, data, make_optimizer(policy), schedule)
    return trainer


def lightning_run(data: Data, policy: nn.Module, steps: int, full: bool, run_dir: Path) -> None:
    """The same training through lightning.Trainer (EMA as a callback); only if Lightning is installed."""
    import lightning.pytorch as pl

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
    loader = DataLoader(dataset, data.batch_size, sampler=sampler, collate_fn=data.collate)
    pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, log_every_n_steps=LOG_EVERY,
               logger=pl.loggers.TensorBoardLogger(str(run_dir)) if full else False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False,
               use_distributed_sampler=False).fit(Module(), loader)


RUNNERS: dict[str, Callable[..., object]] = {"raw": raw_loop, "trainer": trainer_run}
if lightning is not None:
    RUNNERS["lightning"] = lightning_run


def timed_run(kind: str, full: bool, data: Data, args: argparse.Namespace) -> tuple[list[float], float]:
    """One run on a fresh seeded policy: (ms of each timed step, fingerprint of the final weights).

    Step i's time runs from its forward to the next forward: its update, logging, the next batch."""
    policy = make_policy(data, args.hidden, args.layers)
    stamps: list[float] = []
    policy.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))
    with tempfile.TemporaryDirectory() as tmp:
        RUNNERS[kind](data, policy, args.warmup + args.window + 1, full, Path(tmp))
    window = stamps[args.warmup : args.warmup + args.window + 1]
    steps = [(end - start) * 1e3 for start, end in zip(window, window[1:])]
    return steps, float(sum(p.detach().double().sum() for p in policy.parameters()))


def run_all(data: Data, args: argparse.Namespace) -> tuple[dict, bool]:
    """Interleaved runs: ({config: {loop: [[ms of each step] per run]}}, raw and Trainer weights equal)."""
    timed_run("raw", False, data, argparse.Namespace(**{**vars(args), "window": LOG_EVERY}))  # warm-up
    times: dict = {config: {k: [] for k in RUNNERS} for config in CONFIGS}
    same = True
    for run in range(args.runs):
        for config, full in CONFIGS.items():
            prints = {}
            for kind in list(RUNNERS)[:: 1 if run % 2 == 0 else -1]:
                steps, prints[kind] = timed_run(kind, full, data, args)
                times[config][kind].append(steps)
            same = same and prints["trainer"] == prints["raw"]
    return times, same


def summarize(times: dict, result: dict) -> None:
    """Step-min and run-median ms per step and their ratios to raw into `result`; print a table."""
    kinds = list(RUNNERS)
    print(f"{'config':<7}{'estimate':<12}" + "".join(f"{k + ' ms':>13}" for k in kinds)
          + "".join(f"{k + '/raw':>15}" for k in kinds[1:]) + "  target")
    for config in CONFIGS:
        runs = times[config]
        means = {k: [statistics.fmean(steps) for steps in v] for k, v in runs.items()}
        estimates = {"step-min": {k: statistics.fmean(map(min, zip(*v))) for k, v in runs.items()},
                     "run-median": {k: statistics.median(v) for k, v in means.items()}}
        for (estimate, ms), suffix in zip(estimates.items(), ("", "_median")):
            ratios = {k: ms[k] / ms["raw"] for k in kinds[1:]}
            result[f"ratio_{config}{suffix}"] = round(ratios["trainer"], 4)
            if "lightning" in ratios:
                result[f"ratio_{config}{suffix}_lightning"] = round(ratios["lightning"], 4)
            result[f"ms_{config}{suffix}"] = {k: round(v, 3) for k, v in ms.items()}
            verdict = "ok" if ratios["trainer"] <= TARGETS[config] else "MISSED"
            print(f"{config:<7}{estimate:<12}" + "".join(f"{ms[k]:>13.2f}" for k in kinds)
                  + "".join(f"{ratios[k]:>15.3f}" for k in kinds[1:]) + f"  <= {TARGETS[config]:.2f} {verdict}")
        paired = [t / r for t, r in zip(means["trainer"], means["raw"])]
        result[f"ratio_{config}_paired"] = round(statistics.median(paired), 4)
        result[f"target_{config}_met"] = result[f"ratio_{config}"] <= TARGETS[config]
        result.setdefault("runs_ms", {})[config] = {k: [round(m, 2) for m in v] for k, v in means.items()}


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
    policy = make_policy(data, args.mem_hidden, MEM_LAYERS)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_run(data, policy, args.mem_steps, False, Path(tmp), ema=ema_on)
    out = {"peak_rss_bytes": peak_rss(),
           "param_buffer_bytes": tensor_bytes([*policy.parameters(), *policy.buffers()])}
    if ema_on:
        tensors = [*trainer.ema.module.parameters(), *trainer.ema.module.buffers()]
        in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        in_optimizer |= {id(t) for s in trainer.optimizer.state.values() for t in s.values()}
        out["ema_grad_bytes"] = tensor_bytes([p.grad for p in trainer.ema.module.parameters()])
        out["ema_extra_bytes"] = tensor_bytes(tensors) + out["ema_grad_bytes"]
        out["ema_in_optimizer"] = any(id(t) in in_optimizer for t in tensors)
    return out


def measure_memory(args: argparse.Namespace) -> dict:
    """Run the memory child with EMA off and on (alternating; median peak RSS per setting)."""
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.mem_runs):
        for setting, results in runs.items():
            cmd = [sys.executable, __file__, "--memory-child", setting, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rss = {k: statistics.median(r["peak_rss_bytes"] for r in v) for k, v in runs.items()}
    mem = {k: v for k, v in runs["on"][0].items() if k != "peak_rss_bytes"}
    mem.update(peak_rss_ema_off_bytes=rss["off"], peak_rss_ema_on_bytes=rss["on"],
               rss_delta_bytes=rss["on"] - rss["off"])
    mem["ema_ratio"] = round(mem["ema_extra_bytes"] / mem["param_buffer_bytes"], 4)
    mem["rss_delta_ratio"] = round(mem["rss_delta_bytes"] / mem["param_buffer_bytes"], 3)
    m = {k: f"{v / 2**20:.1f} MiB" if k.endswith("bytes") and k != "ema_grad_bytes" else v for k, v in mem.items()}
    print(f"memory (hidden {args.mem_hidden}, {MEM_LAYERS} layers): params+buffers {m['param_buffer_bytes']}; "
          f"EMA copy {m['ema_extra_bytes']} (x{m['ema_ratio']}; its grads {m['ema_grad_bytes']} B; in the "
          f"optimizer: {m['ema_in_optimizer']})\npeak RSS: EMA off {m['peak_rss_ema_off_bytes']}, on "
          f"{m['peak_rss_ema_on_bytes']}, delta {m['rss_delta_bytes']} (x{m['rss_delta_ratio']} params+buffers)")
    return mem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--runs", type=int, default=5, help="timed runs per loop and config (>= 3)")
    add("--window", type=int, default=100, help="timed steps per run (a multiple of 50)")
    add("--warmup", type=int, default=10, help="untimed steps at the start of each run")
    add("--threads", type=int, default=1, help="torch threads (1 is robust on a shared box)")
    add("--hidden", type=int, default=128)
    add("--layers", type=int, default=2)
    add("--mem-hidden", type=int, default=768, help="memory runs: hidden size (4 layers)")
    add("--mem-steps", type=int, default=4, help="memory runs: optimizer steps")
    add("--mem-runs", type=int, default=1, help="memory runs: EMA off/on subprocess pairs")
    add("--skip-memory", action="store_true")
    add("--memory-child", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child == "on", args)))
        return
    if args.runs < 3 or args.window % LOG_EVERY:
        parser.error(f"need --runs >= 3 and --window a multiple of {LOG_EVERY}")
    start = time.perf_counter()
    times, same = run_all(make_data(), args)
    result: dict = {"runs": args.runs, "steps_per_run": args.warmup + args.window + 1,
                    "timed_steps": args.window, "threads": args.threads, "lightning": lightning is not None,
                    "model": {"hidden": args.hidden, "layers": args.layers}}
    summarize(times, result)
    result["same_weights"] = same
    print(f"raw and Trainer runs end with identical weights: {same}")
    if not args.skip_memory:
        result.update(measure_memory(args))
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
