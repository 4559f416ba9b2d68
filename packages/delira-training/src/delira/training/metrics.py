"""Metrics on numpy arrays, the same for PyTorch and TensorFlow: Dice, IoU, HD95, accuracy,
balanced accuracy and AUROC, per class and their mean.

Two layers:

- functions on labels / scores (``dice(pred_labels, target_labels, num_classes)``), returning
  ``{"class_1": value, ..., "mean": value}`` (segmentation, AUROC) or a float (accuracy);
- trainer metrics, ``metric(predictions, batch) -> float | dict`` built by :func:`segmentation_metric`
  and :func:`classification_metric`, which turn the network's logits into labels or scores and
  check that the batch holds the key they need.

Sparse annotations: with ``ignore_label`` the voxels whose reference label is the ignore label are
left out of the segmentation metrics (of prediction and reference alike, as nnU-Net's evaluation).
Region training (``data.regions``): :func:`region_scores` scores the region masks of prediction
and reference, ``{"region_0": ..., "mean": ...}`` in the order of ``data.regions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "auroc",
    "balanced_accuracy",
    "check_shapes",
    "classification_metric",
    "dice",
    "hausdorff95",
    "iou",
    "region_scores",
    "require_key",
    "segmentation_metric",
]


def require_key(batch: Mapping[str, Any], key: str, metric: str) -> np.ndarray:
    """``batch[key]`` as a numpy array, or a KeyError naming the metric, the key and the keys present."""
    if key not in batch:
        raise KeyError(
            f"metric {metric!r} needs the batch key {key!r}, but the batch has {sorted(batch)}; "
            f"add {key!r} to the batches of the validation loader or drop the metric"
        )
    return np.asarray(batch[key])


def check_shapes(pred: np.ndarray, target: np.ndarray, metric: str) -> None:
    """Raise ValueError naming both shapes unless ``pred`` and ``target`` have the same shape."""
    if pred.shape != target.shape:
        raise ValueError(
            f"metric {metric!r}: predictions have shape {tuple(pred.shape)} but the labels have shape "
            f"{tuple(target.shape)}; they must be equal (labels (N, *spatial) for predicted labels "
            f"(N, *spatial), i.e. logits (N, num_classes, *spatial))"
        )


def _classes(num_classes: int, include_background: bool) -> range:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return range(0 if include_background else 1, num_classes)


def _overlap(
    pred: np.ndarray, target: np.ndarray, num_classes: int, include_background: bool, kind: str
) -> dict[str, float]:
    pred, target = np.asarray(pred), np.asarray(target)
    check_shapes(pred, target, kind)
    result: dict[str, float] = {}
    for c in _classes(num_classes, include_background):
        p, t = pred == c, target == c
        inter = float(np.count_nonzero(p & t))
        sizes = float(np.count_nonzero(p)) + float(np.count_nonzero(t))
        if sizes == 0:
            value = float("nan")  # class absent in both: undefined, left out of the mean
        elif kind == "dice":
            value = 2.0 * inter / sizes
        else:
            value = inter / (sizes - inter)
        result[f"class_{c}"] = value
    values = [v for v in result.values() if not np.isnan(v)]
    result["mean"] = float(np.mean(values)) if values else float("nan")
    return result


def _drop_ignored(
    pred: np.ndarray, target: np.ndarray, ignore_label: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``target`` with the voxels where ``target == ignore_label`` set to -1 in both
    (a value of no class, so that they count for no class); unchanged without an ignore label."""
    pred, target = np.asarray(pred), np.asarray(target)
    if ignore_label is None:
        return pred, target
    check_shapes(pred, target, "ignore_label")
    ignored = target == ignore_label
    if not ignored.any():
        return pred, target
    pred = np.where(ignored, -1, pred.astype(np.int64))
    target = np.where(ignored, -1, target.astype(np.int64))
    return pred, target


def dice(
    pred_labels: np.ndarray,
    target_labels: np.ndarray,
    num_classes: int,
    include_background: bool = False,
    ignore_label: int | None = None,
) -> dict[str, float]:
    """Dice coefficient ``2|P∩T| / (|P|+|T|)`` per class over the whole array, and the mean.

    Args:
        pred_labels, target_labels: integer label maps of the same shape, e.g. ``(N, D, H, W)``.
        num_classes: number of classes, background (0) included.
        include_background: also score class 0.
        ignore_label: voxels with this reference label are left out (of both maps), or None.

    Returns:
        ``{"class_1": float, ..., "mean": float}``; a class absent from both is NaN and left out of
        the mean.
    """
    pred, target = _drop_ignored(pred_labels, target_labels, ignore_label)
    return _overlap(pred, target, num_classes, include_background, "dice")


def iou(
    pred_labels: np.ndarray,
    target_labels: np.ndarray,
    num_classes: int,
    include_background: bool = False,
    ignore_label: int | None = None,
) -> dict[str, float]:
    """Intersection over union (Jaccard) ``|P∩T| / |P∪T|`` per class and the mean; as :func:`dice`."""
    pred, target = _drop_ignored(pred_labels, target_labels, ignore_label)
    return _overlap(pred, target, num_classes, include_background, "iou")


def region_scores(
    name: str,
    pred_regions: np.ndarray,
    target_regions: np.ndarray,
    valid: np.ndarray | None = None,
    axis: int = 0,
    spacing: tuple[float, ...] | None = None,
) -> dict[str, float]:
    """Dice, IoU or HD95 of each region: the region masks of the prediction against those of the
    reference.

    Args:
        name: ``"dice"``, ``"iou"`` or ``"hausdorff95"``.
        pred_regions, target_regions: bool masks of the same shape with the regions on ``axis``, e.g.
            ``(R, *spatial)`` or a batch ``(N, R, *spatial)`` with ``axis=1``
            (:func:`delira.training.regions.labels_to_regions`; predictions: ``sigmoid > 0.5``).
        valid: bool mask of the voxels to score (the shape without the region axis), e.g.
            ``target_labels != ignore_label``; None: all.
        axis: the region axis.
        spacing: HD95 only: voxel size per spatial axis (a batch axis in front is averaged over).

    Returns:
        ``{"region_0": float, ..., "mean": float}`` in region order (NaN where a region is absent
        from both, left out of the mean).
    """
    if name not in _SEGMENTATION:
        raise ValueError(f"unknown segmentation metric {name!r}; choose one of {sorted(_SEGMENTATION)}")
    pred, target = np.asarray(pred_regions, dtype=bool), np.asarray(target_regions, dtype=bool)
    check_shapes(pred, target, name)
    pred, target = np.moveaxis(pred, axis, 0), np.moveaxis(target, axis, 0)
    result: dict[str, float] = {}
    for r, (p, t) in enumerate(zip(pred, target)):
        p, t = p.astype(np.int8), t.astype(np.int8)
        if valid is not None:
            keep = np.asarray(valid, dtype=bool)
            check_shapes(p, keep, f"{name} (valid mask)")
            p, t = np.where(keep, p, -1), np.where(keep, t, -1)
        if name == "hausdorff95":
            value = hausdorff95(p, t, 2, spacing=spacing)["class_1"]
        else:
            value = _SEGMENTATION[name](p, t, 2)["class_1"]
        result[f"region_{r}"] = value
    values = [v for v in result.values() if not np.isnan(v)]
    result["mean"] = float(np.mean(values)) if values else float("nan")
    return result


def _surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates ``(M, ndim)`` of the voxels of ``mask`` with a face neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded.copy()
    for axis in range(mask.ndim):
        interior &= np.roll(padded, 1, axis) & np.roll(padded, -1, axis)
    border = padded & ~interior
    return np.argwhere(border[(slice(1, -1),) * mask.ndim]).astype(np.float64)


def _min_distances(a: np.ndarray, b: np.ndarray, spacing: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each point of ``a``, the Euclidean distance to the nearest point of ``b`` (in mm)."""
    a, b = a * spacing, b * spacing
    out = np.empty(len(a))
    b_sq = (b**2).sum(1)
    for start in range(0, len(a), chunk):
        part = a[start : start + chunk]
        d2 = (part**2).sum(1)[:, None] + b_sq[None, :] - 2.0 * part @ b.T
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def hausdorff95(
    pred_labels: np.ndarray,
    target_labels: np.ndarray,
    num_classes: int,
    include_background: bool = False,
    spacing: tuple[float, ...] | None = None,
    ignore_label: int | None = None,
) -> dict[str, float]:
    """95th-percentile symmetric Hausdorff distance between the surfaces, per class and the mean.

    The surface of a mask is its voxels with a face neighbour outside it; the distances from every
    surface voxel of one mask to the nearest of the other, in both directions, are pooled and their
    95th percentile (numpy's linear interpolation) is the value.

    Args:
        pred_labels, target_labels: integer label maps of one image, ``(*spatial)`` (no batch axis),
            or a batch ``(N, *spatial)``: then the value is the mean over the images.
        num_classes, include_background: as in :func:`dice`.
        spacing: voxel size per spatial axis (default 1).
        ignore_label: voxels with this reference label belong to no class in either map, or None.

    Returns:
        ``{"class_1": float, ..., "mean": float}``: NaN where the class is absent from both, ``inf``
        where it is absent from exactly one.
    """
    pred, target = _drop_ignored(pred_labels, target_labels, ignore_label)
    check_shapes(pred, target, "hausdorff95")
    spatial = pred.ndim if spacing is None else len(spacing)
    if pred.ndim == spatial + 1:  # a batch: mean of the per-image values
        per_image = [
            hausdorff95(p, t, num_classes, include_background, spacing) for p, t in zip(pred, target)
        ]
        result = {}
        for key in per_image[0]:
            values = [r[key] for r in per_image if not np.isnan(r[key])]
            result[key] = float(np.mean(values)) if values else float("nan")
        return result
    sp = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    result = {}
    for c in _classes(num_classes, include_background):
        p, t = pred == c, target == c
        if not p.any() and not t.any():
            result[f"class_{c}"] = float("nan")
            continue
        if not p.any() or not t.any():
            result[f"class_{c}"] = float("inf")
            continue
        sp_p, sp_t = _surface(p), _surface(t)
        distances = np.concatenate([_min_distances(sp_p, sp_t, sp), _min_distances(sp_t, sp_p, sp)])
        result[f"class_{c}"] = float(np.percentile(distances, 95))
    values = [v for v in result.values() if not np.isnan(v)]
    result["mean"] = float(np.mean(values)) if values else float("nan")
    return result


def accuracy(pred_labels: np.ndarray, target_labels: np.ndarray) -> float:
    """Fraction of equal entries of two integer arrays of the same shape, e.g. ``(N,)``."""
    pred, target = np.asarray(pred_labels), np.asarray(target_labels)
    check_shapes(pred, target, "accuracy")
    return float(np.mean(pred == target))


def balanced_accuracy(pred_labels: np.ndarray, target_labels: np.ndarray) -> float:
    """Mean recall over the classes present in ``target_labels`` (as scikit-learn's
    ``balanced_accuracy_score``); arrays of integer labels ``(N,)``."""
    pred, target = np.asarray(pred_labels), np.asarray(target_labels)
    check_shapes(pred, target, "balanced_accuracy")
    recalls = [np.mean(pred[target == c] == c) for c in np.unique(target)]
    return float(np.mean(recalls))


def _binary_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney U statistic / (n_pos * n_neg), with average ranks for ties."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size)
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0  # mean of the 1-based ranks s+1 .. e
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auroc(scores: np.ndarray, target_labels: np.ndarray) -> dict[str, float]:
    """Area under the ROC curve, one-vs-rest per class, and the mean (macro average).

    Args:
        scores: ``(N,)`` scores of the positive class (binary), or ``(N, K)`` per-class scores
            (probabilities or logits; only their order matters).
        target_labels: ``(N,)`` integer labels in ``[0, K)`` (binary: 0 or 1).

    Returns:
        ``{"class_0": float, ..., "mean": float}`` (binary: only ``class_1`` and ``mean``); a class
        that is absent from or the only one in ``target_labels`` is NaN and left out of the mean.
    """
    scores, target = np.asarray(scores, dtype=np.float64), np.asarray(target_labels)
    if scores.ndim == 1:
        check_shapes(scores, target, "auroc")
        result = {"class_1": _binary_auroc(scores, target == 1)}
    else:
        if scores.shape[:1] != target.shape or target.ndim != 1:
            raise ValueError(
                f"metric 'auroc': scores have shape {scores.shape} but the labels have shape "
                f"{target.shape}; pass scores (N, num_classes) with labels (N,)"
            )
        result = {f"class_{c}": _binary_auroc(scores[:, c], target == c) for c in range(scores.shape[1])}
    values = [v for v in result.values() if not np.isnan(v)]
    result["mean"] = float(np.mean(values)) if values else float("nan")
    return result


# --- trainer metrics: metric(predictions, batch) -> float | dict ---------------------------------
_SEGMENTATION = {"dice": dice, "iou": iou, "hausdorff95": hausdorff95}
_CLASSIFICATION = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "auroc": auroc}


def segmentation_metric(
    name: str,
    num_classes: int,
    include_background: bool = False,
    target_key: str = "seg",
    *,
    regions: Sequence[Sequence[int]] | None = None,
    regions_order: Sequence[int] | None = None,
    ignore_label: int | None = None,
) -> Callable[[np.ndarray, Mapping[str, Any]], dict[str, float]]:
    """A trainer metric ``fn(logits, batch) -> {"class_1": ..., "mean": ...}`` for segmentation.

    ``logits`` ``(N, num_classes, *spatial)`` float become labels by argmax over axis 1 and are
    compared with ``batch[target_key]`` ``(N, 1, *spatial)`` int (the channel axis is dropped).

    Args:
        name: ``"dice"``, ``"iou"`` or ``"hausdorff95"``.
        regions: region training: ``logits`` ``(N, R, *spatial)`` are one logit per region, the
            prediction of region ``r`` is ``logit > 0`` (sigmoid > 0.5), scored against the region mask
            of the labels (:func:`region_scores`: ``{"region_0": ..., "mean": ...}``).
        regions_order: with ``regions``, the label each region paints: the thresholded regions are
            painted into a label map first and the prediction's region masks taken from it (as the
            evaluation of predicted label maps does); None: the thresholded outputs themselves.
        ignore_label: voxels whose label is this value are left out.
    """
    if name not in _SEGMENTATION:
        raise ValueError(f"unknown segmentation metric {name!r}; choose one of {sorted(_SEGMENTATION)}")
    fn = _SEGMENTATION[name]

    def metric(predictions: np.ndarray, batch: Mapping[str, Any]) -> dict[str, float]:
        target = require_key(batch, target_key, name)
        if target.ndim == predictions.ndim and target.shape[1] == 1:
            target = target[:, 0]
        if predictions.ndim != target.ndim + 1:
            raise ValueError(
                f"metric {name!r}: predictions have shape {predictions.shape} but the labels have "
                f"shape {np.asarray(batch[target_key]).shape}; expected logits (N, num_classes, *spatial) "
                f"with labels (N, 1, *spatial)"
            )
        if predictions.shape[:1] + predictions.shape[2:] != target.shape:
            raise ValueError(
                f"metric {name!r}: predictions have shape {predictions.shape} but the labels have "
                f"shape {np.asarray(batch[target_key]).shape}; the batch and spatial sizes must match "
                f"(logits (N, num_classes, *spatial), labels (N, 1, *spatial))"
            )
        spacing = (1.0,) * (target.ndim - 1) if name == "hausdorff95" else None
        if regions is not None:
            from delira.training.regions import labels_to_regions, valid_mask

            if predictions.shape[1] != len(regions):
                raise ValueError(
                    f"metric {name!r}: the network has {predictions.shape[1]} outputs but there are "
                    f"{len(regions)} regions; set model.args.num_classes to {len(regions)} (one per region)"
                )
            pred = predictions > 0  # sigmoid > 0.5
            if regions_order is not None:
                from delira.training.regions import paint_regions

                pred = labels_to_regions(paint_regions(pred, regions_order, axis=1), regions, axis=1)
            ref = labels_to_regions(target, regions, axis=1)
            return region_scores(name, pred, ref, valid_mask(target, ignore_label), axis=1, spacing=spacing)
        labels = predictions.argmax(axis=1)
        if name == "hausdorff95":  # per image (unit spacing), then the mean over the batch
            return fn(
                labels, target, num_classes, include_background, spacing=spacing, ignore_label=ignore_label
            )
        return fn(labels, target, num_classes, include_background, ignore_label=ignore_label)

    metric.__name__ = name
    return metric


def classification_metric(
    name: str, target_key: str = "label"
) -> Callable[[np.ndarray, Mapping[str, Any]], float | dict[str, float]]:
    """A trainer metric ``fn(logits, batch)`` for classification: logits ``(N, num_classes)``
    float against ``batch[target_key]`` ``(N,)`` int.

    Args:
        name: ``"accuracy"``, ``"balanced_accuracy"`` (on the argmax) or ``"auroc"`` (on the
            softmax probabilities).
    """
    if name not in _CLASSIFICATION:
        raise ValueError(f"unknown classification metric {name!r}; choose one of {sorted(_CLASSIFICATION)}")
    fn = _CLASSIFICATION[name]

    def metric(predictions: np.ndarray, batch: Mapping[str, Any]) -> float | dict[str, float]:
        target = require_key(batch, target_key, name).reshape(-1)
        if predictions.ndim != 2 or predictions.shape[0] != target.shape[0]:
            raise ValueError(
                f"metric {name!r}: predictions have shape {predictions.shape} but the labels have "
                f"shape {target.shape}; expected logits (N, num_classes) with labels (N,)"
            )
        if name == "auroc":
            shifted = predictions - predictions.max(axis=1, keepdims=True)
            probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
            return fn(probs[:, 1] if probs.shape[1] == 2 else probs, target)
        return fn(predictions.argmax(axis=1), target)

    metric.__name__ = name
    return metric
