"""Splits of cases into folds: k-fold, stratified k-fold, group k-fold and train/val/test.

Splits are lists of case ids (strings), drawn from ``numpy.random.default_rng(seed)`` only, and
saved to / loaded from JSON (:meth:`Splits.save`, :func:`load_splits`) so that a run can be
repeated exactly, even with another numpy version. Every function checks that no fold is empty:
an empty fold is an error, never a silently skipped one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Fold",
    "Splits",
    "group_kfold_split",
    "kfold_split",
    "load_splits",
    "stratified_kfold_split",
    "train_val_test_split",
]

_FORMAT = "delira-splits"
_VERSION = 1


@dataclass(frozen=True)
class Fold:
    """One split of the cases: ``train``, ``val`` and (optionally) ``test`` case ids.

    The three tuples are disjoint; ids keep the order of the case list they were drawn from.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}`` (JSON friendly)."""
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


@dataclass
class Splits:
    """The folds of one splitting, with what produced them.

    Attributes:
        folds: the folds (one for :func:`train_val_test_split`).
        kind: ``"kfold"``, ``"stratified_kfold"``, ``"group_kfold"`` or ``"train_val_test"``.
        seed: the seed they were drawn with.
        params: the other arguments (``n_splits``, fractions, ...), for the record.
    """

    folds: list[Fold]
    kind: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.folds)

    def __getitem__(self, i: int) -> Fold:
        return self.folds[i]

    def __iter__(self) -> Iterator[Fold]:
        return iter(self.folds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document :meth:`save` writes."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "kind": self.kind,
            "seed": self.seed,
            "params": self.params,
            "folds": [f.to_dict() for f in self.folds],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the splits as JSON to ``path`` (parent folders are created) atomically (a unique
        temporary sibling, fsync, rename: two processes never leave a mixed file); returns the path."""
        from delira.data.preprocessing import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text))
        return path

    def check_covers(self, case_ids: Sequence[str]) -> None:
        """Raise ``ValueError`` unless every fold partitions exactly ``case_ids`` into disjoint parts."""
        expected = {str(c) for c in case_ids}
        for k, fold in enumerate(self.folds):
            parts = [set(fold.train), set(fold.val), set(fold.test)]
            union = parts[0] | parts[1] | parts[2]
            if sum(len(p) for p in parts) != len(union):
                raise ValueError(f"fold {k} has a case in more than one of train/val/test")
            if union != expected:
                missing, extra = sorted(expected - union), sorted(union - expected)
                raise ValueError(
                    f"fold {k} does not match the dataset: missing {missing[:10]}, unknown {extra[:10]}; "
                    "the splits belong to another dataset or version of it"
                )


def load_splits(path: str | os.PathLike[str]) -> Splits:
    """Read splits written by :meth:`Splits.save`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a splits file, or has an empty fold.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file {path} does not exist; create it with Splits.save(path)")
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ValueError(
            f"{path} is not a delira splits file (expected a JSON object with format={_FORMAT!r})"
        )
    if doc.get("version") != _VERSION:
        raise ValueError(
            f"{path} has splits format version {doc.get('version')}; this delira reads {_VERSION}"
        )
    folds = [
        Fold(tuple(map(str, f["train"])), tuple(map(str, f["val"])), tuple(map(str, f.get("test", []))))
        for f in doc["folds"]
    ]
    for k, fold in enumerate(folds):
        if not fold.train or not fold.val:
            raise ValueError(f"{path}: fold {k} has an empty train or val part; regenerate the splits")
    return Splits(folds, str(doc["kind"]), int(doc["seed"]), dict(doc.get("params", {})))


def _ids(case_ids: Sequence[Any]) -> list[str]:
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        dup = sorted(c for c, n in Counter(ids).items() if n > 1)
        raise ValueError(f"case ids must be unique; duplicated: {dup[:10]}")
    return ids


def _check_n_splits(n_splits: int, n_units: int, unit: str) -> None:
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}; use train_val_test_split for one split")
    if n_units < n_splits:
        raise ValueError(
            f"cannot make {n_splits} folds from {n_units} {unit}: at least one fold would be empty; "
            f"lower n_splits to at most {n_units} or add cases"
        )


def _folds_from_assignment(ids: list[str], assignment: np.ndarray, n_splits: int) -> list[Fold]:
    folds = []
    for k in range(n_splits):
        val = tuple(c for c, a in zip(ids, assignment) if a == k)
        train = tuple(c for c, a in zip(ids, assignment) if a != k)
        if not val or not train:  # guarded by the callers; kept as a last line of defence
            raise ValueError(f"fold {k} would be empty; lower n_splits")
        folds.append(Fold(train, val))
    return folds


def kfold_split(case_ids: Sequence[Any], n_splits: int = 5, seed: int = 0, shuffle: bool = True) -> Splits:
    """K-fold cross-validation: each case is in the validation part of exactly one fold.

    Args:
        case_ids: the cases (unique).
        n_splits: number of folds, ``2 <= n_splits <= len(case_ids)``.
        seed: seeds the shuffle.
        shuffle: shuffle the cases before cutting them into ``n_splits`` consecutive runs (sizes
            differ by at most one); without it fold ``k`` validates on the ``k``-th run in order.

    Returns:
        :class:`Splits` with ``n_splits`` folds.
    """
    ids = _ids(case_ids)
    _check_n_splits(n_splits, len(ids), "cases")
    order = np.random.default_rng(seed).permutation(len(ids)) if shuffle else np.arange(len(ids))
    assignment = np.empty(len(ids), dtype=np.int64)
    for k, part in enumerate(np.array_split(order, n_splits)):
        assignment[part] = k
    return Splits(
        _folds_from_assignment(ids, assignment, n_splits),
        "kfold",
        int(seed),
        {"n_splits": n_splits, "shuffle": shuffle},
    )


def stratified_kfold_split(
    case_ids: Sequence[Any], labels: Sequence[Any], n_splits: int = 5, seed: int = 0
) -> Splits:
    """K-fold with every class spread evenly: per fold, a class's count differs by at most one.

    The cases of each class (classes in sorted order) are shuffled and dealt to the folds in turn,
    the dealing continuing across classes, so fold sizes also differ by at most one.

    Args:
        case_ids: the cases (unique).
        labels: one class label per case.
        n_splits: number of folds, ``2 <= n_splits <= len(case_ids)``.
        seed: seeds the shuffles.
    """
    ids = _ids(case_ids)
    labels = list(labels)
    if len(labels) != len(ids):
        raise ValueError(f"got {len(labels)} labels for {len(ids)} cases; give one label per case")
    _check_n_splits(n_splits, len(ids), "cases")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(ids), dtype=np.int64)
    position = 0
    for cls in sorted(set(labels), key=repr):
        members = np.array([i for i, label in enumerate(labels) if label == cls])
        for i in rng.permutation(members):
            assignment[i] = position % n_splits
            position += 1
    return Splits(
        _folds_from_assignment(ids, assignment, n_splits),
        "stratified_kfold",
        int(seed),
        {"n_splits": n_splits},
    )


def group_kfold_split(
    case_ids: Sequence[Any], groups: Sequence[Any], n_splits: int = 5, seed: int = 0
) -> Splits:
    """K-fold that keeps all cases of one group (patient) in the same fold.

    Groups are taken from largest to smallest (ties in a seeded random order) and each goes to the
    fold with the fewest cases so far, which balances the fold sizes.

    Args:
        case_ids: the cases (unique).
        groups: one group id per case (e.g. the patient id).
        n_splits: number of folds, ``2 <= n_splits <=`` the number of groups.
        seed: seeds the order of equally large groups.
    """
    ids = _ids(case_ids)
    groups = [str(g) for g in groups]
    if len(groups) != len(ids):
        raise ValueError(f"got {len(groups)} groups for {len(ids)} cases; give one group id per case")
    unique = sorted(set(groups))
    _check_n_splits(n_splits, len(unique), "groups")
    sizes = {g: 0 for g in unique}
    for g in groups:
        sizes[g] += 1
    shuffled = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    ordered = sorted(shuffled, key=lambda g: -sizes[g])  # stable: ties keep the shuffled order
    fold_of: dict[str, int] = {}
    totals = [0] * n_splits
    for g in ordered:
        k = int(np.argmin(totals))
        fold_of[g] = k
        totals[k] += sizes[g]
    assignment = np.array([fold_of[g] for g in groups], dtype=np.int64)
    return Splits(
        _folds_from_assignment(ids, assignment, n_splits), "group_kfold", int(seed), {"n_splits": n_splits}
    )


def _part_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_val = round(n * val_fraction)
    n_test = round(n * test_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if test_fraction > 0:
        n_test = max(n_test, 1)
    return n_val, n_test


def train_val_test_split(
    case_ids: Sequence[Any],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    stratify: Sequence[Any] | None = None,
    groups: Sequence[Any] | None = None,
) -> Splits:
    """One split into train, val and test parts.

    Args:
        case_ids: the cases (unique).
        val_fraction: share of cases for validation, in ``(0, 1)``.
        test_fraction: share of cases for testing, in ``[0, 1)`` (0: no test part).
        seed: seeds the draw.
        stratify: optional labels, one per case: each class is split with the same fractions.
        groups: optional group ids, one per case: a group's cases all land in one part (the parts
            then hold approximately the requested fractions). Not combined with ``stratify``.

    Returns:
        :class:`Splits` with a single :class:`Fold`.

    Raises:
        ValueError: a part would be empty (too few cases or groups for the fractions).
    """
    ids = _ids(case_ids)
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"need 0 < val_fraction < 1, 0 <= test_fraction < 1 and val + test < 1; got "
            f"val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    if stratify is not None and groups is not None:
        raise ValueError("pass either stratify or groups, not both")
    rng = np.random.default_rng(seed)
    part = np.zeros(len(ids), dtype=np.int64)  # 0 train, 1 val, 2 test
    if groups is not None:
        groups = [str(g) for g in groups]
        if len(groups) != len(ids):
            raise ValueError(f"got {len(groups)} groups for {len(ids)} cases; give one group id per case")
        unique = sorted(set(groups))
        n_val, n_test = _part_sizes(len(ids), val_fraction, test_fraction)
        counts = {g: groups.count(g) for g in unique}
        filled = [0, 0, 0]
        targets = {2: n_test, 1: n_val}
        group_part = {}
        for g in (unique[i] for i in rng.permutation(len(unique))):
            p = next((p for p in (2, 1) if filled[p] < targets[p]), 0)
            group_part[g] = p
            filled[p] += counts[g]
        part = np.array([group_part[g] for g in groups], dtype=np.int64)
    elif stratify is not None:
        labels = list(stratify)
        if len(labels) != len(ids):
            raise ValueError(f"got {len(labels)} labels for {len(ids)} cases; give one label per case")
        for cls in sorted(set(labels), key=repr):
            members = rng.permutation([i for i, label in enumerate(labels) if label == cls])
            n_val, n_test = round(len(members) * val_fraction), round(len(members) * test_fraction)
            part[members[:n_test]] = 2
            part[members[n_test : n_test + n_val]] = 1
    else:
        n_val, n_test = _part_sizes(len(ids), val_fraction, test_fraction)
        order = rng.permutation(len(ids))
        part[order[:n_test]] = 2
        part[order[n_test : n_test + n_val]] = 1
    fold = Fold(
        tuple(c for c, p in zip(ids, part) if p == 0),
        tuple(c for c, p in zip(ids, part) if p == 1),
        tuple(c for c, p in zip(ids, part) if p == 2),
    )
    empty = [name for name, ids_ in (("train", fold.train), ("val", fold.val)) if not ids_]
    if test_fraction > 0 and not fold.test:
        empty.append("test")
    if empty:
        raise ValueError(
            f"the {'/'.join(empty)} part would be empty with {len(ids)} cases, val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}; add cases or change the fractions"
        )
    params = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    params["stratified"] = stratify is not None
    params["grouped"] = groups is not None
    return Splits([fold], "train_val_test", int(seed), params)
