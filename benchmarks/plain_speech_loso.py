"""The control for the speech recipe: a plain log-mel CNN script, scored leave-one-speaker-out on the shared EmoDB.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plain_speech_loso.py              # 8 folds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plain_speech_loso.py --speakers 15 16 --epochs 2   # a smoke run
    .venv/bin/python benchmarks/plain_speech_loso.py --test 15 16    # train on the other 6, score 15 + 16 together

The script of issue 28, as a researcher writes it in 60 lines without a framework (its design fixed by the issue,
before any result here): 64 log-mels at 16 kHz (n_fft 512, hop 160) in dB, 2.0 s clips, one global mean/std of the
training set; SpecAugment (one frequency mask <= 8 bins, one time mask <= 20 frames, per clip); four blocks of
3x3 conv + batch norm + ReLU + 2x2 max pooling (32-64-128-128 channels), global average pooling, dropout 0.3, a
linear head; AdamW lr 1e-3, weight decay 1e-2, label smoothing 0.1, cosine decay over 60 epochs of batch 32, the
last epoch's weights. Each fold trains on 7 speakers and scores the 8th (no selection on it), as
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
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64)
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power")
    feats = []
    for r in rows:
        with wave.open(str(root / r["path"])) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
            rate = w.getframerate()
        x = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000)[:32000]
        feats.append(to_db(mel(nn.functional.pad(x, (0, 32000 - len(x))))))
    labels = torch.tensor([classes.index(r["emotion"]) for r in rows])
    return torch.stack(feats), labels, [r["speaker"] for r in rows], classes


def cnn(num_classes: int) -> nn.Module:
    layers, width_in = [], 1
    for width in (32, 64, 128, 128):
        layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        width_in = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, num_classes))


def fold(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cnn(int(y.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    steps = epochs * -(-len(train) // 32)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    masks = nn.Sequential(torchaudio.transforms.FrequencyMasking(8, iid_masks=True),
                          torchaudio.transforms.TimeMasking(20, iid_masks=True))
    model.train()
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train))].split(32):
            loss = nn.functional.cross_entropy(model(masks(x[idx].unsqueeze(1))), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=EMODB)
    parser.add_argument("--speakers", nargs="*", help="held-out speakers (default: every speaker, one fold each)")
    parser.add_argument("--test", nargs="+", help="score these speakers together, trained on all the others")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y, speakers, classes = load_logmels(args.root)
    results = []
    folds = [args.test] if args.test else [[s] for s in args.speakers or sorted(set(speakers))]
    for fold_speakers in folds:
        held_out = "+".join(fold_speakers)
        test = torch.tensor([s in fold_speakers for s in speakers])
        train = torch.nonzero(~test).squeeze(1)
        mean, std = x[train].mean(), x[train].std()
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
    where = f"test speakers {'+'.join(args.test)}" if args.test else f"LOSO over {len(results)} speakers"
    print(f"{where}: acc {summary['acc']:.1f} +- {summary['acc_std']:.1f}, "
          f"UAR {summary['uar']:.1f} +- {summary['uar_std']:.1f}")
    print(json.dumps({**summary, "epochs": args.epochs, "seed": args.seed, "folds": results}))


if __name__ == "__main__":
    main()
