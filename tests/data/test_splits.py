"""Splits: disjoint, covering, group-preserving, stratified, saved and loaded exactly."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delira.data import (
    group_kfold_split,
    kfold_split,
    load_splits,
    stratified_kfold_split,
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
