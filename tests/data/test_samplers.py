"""Samplers: order, determinism per (seed, epoch), frequencies, sharding, foreground share."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from delira.data import (
    ClassBalancedSampler,
    ForegroundOversamplingSampler,
    RandomSampler,
    SequentialSampler,
    ShardedSampler,
    WeightedRandomSampler,
)


def epoch(sampler, e):
    sampler.set_epoch(e)
    return list(sampler)


def test_sequential():
    assert list(SequentialSampler(4)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="empty"):
        SequentialSampler(0)


def test_random_without_replacement_is_a_permutation_per_epoch():
    s = RandomSampler(50, seed=1)
    e0, e1 = epoch(s, 0), epoch(s, 1)
    assert sorted(e0) == sorted(e1) == list(range(50))
    assert e0 != e1
    assert epoch(RandomSampler(50, seed=1), 0) == e0  # a fresh sampler: same (seed, epoch), same order
    assert epoch(RandomSampler(50, seed=2), 0) != e0
    longer = epoch(RandomSampler(5, num_samples=12, seed=0), 0)
    assert len(longer) == 12 and sorted(longer[:5]) == sorted(longer[5:10]) == list(range(5))


def test_random_with_replacement_is_uniform():
    keys = epoch(RandomSampler(4, replacement=True, num_samples=40000, seed=3), 0)
    counts = np.bincount(keys, minlength=4) / 40000
    np.testing.assert_allclose(counts, 0.25, atol=0.01)  # std of a share: sqrt(.25*.75/40000) ~ 0.002


def test_weighted_frequencies_follow_the_weights():
    weights = [0.0, 1.0, 3.0]
    keys = epoch(WeightedRandomSampler(weights, num_samples=40000, seed=0), 0)
    counts = np.bincount(keys, minlength=3) / 40000
    assert counts[0] == 0
    np.testing.assert_allclose(counts, [0, 0.25, 0.75], atol=0.01)
    no_repeat = epoch(WeightedRandomSampler([1, 1, 1, 0], num_samples=3, replacement=False), 0)
    assert sorted(no_repeat) == [0, 1, 2]
    with pytest.raises(ValueError, match="without replacement"):
        WeightedRandomSampler([1, 0], num_samples=2, replacement=False)
    with pytest.raises(ValueError, match="not all 0"):
        WeightedRandomSampler([0, 0])


def test_class_balanced_draws_classes_equally():
    labels = ["a"] * 90 + ["b"] * 9 + ["c"] * 1
    keys = epoch(ClassBalancedSampler(labels, num_samples=30000, seed=0), 0)
    per_class = Counter(labels[k] for k in keys)
    for cls in "abc":
        assert abs(per_class[cls] / 30000 - 1 / 3) < 0.015


def test_sharding_splits_an_epoch_between_ranks():
    full = epoch(RandomSampler(10, seed=4), 2)
    shards = [ShardedSampler(RandomSampler(10, seed=4), r, 3) for r in range(3)]
    parts = [epoch(s, 2) for s in shards]
    # 10 keys padded to 12 by repeating the first two, then dealt round-robin to the 3 ranks.
    padded = full + full[:2]
    assert parts == [padded[0::3], padded[1::3], padded[2::3]]
    assert [len(p) for p in parts] == [4, 4, 4] == [len(s) for s in shards]
    assert set().union(*map(set, parts)) == set(range(10))
    exact = [epoch(ShardedSampler(SequentialSampler(9), r, 3, drop_last=True), 0) for r in range(3)]
    assert exact == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="rank"):
        ShardedSampler(SequentialSampler(4), 3, 3)


def test_foreground_oversampling_matches_nnunet_positions():
    s = ForegroundOversamplingSampler(10, batch_size=2, foreground_fraction=0.33, num_samples=20, seed=0)
    keys = epoch(s, 0)
    assert len(keys) == 20
    # nnU-Net: position j of a batch is forced when j >= round(batch_size * (1 - 0.33)) = round(1.34) = 1
    assert [k.foreground for k in keys] == [False, True] * 10
    s5 = ForegroundOversamplingSampler(10, batch_size=5, foreground_fraction=0.5, num_samples=10)
    assert [k.foreground for k in epoch(s5, 0)][:5] == [False, False, True, True, True]  # round(2.5) = 2
    assert all(0 <= k.index < 10 for k in keys)
    assert len({k.seed for k in keys}) == 20
    assert epoch(s, 1) != keys and epoch(s, 0) == keys
