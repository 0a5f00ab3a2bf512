"""Speed-up of the audio feature cache (`data.cache_features=true`) on an experiment's data.

Composes the experiment's data config (EmoDB when the shared data is there, else the demo set) and
times, in a fresh temporary cache dir: set-up without the cache (the normaliser pass decodes the
training files), set-up with a cold cache (computes and writes every file's full-length log-mel)
and with a warm one (loads them); then one pass over the training DataLoader (what an epoch costs
the data side: decode + resample + log-mel per item without the cache, crop + augment + normalise
with it) and, with `--model`, a full training epoch with the experiment's model. Each timing is
the median of `--runs`, uncached and cached runs alternating so that the load of a shared machine
hits both alike. Ratio = uncached / cached. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import compose_experiment, timed
from hydra.utils import instantiate
from omegaconf import DictConfig


def build(cfg: DictConfig, cache_dir: Path | None) -> Any:
    """The experiment's data object, set up, with the cache on (in `cache_dir`) or off."""
    data = instantiate(cfg.data, cache_features=cache_dir is not None,
                       cache_dir=str(cache_dir) if cache_dir is not None else None)
    data.setup(None, ("train",))
    return data


def epoch(data: Any, step: Callable[[dict[str, torch.Tensor]], None] | None = None) -> None:
    """One shuffled pass over the training split (data only, or with a training step per batch)."""
    loader = torch.utils.data.DataLoader(data.dataset("train"), batch_size=data.batch_size, shuffle=True,
                                         collate_fn=data.collate, num_workers=data.num_workers)
    for batch in loader:
        if step is not None:
            step(batch)


def trainer_step(cfg: DictConfig, data: Any) -> Callable[[dict[str, torch.Tensor]], None]:
    """A forward/backward/AdamW step of the experiment's model under its classification policy."""
    torch.manual_seed(0)
    model = instantiate(cfg.model, **data.model_kwargs())
    policy = instantiate(cfg.policy, model=model, **data.policy_kwargs())
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = policy(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=None, help="default: emotion_audio_emodb if its data exists, "
                        "else emotion_audio")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement (median)")
    parser.add_argument("--model", action="store_true", help="also time a full training epoch with the model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust on a shared box)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.features.n_mels=40")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    experiment = args.experiment
    if experiment is None:
        probe = compose_experiment("emotion_audio_emodb", args.overrides)
        experiment = "emotion_audio_emodb" if Path(probe.data.root).is_dir() else "emotion_audio"
    cfg = compose_experiment(experiment, args.overrides)
    if cfg.data.get("demo"):
        build(cfg, None)  # generate the demo set first, outside the timings
    result: dict[str, Any] = {"experiment": experiment, "runs": args.runs, "threads": args.threads}
    times: dict[str, list[float]] = {k: [] for k in ("setup_uncached", "setup_cold_cache", "setup_warm_cache",
                                                      "epoch_data_uncached", "epoch_data_cached",
                                                      "epoch_train_uncached", "epoch_train_cached")}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(run)
            t, plain = timed(lambda: build(cfg, None))
            times["setup_uncached"].append(t)
            t, _ = timed(lambda tmp=tmp: build(cfg, Path(tmp)))
            times["setup_cold_cache"].append(t)
            t, cached = timed(lambda tmp=tmp: build(cfg, Path(tmp)))
            times["setup_warm_cache"].append(t)
            assert cached.cache.hits == len(cached.dataset("train")) and cached.cache.misses == 0
            assert torch.equal(cached.state_dict()["normalizer"]["mean"], plain.state_dict()["normalizer"]["mean"])
            for name, data in (("uncached", plain), ("cached", cached))[:: 1 if run % 2 == 0 else -1]:
                times[f"epoch_data_{name}"].append(timed(lambda data=data: epoch(data))[0])
                if args.model:
                    step = trainer_step(cfg, data)
                    times[f"epoch_train_{name}"].append(timed(lambda data=data, step=step: epoch(data, step))[0])
    med = {k: round(statistics.median(v), 3) for k, v in times.items() if v}
    result.update({f"{k}_s": v for k, v in med.items()})
    result["train_clips"] = len(plain.dataset("train"))
    result["ratio_epoch_data"] = round(med["epoch_data_uncached"] / med["epoch_data_cached"], 2)
    result["ratio_setup_warm_vs_cold"] = round(med["setup_cold_cache"] / med["setup_warm_cache"], 2)
    print(f"{experiment}: {result['train_clips']} training clips, median of {args.runs} runs, "
          f"{args.threads} torch thread(s)")
    print(f"set-up: uncached {med['setup_uncached']:.2f} s, cold cache {med['setup_cold_cache']:.2f} s, "
          f"warm cache {med['setup_warm_cache']:.2f} s (x{result['ratio_setup_warm_vs_cold']} cold/warm)")
    for name in ("uncached", "cached"):
        result[f"clips_per_s_{name}"] = round(result["train_clips"] / med[f"epoch_data_{name}"], 1)
    print(f"one pass over the training data: uncached {med['epoch_data_uncached']:.2f} s "
          f"({result['clips_per_s_uncached']} clips/s), cached {med['epoch_data_cached']:.2f} s "
          f"({result['clips_per_s_cached']} clips/s) -> speed-up x{result['ratio_epoch_data']}")
    if args.model:
        result["ratio_epoch_train"] = round(med["epoch_train_uncached"] / med["epoch_train_cached"], 2)
        print(f"one training epoch with the model: uncached {med['epoch_train_uncached']:.2f} s, cached "
              f"{med['epoch_train_cached']:.2f} s -> speed-up x{result['ratio_epoch_train']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
