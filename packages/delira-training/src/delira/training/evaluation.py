"""Evaluation of a predicted label map against the reference on the original image grid.

Per case and per class: Dice, HD95 and the normalized surface Dice (NSD), the distances in mm
from the voxel spacing of the case, and :func:`summarize` for the mean ± std over cases.

Conventions (the same in every function here):

- **Surface** of a mask: its voxels with at least one *face* neighbour outside it (the mask minus
  its erosion with the face-connected structure, 4-neighbourhood in 2D, 6 in 3D). Voxels on the
  border of the array count as surface (outside the array is background).
- **Surface distances** are Euclidean, in mm, between voxel centres at ``index * spacing``,
  from each surface voxel of one mask to the nearest surface voxel of the other. They are exact
  (scipy's Euclidean distance transform with ``sampling=spacing``), no approximation.
- **HD95** is the 95th percentile (numpy's linear interpolation) of the *pooled* distances of both
  directions (pred → ref and ref → pred): the symmetric percentile of medpy's ``hd95`` used by
  nnU-Net's evaluation and of :func:`delira.training.metrics.hausdorff95`. MONAI's
  ``compute_hausdorff_distance(percentile=95)`` instead takes the maximum of the two directed
  95th percentiles, which is greater than or equal to this value.
- **NSD** (Nikolov et al. 2021, "Clinically applicable segmentation of head and neck anatomy
  for radiotherapy") is the share of the surface of both masks that lies within ``tolerance_mm``
  of the other surface. Surface elements are counted as voxels (every surface voxel has weight 1),
  not as the surfel areas of DeepMind's reference code; this is MONAI's
  ``compute_surface_dice(use_subvoxels=False)``. A distance within 1e-9 mm of the tolerance counts
  as inside, so a tolerance equal to a distance is not lost to floating-point round-off.
- **Empty masks**: both empty → Dice 1, NSD 1, HD95 0 (the prediction is perfect); exactly one
  empty → Dice 0, NSD 0 and HD95 NaN (no distance to the missing surface is defined).
  :func:`summarize` reports the number of NaNs and averages the other values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
from scipy import ndimage

__all__ = [
    "dice",
    "evaluate_case",
    "hausdorff95",
    "normalized_surface_dice",
    "summarize",
    "surface_distances",
]

SpacingLike = Union[Sequence[float], np.ndarray]

#: slack (mm) under which a distance still counts as within the NSD tolerance
_TOLERANCE_SLACK_MM = 1e-9
#: keys of :func:`evaluate_case` that are voxel counts, not metrics (left out of the class mean)
_COUNT_KEYS = ("pred_voxels", "ref_voxels")


# --- input checks ---------------------------------------------------------------------------------
def _masks(pred: np.ndarray, ref: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(
            f"{what}: pred has shape {pred.shape} but ref has shape {ref.shape}; both masks must "
            f"be on the same grid (resample the prediction to the reference grid first)"
        )
    if pred.ndim < 1:
        raise ValueError(f"{what}: masks must have at least one axis (2D or 3D), got a scalar")
    for name, mask in (("pred", pred), ("ref", ref)):
        if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(
                f"{what}: {name} has dtype {mask.dtype} but a boolean mask is expected; pass "
                f"`labels == class_id` (a bool array) rather than probabilities"
            )
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def _spacing(spacing: SpacingLike, ndim: int, what: str) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size != ndim:
        raise ValueError(
            f"{what}: spacing {tuple(sp.tolist())} has {sp.size} values but the masks have {ndim} "
            f"axes; pass one voxel size in mm per axis, in the axis order of the array"
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"{what}: spacing {tuple(sp.tolist())} must be finite and > 0 mm on every axis")
    return sp


def _tolerance(tolerance_mm: float, what: str) -> float:
    tol = float(tolerance_mm)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{what}: tolerance_mm must be a finite distance >= 0 mm, got {tolerance_mm!r}")
    return tol


# --- surfaces and distances -----------------------------------------------------------------------
def _surface(mask: np.ndarray) -> np.ndarray:
    """Bool mask of the voxels of ``mask`` with a face neighbour outside it (array border = outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _joint_box(pred: np.ndarray, ref: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``pred | ref`` grown by one voxel (clipped to the array).

    Every surface voxel and every nearest surface point lies in the box, and the grown layer
    keeps the erosion exact, so cropping changes no distance but saves time on large volumes.
    """
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others)) if others else np.flatnonzero(union)
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, union.shape[axis])))
    return tuple(box)


def _distances(pred: np.ndarray, ref: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both directed surface-distance sets of two bool masks with checked spacing ``sp``."""
    if not pred.any() or not ref.any():  # no surface to measure to: inf from the other one
        n_pred = int(np.count_nonzero(_surface(pred))) if pred.any() else 0
        n_ref = int(np.count_nonzero(_surface(ref))) if ref.any() else 0
        return np.full(n_pred, np.inf), np.full(n_ref, np.inf)
    box = _joint_box(pred, ref)
    pred, ref = pred[box], ref[box]
    surf_pred, surf_ref = _surface(pred), _surface(ref)
    # EDT of ~surface: distance (mm) from every voxel to the nearest surface voxel
    to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=sp)
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sp)
    return np.asarray(to_ref[surf_pred], np.float64), np.asarray(to_pred[surf_ref], np.float64)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: SpacingLike
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm between the surfaces of two masks, in both directions.

    Args:
        pred, ref: bool masks of the same shape, ``(H, W)`` or ``(D, H, W)`` (integer arrays are
            read as ``!= 0``).
        spacing: voxel size in mm per axis, ``(ndim,)`` float, in the array's axis order.

    Returns:
        ``(pred_to_ref, ref_to_pred)``: ``(M,)`` and ``(K,)`` float64, for each of the ``M``
        surface voxels of ``pred`` (raster order) the distance to the nearest surface voxel of
        ``ref``, and vice versa (see the module docstring for the surface definition). An empty
        mask has no surface voxels (an empty array); the distances from the other mask's surface
        to the missing surface are then ``inf``.

    Raises:
        ValueError: shapes differ, the spacing has the wrong length or is not positive, or a mask
            is not bool/integer.
    """
    pred_b, ref_b = _masks(pred, ref, "surface_distances")
    return _distances(pred_b, ref_b, _spacing(spacing, pred_b.ndim, "surface_distances"))


# --- metrics --------------------------------------------------------------------------------------
def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    sizes = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if sizes == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & ref)) / sizes


def _hd95(d_pred: np.ndarray, d_ref: np.ndarray) -> float:
    if d_pred.size == 0 and d_ref.size == 0:
        return 0.0  # both empty
    if d_pred.size == 0 or d_ref.size == 0:
        return float("nan")  # exactly one empty
    return float(np.percentile(np.concatenate([d_pred, d_ref]), 95))


def _nsd(d_pred: np.ndarray, d_ref: np.ndarray, tol: float) -> float:
    total = d_pred.size + d_ref.size
    if total == 0:
        return 1.0  # both empty
    if d_pred.size == 0 or d_ref.size == 0:
        return 0.0  # exactly one empty
    limit = tol + _TOLERANCE_SLACK_MM
    return (int(np.count_nonzero(d_pred <= limit)) + int(np.count_nonzero(d_ref <= limit))) / total


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2|P∩R| / (|P|+|R|)`` of two masks.

    Args:
        pred, ref: bool masks of the same shape, any number of axes (integers read as ``!= 0``).

    Returns:
        A float in ``[0, 1]``; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    pred_b, ref_b = _masks(pred, ref, "dice")
    return _dice(pred_b, ref_b)


def hausdorff95(pred: np.ndarray, ref: np.ndarray, spacing: SpacingLike) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between the surfaces of two masks.

    The 95th percentile of the union of both directed distance sets of
    :func:`surface_distances` (the pooled convention of medpy / nnU-Net; see the module
    docstring for how MONAI differs).

    Args:
        pred, ref: bool masks of the same shape, ``(H, W)`` or ``(D, H, W)``.
        spacing: voxel size in mm per axis, ``(ndim,)``.

    Returns:
        A float in mm; 0.0 when both masks are empty, NaN when exactly one is (undefined).
    """
    d_pred, d_ref = surface_distances(pred, ref, spacing)
    return _hd95(d_pred, d_ref)


def normalized_surface_dice(
    pred: np.ndarray, ref: np.ndarray, spacing: SpacingLike, tolerance_mm: float
) -> float:
    """Normalized surface Dice (Nikolov et al. 2021) at ``tolerance_mm``, voxel-count surfaces.

    ``(|{p ∈ S_pred: d(p, S_ref) <= τ}| + |{r ∈ S_ref: d(r, S_pred) <= τ}|) / (|S_pred| + |S_ref|)``
    where ``S`` are the surface voxels (each counted once, weight 1) and ``d`` the distance in mm.

    Args:
        pred, ref: bool masks of the same shape, ``(H, W)`` or ``(D, H, W)``.
        spacing: voxel size in mm per axis, ``(ndim,)``.
        tolerance_mm: the accepted boundary deviation τ in mm, ``>= 0``.

    Returns:
        A float in ``[0, 1]``; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    tol = _tolerance(tolerance_mm, "normalized_surface_dice")
    d_pred, d_ref = surface_distances(pred, ref, spacing)
    return _nsd(d_pred, d_ref, tol)


# --- per case and summaries -----------------------------------------------------------------------
def _labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"evaluate_case: {name} has dtype {labels.dtype} but an integer label map is expected; "
            f"pass the argmax of the probabilities (labels, not scores)"
        )
    return labels


def evaluate_case(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: SpacingLike,
    classes: Sequence[int],
    tolerance_mm: float | Mapping[int, float] = 1.0,
) -> dict[int, dict[str, float]]:
    """Dice, HD95 and NSD of one case, per class, on its own grid and spacing.

    Args:
        pred_labels, ref_labels: integer label maps of the same shape, ``(H, W)`` or ``(D, H, W)``,
            on the original image grid.
        spacing: the image's voxel size in mm per axis, ``(ndim,)``, in the array's axis order.
        classes: the label values to score, e.g. ``[1, 2]`` (background is usually left out).
        tolerance_mm: NSD tolerance in mm, one for all classes or a mapping ``{class: mm}`` with an
            entry for every class.

    Returns:
        ``{class: {"dice", "hd95", "nsd", "pred_voxels", "ref_voxels"}}``: the metrics as floats
        (HD95 in mm, NaN when exactly one of the two masks is empty; see the module docstring) and
        the voxel counts of the class in each map as floats.

    Raises:
        ValueError: the shapes differ, the spacing does not fit, a map is not integer, a class is
            not an integer, or a tolerance is missing or negative.
    """
    pred, ref = _labels(pred_labels, "pred_labels"), _labels(ref_labels, "ref_labels")
    if pred.shape != ref.shape:
        raise ValueError(
            f"evaluate_case: pred_labels has shape {pred.shape} but ref_labels has shape {ref.shape}; "
            f"evaluate on the original grid: resample the prediction back to the reference first"
        )
    sp = _spacing(spacing, pred.ndim, "evaluate_case")
    result: dict[int, dict[str, float]] = {}
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise ValueError(f"evaluate_case: classes must be integer label values, got {c!r} in {classes!r}")
        c = int(c)
        if isinstance(tolerance_mm, Mapping):
            if c not in tolerance_mm:
                raise ValueError(
                    f"evaluate_case: tolerance_mm has no entry for class {c} (it has "
                    f"{sorted(tolerance_mm)}); give a tolerance for every class or one float for all"
                )
            tol = _tolerance(tolerance_mm[c], f"evaluate_case (class {c})")
        else:
            tol = _tolerance(tolerance_mm, "evaluate_case")
        p, r = pred == c, ref == c
        d_pred, d_ref = _distances(p, r, sp)
        result[c] = {
            "dice": _dice(p, r),
            "hd95": _hd95(d_pred, d_ref),
            "nsd": _nsd(d_pred, d_ref, tol),
            "pred_voxels": float(np.count_nonzero(p)),
            "ref_voxels": float(np.count_nonzero(r)),
        }
    return result


def _stats(values: Sequence[float]) -> dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n_nan = len(values) - len(finite)
    if not finite:
        return {"mean": None, "std": None, "n": 0, "n_nan": n_nan}
    arr = np.asarray(finite)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(finite), "n_nan": n_nan}


def summarize(per_case: Sequence[Mapping[int, Mapping[str, float]]]) -> dict[str, Any]:
    """Mean ± std over cases, per class and per metric, and the mean over classes.

    Args:
        per_case: one :func:`evaluate_case` result per case. Class keys may be ints or their
            strings (as after a JSON round trip); a class missing from a case is not counted there.

    Returns:
        A JSON-serialisable dict (no NaN: an undefined value is ``None``)::

            {"n_cases": int,
             "classes": {"1": {"dice": {"mean", "std", "n", "n_nan"}, "hd95": ..., ...}, ...},
             "mean": {"dice": float | None, "hd95": ..., "nsd": ...}}

        ``std`` is the population standard deviation (``ddof=0``); ``n`` counts the cases that
        were averaged and ``n_nan`` those left out as NaN (or infinite). ``"mean"`` is the mean
        over classes of the class means (classes whose mean is ``None`` left out), as nnU-Net's
        foreground mean; the voxel counts are summarised per class but not averaged over classes.
    """
    per_case = list(per_case)
    by_class: dict[int, dict[str, list[float]]] = {}
    for i, case in enumerate(per_case):
        if not isinstance(case, Mapping):
            raise ValueError(
                f"summarize: case {i} is {type(case).__name__}, expected the dict of evaluate_case"
            )
        for key, metrics in case.items():
            try:
                c = int(key)
            except (TypeError, ValueError):
                raise ValueError(
                    f"summarize: case {i} has the class key {key!r}; expected integer class ids "
                    f"(the keys of evaluate_case's result)"
                ) from None
            slot = by_class.setdefault(c, {})
            for name, value in metrics.items():
                slot.setdefault(name, []).append(float("nan") if value is None else float(value))
    classes = {str(c): {name: _stats(vals) for name, vals in by_class[c].items()} for c in sorted(by_class)}
    metric_names: list[str] = []
    for summary in classes.values():
        metric_names += [m for m in summary if m not in _COUNT_KEYS and m not in metric_names]
    mean: dict[str, float | None] = {}
    for name in metric_names:
        means = [s[name]["mean"] for s in classes.values() if name in s and s[name]["mean"] is not None]
        mean[name] = float(np.mean(means)) if means else None
    return {"n_cases": len(per_case), "classes": classes, "mean": mean}
