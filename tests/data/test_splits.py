"""Splits: disjoint, covering, group-preserving, stratified, saved and loaded exactly."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delira.data import (
    group_kfold_split,
    holdout_validation,
    kfold_split,
    load_splits,
    stratified_kfold_split,
    train_val_split,
    train_val_test_split,
)

IDS = [f"case{i:02d}" for i in range(23)]


def check_partition(splits, ids):
    vals = [v for fold in splits for v in fold.val]
    assert sorted(vals) == sorted(ids)  # each case validated exactly once
    for fold in splits:
        assert not set(fold.train) & set(fold.val)
        assert sorted(fold.train + fold.val) == sorted(ids)
        assert fold.val and fold.train


@pytest.mark.parametrize("n_splits", [2, 5, 23])
def test_kfold_covers_every_case_once_with_balanced_folds(n_splits):
    splits = kfold_split(IDS, n_splits=n_splits, seed=3)
    assert len(splits) == n_splits
    check_partition(splits, IDS)
    sizes = [len(f.val) for f in splits]
    assert max(sizes) - min(sizes) <= 1
    assert kfold_split(IDS, n_splits, seed=3).to_dict() == splits.to_dict()
    assert kfold_split(IDS, n_splits, seed=4).to_dict() != splits.to_dict() or n_splits == 23


def test_kfold_without_shuffle_takes_runs_in_order():
    splits = kfold_split(["a", "b", "c", "d", "e"], n_splits=2, shuffle=False)
    assert [f.val for f in splits] == [("a", "b", "c"), ("d", "e")]


def test_stratified_keeps_class_ratios():
    labels = [0] * 12 + [1] * 6 + [2] * 5  # 23 cases
    splits = stratified_kfold_split(IDS, labels, n_splits=3, seed=1)
    check_partition(splits, IDS)
    label_of = dict(zip(IDS, labels))
    for cls, total in Counter(labels).items():
        per_fold = [sum(label_of[c] == cls for c in f.val) for f in splits]
        # 12 -> 4/4/4, 6 -> 2/2/2, 5 -> 2/2/1 in some order
        assert sum(per_fold) == total and max(per_fold) - min(per_fold) <= 1
    sizes = [len(f.val) for f in splits]
    assert max(sizes) - min(sizes) <= 1


def test_group_kfold_keeps_patients_together():
    groups = [f"p{i // 3}" for i in range(23)]  # 8 patients, 3 cases each (the last has 2)
    splits = group_kfold_split(IDS, groups, n_splits=4, seed=0)
    check_partition(splits, IDS)
    group_of = dict(zip(IDS, groups))
    for fold in splits:
        assert not {group_of[c] for c in fold.train} & {group_of[c] for c in fold.val}
    sizes = sorted(len(f.val) for f in splits)
    assert sizes[-1] - sizes[0] <= 3  # whole groups of <= 3 cases, greedily balanced
    with pytest.raises(ValueError, match="9 folds from 8 groups"):
        group_kfold_split(IDS, groups, n_splits=9)


def test_empty_folds_are_errors():
    with pytest.raises(ValueError, match="at least one fold would be empty"):
        kfold_split(IDS[:3], n_splits=4)
    with pytest.raises(ValueError, match="n_splits must be >= 2"):
        kfold_split(IDS, n_splits=1)
    with pytest.raises(ValueError, match="unique"):
        kfold_split(["a", "a", "b"], n_splits=2)
    with pytest.raises(ValueError, match="train part would be empty"):
        train_val_test_split(["a", "b"], val_fraction=0.4, test_fraction=0.4)


def test_train_val_test_fractions():
    split = train_val_test_split([*IDS, "x"], val_fraction=0.25, test_fraction=0.25, seed=2)[0]
    assert (len(split.train), len(split.val), len(split.test)) == (12, 6, 6)
    assert sorted(split.train + split.val + split.test) == sorted([*IDS, "x"])
    labels = ["a"] * 12 + ["b"] * 12
    strat = train_val_test_split([*IDS, "x"], 0.25, 0.25, seed=0, stratify=labels)[0]
    label_of = dict(zip([*IDS, "x"], labels))
    assert Counter(label_of[c] for c in strat.val) == {"a": 3, "b": 3}
    assert Counter(label_of[c] for c in strat.test) == {"a": 3, "b": 3}
    groups = [f"p{i // 2}" for i in range(24)]
    grouped = train_val_test_split([*IDS, "x"], 0.25, 0.25, seed=0, groups=groups)[0]
    group_of = dict(zip([*IDS, "x"], groups))
    parts = [{group_of[c] for c in part} for part in (grouped.train, grouped.val, grouped.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_save_and_load_round_trip(tmp_path):
    splits = stratified_kfold_split(IDS, [i % 2 for i in range(23)], n_splits=3, seed=7)
    path = splits.save(tmp_path / "sub" / "splits.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "stratified_kfold" and doc["seed"] == 7 and len(doc["folds"]) == 3
    loaded = load_splits(path)
    assert loaded.folds == splits.folds and loaded.kind == splits.kind and loaded.params == splits.params
    loaded.check_covers(IDS)
    with pytest.raises(ValueError, match="missing"):
        loaded.check_covers([*IDS, "new"])
    doc["folds"][1]["val"] = []
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="fold 1 has an empty"):
        load_splits(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_splits(tmp_path / "missing.json")


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=2, max_size=40),
    groups_per_case=st.integers(1, 4),
    n_splits=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_split_properties_for_random_inputs(labels, groups_per_case, n_splits, seed):
    ids = [f"c{i}" for i in range(len(labels))]
    groups = [f"g{i // groups_per_case}" for i in range(len(ids))]
    if n_splits > len(ids):
        with pytest.raises(ValueError, match="empty"):
            kfold_split(ids, n_splits, seed)
        return
    check_partition(kfold_split(ids, n_splits, seed), ids)
    strat = stratified_kfold_split(ids, labels, n_splits, seed)
    check_partition(strat, ids)
    for cls in set(labels):
        counts = [sum(labels[ids.index(c)] == cls for c in f.val) for f in strat]
        assert max(counts) - min(counts) <= 1
    if n_splits > len(set(groups)):
        with pytest.raises(ValueError, match="empty"):
            group_kfold_split(ids, groups, n_splits, seed)
        return
    grouped = group_kfold_split(ids, groups, n_splits, seed)
    check_partition(grouped, ids)
    for fold in grouped:
        assert not {groups[ids.index(c)] for c in fold.train} & {groups[ids.index(c)] for c in fold.val}


def test_concurrent_saves_never_leave_a_partial_file(tmp_path):
    import threading

    from delira.data import kfold_split, load_splits

    ids = [f"case_{i:03d}" for i in range(200)]
    variants = [kfold_split(ids, n_splits=k, seed=k) for k in (2, 3, 5)]
    path = tmp_path / "splits.json"
    variants[0].save(path)
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(len(load_splits(path)))  # a torn file would fail to parse

    def writer(s):
        for _ in range(30):
            s.save(path)

    threads = [threading.Thread(target=reader)] + [
        threading.Thread(target=writer, args=(s,)) for s in variants
    ]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert seen and set(seen) <= {2, 3, 5}
    assert [p.name for p in tmp_path.iterdir()] == ["splits.json"]  # no temporary file left behind


# --- train_val_split and holdout_validation ----------------------------------------------------------
def _reference_train_val(ids, val_fraction, seed):
    """The single split written before train_val_split existed (numpy only): the first
    max(1, round(n * f)) of a seeded permutation validate; both parts sorted."""
    cut = max(1, round(len(ids) * val_fraction))
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return tuple(sorted(order[cut:])), tuple(sorted(order[:cut]))


def _reference_holdout(fold_train, val_fraction, seed, k):
    """The held-out part drawn per fold before holdout_validation existed (numpy only)."""
    rng = np.random.default_rng([seed, k])
    cut = max(1, round(len(fold_train) * val_fraction))
    picked = set(rng.choice(len(fold_train), size=cut, replace=False).tolist())
    return (
        tuple(c for i, c in enumerate(fold_train) if i not in picked),
        tuple(c for i, c in enumerate(fold_train) if i in picked),
    )


@pytest.mark.parametrize(("fraction", "seed"), [(0.2, 0), (0.5, 3), (0.01, 7)])
def test_train_val_split_equals_the_earlier_draw(fraction, seed, tmp_path):
    splits = train_val_split(IDS, fraction, seed)
    assert len(splits) == 1 and splits.kind == "train_val" and splits.params == {"val_fraction": fraction}
    fold = splits[0]
    assert (fold.train, fold.val) == _reference_train_val(IDS, fraction, seed)
    assert len(fold.val) == max(1, round(23 * fraction)) and fold.test == ()
    assert sorted(fold.train + fold.val) == sorted(IDS) and not set(fold.train) & set(fold.val)
    # a splits.json in the earlier format (kind train_val) loads to the same folds
    earlier = {
        "format": "delira-splits",
        "version": 1,
        "kind": "train_val",
        "seed": seed,
        "params": {"val_fraction": fraction},
        "folds": [{"train": list(fold.train), "val": list(fold.val), "test": []}],
    }
    (tmp_path / "splits.json").write_text(json.dumps(earlier))
    loaded = load_splits(tmp_path / "splits.json")
    assert loaded.folds == splits.folds and loaded.to_dict() == splits.to_dict()


def test_train_val_split_stratified_keeps_class_shares_within_one_case():
    labels = [0] * 12 + [1] * 6 + [2] * 5  # 23 cases
    label_of = dict(zip(IDS, labels))
    for fraction in (0.2, 0.3, 0.5):
        fold = train_val_split(IDS, fraction, seed=4, labels=labels)[0]
        n_val = max(1, round(23 * fraction))
        assert len(fold.val) == n_val and sorted(fold.train + fold.val) == sorted(IDS)
        counts = Counter(label_of[c] for c in fold.val)
        for cls, total in Counter(labels).items():
            assert abs(counts.get(cls, 0) - n_val * total / 23) < 1, (fraction, cls, counts)
    # hand-computed: 20 cases, 10/10 classes, 0.3 -> 6 validation cases, 3 of each class
    ids = [f"c{i}" for i in range(20)]
    fold = train_val_split(ids, 0.3, seed=1, labels=["a", "b"] * 10)[0]
    assert Counter(["a", "b"][int(c[1:]) % 2] for c in fold.val) == {"a": 3, "b": 3}


def test_train_val_split_grouped_never_splits_a_group():
    groups = [f"p{i // 3}" for i in range(23)]  # 8 patients of 3 cases (the last has 2)
    group_of = dict(zip(IDS, groups))
    for seed in range(5):
        splits = train_val_split(IDS, 0.25, seed, groups=groups)
        fold = splits[0]
        assert splits.params == {"val_fraction": 0.25, "grouped": True}
        assert sorted(fold.train + fold.val) == sorted(IDS) and fold.train and fold.val
        assert not {group_of[c] for c in fold.train} & {group_of[c] for c in fold.val}
        assert abs(len(fold.val) - round(23 * 0.25)) < 3  # within one group's size of the target


def test_train_val_split_errors_say_what_to_change():
    with pytest.raises(ValueError, match="keep a training case"):
        train_val_split(["a"], 0.5)
    with pytest.raises(ValueError, match="val_fraction must be a number in \\(0, 1\\)"):
        train_val_split(IDS, 1.5)
    with pytest.raises(ValueError, match="got 2 labels for 23 cases"):
        train_val_split(IDS, 0.2, labels=[0, 1])
    with pytest.raises(ValueError, match="either labels or groups"):
        train_val_split(IDS, 0.2, labels=[0] * 23, groups=["g"] * 23)
    with pytest.raises(ValueError, match="at least 2 groups"):
        train_val_split(IDS, 0.2, groups=["g"] * 23)


@pytest.mark.parametrize("seed", [0, 5])
def test_holdout_validation_equals_the_earlier_draw(seed):
    base = kfold_split(IDS, n_splits=3, seed=seed)
    held = holdout_validation(base, 0.25, seed)
    assert held.kind == "kfold" and held.seed == seed
    assert held.params == {**base.params, "val_fraction": 0.25}
    for k, (old, new) in enumerate(zip(base, held)):
        assert (new.train, new.val) == _reference_holdout(list(old.train), 0.25, seed, k)
        assert new.test == old.val
        assert sorted(new.train + new.val + new.test) == sorted(IDS)
        assert not (set(new.train) & set(new.val) or set(new.train) & set(new.test))


def test_holdout_validation_stratified_and_grouped():
    labels = [i % 3 for i in range(23)]
    label_of = dict(zip(IDS, labels))
    base = stratified_kfold_split(IDS, labels, n_splits=3, seed=2)
    held = holdout_validation(base, 0.3, 2, labels=label_of)
    for old, new in zip(base, held):
        assert new.test == old.val and sorted(new.train + new.val) == sorted(old.train)
        n_val = max(1, round(len(old.train) * 0.3))
        assert len(new.val) == n_val
        in_train = Counter(label_of[c] for c in old.train)
        got = Counter(label_of[c] for c in new.val)
        for cls, total in in_train.items():
            assert abs(got.get(cls, 0) - n_val * total / len(old.train)) < 1
    groups = {c: f"p{i // 2}" for i, c in enumerate(IDS)}  # 12 patients
    base = group_kfold_split(IDS, [groups[c] for c in IDS], n_splits=3, seed=1)
    held = holdout_validation(base, 0.25, 1, groups=groups)
    for old, new in zip(base, held):
        parts = [{groups[c] for c in part} for part in (new.train, new.val, new.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert new.val and new.train and new.test == old.val
    with pytest.raises(ValueError, match="no entry for cases"):
        holdout_validation(base, 0.25, 1, groups={"case00": "p0"})
    with pytest.raises(TypeError, match="mapping case id"):
        holdout_validation(base, 0.25, 1, labels=labels)
    with pytest.raises(ValueError, match="already has a test part"):
        holdout_validation(held, 0.25, 1)
