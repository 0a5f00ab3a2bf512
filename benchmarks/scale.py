"""How the framework's cost grows with the data (issue 29): set-up time, peak RSS, throughput and on-disk
caches of each modality on a synthetic corpus at 1x and 10x a base size (100x with `--full`).

    .venv/bin/python benchmarks/scale.py                         # 1x and 10x, all five modalities
    .venv/bin/python benchmarks/scale.py --full                  # and 100x
    .venv/bin/python benchmarks/scale.py --modalities text image --image-size 224 --work-dir /tmp/scale

Corpora (seeded, written once into `--work-dir`, in the formats users have): text = JSONL (text, label) per split;
audio = a folder of 1 s WAVs + labels.csv (path, label, speaker); image = class folders of grey JPEGs
(`S<subject>_<n>.jpg`, split by subject); features = a [N, 17] .npy per split plus one [T, 12] .npy per row,
referenced from a CSV manifest per split; dialogue = JSONL (dialogue, summary) per split. Each runs through its
shipped experiment (data.demo=false, the files above) with a small model: this measures the data path.

Per modality and size:
- `setup_s`: a fresh `python -m emotionsumm.train` (empty `paths.cache_dir`) from process start to its
  "training N optimizer steps" log line, which the trainer writes once data, model, optimizer and loaders are
  built, right before the first batch; `setup_warm_s`: a second run on the same cache. Both runs are
  `trainer.fast_dev_run=2` (two batches of train/val/test, no checkpoints), `data.num_workers=0`.
- `peak_rss_mb`: the largest peak RSS of those two training processes (each started from a small wrapper that
  reads `RUSAGE_CHILDREN`, so the benchmark's own memory is not counted).
- `samples_per_s`, `data_share` (`data.num_workers=4`) and `samples_per_s_w0`, `data_share_w0` (0 workers),
  with the experiment's shipped model (the default recipe; set-up runs use a small one):
  benchmarks/throughput.py's `Bench` (the trainer's `TrainLoader`, steps split into data wait / forward /
  backward / optimizer) in a fresh process, the two loaders taking turns step by step.
- `cache_mb`: the size of everything under `paths.cache_dir` after the runs (tokenizers, audio features, ...).
The last line is a JSON object: {modality: {size: {...}}, "threads", "command", "load_avg", "sizes"}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SETUP_DONE = re.compile(r"training \d+ optimizer steps")  # Trainer.fit, once everything is built
# the training process runs under this wrapper: RUSAGE_CHILDREN is then the peak RSS of the training process
# (plus, at most, the wrapper's own ~10 MB that the child inherits at spawn), not of this benchmark
RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
               "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
CONTRACT = ("setup_s", "setup_warm_s", "peak_rss_mb", "samples_per_s", "data_share")
SIZES = {"1x": 1, "10x": 10, "100x": 100}
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}

TEXT_CLASSES = ["sadness", "joy", "love", "anger", "fear", "surprise"]
TEXT_WORDS = {
    "sadness": "lonely tears miss gloomy lost grief empty".split(),
    "joy": "happy glad great sunny laugh cheerful fun".split(),
    "love": "dear adore sweet tender heart cherish warm".split(),
    "anger": "furious mad hate annoyed rage unfair shout".split(),
    "fear": "scared afraid nervous panic dark worried shaking".split(),
    "surprise": "wow unexpected suddenly shocked amazed sudden whoa".split(),
}
FILLER = "i feel so very today the this that was it and my friend we all just really about when".split()
IMAGE_CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
FEATURE_CLASSES = {"joy": (1, 1), "calm": (1, -1), "anger": (-1, 1), "sadness": (-1, -1)}
SYLLABLES = "ka lo mi ne ru ta vi so de pa gu li mo be ra ze fi no tu ca".split()


def vocabulary(seed: int, size: int = 5000) -> tuple[list[str], list[float]]:
    """`size` made-up words of 1-4 syllables with Zipf weights: a real corpus's long tail for the tokenizer."""
    rng = random.Random(seed)
    words = list(dict.fromkeys("".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(2 * size)))[:size]
    return words, [1 / (rank + 1) for rank in range(len(words))]


def sentence(rng: random.Random, words: tuple[list[str], list[float]], low: int, high: int) -> list[str]:
    """low..high words, a third of them from FILLER, the rest from the made-up vocabulary."""
    count = rng.randint(low, high)
    return rng.choices(FILLER, k=count // 3) + rng.choices(words[0], weights=words[1], k=count - count // 3)



def split_of(i: int, n: int) -> str:
    """train / val / test by position: the first 80 %, the next 10 %, the rest."""
    return "train" if i < 0.8 * n else "val" if i < 0.9 * n else "test"


def make_text(directory: Path, n: int, seed: int = 0) -> list[str]:
    """n labelled sentences as train/val/test.jsonl; the overrides that point `emotion_text` at them."""
    rng, vocab = random.Random(seed), vocabulary(seed)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i in range(n):
        label = TEXT_CLASSES[i % len(TEXT_CLASSES)]
        words = sentence(rng, vocab, 6, 24) + rng.choices(TEXT_WORDS[label], k=2)
        rng.shuffle(words)
        lines[split_of(i, n)].append(json.dumps({"text": " ".join(words), "label": label}))
    for split, rows in lines.items():
        (directory / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ["data.demo=false", *(f"data.files.{s}={directory / s}.jsonl" for s in SPLITS)]


def make_audio(directory: Path, n: int, seed: int = 0) -> list[str]:
    """n one-second 16 kHz WAVs (a class-pitched tone in noise) of 8 speakers + labels.csv (path, label, speaker)."""
    noise = np.random.default_rng(seed)
    (directory / "wav").mkdir(exist_ok=True)
    t = np.arange(16000) / 16000
    rows = ["path,label,speaker"]
    for i in range(n):
        label, speaker = TEXT_CLASSES[i % len(TEXT_CLASSES)], f"spk{(i // len(TEXT_CLASSES)) % 8}"
        pitch = 120 + 40 * TEXT_CLASSES.index(label) + 10 * int(speaker[3:])
        signal = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * noise.standard_normal(t.size)
        path = f"wav/{i:06d}.wav"
        with wave.open(str(directory / path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
        rows.append(f"{path},{label},{speaker}")
    (directory / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ["data.demo=false", f"data.root={directory}"]


def make_image(directory: Path, n: int, seed: int = 0, size: int = 48) -> list[str]:
    """n grey size x size JPEGs in class folders (`<class>/S<subject>_<n>.jpg`, 20 subjects, split by subject)."""
    from PIL import Image

    noise = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        label = IMAGE_CLASSES[i % len(IMAGE_CLASSES)]
        k = IMAGE_CLASSES.index(label)
        stripes = np.sin(2 * np.pi * (k + 1) * (xx + yy * (k % 3)))
        pattern = 128 + 60 * stripes + 25 * noise.standard_normal((size, size))
        folder = directory / label
        folder.mkdir(exist_ok=True)
        subject = (i // len(IMAGE_CLASSES)) % 20
        Image.fromarray(np.clip(pattern, 0, 255).astype(np.uint8), "L").save(folder / f"S{subject:02d}_{i:06d}.jpg",
                                                                              quality=90)
    return ["data.demo=false", f"data.root={directory}"]


def make_features(directory: Path, n: int, seed: int = 0) -> list[str]:
    """n rows as the feature demo stores them, with CSV manifests: a [N, 17] `visual_au_<split>.npy` per split
    (rows referenced as `#<row>`) and a [T, 12] `audio_lld/<n>.npy` per row."""
    noise = np.random.default_rng(seed)
    (directory / "audio_lld").mkdir(exist_ok=True)
    names = list(FEATURE_CLASSES)
    index = 0
    for split in SPLITS:
        count = sum(split_of(i, n) == split for i in range(n))
        visual = noise.standard_normal((count, 17)).astype(np.float32)
        rows = ["label,visual_au,audio_lld"]
        for row in range(count):
            label = names[index % len(names)]
            valence, arousal = FEATURE_CLASSES[label]
            visual[row, 3] += valence
            frames = noise.standard_normal((int(noise.integers(20, 61)), 12)).astype(np.float32)
            frames[:, 0] += arousal
            np.save(directory / f"audio_lld/{index:06d}.npy", frames)
            rows.append(f"{label},visual_au_{split}.npy#{row},audio_lld/{index:06d}.npy")
            index += 1
        np.save(directory / f"visual_au_{split}.npy", visual)
        (directory / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ["data.demo=false", *(f"data.files.{s}={directory / s}.csv" for s in SPLITS)]


def make_dialogue(directory: Path, n: int, seed: int = 0) -> list[str]:
    """n two-speaker dialogues with a one-sentence summary as train/val/test.jsonl."""
    rng, vocab = random.Random(seed), vocabulary(seed)
    places, things = ["the station", "a cafe", "the office", "the park"], ["tickets", "coffee", "a report", "a dog"]
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i in range(n):
        place, thing = rng.choice(places), rng.choice(things)
        turns = [f"#Person1#: Hi, are you going to {place}?", f"#Person2#: Yes, I need {thing}."]
        turns += [f"#Person{1 + t % 2}#: " + " ".join(sentence(rng, vocab, 4, 16))
                  for t in range(rng.randint(2, 8))]
        summary = f"#Person2# goes to {place} for {thing}."
        lines[split_of(i, n)].append(json.dumps({"dialogue": "\n".join(turns), "summary": summary}))
    for split, rows in lines.items():
        (directory / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ["data.demo=false", *(f"data.files.{s}={directory / s}.jsonl" for s in SPLITS)]


@dataclass
class Modality:
    """A modality's experiment, its corpus generator and base size, and the small model it trains."""

    experiment: str
    make: Callable[..., list[str]]
    base: int
    model: list[str] = field(default_factory=list)


MODALITIES = {
    "text": Modality("emotion_text", make_text, 2000, [
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64"]),
    "audio": Modality("emotion_audio", make_audio, 200, ["model.width=8", "model.depth=2"]),
    "image": Modality("emotion_image", make_image, 500, ["model.widths=[8,16,32]"]),
    "features": Modality("emotion_features_demo", make_features, 500, ["model.hidden=32"]),
    "dialogue": Modality("summarization", make_dialogue, 500, [
        "model.d_model=64", "model.encoder_layers=1", "model.decoder_layers=1", "model.attention_heads=4",
        "model.ffn_dim=128", "policy.max_new_tokens=8", "data.eval_batch_size=8", "data.max_eval_examples=16"]),
}


def corpus(name: str, work_dir: Path, n: int, image_size: int) -> list[str]:
    """Generate the corpus once (a `.done` file marks a complete one); its data overrides."""
    suffix = f"-{image_size}" if name == "image" and image_size != 48 else ""
    directory = work_dir / "data" / f"{name}-{n}{suffix}"
    done = directory / ".done"
    make = MODALITIES[name].make
    kwargs = {"size": image_size} if name == "image" else {}
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    overrides = make(directory, n, **kwargs)
    if name == "image" and image_size != 48:
        overrides.append(f"data.image_size={image_size}")
    done.write_text(json.dumps(overrides))
    return overrides


def tree_mb(path: Path) -> float:
    """Size of the files under path, MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def train_run(overrides: list[str], run_dir: Path, env: dict[str, str], timeout: float) -> dict[str, float]:
    """One `python -m emotionsumm.train` under the RSS wrapper: seconds to the set-up-done log line, peak RSS."""
    out_file = run_dir.parent / f"{run_dir.name}.stdout"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", RSS_WRAPPER, sys.executable, "-m", "emotionsumm.train", *overrides,
           f"hydra.run.dir={run_dir}"]
    setup, tail = None, []
    start = time.perf_counter()
    with open(out_file, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None
        for line in proc.stderr:
            if setup is None and SETUP_DONE.search(line):
                setup = time.perf_counter() - start
            tail = [*tail[-30:], line]
        rc = proc.wait(timeout)
    lines = out_file.read_text().split("\n")
    rss = [line.split()[1] for line in lines if line.startswith("maxrss_kb ")]
    if rc or setup is None or not rss:
        raise RuntimeError(f"training failed (exit {rc}): {' '.join(cmd[3:])}\n{''.join(tail)}")
    return {"setup_s": setup, "peak_rss_mb": int(rss[-1]) / 1024}


def throughput_run(experiment: str, overrides: list[str], env: dict[str, str], args: argparse.Namespace
                   ) -> dict[str, float]:
    """samples/s and data share with 4 and 0 loader workers, from throughput.py's `Bench` in a fresh process."""
    job = {"experiment": experiment, "overrides": overrides, "steps": args.steps, "warmup": args.warmup,
           "threads": args.threads, "workers": args.workers}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--throughput-child", json.dumps(job)],
                          capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode:
        raise RuntimeError(f"throughput run failed: {experiment} {' '.join(overrides)}\n{proc.stderr[-3000:]}")
    return parse_last_json(proc.stdout)


def throughput_child(job: dict[str, Any]) -> None:
    """(In a fresh process.) Two `Bench`es of one experiment, data.num_workers=<workers> and 0, in turn."""
    sys.path.insert(0, str(HERE))
    import torch
    from throughput import Bench

    torch.set_num_threads(job["threads"])
    benches = {key: Bench(job["experiment"], [*job["overrides"], f"data.num_workers={workers}"])
               for key, workers in (("", job["workers"]), ("_w0", 0))}
    for i in range(job["warmup"] + job["steps"]):
        for bench in benches.values():
            bench.step(count=i >= job["warmup"])
    out = {}
    for key, bench in benches.items():
        result = bench.result(job["steps"])
        out[f"samples_per_s{key}"], out[f"data_share{key}"] = result["samples_per_s"], result["share_data"]
    print(json.dumps(out))


def parse_last_json(stdout: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of a benchmark's output."""
    return json.loads([line for line in stdout.splitlines() if line.strip()][-1])


def assemble(results: dict[str, dict[str, dict[str, float]]], **extra: Any) -> dict[str, Any]:
    """The last line's object: {modality: {size: measurements}} plus run-wide keys; refuses a result missing
    a contract key (setup_s, setup_warm_s, peak_rss_mb, samples_per_s, data_share)."""
    for name, sizes in results.items():
        for size, row in sizes.items():
            missing = [key for key in CONTRACT if key not in row]
            if missing:
                raise ValueError(f"{name} {size}: no {', '.join(missing)} measured")
    return {**results, **extra}


def table(results: dict[str, dict[str, dict[str, float]]], workers: int) -> str:
    """The Markdown table of all measurements (`workers`: the loader workers of samples/s and data share)."""
    head = (f"| modality | size | examples | setup s | warm setup s | peak RSS MB | samples/s w0 | data share w0 "
            f"| samples/s w{workers} | data share w{workers} | cache MB |\n|" + "---|" * 11)
    rows = [f"| {name} | {size} | {r['examples']} | {r['setup_s']:.1f} | {r['setup_warm_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['samples_per_s_w0']:.0f} | {100 * r['data_share_w0']:.1f} % | "
            f"{r['samples_per_s']:.0f} | {100 * r['data_share']:.1f} % | {r['cache_mb']:.1f} |"
            for name, sizes in results.items() for size, r in sizes.items()]
    return "\n".join([head, *rows])


def measure(name: str, size: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    """Every measurement of one modality at one size."""
    modality, n = MODALITIES[name], MODALITIES[name].base * SIZES[size]
    data = corpus(name, args.work_dir, n, args.image_size)
    cache = args.work_dir / "cache" / f"{name}-{size}"
    shutil.rmtree(cache, ignore_errors=True)
    overrides = [f"experiment={modality.experiment}", *data, *modality.model, f"paths.cache_dir={cache}",
                 "baseline=null", "logger=none", "trainer.progress_bar=false"]
    run = [*overrides, "trainer.fast_dev_run=2", "data.num_workers=0"]
    runs = args.work_dir / "runs" / f"{name}-{size}"
    shutil.rmtree(runs, ignore_errors=True)
    cold = train_run(run, runs / "cold", env, args.timeout)
    warm = train_run(run, runs / "warm", env, args.timeout)
    # throughput of the default recipe: the shipped model (the data share of a step is relative to it)
    speed = throughput_run(modality.experiment, [o for o in overrides[1:] if o not in modality.model], env, args)
    row = {"examples": n, "setup_s": cold["setup_s"], "setup_warm_s": warm["setup_s"],
           "peak_rss_mb": max(cold["peak_rss_mb"], warm["peak_rss_mb"]), "peak_rss_warm_mb": warm["peak_rss_mb"],
           **speed, "cache_mb": tree_mb(cache)}
    print(f"{name} {size}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items()), file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=list(MODALITIES))
    parser.add_argument("--full", action="store_true", help="also 100x (long: tens of minutes, GBs of files)")
    parser.add_argument("--work-dir", type=Path, default=None, help="corpora, caches, run dirs (default: a temp dir"
                        " removed at the end); corpora already generated there are reused")
    parser.add_argument("--image-size", type=int, default=48, help="side of the generated images (e.g. 224)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps for samples/s")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (workers start, first batches)")
    parser.add_argument("--workers", type=int, default=4, help="data.num_workers of `samples_per_s`, `data_share`")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)),
                        help="torch/OpenMP threads of every process (OMP_NUM_THREADS)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--throughput-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.throughput_child:
        return throughput_child(json.loads(args.throughput_child))
    import tempfile

    temp = None if args.work_dir else tempfile.mkdtemp(prefix="emotionsumm-scale-")
    args.work_dir = (args.work_dir or Path(temp)).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
               p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p)}
    load_start = os.getloadavg()
    sizes = [size for size in SIZES if size != "100x" or args.full]
    try:
        results = {name: {size: measure(name, size, args, env) for size in sizes} for name in args.modalities}
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    print(table(results, args.workers))
    command = " ".join(["python benchmarks/scale.py", *sys.argv[1:]])
    print(json.dumps(assemble(results, threads=args.threads, command=command,
                              load_avg={"start": load_start, "end": os.getloadavg()},
                              sizes={name: MODALITIES[name].base for name in args.modalities}), sort_keys=True))


if __name__ == "__main__":
    main()
