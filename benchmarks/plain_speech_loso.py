"""The control for the speech recipe: a plain log-mel CNN script, scored leave-one-speaker-out on the shared EmoDB.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plain_speech_loso.py              # 8 folds, ~10 min each at 1 thread
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plain_speech_loso.py --speakers 15 16 --epochs 2   # a smoke run

What a researcher writes in 60 lines without a framework, its design fixed before any result was seen: 16 kHz log-mels
(64 mels, 25 ms windows, 10 ms hops, 2.0 s clips), per-mel mean/std of the training speakers, four blocks of
3x3 conv + batch norm + ReLU + 2x2 max pooling (16-32-64-128 channels), global average pooling, dropout 0.3,
a linear head; Adam lr 1e-3, batch 32, no augmentation, no EMA, no schedule, the final weights. 120 epochs: the
shipped recipe's number of optimizer steps (~1,400; it runs 60 epochs of batch 16), set after the first
setting, 40 epochs, underfit (73 % accuracy on its own training speakers; LOSO acc 48.9 +- 8.1).
Each fold trains on 7 speakers and scores the 8th (no selection on it), as
`make cv K=8 ARGS="experiment=emotion_audio_emodb data.test_groups=[] data.split_ratios=[1,0,0]"` does for the
shipped recipe. Prints each fold, then mean +- sample std of accuracy and UAR; the last line is JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import wave
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
EMODB = Path(os.environ.get("EMOTIONSUMM_SHARED", ROOT.parent / "shared")) / "data/emotion_audio/emodb"


def load_logmels(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """(log-mels [N, 64, frames], labels, speakers, class names) of every clip in labels.csv."""
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["emotion"] for r in rows})
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, win_length=400, hop_length=160, n_mels=64)
    feats = []
    for r in rows:
        with wave.open(str(root / r["path"])) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
            rate = w.getframerate()
        x = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000)[:32000]
        feats.append(torch.log(mel(nn.functional.pad(x, (0, 32000 - len(x)))) + 1e-6))
    labels = torch.tensor([classes.index(r["emotion"]) for r in rows])
    return torch.stack(feats), labels, [r["speaker"] for r in rows], classes


def cnn(num_classes: int) -> nn.Module:
    layers, width_in = [], 1
    for width in (16, 32, 64, 128):
        layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        width_in = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, num_classes))


def fold(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cnn(int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train))].split(32):
            loss = nn.functional.cross_entropy(model(x[idx].unsqueeze(1)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=EMODB)
    parser.add_argument("--speakers", nargs="*", help="held-out speakers (default: every speaker, one fold each)")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y, speakers, classes = load_logmels(args.root)
    results = []
    for held_out in args.speakers or sorted(set(speakers)):
        test = torch.tensor([s == held_out for s in speakers])
        train = torch.nonzero(~test).squeeze(1)
        mean, std = x[train].mean(dim=(0, 2), keepdim=True), x[train].std(dim=(0, 2), keepdim=True)
        model = fold((x - mean) / std, y, train, args.epochs, args.seed)
        with torch.inference_mode():
            pred = model(((x[test] - mean) / std).unsqueeze(1)).argmax(1)
        truth = y[test]
        recalls = [float((pred[truth == c] == c).float().mean()) for c in range(len(classes)) if (truth == c).any()]
        results.append({"speaker": held_out, "acc": 100 * float((pred == truth).float().mean()),
                        "uar": 100 * statistics.mean(recalls)})
        print(f"speaker {held_out}: acc {results[-1]['acc']:.1f}  UAR {results[-1]['uar']:.1f}", flush=True)
    summary = {}
    for key in ("acc", "uar"):
        values = [r[key] for r in results]
        summary[key] = statistics.mean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"LOSO over {len(results)} speakers: acc {summary['acc']:.1f} +- {summary['acc_std']:.1f}, "
          f"UAR {summary['uar']:.1f} +- {summary['uar_std']:.1f}")
    print(json.dumps({**summary, "epochs": args.epochs, "seed": args.seed, "folds": results}))


if __name__ == "__main__":
    main()
