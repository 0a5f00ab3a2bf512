"""What projecting only the labelled summary positions saves in a BART training step.

    .venv/bin/python benchmarks/lm_head.py                 # experiment=dialogsum, 1 thread, ~2 min
    .venv/bin/python benchmarks/lm_head.py --batches 8 --repeats 1 -- trainer.max_steps=10

The seq2seq policy's loss runs the LM head (the vocabulary projection) on labelled target positions only; Hugging
Face's `BartForConditionalGeneration` projects every position, padding included. Both losses are timed (forward
and backward) on the same real training batches, taking turns batch by batch (ABBA), after one untimed round.
Prints the target padding share, both losses on the first batch (equal up to float rounding) and ms per step;
the last line is JSON with `ratio` (full / selected step time).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from throughput import Bench

from emotionsumm.policies.seq2seq import LABEL_PAD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="dialogsum")
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds over the batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = Bench(args.experiment, args.overrides)
    policy = bench.policy

    def full(batch: dict) -> torch.Tensor:  # every position through the head, as Hugging Face computes it
        inputs, labels = policy.targets(batch["labels"])
        logits = policy.model.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  decoder_input_ids=inputs, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=LABEL_PAD,
                               label_smoothing=policy.label_smoothing)

    losses = {"full": full, "selected": policy}
    batches = [next(bench.batches) for _ in range(args.batches)]
    labels = torch.cat([policy.targets(b["labels"])[1].flatten() for b in batches])
    with torch.no_grad():
        first = {name: float(loss(batches[0])) for name, loss in losses.items()}
    seconds = dict.fromkeys(losses, 0.0)
    for round_ in range(args.repeats + 1):  # round 0 warms up
        for i, batch in enumerate(batches):
            for name in (list(losses) if i % 2 else list(losses)[::-1]):
                start = time.perf_counter()
                losses[name](batch).backward()
                policy.zero_grad(set_to_none=True)
                if round_:
                    seconds[name] += time.perf_counter() - start
    steps = args.batches * args.repeats
    ms = {name: round(s / steps * 1e3, 1) for name, s in seconds.items()}
    result = {"experiment": args.experiment, "threads": args.threads, "steps": steps,
              "target_padding": round(float((labels == LABEL_PAD).float().mean()), 3),
              "loss_first_batch": first, "ms_per_step": ms, "ratio": round(seconds["full"] / seconds["selected"], 3)}
    print(f"target padding {result['target_padding']:.1%}; loss on the first batch {first}; "
          f"ms per step (forward + backward) {ms}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
