"""nnU-Net's postprocessing rule: per class, keep only the largest connected component.

:func:`decide_postprocessing` chooses, on the validation predictions of all folds, the classes
for which removing every component but the largest raises the mean Dice of that class (strictly;
a tie leaves the class alone); the result is a :class:`PostprocessingRule`, stored as JSON in the
run and applied to new predictions by :func:`apply_postprocessing`.

Classes are decided independently: removing voxels of one class turns them into background and
leaves the masks of the other classes unchanged, so the Dice measured for each class during the
decision is exactly the Dice after the whole rule is applied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from scipy import ndimage

from delira.io import atomic_write

__all__ = [
    "PostprocessingRule",
    "apply_postprocessing",
    "decide_postprocessing",
    "keep_largest_component",
]

PathLike = Union[str, os.PathLike]


def _structure(ndim: int, connectivity: int | None) -> np.ndarray:
    if connectivity is None:
        connectivity = ndim
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, (int, np.integer))
        or not (1 <= connectivity <= ndim)
    ):
        raise ValueError(
            f"connectivity must be an integer in [1, {ndim}] for a {ndim}D mask (1: face neighbours, "
            f"{ndim}: full, also the diagonal ones) or None for full; got {connectivity!r}"
        )
    return ndimage.generate_binary_structure(ndim, int(connectivity))


def keep_largest_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """The largest connected component of a mask.

    Args:
        mask: bool array, ``(H, W)`` or ``(D, H, W)`` (any number of axes; integers read as ``!= 0``).
        connectivity: which neighbours connect, as in ``scipy.ndimage.generate_binary_structure``:
            1 = face neighbours only (4 in 2D, 6 in 3D), ``ndim`` = full (8 in 2D, 26 in 3D, the
            default when None, as nnU-Net).

    Returns:
        A bool array of the same shape holding only the largest component (of equal-sized largest
        components the first in raster order); all False for an empty mask.
    """
    mask = np.asarray(mask)
    if mask.ndim < 1:
        raise ValueError("keep_largest_component: mask must have at least one axis, got a scalar")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"keep_largest_component: mask has dtype {mask.dtype}; pass a bool mask (e.g. labels == c)"
        )
    mask = mask.astype(bool, copy=False)
    labelled, count = ndimage.label(mask, structure=_structure(mask.ndim, connectivity))
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0  # background
    return labelled == int(np.argmax(sizes))  # argmax: the lowest label (first in raster order) on ties


def _class_ids(classes: Iterable[Any], what: str) -> list[int]:
    ids = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or int(c) < 1:
            raise ValueError(f"{what}: class ids must be integers >= 1 (0 is the background), got {c!r}")
        if int(c) not in ids:
            ids.append(int(c))
    return ids


@dataclass
class PostprocessingRule:
    """Which classes keep only their largest component, and the evidence for the choice.

    Attributes:
        largest_component_classes: label values whose voxels outside their largest connected
            component (full connectivity) become background.
        decided_on: per decided class ``{"dice_before": float, "dice_after": float, "n_cases": int}``,
            the mean validation Dice without and with the rule and the number of cases; empty for a
            rule written by hand.
    """

    largest_component_classes: list[int] = field(default_factory=list)
    decided_on: dict[int, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.largest_component_classes = _class_ids(self.largest_component_classes, "PostprocessingRule")
        self.decided_on = {int(c): dict(v) for c, v in self.decided_on.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"largest_component_classes": [...], "decided_on": {"1": {...}}}``."""
        return {
            "largest_component_classes": list(self.largest_component_classes),
            "decided_on": {str(c): dict(v) for c, v in sorted(self.decided_on.items())},
        }

    @classmethod
    def from_dict(cls, data: Any) -> PostprocessingRule:
        """The rule of a :meth:`to_dict` dict (class keys as strings or ints)."""
        if not isinstance(data, dict) or "largest_component_classes" not in data:
            raise ValueError(
                f"a postprocessing rule must be a dict with the key 'largest_component_classes' "
                f"(and optionally 'decided_on'), got {data!r:.200}"
            )
        try:
            decided = {int(c): v for c, v in (data.get("decided_on") or {}).items()}
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                f"'decided_on' of a postprocessing rule must map class ids to dicts, got "
                f"{data.get('decided_on')!r:.200}"
            ) from None
        return cls(list(data["largest_component_classes"]), decided)

    def save(self, path: PathLike) -> None:
        """Write the rule as JSON to ``path``, atomically (a reader never sees half a file)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: PathLike) -> PostprocessingRule:
        """Read a rule written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no postprocessing rule at {path}; it is written by `aggregate` of a run"
            ) from None
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); delete it and run `aggregate` again"
            ) from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _labels(labels: Any, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: expected an integer label map, got dtype {labels.dtype}")
    return labels


def apply_postprocessing(labels: np.ndarray, rule: PostprocessingRule) -> np.ndarray:
    """Apply a rule: per class in ``rule.largest_component_classes``, its voxels outside its
    largest connected component (full connectivity) become background (0).

    Args:
        labels: integer label map, ``(H, W)`` or ``(D, H, W)``.
        rule: the rule, e.g. from :func:`decide_postprocessing` or :meth:`PostprocessingRule.load`.

    Returns:
        A new label map, same shape and dtype; ``labels`` is not modified.
    """
    out = _labels(labels, "apply_postprocessing").copy()
    for c in rule.largest_component_classes:
        mask = out == c
        out[mask & ~keep_largest_component(mask)] = 0
    return out


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    sizes = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    return 1.0 if sizes == 0 else 2.0 * int(np.count_nonzero(pred & ref)) / sizes


def decide_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], classes: Sequence[int]
) -> PostprocessingRule:
    """Choose the classes for which keeping the largest component improves the mean Dice.

    Per class, the Dice of every case (both masks empty count as 1, as in
    :func:`delira.training.evaluation.dice`) is computed without and with the largest-component
    filter; the class is chosen when the mean over all cases with the filter is strictly greater
    (a tie, e.g. no case with more than one component, leaves it out), as nnU-Net decides on
    the cross-validation results.

    Args:
        cases: ``(pred_labels, ref_labels)`` pairs of integer label maps of equal shape, e.g. the
            validation predictions of all folds; read once, so a generator works.
        classes: the foreground label values to consider, e.g. ``[1, 2]``.

    Returns:
        The rule, with ``decided_on[c] = {"dice_before", "dice_after", "n_cases"}`` for every class.
    """
    ids = _class_ids(classes, "decide_postprocessing")
    before: dict[int, list[float]] = {c: [] for c in ids}
    after: dict[int, list[float]] = {c: [] for c in ids}
    n = 0
    for i, case in enumerate(cases):
        try:
            pred_labels, ref_labels = case
        except (TypeError, ValueError):
            raise ValueError(
                f"decide_postprocessing: case {i} must be a (pred_labels, ref_labels) pair"
            ) from None
        pred = _labels(pred_labels, f"decide_postprocessing (case {i}, pred_labels)")
        ref = _labels(ref_labels, f"decide_postprocessing (case {i}, ref_labels)")
        if pred.shape != ref.shape:
            raise ValueError(
                f"decide_postprocessing: case {i} has pred_labels {pred.shape} but ref_labels "
                f"{ref.shape}; pairs must be on the same grid"
            )
        for c in ids:
            p, r = pred == c, ref == c
            d = _dice(p, r)
            before[c].append(d)
            after[c].append(_dice(keep_largest_component(p), r))
        n += 1
    if n == 0:
        raise ValueError(
            "decide_postprocessing: no cases given; pass the validation predictions of all folds"
        )
    chosen, decided = [], {}
    for c in ids:
        mean_before, mean_after = float(np.mean(before[c])), float(np.mean(after[c]))
        decided[c] = {"dice_before": mean_before, "dice_after": mean_after, "n_cases": n}
        if mean_after > mean_before:
            chosen.append(c)
    return PostprocessingRule(chosen, decided)
