"""Splits of cases into folds: k-fold, stratified k-fold, group k-fold, train/val(/test) and a
validation hold-out inside the training part of every fold.

Splits are lists of case ids (strings), drawn from ``numpy.random.default_rng(seed)`` only, and
saved to / loaded from JSON (:meth:`Splits.save`, :func:`load_splits`) so that a run can be
repeated exactly, even with another numpy version. Every function checks that no fold is empty:
an empty fold is an error, never a silently skipped one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Fold",
    "Splits",
    "group_kfold_split",
    "holdout_validation",
    "kfold_split",
    "load_splits",
    "stratified_kfold_split",
    "train_val_split",
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
        kind: ``"kfold"``, ``"stratified_kfold"``, ``"group_kfold"``, ``"train_val"`` or
            ``"train_val_test"``.
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


# --- one train/val split and a hold-out inside each fold ----------------------------------------------
def _check_fraction(val_fraction: float, name: str = "val_fraction") -> float:
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 < val_fraction < 1
    ):
        raise ValueError(f"{name} must be a number in (0, 1), got {val_fraction!r}; e.g. 0.2")
    return float(val_fraction)


def _val_count(n: int, val_fraction: float, what: str) -> int:
    """``max(1, round(n * val_fraction))``, checked to leave at least one training case."""
    cut = max(1, round(n * val_fraction))
    if cut >= n:
        raise ValueError(
            f"cannot hold out {val_fraction:g} of {n} {what} for validation and keep a training case; "
            "add cases or lower val_fraction"
        )
    return cut


def _stratified_pick(labels: Sequence[Any], n_val: int, rng: np.random.Generator) -> list[int]:
    """Indices of ``n_val`` cases such that every class gets its proportional share of the
    validation part up to less than one case: ``floor(n_val * n_c / n)`` per class, the remaining
    places going to the classes with the largest remainders (ties in a seeded random order); the
    members of a class are drawn at random."""
    n = len(labels)
    classes = sorted(set(labels), key=repr)
    members = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    exact = {c: n_val * len(members[c]) / n for c in classes}
    quota = {c: int(np.floor(exact[c])) for c in classes}
    tie = rng.permutation(len(classes))
    ranked = sorted(range(len(classes)), key=lambda j: (-(exact[classes[j]] - quota[classes[j]]), tie[j]))
    for j in ranked[: n_val - sum(quota.values())]:
        quota[classes[j]] += 1
    picked: list[int] = []
    for c in classes:
        order = rng.permutation(len(members[c]))
        picked += [members[c][i] for i in order[: quota[c]]]
    return picked


def _grouped_pick(groups: Sequence[str], n_val: int, rng: np.random.Generator, what: str) -> list[int]:
    """Indices of whole groups making about ``n_val`` cases: groups from largest to smallest (ties in
    a seeded random order) join the validation part while they fit; when none fits, the smallest
    does. The part holds within one group's size of ``n_val``; a group is never split."""
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(
            f"cannot split {len(groups)} {what} of {len(unique)} group(s) into train and val without "
            "splitting a group; give at least 2 groups or leave groups out"
        )
    sizes = Counter(groups)
    shuffled = [unique[i] for i in rng.permutation(len(unique))]
    ordered = sorted(shuffled, key=lambda g: -sizes[g])  # stable: ties keep the shuffled order
    chosen: set[str] = set()
    filled = 0
    for g in ordered:
        if filled + sizes[g] <= n_val:
            chosen.add(g)
            filled += sizes[g]
    if not chosen:
        chosen.add(ordered[-1])
    return [i for i, g in enumerate(groups) if g in chosen]


def _pick_validation(
    n: int,
    n_val: int,
    rng: np.random.Generator,
    labels: Sequence[Any] | None,
    groups: Sequence[Any] | None,
    what: str,
) -> list[int] | None:
    """The stratified or grouped pick, or None when neither is asked for (the caller's plain draw)."""
    if labels is not None and groups is not None:
        raise ValueError("pass either labels or groups, not both (a grouped split is not stratified)")
    if labels is not None:
        return _stratified_pick(list(labels), n_val, rng)
    if groups is not None:
        return _grouped_pick([str(g) for g in groups], n_val, rng, what)
    return None


def _per_case(values: Sequence[Any] | None, n: int, name: str) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or isinstance(values, Mapping):
        raise TypeError(f"{name} must be a sequence with one entry per case, got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise ValueError(
            f"got {len(values)} {name} for {n} cases; give one per case, in the order of case_ids"
        )
    return values


def train_val_split(
    case_ids: Sequence[Any],
    val_fraction: float = 0.2,
    seed: int = 0,
    labels: Sequence[Any] | None = None,
    groups: Sequence[Any] | None = None,
) -> Splits:
    """One split into a training and a validation part (``experiment.folds: 1``).

    The validation part holds ``max(1, round(len(case_ids) * val_fraction))`` cases: drawn at
    random (``numpy.random.default_rng(seed).permutation``); with ``labels`` every class gets its
    share of them up to less than one case (stratified); with ``groups`` whole groups are taken
    (a group, e.g. a patient, is never on both sides; the part then holds within one group's size
    of that count). Both parts list their ids sorted.

    Args:
        case_ids: the cases (unique), ``N`` of them.
        val_fraction: share of the cases for validation, in ``(0, 1)``.
        seed: seeds the draw.
        labels: optional, one class label per case (in the order of ``case_ids``).
        groups: optional, one group id per case. Not combined with ``labels``.

    Returns:
        :class:`Splits` of kind ``"train_val"`` with a single :class:`Fold` (no test part) and
        ``params={"val_fraction": val_fraction}`` (plus ``"stratified": True`` or
        ``"grouped": True`` when used).

    Raises:
        ValueError: a part would be empty, a fraction out of range, labels/groups of the wrong length.
    """
    ids = _ids(case_ids)
    val_fraction = _check_fraction(val_fraction)
    labels = _per_case(labels, len(ids), "labels")
    groups = _per_case(groups, len(ids), "groups")
    n_val = _val_count(len(ids), val_fraction, "cases")
    rng = np.random.default_rng(seed)
    picked = _pick_validation(len(ids), n_val, rng, labels, groups, "cases")
    if picked is None:
        order = rng.permutation(len(ids))
        picked = [int(i) for i in order[:n_val]]
    chosen = set(picked)
    params: dict[str, Any] = {"val_fraction": val_fraction}
    if labels is not None:
        params["stratified"] = True
    if groups is not None:
        params["grouped"] = True
    fold = Fold(
        tuple(sorted(c for i, c in enumerate(ids) if i not in chosen)),
        tuple(sorted(c for i, c in enumerate(ids) if i in chosen)),
    )
    return Splits([fold], "train_val", int(seed), params)


def _lookup(values: Mapping[str, Any] | None, ids: Sequence[str], name: str) -> list[Any] | None:
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise TypeError(
            f"holdout_validation takes {name} as a mapping case id -> value, got {type(values).__name__}; "
            f"pass dict(zip(case_ids, {name}))"
        )
    keyed = {str(k): v for k, v in values.items()}
    missing = [c for c in ids if c not in keyed]
    if missing:
        raise ValueError(
            f"{name} has no entry for cases {missing[:10]}; give one for every case of the splits"
        )
    return [keyed[c] for c in ids]


def holdout_validation(
    splits: Splits,
    val_fraction: float,
    seed: int = 0,
    labels: Mapping[str, Any] | None = None,
    groups: Mapping[str, Any] | None = None,
) -> Splits:
    """Hold a share of every fold's training cases out for validation; the fold's validation cases
    become its test part.

    Fold ``k`` (``train``, ``val``) becomes (``train`` minus the held-out cases, the held-out cases,
    the old ``val``): ``max(1, round(len(train) * val_fraction))`` cases drawn with
    ``numpy.random.default_rng([seed, k])`` (``choice`` without replacement), stratified by
    ``labels`` or taken as whole groups of ``groups`` as in :func:`train_val_split`. Ids keep the
    order of the fold's training part.

    Args:
        splits: k-fold splits without a test part (e.g. :func:`kfold_split`).
        val_fraction: share of each fold's training cases held out, in ``(0, 1)``.
        seed: seeds the draws (recorded as the splits' seed).
        labels: optional mapping case id -> class label (every case of the splits).
        groups: optional mapping case id -> group id. Not combined with ``labels``.

    Returns:
        :class:`Splits` of the same kind, its params extended by ``val_fraction``.

    Raises:
        ValueError: a fold already has a test part, or a part would be empty.
    """
    val_fraction = _check_fraction(val_fraction)
    folds = []
    for k, fold in enumerate(splits):
        if fold.test:
            raise ValueError(
                f"fold {k} already has a test part; hold validation cases out of k-fold splits without one"
            )
        train = list(fold.train)
        n_val = _val_count(len(train), val_fraction, f"training cases of fold {k}")
        rng = np.random.default_rng([seed, k])
        picked = _pick_validation(
            len(train),
            n_val,
            rng,
            _lookup(labels, train, "labels"),
            _lookup(groups, train, "groups"),
            f"training cases of fold {k}",
        )
        chosen = (
            set(rng.choice(len(train), size=n_val, replace=False).tolist()) if picked is None else set(picked)
        )
        folds.append(
            Fold(
                tuple(c for i, c in enumerate(train) if i not in chosen),
                tuple(c for i, c in enumerate(train) if i in chosen),
                fold.val,
            )
        )
    params: dict[str, Any] = {**splits.params, "val_fraction": val_fraction}
    if labels is not None:
        params["holdout_stratified"] = True
    if groups is not None:
        params["holdout_grouped"] = True
    return Splits(folds, splits.kind, int(seed), params)
