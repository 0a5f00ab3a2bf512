"""Length-sorted evaluation on the real data classes: text classification and dialogue summarization give
the metrics and (per example, in file order) the predictions of unsorted evaluation.

The trainer sorts any dataset that has `lengths()`: text datasets have one (all equal here for the unsorted
run), dialogue datasets get one here (by monkeypatch)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from emotionsumm.config.builders import build_data, build_policy
from emotionsumm.data.dialogue import SummaryDataset
from emotionsumm.data.text import TextDataset
from emotionsumm.training.loaders import EvalLoader
from emotionsumm.training.scoring import evaluation_state

from .conftest import TINY, make_cfg
from .test_summarization import TINY_BART

pytestmark = pytest.mark.slow  # builds the real data classes and a tiny BART (about 30 s)


def _state(policy, data, limit=None):
    loader = EvalLoader(data, data.dataset("val"), seed=0, pin_memory=False, limit=limit)
    state = evaluation_state(policy, loader, torch.device("cpu"), contextlib.nullcontext, "val", False)
    return loader, state, policy.compute_metrics(state)


def _sorted_and_unsorted(monkeypatch, dataset_class, examples_of, data, policy, limit=None):
    native = "lengths" in vars(dataset_class)  # text datasets say their lengths; others get them here
    if native:  # equal lengths: the (stable) sort keeps file order. Deleting the method would not do: a
        # runtime-checkable Protocol's isinstance caches its answer per class
        monkeypatch.setattr(dataset_class, "lengths", lambda self: [0] * len(examples_of(self)))
    loader, plain_state, plain = _state(policy, data, limit)
    assert loader.batches.positions == sorted(loader.batches.positions)  # the unsorted order
    if native:
        monkeypatch.undo()
    else:
        monkeypatch.setattr(dataset_class, "lengths",
                            lambda self: [len(ex["input_ids"]) for ex in examples_of(self)], raising=False)
    loader, sorted_state, ordered = _state(policy, data, limit)
    assert loader.batches.positions != sorted(loader.batches.positions)  # the batches really were re-formed
    return plain_state, plain, sorted_state, ordered


@pytest.mark.parametrize("limit", [None, 2])
def test_text_classification_metrics_do_not_change_with_length_sorting(tmp_path, monkeypatch, limit):
    cfg = make_cfg(tmp_path, [*TINY, "data.eval_batch_size=16"])
    data = build_data(cfg, tmp_path)
    torch.manual_seed(0)
    policy = build_policy(cfg, data)
    plain_state, plain, sorted_state, ordered = _sorted_and_unsorted(monkeypatch, TextDataset, lambda d: d.inputs,
                                                                     data, policy, limit)
    assert torch.equal(plain_state["confusion"], sorted_state["confusion"])
    assert {k: v for k, v in ordered.items() if k != "loss"} == {k: v for k, v in plain.items() if k != "loss"}
    assert ordered["loss"] == pytest.approx(plain["loss"], rel=1e-5)


def test_summaries_and_rouge_do_not_change_with_length_sorting(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cfg = make_cfg(tmp_path, [*TINY_BART, "data.eval_batch_size=4", "policy.max_new_tokens=6"])
    data = build_data(cfg, tmp_path)
    torch.manual_seed(0)
    policy = build_policy(cfg, data)
    plain_state, plain, sorted_state, ordered = _sorted_and_unsorted(monkeypatch, SummaryDataset,
                                                                     lambda d: d.examples, data, policy)
    # (the dialogue data orders its evaluation examples shortest first; `index` is each one's file position)
    assert sorted_state["index"] == plain_state["index"] == [ex["index"] for ex in data.dataset("val").examples]
    assert sorted_state["predictions"] == plain_state["predictions"]
    assert sorted_state["ids"] == plain_state["ids"]
    assert {k: v for k, v in ordered.items() if "loss" not in k and "gain" not in k} == \
        {k: v for k, v in plain.items() if "loss" not in k and "gain" not in k}
    assert ordered["loss"] == pytest.approx(plain["loss"], rel=1e-5)
