"""Small real feature sets with speaker-independent splits, built from ../shared, for the feature-fusion recipes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_sets.py                 # -> .cache/feature_sets/
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_sets.py --sets emodb    # only EmoDB (seconds)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_sets.py --sets ckplus   # only CK+ (seconds)

`emodb` (428 clips, 8 speakers, 7 emotions): two per-clip views of each EmoDB clip, as a corpus that ships
features rather than media would give them:
- `logmel` [128]: mean and std over frames of 64 log-mels (16 kHz, 25 ms windows, 10 ms hops);
- `prosody` [105]: eGeMAPS-style functionals (mean, std, 10th/50th/90th percentile) of 21 frame-level
  descriptors: log energy, zero-crossing rate, spectral centroid, bandwidth, roll-off, flatness and flux,
  F0 (torchaudio's autocorrelation pitch; 0 where unvoiced) and 13 MFCCs.
`meld` (13,708 utterances; 7 emotions): `minilm` [384], the mean-pooled frozen all-MiniLM-L6-v2 embedding of each
utterance (../shared/models); the group is the speaker for the six main characters (1,763-2,070 utterances
each) and `other` for the ~300 others (2,293 in all), 7 groups rather than 300.
`ckplus` (981 face crops of 118 subjects, 7 emotions; the last three frames of each CK+ sequence): two per-image
views of each 48 x 48 crop, as a corpus of facial descriptors would give them:
- `hog` [324]: histograms of oriented gradients, 9 unsigned orientations in each of 6 x 6 cells of 8 x 8
  pixels, each cell's histogram L2-normalised;
- `pixels` [144]: the crop at 12 x 12, each image standardised (mean 0, std 1).
The group is the subject (`S<id>` of the file name); a subject shows one to a few emotions.
Each set is one manifest (`<set>/manifest.csv`: label, speaker, one `<view>.npy#<row>` column per view) that
`experiment=emotion_features_demo data.demo=false` reads with `data.split=group data.group_column=speaker`
(commands in docs/results.md#small-feature-sets). The files are derived from research-licensed corpora: they
stay in the cache dir, never in the repository.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import torch
import torchaudio

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOTIONSUMM_SHARED", ROOT.parent / "shared"))
RATE, HOP, WINDOW = 16000, 160, 400
MELD_MAIN = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")


def read_wav(path: Path) -> torch.Tensor:
    """A mono clip resampled to 16 kHz."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), rate, RATE)


def functionals(frames: torch.Tensor) -> torch.Tensor:
    """[descriptors, T] -> mean, std, 10th, 50th, 90th percentile of each descriptor, concatenated."""
    q = torch.quantile(frames, torch.tensor([0.1, 0.5, 0.9]), dim=1)
    return torch.cat([frames.mean(1), frames.std(1), *q])


def emodb_views(clip: torch.Tensor, mel: torch.nn.Module, mfcc: torch.nn.Module) -> dict[str, np.ndarray]:
    """The `logmel` and `prosody` vectors of one 16 kHz clip."""
    logmel = torch.log(mel(clip) + 1e-6)
    spec = torch.stft(clip, 512, HOP, WINDOW, torch.hann_window(WINDOW), return_complex=True).abs() ** 2
    freqs = torch.linspace(0, RATE / 2, spec.shape[0])[:, None]
    power = spec.sum(0).clamp_min(1e-10)
    centroid = (freqs * spec).sum(0) / power
    bandwidth = ((freqs - centroid) ** 2 * spec).sum(0).div(power).sqrt()
    rolloff = freqs[(spec.cumsum(0) < 0.85 * power).sum(0).clamp_max(spec.shape[0] - 1), 0]
    flatness = torch.exp(torch.log(spec + 1e-10).mean(0)) / (spec.mean(0) + 1e-10)
    flux = torch.cat([torch.zeros(1), (spec[:, 1:].sqrt() - spec[:, :-1].sqrt()).clamp_min(0).sum(0)])
    framed = torch.nn.functional.pad(clip, (WINDOW // 2, WINDOW // 2)).unfold(0, WINDOW, HOP)[: spec.shape[1]]
    zcr = (framed[:, 1:].sign() != framed[:, :-1].sign()).float().mean(1)
    pitch = torchaudio.functional.detect_pitch_frequency(clip, RATE, frame_time=0.02, freq_low=60, freq_high=400)
    f0 = torch.nn.functional.interpolate(pitch[None, None], size=spec.shape[1]).flatten()
    f0 = torch.where(f0 >= 399, torch.zeros_like(f0), f0)  # the detector returns its ceiling on unvoiced frames
    frames = torch.stack([torch.log(power), zcr, centroid, bandwidth, rolloff, flatness, flux, f0])
    prosody = functionals(torch.cat([frames, mfcc(clip)]))
    return {"logmel": torch.cat([logmel.mean(1), logmel.std(1)]).numpy(), "prosody": prosody.numpy()}


def build_emodb(out: Path) -> Path:
    root = SHARED / "data/emotion_audio/emodb"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    mel = torchaudio.transforms.MelSpectrogram(RATE, n_fft=512, win_length=WINDOW, hop_length=HOP, n_mels=64)
    mfcc = torchaudio.transforms.MFCC(RATE, n_mfcc=13, melkwargs={"n_fft": 512, "win_length": WINDOW,
                                                                   "hop_length": HOP, "n_mels": 40})
    views: dict[str, list[np.ndarray]] = {"logmel": [], "prosody": []}
    for row in rows:
        for name, vector in emodb_views(read_wav(root / row["path"]), mel, mfcc).items():
            views[name].append(vector)
    labels = [r["emotion"] for r in rows]
    return write_set(out / "emodb", {k: np.stack(v) for k, v in views.items()}, labels, [r["speaker"] for r in rows])


def build_meld(out: Path) -> Path:
    from transformers import AutoModel, AutoTokenizer

    model_dir = SHARED / "models/all-MiniLM-L6-v2"
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    texts, labels, speakers = [], [], []
    for name in ("train", "dev", "test"):
        with open(next((SHARED / "data/multimodal/meld").glob(f"{name}*.csv")), newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                texts.append(row["Utterance"].replace("\x92", "'"))
                labels.append(row["Emotion"])
                speakers.append(row["Speaker"] if row["Speaker"] in MELD_MAIN else "other")
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(texts), 256):
            batch = tokenizer(texts[start:start + 256], padding=True, truncation=True, max_length=64,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return write_set(out / "meld", {"minilm": np.concatenate(vectors)}, labels, speakers)


def hog(image: torch.Tensor, cell: int = 8, bins: int = 9) -> torch.Tensor:
    """[H, W] grey image in [0, 1] -> [(H / cell) * (W / cell) * bins] gradient-orientation histograms."""
    padded = torch.nn.functional.pad(image[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    dx, dy = padded[1:-1, 2:] - padded[1:-1, :-2], padded[2:, 1:-1] - padded[:-2, 1:-1]
    magnitude, angle = torch.hypot(dx, dy), torch.atan2(dy, dx) % torch.pi
    index = (angle / torch.pi * bins).long().clamp(max=bins - 1)
    cells = torch.zeros(image.shape[0] // cell, image.shape[1] // cell, bins)
    rows, cols = torch.meshgrid(torch.arange(image.shape[0]) // cell, torch.arange(image.shape[1]) // cell,
                                indexing="ij")
    cells.index_put_((rows, cols, index), magnitude, accumulate=True)
    return (cells / cells.norm(dim=-1, keepdim=True).clamp_min(1e-6)).flatten()


def build_ckplus(out: Path) -> Path:
    from PIL import Image

    views: dict[str, list[np.ndarray]] = {"hog": [], "pixels": []}
    labels, subjects = [], []
    for path in sorted((SHARED / "data/emotion_image/ckplus48").glob("*/*.png")):
        image = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)
        views["hog"].append(hog(image).numpy())
        small = torch.nn.functional.adaptive_avg_pool2d(image[None, None], 12).flatten()
        views["pixels"].append(((small - small.mean()) / small.std().clamp_min(1e-6)).numpy())
        labels.append(path.parent.name)
        subjects.append(path.name.split("_")[0])
    return write_set(out / "ckplus", {k: np.stack(v) for k, v in views.items()}, labels, subjects)


def write_set(directory: Path, views: dict[str, np.ndarray], labels: list[str], speakers: list[str]) -> Path:
    """One `<view>.npy` per view and manifest.csv referencing its rows."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in views.items():
        np.save(directory / f"{name}.npy", array.astype(np.float32))
    with open(directory / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "speaker", *views])
        for i, (label, speaker) in enumerate(zip(labels, speakers)):
            writer.writerow([label, speaker, *(f"{name}.npy#{i}" for name in views)])
    print(f"{directory}: {len(labels)} rows, views " + ", ".join(f"{k} {v.shape[1]}" for k, v in views.items()))
    return directory / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".cache/feature_sets")
    builders = {"emodb": build_emodb, "meld": build_meld, "ckplus": build_ckplus}
    parser.add_argument("--sets", nargs="*", default=list(builders), choices=list(builders))
    args = parser.parse_args()
    for name in args.sets:
        builders[name](args.out)


if __name__ == "__main__":
    main()
