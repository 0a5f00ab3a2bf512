"""Classification baselines scored by the same metric code as the models: `majority` (the largest training
class) and `linear` (an L2 logistic regression on a cheap fixed representation of each example).

The representation comes from the data object (`interfaces.BaselineData.baseline_views`): per modality a
list of texts (TF-IDF of words and word pairs, fitted on the training split) or a float array [N, D]
(standardised with the training split's mean/std; NaN, a missing modality, becomes the mean), the same whatever
the model reads (`normalize: group` features as read: the baseline shows what speaker normalisation adds).
Fusion data gives several views; they are concatenated. The L2 strength `C` is chosen from `C_GRID` by accuracy
on the validation split (ties: the stronger regularisation), or, without one, on a stratified 20 % of the
training split, refitted on the whole training split afterwards. Beyond MAX_FIT_ROWS training rows it fits on a
seeded stratified sample of that many (the cost of a baseline, e.g. reading images again without preload, then
stays bounded as the corpus grows); val and test are always scored whole.

`python -m emotionsumm.evaluate baseline=linear experiment=emotion_text`; every classification run scores
both at its end unless `baseline=null` (train.py).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .classification import classification_metrics, confusion_matrix

log = logging.getLogger(__name__)

CLASS_BASELINES = ("majority", "linear")
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
MAX_FIT_ROWS = 20_000  # the linear baseline fits on at most this many training rows (a stratified sample beyond)
HOLDOUT = 0.2  # share of the training split that chooses C when there is no validation split
RUN_METRICS = ("acc", "macro_f1", "uar")  # what a training run's metrics.json keeps of each baseline


def baseline_names(value: Any) -> list[str]:
    """The baselines a run scores from `baseline` (null or [] for none, a name, or a list of names)."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    if bad := [n for n in names if n not in CLASS_BASELINES]:
        raise ValueError(f"baseline={value!r}: {bad[0]!r} is not a classification baseline; allowed: a list of "
                         f"{list(CLASS_BASELINES)}, or baseline=null to score none")
    return list(dict.fromkeys(names))


def supports_baselines(data: Any) -> bool:
    """Whether `data` is classification data that can give a baseline its examples."""
    from ..interfaces import BaselineData

    return isinstance(data, BaselineData) and getattr(data, "task", None) == "classification"


def majority_class(labels: Sequence[int], num_classes: int) -> int:
    """The largest class of `labels` (the lowest id on a tie)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).argmax())


class Featurizer:
    """Views -> one matrix: TF-IDF for text views, train-standardised columns for numeric ones, side by side."""

    def __init__(self) -> None:
        self.parts: dict[str, Any] = {}

    def fit(self, views: dict[str, Any]) -> Featurizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        for name, view in views.items():
            if isinstance(view, np.ndarray):
                with warnings.catch_warnings():  # a column missing in every training row: mean 0, std 1
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, std = np.nanmean(view, axis=0), np.nanstd(view, axis=0)
                mean, std = np.nan_to_num(mean), np.nan_to_num(std)
                self.parts[name] = (mean, np.where(std > 1e-6, std, 1.0))
            else:
                tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b",
                                        max_features=100_000, dtype=np.float32)
                self.parts[name] = tfidf.fit([str(t or "") for t in view])
        return self

    def __call__(self, views: dict[str, Any]) -> Any:
        from scipy import sparse

        blocks = []
        for name, part in self.parts.items():
            if isinstance(part, tuple):
                mean, std = part
                blocks.append(np.nan_to_num((np.asarray(views[name], dtype=np.float64) - mean) / std))
            else:
                blocks.append(part.transform([str(t or "") for t in views[name]]))
        if any(sparse.issparse(b) for b in blocks):
            return sparse.hstack([sparse.csr_matrix(b) for b in blocks], format="csr")
        return np.hstack(blocks)


def _fit(x: Any, y: np.ndarray, c: float) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=500).fit(x, y)


def _accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    return float((model.predict(x) == y).mean()) if len(y) else 0.0


class MajorityBaseline:
    """Every example gets the largest training class."""

    def __init__(self, data: Any) -> None:
        self.data, self.top = data, majority_class(data.dataset("train").labels, len(data.class_names))

    def predict(self, split: str) -> np.ndarray:
        return np.full(len(self.data.dataset(split)), self.top, dtype=np.int64)

    def details(self) -> dict[str, Any]:
        return {"class": self.data.class_names[self.top]}


class LinearBaseline:
    """The logistic regression of a data object: fitted on `train`, C chosen on `val` (or a train hold-out)."""

    def __init__(self, data: Any) -> None:
        self.data = data
        labels = np.asarray(data.dataset("train").labels, dtype=np.int64)
        self.rows = sample_rows(labels, MAX_FIT_ROWS)  # None: every training row
        views = data.baseline_views("train", self.rows)  # once: reading them may decode every clip
        self.featurize = Featurizer().fit(views)
        self.y_train = labels if self.rows is None else labels[self.rows]
        x_train = self.featurize(views)
        self.chosen_on, self.c = "train", 1.0
        if len(np.unique(self.y_train)) < 2:  # one class: nothing to fit, predict it
            self.model = None
            return
        val = data.dataset("val")
        if val is not None and len(val):
            self.chosen_on = "val"
            x_val, y_val = self.featurize(data.baseline_views("val")), np.asarray(val.labels, dtype=np.int64)
            fits = [_fit(x_train, self.y_train, c) for c in C_GRID]
            best = int(np.argmax([_accuracy(m, x_val, y_val) for m in fits]))  # first (smallest C) on a tie
            self.c, self.model = C_GRID[best], fits[best]
            return
        fit_rows, held_rows, stratified = _holdout(self.y_train)
        if len(held_rows):
            self.chosen_on = f"a {'stratified ' if stratified else ''}{HOLDOUT:.0%} of train"
            scores = [_accuracy(_fit(x_train[fit_rows], self.y_train[fit_rows], c), x_train[held_rows],
                                self.y_train[held_rows]) for c in C_GRID]
            self.c = C_GRID[int(np.argmax(scores))]
        self.model = _fit(x_train, self.y_train, self.c)

    def predict(self, split: str) -> np.ndarray:
        if self.model is None:
            return np.full(len(self.data.dataset(split)), self.y_train[0], dtype=np.int64)
        return self.model.predict(self.featurize(self.data.baseline_views(split))).astype(np.int64)

    def details(self) -> dict[str, Any]:
        sampled = {"fit_rows": len(self.y_train)} if self.rows is not None else {}
        return {"C": self.c, "C_chosen_on": self.chosen_on, **sampled}


def sample_rows(labels: np.ndarray, limit: int) -> np.ndarray | None:
    """None when `labels` has at most `limit` rows, else a seeded sample of `limit` of them (sorted), stratified by
    class when every class can have a row in it: the baseline's cost stops growing with the training split."""
    from sklearn.model_selection import train_test_split

    if len(labels) <= limit:
        return None
    rows = np.arange(len(labels))
    try:
        chosen, _ = train_test_split(rows, train_size=limit, random_state=0, stratify=labels)
    except ValueError:  # a class with a single row
        chosen, _ = train_test_split(rows, train_size=limit, random_state=0)
    return np.sort(chosen)


def _holdout(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(fit rows, held-out rows, stratified): a seeded split of train, stratified by class when every class has
    enough rows for it; no held-out rows below 5 training rows."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    if len(rows) < 5:
        return rows, rows[:0], False
    try:
        fit_rows, held_rows = train_test_split(rows, test_size=HOLDOUT, random_state=0, stratify=labels)
        stratified = True
    except ValueError:  # a class with a single row, or fewer held-out rows than classes
        fit_rows, held_rows = train_test_split(rows, test_size=HOLDOUT, random_state=0)
        stratified = False
    return np.sort(fit_rows), np.sort(held_rows), stratified


def score_baseline(name: str, data: Any, splits: Sequence[str]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """(split -> the package's classification metrics of baseline `name` on that split of the set-up `data`,
    details: the chosen C and on what, seconds taken). Splits `data` does not have are left out."""
    start = time.perf_counter()
    names = list(data.class_names)
    train = data.dataset("train")
    if train is None or not len(train):
        raise ValueError(f"baseline={name} needs the training split of the data, which is empty or missing")
    model = MajorityBaseline(data) if name == "majority" else LinearBaseline(data)
    details = model.details()
    out = {}
    for split in splits:
        dataset = data.dataset(split)
        if dataset is None or not len(dataset):
            continue
        cm = confusion_matrix(torch.from_numpy(model.predict(split)), torch.tensor(dataset.labels), len(names))
        out[split] = classification_metrics(cm, names)
    details["seconds"] = time.perf_counter() - start
    return out, details


def next_steps(data: Any) -> str:
    """What to try when the model trails the linear baseline, for runs on precomputed features (measured in
    docs/results.md#small-feature-sets); empty otherwise."""
    active = getattr(data, "active", None) or []
    features = [f for name, f in getattr(data, "features", {}).items() if name in active]
    if not features:
        return ""
    if all(f.by_group for f in features):
        return ("; the baseline reads the features without speaker normalisation: when speakers show few emotions "
                "each, normalize=true may do better (docs/results.md#small-feature-sets)")
    return ("; on a small feature set try experiment=emotion_features_small and, when every speaker shows several "
            "emotions, data.features.<name>.normalize=group with data.group_column (docs/modalities.md)")


def run_baselines(names: Sequence[str], data: Any) -> Callable[[dict[str, Any]], dict[str, float]] | None:
    """What a training run adds to its final metrics: `baseline/<name>/<split>/<acc|macro_f1|uar>` for val and
    test, with a warning when the model's test accuracy does not beat the linear baseline's; None when there is
    nothing to score (no baselines asked, or no classification data)."""
    if not names or not supports_baselines(data):
        return None

    def final(metrics: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in names:
            try:
                scores, details = score_baseline(name, data, ("val", "test"))
            except Exception as exc:  # the run's own metrics matter more: say so and write them
                log.warning("baseline %s failed (%s: %s); metrics.json has no baseline/%s/… (baseline=null turns "
                            "the baselines off)", name, type(exc).__name__, exc, name)
                continue
            for split, values in scores.items():
                out.update({f"baseline/{name}/{split}/{k}": values[k] for k in RUN_METRICS})
            if "C" in details:
                out[f"baseline/{name}/C"] = details["C"]
            shown = ", ".join(f"{s}/acc {v['acc']:.4f}" for s, v in scores.items())
            chosen = f", C={details['C']:g} chosen on {details['C_chosen_on']}" if "C" in details else ""
            if "fit_rows" in details:
                chosen += f", fitted on a stratified {details['fit_rows']:,} of the training rows"
            log.info("baseline %s: %s%s (%.1f s)", name, shown or "no val/test split", chosen, details["seconds"])
        split = "test" if "test/acc" in metrics else "val"
        ours, theirs = metrics.get(f"{split}/acc"), out.get(f"baseline/linear/{split}/acc")
        if ours is not None and theirs is not None and ours <= theirs:
            log.warning("the model does not beat the linear baseline: %s/acc %.4f, a logistic regression on fixed "
                        "features %.4f (baseline/linear/%s/acc in metrics.json)%s", split, ours, theirs, split,
                        next_steps(data))
        return out

    return final


def evaluate_class_baseline(cfg: Any, run_dir: Any) -> dict[str, Any]:
    """`evaluate baseline=majority|linear experiment=<name>`: the baseline's metrics on `cfg.split` (`<split>/…`)."""
    from ..config.builders import build_data

    name, split = str(cfg.baseline), str(cfg.split)
    data = build_data(cfg, None, splits=tuple(dict.fromkeys(("train", "val", split))))
    if not supports_baselines(data):
        what = "a regression task (data.task=regression) has no class to predict" if getattr(data, "task", None) \
            == "regression" else f"{cfg.data._target_} is not classification data (summarization: baseline=lead3)"
        raise ValueError(f"baseline={name} scores classification data; {what}")
    if data.dataset(split) is None:
        raise ValueError(f"baseline={name}: the data has no {split} split; choose split=val or split=test")
    scores, details = score_baseline(name, data, (split,))
    return {**{f"{split}/{k}": v for k, v in scores[split].items()}, "baseline": name,
            "examples": len(data.dataset(split)), **details}
