"""Training throughput (samples/s) of each modality's default model, and where a step's time goes.

    .venv/bin/python benchmarks/throughput.py                       # the four emotion demo experiments
    .venv/bin/python benchmarks/throughput.py --experiments emotion_audio_emodb emotion_image_ckplus

For each experiment: its data (training split), model, policy and AdamW over `param_groups`, exactly
as `train` builds them; then `--steps` timed training steps after `--warmup`, each split into the
four phases of a step: fetching the batch from the DataLoader (read, augment, collate), forward,
backward, optimizer step. Experiments take turns step by step, so the load of a shared machine hits
them alike. samples/s = batch size x steps / total time; the phase shares say where the time goes.
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import torch
from common import compose_experiment, timed
from hydra.utils import instantiate

from emotionsumm.optim import param_groups
from emotionsumm.runtime import build_policy

PHASES = ("data", "forward", "backward", "optimizer")
DEFAULT = ["emotion_text", "emotion_audio", "emotion_image", "emotion_fusion"]


class Bench:
    """One experiment's training step, timed phase by phase."""

    def __init__(self, experiment: str, overrides: list[str]) -> None:
        cfg = compose_experiment(experiment, overrides)
        self.name = experiment
        self.data = instantiate(cfg.data)
        self.data.setup(None, ("train",))
        torch.manual_seed(0)
        self.policy = build_policy(cfg, self.data).train()
        self.optimizer = torch.optim.AdamW(param_groups(self.policy, 0.01), lr=1e-4)
        self.params = sum(p.numel() for p in self.policy.parameters())
        self.batches = self._forever()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.samples = 0

    def _forever(self) -> Iterator[dict[str, torch.Tensor]]:
        groups = self.data.train_batches()  # fixed batches (length buckets) when the data has them
        while True:
            batching = ({"batch_sampler": [groups[i] for i in torch.randperm(len(groups)).tolist()]}
                        if groups is not None else
                        {"batch_size": self.data.batch_size, "shuffle": True, "drop_last": True})
            yield from torch.utils.data.DataLoader(self.data.dataset("train"), collate_fn=self.data.collate,
                                                   num_workers=self.data.num_workers, **batching)

    def step(self, count: bool) -> None:
        t_data, batch = timed(lambda: next(self.batches))
        t_fwd, loss = timed(lambda: self.policy(batch))
        t_bwd, _ = timed(loss.backward)

        def update() -> None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        t_opt, _ = timed(update)
        if count:
            for phase, t in zip(PHASES, (t_data, t_fwd, t_bwd, t_opt)):
                self.seconds[phase] += t
            self.samples += len(batch["labels"])

    def result(self, steps: int) -> dict[str, Any]:
        total = sum(self.seconds.values())
        return {"samples_per_s": self.samples / total, "ms_per_step": 1000 * total / steps,
                "batch_size": self.data.batch_size, "params": self.params,
                **{f"share_{p}": self.seconds[p] / total for p in PHASES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=DEFAULT)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per experiment")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, caches)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust on a shared box)")
    parser.add_argument("overrides", nargs="*", help="overrides for every experiment, e.g. data.batch_size=64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    benches = [Bench(name, args.overrides) for name in args.experiments]
    for i in range(args.warmup + args.steps):
        for bench in benches:
            bench.step(count=i >= args.warmup)
    results = {}
    print(f"{args.steps} steps each after {args.warmup} warm-up, {args.threads} torch thread(s), interleaved")
    print(f"{'experiment':24s} {'samples/s':>10s} {'ms/step':>8s} {'batch':>5s} {'params':>9s}  "
          + "  ".join(f"{p:>9s}" for p in PHASES))
    for bench in benches:
        r = results[bench.name] = bench.result(args.steps)
        print(f"{bench.name:24s} {r['samples_per_s']:10.1f} {r['ms_per_step']:8.1f} {r['batch_size']:5d} "
              f"{r['params']:9d}  " + "  ".join(f"{100 * r[f'share_{p}']:8.1f}%" for p in PHASES))
    print(json.dumps({"threads": args.threads, "steps": args.steps, "results": results}, sort_keys=True))


if __name__ == "__main__":
    main()
