"""Choose a feature-fusion recipe for a small feature set by leave-one-speaker-out CV, beside a linear baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_sets.py --sets emodb        # the set, once
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_recipes.py                   # every recipe below, CV
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_recipes.py --recipes shipped small --test

The test speakers (`--test-groups`, default EmoDB's 15 + 16, as the speech recipe) are never used to choose: each
fold trains on all but one of the other speakers and scores the held-out one with the final weights (no
selection on it). The linear baseline is chosen the same way, nested: its L2 strength C (the grid of
`baseline=linear`) by an inner leave-one-speaker-out CV on the fold's training speakers; it reads the same
standardised concatenated views as `baseline=linear`. `--test` then trains each recipe once on all training
speakers and scores the test speakers, with the linear baseline that `baseline=linear` picks there (C by
inner CV, as in the folds); run it once, after choosing. Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotionsumm.data.features import ArrayFiles, FeatureModality, split_reference  # noqa: E402
from emotionsumm.metrics.class_baselines import C_GRID, Featurizer, _fit  # noqa: E402

# each recipe: (experiment, encoder config of every view, further overrides; ENC = each view's encoder, VIEW =
# each view's data.features entry)
RECIPES = {
    # the README's "Your own features" command before the small-data recipe: 2-layer MLPs of 64, attention
    # fusion with modality dropout, 15 epochs at lr 3e-3
    "shipped": ("emotion_features_demo", "features_mlp", []),
    # a logistic regression per view, trained by the framework (no hidden layer), late fusion
    "linear": ("emotion_features_demo", "features_mlp", [
        "model.fusion=late", "ENC.num_layers=0", "ENC.classifier_dropout=0.0", "optimizer.weight_decay=0.1",
        "trainer.max_epochs=60"]),
    # the small-data recipe (conf/experiment/emotion_features_small.yaml, conf/model/features_small.yaml)
    "small": ("emotion_features_small", "features_small", []),
    # candidates measured against `small` (docs/results.md#small-feature-sets): its input regularisation on a
    # linear model, and the small one with 10x the weight decay
    "linear_noisy": ("emotion_features_small", "features_small", ["ENC.num_layers=0", "ENC.classifier_dropout=0.0"]),
    "small_wd": ("emotion_features_small", "features_small", ["optimizer.weight_decay=0.1"]),
    # the small recipe on speaker-normalised views (each speaker's clips standardised by their own mean/std)
    "small_speaker": ("emotion_features_small", "features_small", ["+VIEW.normalize=group"]),
}


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def views_of(rows: list[dict[str, str]], base: Path, views: list[str]) -> dict[str, np.ndarray]:
    """Each view as an [N, D] array, in manifest order (references `<file>.npy#<row>`, read as the data does)."""
    arrays = ArrayFiles()
    out = {}
    for view in views:
        vectors = []
        for row in rows:
            name, index = split_reference(row[view])
            vectors.append(np.asarray(arrays.get(base / name)[int(index)], dtype=np.float64))
        out[view] = np.stack(vectors)
    return out


def per_speaker(views: dict[str, np.ndarray], groups: np.ndarray) -> dict[str, np.ndarray]:
    """The views standardised per speaker, as `data.features.<view>.normalize=group` does (the data layer's code)."""
    out = {}
    for name, array in views.items():
        modality = FeatureModality(name, normalize="group")
        modality.dim = array.shape[1]
        rows = [torch.from_numpy(v.astype(np.float32)) if np.isfinite(v).all() else None for v in array]
        out[name] = np.stack([np.full(array.shape[1], np.nan) if v is None else v.numpy()
                              for v in modality.standardised_by_group(rows, list(groups), "the manifest")])
    return out


def group_folds(groups: set[str], folds: int | None) -> list[list[str]]:
    """One fold per group, or `folds` folds of the sorted groups dealt round-robin."""
    ordered = sorted(groups)
    return [[g] for g in ordered] if folds is None else [ordered[i::folds] for i in range(folds)]


def linear_baseline(views: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, train: np.ndarray,
                    test: np.ndarray, folds: int | None = None) -> tuple[float, float, float]:
    """Accuracy and UAR on `test` of the logistic regression whose C an inner CV by group on `train` (leave one
    group out, or `folds` folds of groups) chose, and that C."""
    scores = []
    for c in C_GRID:
        accs = []
        for held in group_folds(set(groups[train]), folds):
            inside = np.isin(groups[train], held)
            fit_rows, held_rows = train[~inside], train[inside]
            featurize = Featurizer().fit({k: v[fit_rows] for k, v in views.items()})
            model = _fit(featurize({k: v[fit_rows] for k, v in views.items()}), y[fit_rows], c)
            accs.append(float((model.predict(featurize({k: v[held_rows] for k, v in views.items()})) ==
                               y[held_rows]).mean()))
        scores.append(statistics.mean(accs))
    c = C_GRID[int(np.argmax(scores))]
    featurize = Featurizer().fit({k: v[train] for k, v in views.items()})
    model = _fit(featurize({k: v[train] for k, v in views.items()}), y[train], c)
    pred = model.predict(featurize({k: v[test] for k, v in views.items()}))
    return accuracy(pred, y[test]), uar(pred, y[test]), c


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float((pred == truth).mean())


def uar(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([(pred[truth == c] == c).mean() for c in np.unique(truth)]))


def recipe_overrides(name: str, manifest: Path, views: list[str], test_groups: list[str]) -> list[str]:
    """The command line of a recipe: the set's views as features_mlp encoders, split by speaker."""
    experiment, encoder, extra = RECIPES[name]
    base = [f"experiment={experiment}", "data.demo=false", f"data.file={manifest}", "data.split=group",
            "data.group_column=speaker", f"data.test_groups={quoted(test_groups)}", "~data.features.visual_au",
            "~data.features.audio_lld", "~model.encoders.visual_au", "~model.encoders.audio_lld",
            f"data.modalities=[{','.join(views)}]", "logger=csv"]
    for view in views:
        base += [f"+data.features.{view}={{column: {view}}}", f"+model@model.encoders.{view}={encoder}"]
    per_view = {"ENC": "model.encoders.{}", "VIEW": "data.features.{}"}
    for option in extra:
        key = next((k for k in per_view if k in option), None)
        base += [option.replace(key, per_view[key].format(v)) for v in views] if key else [option]
    return base


def quoted(groups: list[str]) -> str:
    """A Hydra list of group names kept as strings (speaker 09 stays '09')."""
    return "[" + ",".join(f"'{g}'" for g in groups) + "]"


def run(overrides: list[str], work: Path) -> dict[str, float]:
    """One training run in a fresh process; its metrics.json."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "emotionsumm.train", *overrides, f"hydra.run.dir={work}",
           f"paths.cache_dir={work.parent / 'cache'}"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)}\nfailed:\n{done.stderr[-3000:]}")
    return json.loads((work / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=ROOT / ".cache/feature_sets/emodb/manifest.csv")
    parser.add_argument("--views", nargs="+", default=["logmel", "prosody"])
    parser.add_argument("--test-groups", nargs="+", default=["15", "16"])
    parser.add_argument("--test-every", type=int, help="instead of --test-groups: every N-th of the sorted groups")
    parser.add_argument("--folds", type=int, help="CV by this many folds of groups (default: leave one group out)")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--test", action="store_true", help="train on every training speaker, score the test ones")
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args()
    rows = read_manifest(args.manifest)
    views = views_of(rows, args.manifest.parent, args.views)
    classes = sorted({r["label"] for r in rows})
    y = np.array([classes.index(r["label"]) for r in rows])
    groups = np.array([r["speaker"] for r in rows])
    if args.test_every:
        args.test_groups = sorted(set(groups))[::args.test_every]
    train = np.flatnonzero(~np.isin(groups, args.test_groups))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="feature_recipes_"))
    folds = group_folds(set(groups[train]), args.folds) if not args.test else [args.test_groups]
    results: dict[str, dict[str, float]] = {}
    for name, inputs in (("linear baseline", views), ("linear, per speaker", per_speaker(views, groups))):
        accs, uars, cs = [], [], []
        for held in folds:
            fit = train[~np.isin(groups[train], held)] if not args.test else train
            acc, rec, c = linear_baseline(inputs, y, groups, fit, np.flatnonzero(np.isin(groups, held)), args.folds)
            accs, uars, cs = accs + [acc], uars + [rec], cs + [c]
        results[name] = summary(accs, uars) | {"C": cs}
    for name in args.recipes:
        accs, uars = [], []
        for seed in args.seeds:
            for i, held in enumerate(folds):
                overrides = recipe_overrides(name, args.manifest, args.views, args.test_groups)
                if not args.test:  # the held-out training speakers are the fold's validation split
                    overrides += [f"data.val_groups={quoted(held)}", "trainer.test_after_fit=false"]
                else:
                    overrides += ["data.val_groups=[]", "trainer.save_top_k=0"]
                metrics = run(overrides + [f"seed={seed}", "baseline=null"], work / f"{name}_s{seed}_f{i}")
                split = "test" if args.test else "val"
                accs.append(metrics[f"{split}/acc"])
                uars.append(metrics[f"{split}/uar"])
        results[name] = summary(accs, uars)
        print(f"{name}: acc {results[name]['acc']:.3f} +- {results[name]['acc_std']:.3f}", flush=True)
    trained_on = len(set(groups[train]))
    where = f"test speakers {'+'.join(args.test_groups)}" if args.test else \
        f"leave-one-speaker-out over {trained_on} training speakers" if args.folds is None else \
        f"{args.folds}-fold CV by speaker over {trained_on} training speakers"
    print(f"\n{args.manifest.parent.name} ({', '.join(args.views)}), {where}, seeds {args.seeds}")
    print(f"{'recipe':<20}{'acc':>14}{'UAR':>14}")
    for name, r in results.items():
        print(f"{name:<20}{r['acc']:>8.3f} ±{r['acc_std']:.3f}{r['uar']:>8.3f} ±{r['uar_std']:.3f}")
    print(json.dumps({"set": args.manifest.parent.name, "views": args.views, "protocol": where,
                      "seeds": args.seeds, "results": results}))


def summary(accs: list[float], uars: list[float]) -> dict[str, float]:
    return {"acc": statistics.mean(accs), "acc_std": spread(accs), "uar": statistics.mean(uars),
            "uar_std": spread(uars)}


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
