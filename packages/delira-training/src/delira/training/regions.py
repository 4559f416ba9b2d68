"""Region-based labels and the ignore label, framework-free (numpy): nnU-Net's regions and sparse
annotations.

A *region* is a set of label values, e.g. BraTS' whole tumour ``[1, 2, 3]``, tumour core ``[2, 3]``
and enhancing tumour ``[3]``. Regions may overlap; a region model has one sigmoid output channel per
region and is trained on the binary region masks ``isin(labels, region)`` (:func:`labels_to_regions`).
Its prediction becomes a label map again by painting the thresholded regions in order
(:func:`paint_regions`): start from background 0 and, for region ``i`` in the order given, set every
voxel with probability ``> 0.5`` to ``regions_order[i]``. With nested regions (each a superset of the
next) and the default order (:func:`default_regions_order`) the round trip labels -> regions ->
painted labels gives back the labels.

The *ignore label* marks unannotated voxels (sparse annotations): they add nothing to the losses and
are left out of the metrics. It is not a class: it must not be one of the network's classes
(label-based training: ``ignore_label >= model.args.num_classes``, which for the usual labels
``0 .. K-1`` makes it the highest label value, as nnU-Net requires) and not a member of any region.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_ignore_label",
    "check_regions",
    "default_regions_order",
    "labels_to_regions",
    "paint_regions",
    "valid_mask",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def default_regions_order(regions: Sequence[Sequence[int]]) -> list[int] | None:
    """The label each region paints when none is given: for region ``i`` its one label that is in
    no later region (``[[1, 2, 3], [2, 3], [3]]`` -> ``[1, 2, 3]``); None when some region has no
    such label or several (then ``data.regions_order`` must say which)."""
    order = []
    for i, region in enumerate(regions):
        later = {int(v) for r in regions[i + 1 :] for v in r}
        own = sorted({int(v) for v in region} - later)
        if len(own) != 1:
            return None
        order.append(own[0])
    return order


def check_regions(
    regions: Any,
    regions_order: Any = None,
    labels: Sequence[int] | None = None,
    where: str = "data.regions",
    check_order: bool = True,
) -> list[str]:
    """The problems of ``regions`` and ``regions_order`` (empty when valid).

    Args:
        regions: a non-empty list of regions, each a non-empty list of distinct label values > 0
            (background 0 is in no region).
        regions_order: None (:func:`default_regions_order`) or one label per region, each a member
            of its region.
        labels: the dataset's label values where known (every region member must be one), or None.
        where: the key named in the messages.
        check_order: also check ``regions_order`` (off: only the regions themselves).
    """
    if (
        not isinstance(regions, (list, tuple))
        or not regions
        or not all(isinstance(r, (list, tuple)) and r and all(_is_int(v) for v in r) for r in regions)
    ):
        return [
            f"{where}: expected a non-empty list of regions, each a non-empty list of label values "
            f"(e.g. [[1, 2, 3], [2, 3], [3]]), got {regions!r}"
        ]
    problems = []
    for i, region in enumerate(regions):
        if any(v <= 0 for v in region):
            problems.append(
                f"{where}[{i}]: {list(region)} holds a label <= 0; regions are sets of foreground labels "
                "(background 0 is what no region covers)"
            )
        if len(set(region)) != len(region):
            problems.append(f"{where}[{i}]: {list(region)} names a label twice")
        if labels is not None:
            unknown = sorted(set(int(v) for v in region) - {int(v) for v in labels})
            if unknown:
                problems.append(
                    f"{where}[{i}]: labels {unknown} are not labels of the dataset ({sorted(labels)}); "
                    "use the dataset's label values"
                )
    if len({tuple(sorted(r)) for r in regions}) != len(regions):
        problems.append(f"{where}: {regions!r} holds the same region twice")
    order_key = where.replace("regions", "regions_order")
    if not check_order:
        return problems
    if regions_order is None:
        if not problems and default_regions_order(regions) is None:
            problems.append(
                f"{order_key}: the regions {regions!r} are not nested, so the label each region paints "
                f"in prediction is not implied; set {order_key} to one label per region (e.g. "
                f"{[max(r) for r in regions]})"
            )
        return problems
    if not isinstance(regions_order, (list, tuple)) or not all(_is_int(v) for v in regions_order):
        return [*problems, f"{order_key}: expected a list of label values, got {regions_order!r}"]
    if len(regions_order) != len(regions):
        return [
            *problems,
            f"{order_key}: {len(regions_order)} labels for {len(regions)} regions; give the label each "
            "region paints, one per region",
        ]
    for i, (label, region) in enumerate(zip(regions_order, regions)):
        if label not in region:
            problems.append(
                f"{order_key}[{i}]: label {label} is not in region {list(region)}; a region paints "
                "one of its own labels"
            )
    return problems


def check_ignore_label(
    ignore_label: Any,
    num_classes: int | None = None,
    regions: Sequence[Sequence[int]] | None = None,
    where: str = "data.ignore_label",
) -> list[str]:
    """The problems of ``ignore_label`` (empty when valid): None, or an int > 0 that is neither a
    class of a label-based network (``>= num_classes``) nor a member of a region."""
    if ignore_label is None:
        return []
    if not _is_int(ignore_label) or ignore_label <= 0:
        return [
            f"{where}: expected null or a label value > 0 that marks unannotated voxels, got {ignore_label!r}"
        ]
    if regions is not None:
        members = sorted({int(v) for r in regions for v in r})
        if ignore_label in members:
            return [
                f"{where}: {ignore_label} is a member of data.regions {list(map(list, regions))}; the "
                "ignore label marks voxels without annotation, so it cannot be part of a region; use a "
                f"label outside {members}"
            ]
    elif num_classes is not None and ignore_label < num_classes:
        return [
            f"{where}: {ignore_label} is one of the network's classes 0..{num_classes - 1} "
            f"(model.args.num_classes {num_classes}); the ignore label must be above them (as nnU-Net, "
            f"the highest label value): e.g. {num_classes}"
        ]
    return []


def valid_mask(labels: np.ndarray, ignore_label: int | None) -> np.ndarray | None:
    """``labels != ignore_label`` (bool, same shape), or None without an ignore label."""
    if ignore_label is None:
        return None
    return np.asarray(labels) != ignore_label


def labels_to_regions(labels: np.ndarray, regions: Sequence[Sequence[int]], axis: int = 0) -> np.ndarray:
    """The binary region masks of an integer label map.

    Args:
        labels: integer labels of any shape, e.g. ``(*spatial)`` or ``(N, *spatial)``.
        regions: the regions, each a list of label values.
        axis: where the region axis goes in the output (0: ``(R, *labels.shape)``; 1 for a batch).

    Returns:
        bool ``isin(labels, region)`` per region, stacked along ``axis``.
    """
    labels = np.asarray(labels)
    masks = [np.isin(labels, np.asarray(list(region))) for region in regions]
    return np.stack(masks, axis=axis)


def paint_regions(
    probabilities: np.ndarray,
    regions_order: Sequence[int],
    threshold: float = 0.5,
    axis: int = 0,
) -> np.ndarray:
    """A label map from region probabilities (nnU-Net's conversion of sigmoid outputs).

    Args:
        probabilities: ``(R, *spatial)`` float (or bool masks) with the regions on ``axis``.
        regions_order: the label region ``i`` paints; regions are painted in this order, a later
            region over an earlier one.
        threshold: a voxel is in region ``i`` where its probability is ``> threshold``.
        axis: the region axis of ``probabilities``.

    Returns:
        ``(*spatial)`` labels (uint8 when every label fits, else int32); 0 where no region is on.
    """
    probs = np.moveaxis(np.asarray(probabilities), axis, 0)
    if probs.shape[0] != len(regions_order):
        raise ValueError(
            f"paint_regions: {probs.shape[0]} region channels on axis {axis} but {len(regions_order)} "
            "labels in regions_order; give one label per region"
        )
    dtype = np.uint8 if all(0 <= v <= 255 for v in regions_order) else np.int32
    out = np.zeros(probs.shape[1:], dtype=dtype)
    for channel, label in zip(probs, regions_order):
        out[(channel > threshold) if channel.dtype != np.bool_ else channel] = label
    return out
