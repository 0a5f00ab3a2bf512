"""benchmarks/feature_sets.py and feature_recipes.py: the pieces the small-feature-set numbers rest on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


feature_sets, feature_recipes = load("feature_sets"), load("feature_recipes")


def test_hog_puts_a_vertical_edge_in_the_horizontal_gradient_bin_of_the_cells_it_crosses():
    image = torch.zeros(16, 16)
    image[:, 8:] = 1.0  # a vertical edge between columns 7 and 8: gradient along x, angle 0
    cells = feature_sets.hog(image).reshape(2, 2, 9)
    assert torch.allclose(cells[:, :, 0], torch.ones(2, 2))  # each cell touches the edge; L2-normalised
    assert not cells[:, :, 1:].any()


def test_group_folds_deal_every_group_to_exactly_one_fold():
    groups = {f"S{i:03d}" for i in range(11)}
    folds = feature_recipes.group_folds(groups, 3)
    assert len(folds) == 3 and sorted(g for f in folds for g in f) == sorted(groups)
    assert [len(f) for f in folds] == [4, 4, 3]
    assert feature_recipes.group_folds({"b", "a"}, None) == [["a"], ["b"]]  # leave one group out


def test_per_speaker_views_are_each_speakers_own_standardisation():
    views = {"v": np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 0.0], [30.0, 2.0]])}
    out = feature_recipes.per_speaker(views, np.array(["a", "a", "b", "b"]))["v"]
    assert np.allclose(out, [[-1.0, 0.0], [1.0, 0.0], [-1.0, -1.0], [1.0, 1.0]])
