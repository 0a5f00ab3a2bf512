"""`python -m emotionsumm.evaluate baseline=majority|linear experiment=<name>` through its command line."""

from __future__ import annotations

import json

import pytest

from ..conftest import cli


def _evaluate(tmp_path, *args: str) -> dict:
    proc = cli("evaluate", *args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{"):]) == written  # printed and written alike
    return written


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    return {name: _evaluate(tmp_path_factory.mktemp(name), f"baseline={name}", "experiment=emotion_text")
            for name in ("majority", "linear")}


def test_evaluate_scores_the_linear_and_the_majority_baseline_on_the_test_split(scores):
    majority, linear = scores["majority"], scores["linear"]
    for metrics in (majority, linear):
        assert {"test/acc", "test/macro_f1", "test/uar", "baseline", "examples"} <= set(metrics)
    assert majority["baseline"] == "majority" and majority["examples"] == linear["examples"] == 300
    # one class predicted for all six: UAR is 1/6, and only that class has an F1 above 0
    assert majority["test/uar"] == pytest.approx(1 / 6) and majority["test/pred_classes"] == 1
    f1 = {k.removeprefix("test/f1_"): v for k, v in majority.items() if k.startswith("test/f1_")}
    assert len(f1) == 6 and [name for name, value in f1.items() if value > 0] == [majority["class"]]
    # the demo's emotions are told by their words: a bag of words separates them
    assert linear["test/acc"] > 0.9 and linear["test/macro_f1"] > 0.9 and linear["test/acc"] > majority["test/acc"]
    assert linear["C_chosen_on"] == "val" and linear["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def test_a_classification_baseline_on_summarization_data_says_what_to_use(tmp_path):
    proc = cli("evaluate", "baseline=linear", "experiment=summarization", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert ("baseline=linear scores classification data; emotionsumm.data.dialogue.DialogueSummaryData is not "
            "classification data (summarization: baseline=lead3)") in proc.stderr
