"""Training throughput (samples/s) of each modality's default model, where a step's time goes, and
what `trainer.compile` gains.

    .venv/bin/python benchmarks/throughput.py                       # the four emotion demo experiments
    .venv/bin/python benchmarks/throughput.py --experiments emotion_audio_emodb emotion_image_ckplus
    .venv/bin/python benchmarks/throughput.py --compile --experiments emotion_text emotion_audio emotion_image \
        bart_tiny                                                     # eager vs torch.compile (inductor)

For each experiment: its data (training split, through the trainer's own `TrainLoader`: persistent,
prefetching workers with `data.num_workers` > 0), model, policy and the recipe's optimizer over `param_groups`,
exactly as `train` builds them; then `--steps` timed training steps after `--warmup`, each split into the four
phases of a step: waiting for the batch from the DataLoader (read, augment, collate), forward, backward,
optimizer step. Experiments take turns step by step, so the load of a shared machine hits them alike.
samples/s = batch size x steps / total time; the phase shares say where the time goes (`data` is the
share the model waits for its input).

With `--compile` every experiment also runs compiled (`torch.compile` of the policy, as
`trainer.compile=true` does), in turn with its eager twin: the warm-up steps hold the compilation, so
`compile_s` = compiled minus eager time of the warm-up steps, and `speedup_at_<N>` = eager time over
compiled time including `compile_s` for a run of `--recipe-steps` N steps (> 1: compiling pays off).
`bart_tiny` is the summarization recipe with a 2-layer, 64-wide BART. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from typing import Any

import torch
from common import compose_experiment, timed
from hydra.utils import instantiate

from emotionsumm.config.builders import build_policy
from emotionsumm.training.loaders import TrainLoader
from emotionsumm.training.optim import param_groups

PHASES = ("data", "forward", "backward", "optimizer")
DEFAULT = ["emotion_text", "emotion_audio", "emotion_image", "emotion_fusion"]
PRESETS = {  # name -> (experiment, overrides)
    "bart_tiny": ("summarization", ["model.d_model=64", "model.encoder_layers=2", "model.decoder_layers=2",
                                    "model.attention_heads=4", "model.ffn_dim=128"]),
}


class Bench:
    """One experiment's training step (eager or compiled), timed phase by phase."""

    def __init__(self, name: str, overrides: list[str], compiled: bool = False) -> None:
        experiment, preset = PRESETS.get(name, (name, []))
        cfg = compose_experiment(experiment, [*preset, *overrides])
        self.name = f"{name} (compiled)" if compiled else name
        self.data = instantiate(cfg.data)
        self.data.setup(None, ("train",))
        torch.manual_seed(0)
        self.policy = build_policy(cfg, self.data).train()
        self.forward = torch.compile(self.policy) if compiled else self.policy
        self.optimizer = instantiate(cfg.optimizer)(param_groups(  # the recipe's optimizer, as `train` builds it
            self.policy, cfg.optimizer.get("weight_decay", 0.0), cfg.get("group_lr")))
        self.params = sum(p.numel() for p in self.policy.parameters())
        self.batches = self._forever()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.warmup_seconds = 0.0
        self.samples = 0

    def _forever(self) -> Iterator[dict[str, torch.Tensor]]:
        loader = TrainLoader(self.data, self.data.dataset("train"), seed=0, pin_memory=False)
        for epoch in itertools.count():
            yield from loader.epoch(epoch, 0, seed=0)

    def step(self, count: bool) -> None:
        t_data, batch = timed(lambda: next(self.batches))
        t_fwd, loss = timed(lambda: self.forward(batch))
        t_bwd, _ = timed(loss.backward)

        def update() -> None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        t_opt, _ = timed(update)
        if not count:
            self.warmup_seconds += t_data + t_fwd + t_bwd + t_opt
            return
        for phase, t in zip(PHASES, (t_data, t_fwd, t_bwd, t_opt)):
            self.seconds[phase] += t
        self.samples += len(batch["labels"])

    def result(self, steps: int) -> dict[str, Any]:
        total = sum(self.seconds.values())
        return {"samples_per_s": self.samples / total, "ms_per_step": 1000 * total / steps,
                "batch_size": self.data.batch_size, "params": self.params, "warmup_s": self.warmup_seconds,
                **{f"share_{p}": self.seconds[p] / total for p in PHASES}}


def compile_gain(eager: dict[str, Any], compiled: dict[str, Any], recipe_steps: int) -> dict[str, float]:
    """Compiled vs eager: steady-state speed-up, compile time, and the speed-up of a whole run of `recipe_steps`."""
    compile_s = max(0.0, compiled["warmup_s"] - eager["warmup_s"])
    eager_run = recipe_steps * eager["ms_per_step"] / 1000
    compiled_run = compile_s + recipe_steps * compiled["ms_per_step"] / 1000
    return {"speedup": compiled["samples_per_s"] / eager["samples_per_s"], "compile_s": compile_s,
            f"speedup_at_{recipe_steps}": eager_run / compiled_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=DEFAULT, help=f"experiments or presets {list(PRESETS)}")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per experiment")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, caches, compiling)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust on a shared box)")
    parser.add_argument("--compile", action="store_true", help="also run each experiment with torch.compile")
    parser.add_argument("--recipe-steps", type=int, default=500, help="run length for the compile pay-off")
    parser.add_argument("overrides", nargs="*", help="overrides for every experiment, e.g. data.num_workers=2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    benches = [Bench(name, args.overrides, compiled) for name in args.experiments
               for compiled in ((False, True) if args.compile else (False,))]
    for i in range(args.warmup + args.steps):
        for bench in benches:
            bench.step(count=i >= args.warmup)
    results = {}
    print(f"{args.steps} steps each after {args.warmup} warm-up, {args.threads} torch thread(s), interleaved")
    print(f"{'experiment':28s} {'samples/s':>10s} {'ms/step':>8s} {'batch':>5s} {'params':>9s}  "
          + "  ".join(f"{p:>9s}" for p in PHASES))
    for bench in benches:
        r = results[bench.name] = bench.result(args.steps)
        print(f"{bench.name:28s} {r['samples_per_s']:10.1f} {r['ms_per_step']:8.1f} {r['batch_size']:5d} "
              f"{r['params']:9d}  " + "  ".join(f"{100 * r[f'share_{p}']:8.1f}%" for p in PHASES))
    gains = {}
    if args.compile:
        print(f"\ncompiled vs eager: {'speed-up':>9s} {'compile s':>10s} {f'whole {args.recipe_steps} steps':>16s}")
        for name in args.experiments:
            gain = gains[name] = compile_gain(results[name], results[f"{name} (compiled)"], args.recipe_steps)
            print(f"{name:28s} {gain['speedup']:9.2f} {gain['compile_s']:10.1f} "
                  f"{gain[f'speedup_at_{args.recipe_steps}']:16.2f}")
    print(json.dumps({"threads": args.threads, "steps": args.steps, "results": results, "compile": gains},
                     sort_keys=True))


if __name__ == "__main__":
    main()
