"""Summarization throughput on CPU: fp32 vs dynamic int8, greedy vs beam 4, KV cache on vs off.

    .venv/bin/python benchmarks/generation.py --ckpt outputs/dialogsum/<run>/checkpoints/last.ckpt

One checkpoint, the same `--n` dialogues of a split (spread over the length range), the same
batches. For each decoding setting the fp32 and int8 models take turns batch by batch, so that
load on a shared machine slows both alike; summaries/s and generated tokens/s are totals over
the batches. Prints every setting, the int8/fp32 and cache on/off speed ratios, and the ROUGE
of each model (int8 - fp32 difference); the last line is a JSON object with all of it.

`--torchao` adds a third model quantised with torchao's maintained API (`quantize_` with
`Int8DynamicActivationInt8WeightConfig`), if torchao is importable (it is not a dependency):
the check of whether it delivers on CPU in eager mode, which decides what `quantize=int8` uses.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from emotionsumm.config.builders import load_for_inference
from emotionsumm.metrics.rouge import rouge_scores
from emotionsumm.models.quantize import quantize

DECODING = {"greedy": {"num_beams": 1}, "beam4": {"num_beams": 4}}


def batches(data: Any, split: str, n: int, batch_size: int) -> list[dict[str, Any]]:
    """`n` examples spread evenly over the split (evaluation datasets are sorted by length)."""
    dataset = data.dataset(split)
    n = min(n, len(dataset))
    picks = [round(i * (len(dataset) - 1) / max(1, n - 1)) for i in range(n)]
    return [data.collate([dataset[i] for i in picks[s : s + batch_size]]) for s in range(0, n, batch_size)]


def run_pair(models: dict[str, Any], inputs: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, dict]:
    """Generate every batch with each model in turn; time, count tokens, keep the texts."""
    stats = {name: {"seconds": 0.0, "tokens": 0, "summaries": 0, "texts": [], "refs": []} for name in models}
    for batch in inputs:
        for name, policy in models.items():
            start = time.perf_counter()
            out = policy.generate(batch, **options)
            stats[name]["seconds"] += time.perf_counter() - start
            stats[name]["tokens"] += int((out[:, 1:] != policy.model.pad_token_id).sum())
            stats[name]["summaries"] += len(out)
            stats[name]["texts"] += policy.decode(out)
            stats[name]["refs"] += batch["references"]
    return stats


def torchao_int8(policy: Any) -> Any:
    """The policy with its Linear layers quantised by torchao (dynamic int8 activations, int8 weights)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(policy.eval(), Int8DynamicActivationInt8WeightConfig())
    return policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="a summarization checkpoint")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=48, help="dialogues to summarise per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the checkpoint's policy setting")
    parser.add_argument("--min-new-tokens", type=int, default=0,
                        help="force this many tokens (e.g. = --max-new-tokens for an untrained checkpoint)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)")
    parser.add_argument("--torchao", action="store_true", help="also time torchao's int8 (needs torchao installed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    _, data, fp32 = load_for_inference(args.ckpt, splits=(args.split,))
    _, _, int8 = load_for_inference(args.ckpt, splits=())
    models = {"fp32": fp32, "int8": quantize(int8, "int8")}
    if args.torchao:
        models["int8_torchao"] = torchao_int8(load_for_inference(args.ckpt, splits=())[2])
    inputs = batches(data, args.split, args.n, args.batch_size)
    base = {"max_new_tokens": args.max_new_tokens or fp32.generation["max_new_tokens"],
            "min_new_tokens": args.min_new_tokens}
    run_pair(models, inputs[:1], {**base, "num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 0})  # warm-up

    results: dict[str, Any] = {"ckpt": args.ckpt, "n": sum(len(b["ids"]) for b in inputs),
                               "batch_size": args.batch_size, "threads": args.threads, **base, "settings": {}}
    for decoding, decode_options in DECODING.items():
        for cache in (True, False):
            stats = run_pair(models, inputs, {**base, **decode_options, "use_cache": cache})
            for name, s in stats.items():
                key = f"{name}/{decoding}/cache_{'on' if cache else 'off'}"
                rouge = rouge_scores(s["texts"], s["refs"])
                results["settings"][key] = {
                    "summaries_per_s": s["summaries"] / s["seconds"], "tokens_per_s": s["tokens"] / s["seconds"],
                    "seconds": s["seconds"], "rouge1": rouge["rouge1"], "rougeL": rouge["rougeL"]}
                print(f"{key:26s} {s['summaries'] / s['seconds']:7.2f} summaries/s {s['tokens'] / s['seconds']:8.1f} "
                      f"tokens/s  ROUGE-1 {rouge['rouge1']:5.2f}  ROUGE-L {rouge['rougeL']:5.2f}", flush=True)
    settings = results["settings"]
    ratios = {}
    for decoding in DECODING:
        for cache in ("on", "off"):
            f = settings[f"fp32/{decoding}/cache_{cache}"]
            for name in models:
                if name != "fp32":
                    q = settings[f"{name}/{decoding}/cache_{cache}"]
                    ratios[f"{name}_speedup/{decoding}/cache_{cache}"] = q["summaries_per_s"] / f["summaries_per_s"]
        for name in models:
            on, off = settings[f"{name}/{decoding}/cache_on"], settings[f"{name}/{decoding}/cache_off"]
            ratios[f"cache_speedup/{name}/{decoding}"] = on["summaries_per_s"] / off["summaries_per_s"]
        f = settings[f"fp32/{decoding}/cache_on"]
        for name in models:
            if name != "fp32":
                q = settings[f"{name}/{decoding}/cache_on"]
                ratios[f"rougeL_diff_{name}_minus_fp32/{decoding}"] = q["rougeL"] - f["rougeL"]
                ratios[f"rouge1_diff_{name}_minus_fp32/{decoding}"] = q["rouge1"] - f["rouge1"]
    for key, value in ratios.items():
        print(f"{key:40s} {value:+.3f}" if "diff" in key else f"{key:40s} {value:.2f}x")
    results["ratios"] = ratios
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
