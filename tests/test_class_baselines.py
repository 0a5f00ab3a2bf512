"""The classification baselines: majority = the largest training class, the linear one beats it on separable data,
C is chosen on the validation split (else on a hold-out of train), and a training run writes their metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from emotionsumm.metrics import class_baselines as cb
from emotionsumm.metrics.class_baselines import (
    C_GRID,
    Featurizer,
    LinearBaseline,
    baseline_names,
    majority_class,
    score_baseline,
)

from .conftest import run_train, scalars


class _Split:
    """A split: its class ids."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)


class Views:
    """A minimal BaselineData: one numeric view (and optionally a text view) per split, class ids as labels."""

    task = "classification"

    def __init__(self, splits: dict[str, tuple[np.ndarray, list[int]]], class_names: list[str],
                 texts: dict[str, list[str]] | None = None) -> None:
        self.splits, self.class_names, self.texts = splits, class_names, texts

    def dataset(self, split: str) -> _Split | None:
        return _Split(self.splits[split][1]) if split in self.splits else None

    def baseline_views(self, split: str, rows=None) -> dict:
        self.asked = [*getattr(self, "asked", []), (split, None if rows is None else len(rows))]
        views = {"x": self.splits[split][0] if rows is None else self.splits[split][0][rows]}
        texts = self.texts and (self.texts[split] if rows is None else [self.texts[split][i] for i in rows])
        return {**views, "text": texts} if self.texts else views


def blobs(n: int, seed: int, num_classes: int = 3, sizes: tuple[float, ...] = (0.5, 0.3, 0.2)) -> tuple:
    """Well separated Gaussian blobs in 4-D, class shares `sizes`."""
    rng = np.random.default_rng(seed)
    y = rng.choice(num_classes, size=n, p=sizes)
    centres = np.eye(num_classes, 4) * 6
    return (centres[y] + rng.normal(size=(n, 4))).astype(np.float32), y.tolist()


def test_majority_is_the_largest_training_class_and_the_lowest_id_on_a_tie():
    assert majority_class([0, 2, 2, 1, 2, 1], 3) == 2
    assert majority_class([1, 0, 1, 0], 3) == 0
    data = Views({"train": (np.zeros((5, 1)), [1, 1, 1, 0, 2]), "test": (np.zeros((4, 1)), [0, 1, 2, 2])},
                 ["a", "b", "c"])
    scores, details = score_baseline("majority", data, ("val", "test"))
    assert details["class"] == "b" and list(scores) == ["test"]  # no val split: left out
    assert scores["test"]["acc"] == 0.25 and scores["test"]["uar"] == pytest.approx(1 / 3)
    assert scores["test"]["pred_classes"] == 1


def test_linear_beats_majority_on_separable_data():
    data = Views({"train": blobs(200, 0), "val": blobs(60, 1), "test": blobs(100, 2)}, ["a", "b", "c"])
    linear, details = score_baseline("linear", data, ("val", "test"))
    majority, _ = score_baseline("majority", data, ("test",))
    assert linear["test"]["acc"] >= 0.95 and majority["test"]["acc"] < 0.7
    assert linear["test"]["macro_f1"] > majority["test"]["macro_f1"] + 0.5
    assert details["C"] in C_GRID and details["C_chosen_on"] == "val"


class Constant:
    """A stand-in for the fitted model: predicts class 1 when C >= 1, else class 0, whatever the input."""

    def __init__(self, c: float, rows: int) -> None:
        self.c, self.rows = c, rows

    def predict(self, x):
        return np.full(x.shape[0], int(self.c >= 1.0))


@pytest.mark.parametrize(("val_labels", "chosen"), [([1] * 6, 1.0), ([0] * 6, 1e-3), ([0, 0, 0, 0, 1, 1], 1e-3)])
def test_c_is_chosen_on_the_validation_split(monkeypatch, val_labels, chosen):
    fits = []
    monkeypatch.setattr(cb, "_fit", lambda x, y, c: fits.append((c, len(y))) or Constant(c, len(y)))
    x, y = blobs(20, 0, 2, (0.5, 0.5))
    data = Views({"train": (x, y), "val": (np.zeros((6, 4), np.float32), val_labels)}, ["a", "b"])
    model = LinearBaseline(data)
    # the smallest C that is best on val (all C >= 1 predict class 1, all C < 1 class 0); fitted on train only
    assert (model.c, model.chosen_on) == (chosen, "val")
    assert fits == [(c, 20) for c in C_GRID]


def test_without_a_validation_split_c_is_chosen_on_a_stratified_holdout_then_refitted_on_train(monkeypatch):
    fits = []
    monkeypatch.setattr(cb, "_fit", lambda x, y, c: fits.append((c, list(y))) or Constant(c, len(y)))
    x = np.zeros((20, 2), np.float32)
    y = [0] * 10 + [1] * 10
    model = LinearBaseline(Views({"train": (x, y)}, ["a", "b"]))
    assert model.chosen_on == "a stratified 20% of train" and model.c == 1e-3  # a 2-2 tie: the smallest C
    held_out = [c for c, labels in fits[:-1]]
    assert held_out == list(C_GRID) and all(sorted(labels) == [0] * 8 + [1] * 8 for _, labels in fits[:-1])
    assert fits[-1] == (1e-3, y)  # refitted on the whole training split


def test_a_large_training_split_is_fitted_on_a_stratified_sample_and_val_test_are_scored_whole(monkeypatch):
    monkeypatch.setattr(cb, "MAX_FIT_ROWS", 50)
    data = Views({"train": blobs(400, 0), "val": blobs(120, 1), "test": blobs(90, 2)}, ["a", "b", "c"])
    scores, details = score_baseline("linear", data, ("val", "test"))
    assert data.asked[0] == ("train", 50) and ("val", None) in data.asked and ("test", None) in data.asked
    assert details["fit_rows"] == 50 and scores["test"]["acc"] > 0.9  # all 90 test rows: a share of 90
    assert round(scores["test"]["acc"] * 90) == scores["test"]["acc"] * 90
    labels = np.asarray(blobs(400, 0)[1])
    rows = cb.sample_rows(labels, 50)
    assert len(rows) == 50 and list(rows) == sorted(set(rows.tolist()))
    assert np.bincount(labels[rows], minlength=3) == pytest.approx(np.bincount(labels) / 8, abs=1)  # stratified
    assert (rows == cb.sample_rows(labels, 50)).all() and cb.sample_rows(labels, 400) is None  # seeded; all rows
    small = Views({"train": blobs(40, 0), "test": blobs(20, 1)}, ["a", "b", "c"])
    assert "fit_rows" not in score_baseline("linear", small, ("test",))[1] and small.asked[0] == ("train", None)


def test_featurizer_standardises_on_train_fills_missing_with_the_mean_and_adds_tfidf():
    train = {"x": np.array([[1.0, 5.0], [3.0, np.nan]]), "text": ["happy day", "sad day"]}
    features = Featurizer().fit(train)
    out = features({"x": np.array([[2.0, np.nan], [5.0, 5.0]]), "text": ["happy", None]}).toarray()
    assert out[:, :2].tolist() == [[0.0, 0.0], [3.0, 0.0]]  # (x - 2) / 1; the 2nd column has std 0 -> 1, NaN -> 0
    vocabulary = features.parts["text"].vocabulary_
    assert out[0, 2 + vocabulary["happy"]] == pytest.approx(1.0) and not out[1, 2:].any()


def test_baseline_names_accept_a_name_a_list_or_null_and_name_the_allowed_values():
    assert baseline_names(None) == [] and baseline_names([]) == []
    assert baseline_names("linear") == ["linear"] and baseline_names(["majority", "linear"]) == ["majority", "linear"]
    with pytest.raises(ValueError, match=r"baseline='lead3': 'lead3' is not a classification baseline; allowed: a "
                                         r"list of \['majority', 'linear'\], or baseline=null"):
        baseline_names("lead3")


def test_a_training_run_writes_the_baselines_unless_baseline_null(tmp_path, caplog):
    steps = ["trainer.max_steps=2", "trainer.limit_val_batches=2"]
    with caplog.at_level(logging.WARNING):
        metrics = run_train(tmp_path / "on", [*steps, "baseline=[majority,linear]"])
    written = json.loads((tmp_path / "on" / "metrics.json").read_text())
    for name in ("majority", "linear"):
        for key in (f"{split}/{m}" for split in ("val", "test") for m in ("acc", "macro_f1", "uar")):
            assert f"baseline/{name}/{key}" in written, (name, key)
    assert written["baseline/majority/test/uar"] == pytest.approx(1 / 6)  # one class of the six
    assert written["baseline/linear/test/acc"] > 0.9 and written["baseline/linear/C"] in C_GRID
    assert metrics["baseline/linear/test/acc"] == written["baseline/linear/test/acc"]
    # logged at the final step, like the test metrics
    assert scalars(tmp_path / "on", "baseline/linear/test/acc") == {metrics["step"]: pytest.approx(
        written["baseline/linear/test/acc"])}
    # two steps do not learn the demo's six emotions: the log says so once
    warnings = [r.getMessage() for r in caplog.records if "does not beat the linear baseline" in r.getMessage()]
    assert warnings == [f"the model does not beat the linear baseline: test/acc {written['test/acc']:.4f}, a "
                        f"logistic regression on fixed features {written['baseline/linear/test/acc']:.4f} "
                        "(baseline/linear/test/acc in metrics.json)"]

    run_train(tmp_path / "off", [*steps, "baseline=null"])
    assert not [k for k in json.loads((tmp_path / "off" / "metrics.json").read_text()) if k.startswith("baseline")]


def test_run_baselines_skips_regression_and_other_data_and_a_failing_baseline_only_warns(caplog):
    data = Views({"train": blobs(40, 0), "test": blobs(20, 1)}, ["a", "b", "c"])
    assert cb.run_baselines([], data) is None and cb.run_baselines(["linear"], object()) is None
    data.task = "regression"
    assert cb.run_baselines(["linear"], data) is None
    data.task = "classification"
    data.baseline_views = lambda split, rows=None: (_ for _ in ()).throw(MemoryError("too big"))
    final = cb.run_baselines(["majority", "linear"], data)
    with caplog.at_level(logging.WARNING):
        extra = final({"test/acc": 0.9})
    assert sorted(extra) == [f"baseline/majority/test/{m}" for m in ("acc", "macro_f1", "uar")]
    assert [r.getMessage() for r in caplog.records] == [
        "baseline linear failed (MemoryError: too big); metrics.json has no baseline/linear/… (baseline=null turns "
        "the baselines off)"]


def test_multimodal_views_concatenate_the_modalities_and_mark_missing_ones(tmp_path):
    from emotionsumm.data.multimodal import MultimodalData

    from .test_fusion import TINY_AUDIO, TINY_IMAGE, media, write_manifest

    wav, png = media(tmp_path)
    train = write_manifest(tmp_path / "train.jsonl", [
        {"text": "so happy", "audio": wav, "image": png, "label": "joy"}, {"text": "so sad", "label": "sadness"}])
    test = write_manifest(tmp_path / "test.jsonl", [{"text": "happy", "label": "joy"}])  # no audio, no image
    data = MultimodalData(files={"train": str(train), "test": str(test)}, audio=TINY_AUDIO, image=TINY_IMAGE,
                          text={"vocab_size": 60, "max_length": 8})
    data.setup(None, splits=("train", "test"))
    views = data.baseline_views("train")
    assert views["text"] == ["so happy", "so sad"]
    assert views["audio"].shape == (2, 16) and np.isnan(views["audio"][1]).all()  # mean and std of 8 mel bins
    pixels = np.arange(64, dtype=np.float32).reshape(8, 8) / 255  # the 8x8 image averaged down to 16x16 = upsampled
    assert views["image"].shape == (2, 256) and views["image"][0].reshape(16, 16)[::2, ::2] == pytest.approx(pixels)
    test_views = data.baseline_views("test")  # no test row has audio or image: all NaN, of the training width
    assert test_views["text"] == ["happy"]
    assert test_views["audio"].shape == (1, 16) and np.isnan(test_views["audio"]).all()
    assert test_views["image"].shape == (1, 256) and np.isnan(test_views["image"]).all()
    scores, _ = score_baseline("linear", data, ("test",))  # "happy" was said with joy; missing media count as mean
    assert scores["test"]["acc"] == 1.0


def test_the_warning_names_next_steps_for_precomputed_features_only():
    from types import SimpleNamespace

    from emotionsumm.metrics.class_baselines import next_steps

    global_only, grouped = SimpleNamespace(by_group=False), SimpleNamespace(by_group=True)
    assert "normalize=group" in next_steps(SimpleNamespace(active=["face", "voice"],
                                                           features={"face": grouped, "voice": global_only}))
    # what the run already does is not suggested again
    assert "normalize=true may do better" in next_steps(SimpleNamespace(active=["face"], features={"face": grouped}))
    assert next_steps(SimpleNamespace(active=["text"], features={"face": global_only})) == ""
    assert next_steps(SimpleNamespace(active=["text"])) == ""  # text data has no feature modalities
