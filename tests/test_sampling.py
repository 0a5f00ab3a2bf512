"""Which examples a step sees: the sharded (weighted) sampler with exact resume, group and stratified splits."""

from __future__ import annotations

import pytest

from emotionsumm.training.sampling import ShardedSampler


def test_sampler_shards_reshuffles_and_resumes_mid_epoch():
    full = [ShardedSampler(10, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in full:
        s.set_epoch(1)
    shards = [list(s) for s in full]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    resumed = ShardedSampler(10, shuffle=True, seed=3, rank=0, world_size=2)
    resumed.set_epoch(1)
    resumed.set_start(2)
    assert list(resumed) == shards[0][2:] and len(resumed) == 3
    other_epoch = ShardedSampler(10, shuffle=True, seed=3)
    other_epoch.set_epoch(2)
    first = ShardedSampler(10, shuffle=True, seed=3)
    first.set_epoch(1)
    assert list(other_epoch) != list(first)
    uneven = [list(ShardedSampler(5, shuffle=False, rank=r, world_size=2, pad=False)) for r in range(2)]
    assert uneven == [[0, 2, 4], [1, 3]]  # evaluation never counts a sample twice


def test_group_split_keeps_each_group_in_one_split_and_stratified_split_keeps_balance():
    from emotionsumm.data.splits import kfold_indices, split_indices

    groups = [f"spk{i % 8}" for i in range(400)]
    parts = split_indices(400, "group", (0.75, 0.125, 0.125), seed=1, groups=groups)
    seen = [{groups[i] for i in parts[s]} for s in ("train", "val", "test")]
    assert [len(s) for s in seen] == [6, 1, 1] and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(400))
    labels = [i % 4 for i in range(400)]
    parts = split_indices(400, "random", (0.8, 0.1, 0.1), seed=2, labels=labels)
    assert [sum(labels[i] == c for i in parts["test"]) for c in range(4)] == [10, 10, 10, 10]
    predefined = split_indices(3, "predefined", predefined=["train", "test", "val"])
    assert predefined == {"train": [0], "val": [2], "test": [1]}
    folds = [kfold_indices(list(range(100)), 5, f, labels=labels[:100]) for f in range(5)]
    held = [set(h) for _, h in folds]
    assert set().union(*held) == set(range(100)) and sum(len(h) for h in held) == 100  # disjoint and covering
    assert all(set(t).isdisjoint(h) for t, h in folds)
    gfolds = [kfold_indices(list(range(400)), 4, f, groups=groups)[1] for f in range(4)]
    assert all({groups[i] for i in a}.isdisjoint({groups[i] for i in b}) for a in gfolds for b in gfolds if a is not b)
    with pytest.raises(ValueError, match="data.fold=5 is out of range"):
        kfold_indices(list(range(10)), 5, 5)


def test_weighted_sampler_balances_classes_deterministically():
    labels = [0] * 90 + [1] * 10
    weights = [1 / 90 if y == 0 else 1 / 10 for y in labels]
    sampler = ShardedSampler(100, shuffle=True, seed=0, weights=weights)
    draws = [labels[i] for epoch in range(20) for i in (sampler.set_epoch(epoch) or list(sampler))]
    assert 0.4 < sum(draws) / len(draws) < 0.6
    sampler.set_epoch(3)
    again = ShardedSampler(100, shuffle=True, seed=0, weights=weights)
    again.set_epoch(3)
    again.set_start(10)
    assert list(again) == list(sampler)[10:]
