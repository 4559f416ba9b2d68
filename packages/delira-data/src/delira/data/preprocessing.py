"""Preprocessing of real data, computed once and cached on disk as memory-mapped arrays.

The steps, in nnU-Net's order: (optionally) reorient to a canonical orientation, crop to the
non-zero region, normalise intensities per channel, resample to a target spacing, and record where
each foreground class lies (for foreground oversampling; every label > 0 is located, an ignore label
too, and :class:`~delira.data.patches.PatchDataset` ``(ignore_label=...)`` leaves that one out):

- reorientation (``Preprocessor(orientation="RAS")``, ``"LPS"`` or any orientation code): the
  spatial axes permuted and reversed to the closest layout of that code
  (:mod:`delira.io.orientation`, as MONAI's ``Orientation``), recorded in the case's properties;
- :func:`crop_to_nonzero` -- the bounding box of the voxels that are non-zero in any channel;
- :func:`zscore` -- per-case z-score (MR): ``(x - mean) / std`` per channel (optionally with the
  statistics of a mask: ``"zscore_nonzero"``);
- :class:`CTNormalization` -- dataset-wide: clip to the 0.5 / 99.5 percentiles of the foreground
  intensities of the training cases, then ``(x - mean) / std`` with their mean and std;
- :func:`resample_image` (order 0, 1 or 3) and :func:`resample_labels` (nearest, or per-label
  linear + argmax), with the coarse axis of anisotropic data resampled on its own (nnU-Net's
  "separate z"), on delira.augment's compiled resampler when it is installed; :func:`resample`
  and :func:`resample_segmentation` are the plain numpy versions (order 0/1);
- :func:`~delira.data.patches.class_locations`.

Every resampling uses one grid convention: output voxel ``j`` of an axis of ``n_out`` voxels
samples input coordinate ``(j + 0.5) * n_in / n_out - 0.5`` (both grids span the same physical
extent, voxel centres aligned), beyond the outer voxel centres the edge value (scipy's
``mode='nearest'``, also the spline boundary of order 3). :func:`invert_probabilities` and
:func:`invert_labels` map a prediction on the preprocessed grid back onto the original image with
the ``"properties"`` that :class:`Preprocessor` returns (resampled, un-cropped, and put back in
the original orientation, the last step bit-exact).

:class:`PreprocessedDataset` runs a :class:`Preprocessor` over a dataset once, writes every case to
``cache_dir/<key>/`` as ``.npy`` files (the key is a hash of the parameters and the case ids, so
other parameters get another folder) and serves them as read-only memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from delira.data.datasets import Dataset, _check_index, case_ids_of
from delira.data.patches import class_locations

__all__ = [
    "NORMALIZATION_SCHEMES",
    "CTNormalization",
    "PreprocessedDataset",
    "Preprocessor",
    "crop_to_nonzero",
    "invert_labels",
    "invert_probabilities",
    "resample",
    "resample_image",
    "resample_labels",
    "resample_segmentation",
    "separate_axis",
    "target_shape",
    "zscore",
]

_CACHE_VERSION = 2

#: the per-channel normalisation schemes of :class:`Preprocessor`
NORMALIZATION_SCHEMES = ("zscore", "zscore_nonzero", "ct", "none")

#: the border mode of every resampling (scipy's name): the edge value beyond the outer voxel centres
RESAMPLE_MODE = "nearest"

SpacingSpec = Union[float, Sequence[Union[float, None]], None]


# -- resampling ---------------------------------------------------------------------------------------
def target_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Spatial shape after resampling: ``round(shape * spacing / target_spacing)``, at least 1."""
    if len(shape) != len(spacing) or len(shape) != len(target_spacing):
        raise ValueError(
            f"shape {tuple(shape)}, spacing {tuple(spacing)} and target_spacing {tuple(target_spacing)} must "
            "have one entry per spatial axis"
        )
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing))


def _source_coordinates(n_in: int, n_out: int) -> np.ndarray:
    # Voxel centres of the output grid in input voxel units, both grids covering the same extent.
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _linear_axis(array: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    x = np.clip(_source_coordinates(n_in, n_out), 0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (x - lo).reshape([-1 if a == axis else 1 for a in range(array.ndim)]).astype(array.dtype)
    return np.take(array, lo, axis=axis) * (1 - w) + np.take(array, hi, axis=axis) * w


def resample(array: np.ndarray, new_shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample the spatial axes of a ``(C, *spatial)`` image to ``new_shape``.

    The output voxel ``j`` samples the input at ``(j + 0.5) * n_in / n_out - 0.5`` (both grids span
    the same physical extent; coordinates beyond the outer voxel centres take the edge value).

    Args:
        array: ``(C, *spatial)`` image.
        new_shape: the spatial output shape.
        order: 1 for (separable) linear interpolation, 0 for nearest neighbour (ties round up).

    Returns:
        ``(C, *new_shape)``; float32 for ``order=1`` (float64 input stays float64), the input
        dtype for ``order=0``.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if len(new_shape) != array.ndim - 1:
        raise ValueError(
            f"array has shape {array.shape} ((C, *spatial)) but new_shape {new_shape} has {len(new_shape)} axes"
        )
    if order == 0:
        out = array
        for axis, n_out in enumerate(new_shape, start=1):
            n_in = out.shape[axis]
            if n_in != n_out:
                idx = np.clip(np.floor(_source_coordinates(n_in, n_out) + 0.5), 0, n_in - 1).astype(np.int64)
                out = np.take(out, idx, axis=axis)
        return out
    if order != 1:
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    out = array if array.dtype == np.float64 else array.astype(np.float32, copy=False)
    for axis, n_out in enumerate(new_shape, start=1):
        out = _linear_axis(out, axis, n_out)
    return out


def resample_segmentation(seg: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Resample a ``(1, *spatial)`` label map: each label's mask linearly, then the argmax.

    Smoother than nearest neighbour for thin structures (nnU-Net's approach). Ties go to the
    smaller label.

    Returns:
        ``(1, *new_shape)`` with the dtype of ``seg``.
    """
    labels = np.unique(seg)
    if len(labels) == 1:
        return np.full((1, *new_shape), labels[0], dtype=seg.dtype)
    best = np.full((1, *new_shape), -1.0, dtype=np.float32)
    out = np.zeros((1, *new_shape), dtype=seg.dtype)
    for label in labels:
        score = resample((seg == label).astype(np.float32), new_shape, order=1)
        better = score > best
        out[better] = label
        best[better] = score[better]
    return out


def _affine_backend() -> Callable[..., Any] | None:
    """delira.augment's ``affine_resample`` (compiled), or None when it is not installed."""
    try:
        from delira.augment.functional import affine_resample
    except ImportError:
        return None
    return affine_resample


def _grid_matrix(in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """Homogeneous output->input index map of the aligned-centres convention (diagonal)."""
    nd = len(in_shape)
    m = np.eye(nd + 1)
    for a, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        scale = n_in / n_out
        m[a, a] = scale
        m[a, nd] = 0.5 * scale - 0.5
    return m


def _resample_once(x: np.ndarray, out_shape: tuple[int, ...], order: int, labels: bool) -> np.ndarray:
    """Resample ``(C, *spatial)`` ``x`` to ``out_shape`` in one pass (all axes with ``order``)."""
    if tuple(x.shape[1:]) == out_shape:
        return x
    nd = x.ndim - 1
    backend = _affine_backend() if nd in (2, 3) else None
    if backend is not None:
        x = np.ascontiguousarray(x)
        return np.asarray(
            backend(x, _grid_matrix(x.shape[1:], out_shape), out_shape, order, RESAMPLE_MODE, 0.0)
        )
    if labels:
        if order == 0:
            return resample(x, out_shape, order=0)
        return np.concatenate([resample_segmentation(x[c : c + 1], out_shape) for c in range(x.shape[0])])
    if order in (0, 1):
        out = resample(x, out_shape, order=order)
        return out if order == 0 else out.astype(x.dtype if x.dtype == np.float64 else np.float32, copy=False)
    try:
        from scipy import ndimage
    except ImportError as exc:
        raise ImportError(
            "cubic resampling (order 3) needs delira-augment or scipy, neither is installed: "
            "pip install delira-augment (or 'delira-data[fingerprint]' for scipy), or use order_data=1"
        ) from exc
    m = _grid_matrix(x.shape[1:], out_shape)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    out = np.empty((x.shape[0], *out_shape), dtype=dtype)
    for c in range(x.shape[0]):
        out[c] = ndimage.affine_transform(
            x[c].astype(dtype, copy=False),
            np.diag(m)[:nd],
            offset=m[:nd, nd],
            output_shape=out_shape,
            order=order,
            mode=RESAMPLE_MODE,
            output=dtype,
        )
    return out


def separate_axis(
    spacing: Sequence[float], target_spacing: Sequence[float], threshold: float = 3.0
) -> int | None:
    """The coarse axis to resample on its own, as nnU-Net decides, or None.

    An axis is separate when the source spacing is anisotropic (``max / min > threshold``; the axis
    of the largest spacing) or else the target spacing is; only for 3D, and only when a single axis
    has that largest spacing (two equally coarse axes: None).
    """
    if len(spacing) != 3:
        return None
    for s in (np.asarray(spacing, dtype=np.float64), np.asarray(target_spacing, dtype=np.float64)):
        if s.min() > 0 and s.max() / s.min() > threshold:
            coarse = np.flatnonzero(np.isclose(s, s.max(), rtol=1e-6))
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def _resample_separate(
    x: np.ndarray, out_shape: Sequence[int], order: int, order_z: int, axis: int | None, labels: bool
) -> np.ndarray:
    out_shape = tuple(int(n) for n in out_shape)
    if len(out_shape) != x.ndim - 1:
        raise ValueError(
            f"array has shape {x.shape} ((C, *spatial)) but the output shape {out_shape} has "
            f"{len(out_shape)} axes; give one size per spatial axis"
        )
    if axis is None or order == order_z or x.shape[1 + axis] == out_shape[axis]:
        return _resample_once(x, out_shape, order, labels)
    in_plane = tuple(x.shape[1 + axis] if a == axis else n for a, n in enumerate(out_shape))
    return _resample_once(_resample_once(x, in_plane, order, labels), out_shape, order_z, labels)


def resample_image(
    data: np.ndarray,
    new_shape: Sequence[int],
    order: int = 3,
    *,
    order_z: int | None = None,
    axis: int | None = None,
) -> np.ndarray:
    """Resample the spatial axes of a ``(C, *spatial)`` image, all channels in one call.

    Voxel centres aligned (see the module docstring), ``mode='nearest'`` borders; the spline of
    ``order=3`` is prefiltered (scipy.ndimage semantics). On delira.augment's compiled resampler
    when installed (2D/3D), else numpy (order 0/1) and scipy.ndimage (order 3).

    Args:
        data: ``(C, *spatial)`` float image.
        new_shape: the spatial output shape.
        order: 0 nearest, 1 linear, 3 cubic B-spline.
        order_z: the order of ``axis`` (default ``order``): ``axis`` is resampled in a second pass,
            after the other axes (nnU-Net's separate z for anisotropic data).
        axis: the coarse spatial axis (0-based) or None.

    Returns:
        ``(C, *new_shape)``, float32 (float64 input stays float64).
    """
    _check_order(order, (0, 1, 3), "order")
    order_z = order if order_z is None else order_z
    _check_order(order_z, (0, 1, 3), "order_z")
    data = np.asarray(data)
    dtype = np.float64 if data.dtype == np.float64 else np.float32
    return _resample_separate(data.astype(dtype, copy=False), new_shape, order, order_z, axis, False)


def resample_labels(
    seg: np.ndarray,
    new_shape: Sequence[int],
    order: int = 1,
    *,
    order_z: int | None = None,
    axis: int | None = None,
) -> np.ndarray:
    """Resample an integer ``(1, *spatial)`` label map: nearest (0) or per-label linear + argmax (1).

    Same grid convention and engine as :func:`resample_image`; ``axis`` (the coarse axis) is
    resampled after the others with ``order_z``.

    Returns:
        ``(1, *new_shape)`` with the dtype of ``seg``.
    """
    _check_order(order, (0, 1), "order (labels)")
    order_z = order if order_z is None else order_z
    _check_order(order_z, (0, 1), "order_z (labels)")
    seg = np.asarray(seg)
    if seg.dtype.kind not in "iu":
        raise ValueError(
            f"labels have dtype {seg.dtype}; expected integers (cast an integer-valued map first)"
        )
    return _resample_separate(seg, new_shape, order, order_z, axis, True).astype(seg.dtype, copy=False)


def _check_order(order: int, allowed: tuple[int, ...], name: str) -> None:
    if order not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {order!r}")


# -- cropping and normalisation -----------------------------------------------------------------------
def crop_to_nonzero(
    data: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple[tuple[int, int], ...]]:
    """Crop ``(C, *spatial)`` data (and ``(1, *spatial)`` seg) to the voxels non-zero in any channel.

    Returns:
        ``(data, seg, bbox)`` where ``bbox`` holds ``(start, stop)`` per spatial axis (the whole
        extent when every voxel is zero). The arrays are views of the inputs.
    """
    mask = np.any(data != 0, axis=0)
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other)) if other else np.flatnonzero(mask)
        bbox.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    window = (slice(None), *(slice(a, b) for a, b in bbox))
    return data[window], (seg[window] if seg is not None else None), tuple(bbox)


def zscore(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-channel z-score of a ``(C, *spatial)`` image (MR): ``(x - mean) / max(std, 1e-8)``.

    Args:
        data: ``(C, *spatial)`` image.
        mask: optional boolean ``(*spatial)``: the statistics use these voxels only (all voxels are
            normalised).

    Returns:
        float32 ``(C, *spatial)``.
    """
    out = np.empty(data.shape, dtype=np.float32)
    for c in range(data.shape[0]):
        values = data[c][mask] if mask is not None else data[c]
        mean, std = float(np.mean(values)), float(np.std(values))
        out[c] = (data[c] - mean) / max(std, 1e-8)
    return out


@dataclass
class CTNormalization:
    """Dataset-wide CT normalisation of one channel: clip to ``[lower, upper]``, then z-score.

    Attributes:
        lower, upper: the clipping range (the 0.5 / 99.5 percentiles of the foreground voxels).
        mean, std: the mean and standard deviation of the (unclipped) foreground voxels.
    """

    lower: float
    upper: float
    mean: float
    std: float

    @classmethod
    def fit(cls, foreground: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> CTNormalization:
        """Statistics from the foreground intensities of the training cases (a 1D array)."""
        values = np.asarray(foreground, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError(
                "no foreground voxels to fit the CT normalisation; the training cases need segmentations "
                "with labels > 0 (or use normalization='zscore')"
            )
        lower, upper = np.percentile(values, percentiles)
        return cls(float(lower), float(upper), float(values.mean()), float(values.std()))

    def __call__(self, channel: np.ndarray) -> np.ndarray:
        """``(clip(x, lower, upper) - mean) / max(std, 1e-8)`` as float32."""
        clipped = np.clip(channel.astype(np.float32, copy=False), self.lower, self.upper)
        return ((clipped - self.mean) / max(self.std, 1e-8)).astype(np.float32)


# -- the pipeline -------------------------------------------------------------------------------------
def resolve_spacing(target: SpacingSpec, spacing: Sequence[float]) -> tuple[float, ...]:
    """The spacing a case of ``spacing`` is resampled to under ``target``.

    Args:
        target: None (keep the case's spacing), one number (every axis) or one entry per axis, where
            None keeps that axis's own spacing (2D training of 3D volumes: the slice axis).
        spacing: the case's spacing, one entry per spatial axis.
    """
    spacing = tuple(float(s) for s in spacing)
    if target is None:
        return spacing
    if isinstance(target, (int, float)):
        return (float(target),) * len(spacing)
    target = tuple(target)
    if len(target) != len(spacing):
        raise ValueError(
            f"target_spacing {target} has {len(target)} entries but the case has {len(spacing)} spatial axes "
            f"(spacing {spacing}); give one entry per axis (None keeps an axis) or one number"
        )
    return tuple(s if t is None else float(t) for t, s in zip(target, spacing))


def _ct_from_stats(stats: Mapping[Any, Mapping[str, float]]) -> dict[int, CTNormalization]:
    out = {}
    for c, v in stats.items():
        missing = {"lower", "upper", "mean", "std"} - set(v)
        if missing:
            raise ValueError(
                f"ct_stats[{c}] lacks {sorted(missing)}; give {{lower, upper, mean, std}} per CT channel "
                "(the planner writes them from the fingerprint)"
            )
        out[int(c)] = CTNormalization(float(v["lower"]), float(v["upper"]), float(v["mean"]), float(v["std"]))
    return out


@dataclass
class Preprocessor:
    """The preprocessing of one case: crop, normalise, resample, locate the classes.

    Args:
        target_spacing: the spacing to resample to: None (keep each case's spacing), one number, or
            one entry per axis where None keeps that axis's spacing.
        normalization: per channel ``"zscore"`` (per case, MR), ``"zscore_nonzero"`` (per case,
            statistics inside the nonzero mask, zeros outside), ``"ct"`` (dataset-wide clip and
            z-score, ``ct_stats`` or fitted by :meth:`fit`) or ``"none"``: one for all channels or
            one per channel.
        crop_nonzero: crop to the non-zero region first.
        max_locations: at most this many voxel coordinates kept per class.
        seed: seeds the sampling of foreground voxels (statistics and locations).
        ct: fitted CT statistics per channel (filled by :meth:`fit` and ``ct_stats``).
        order_data: image interpolation: 0 nearest, 1 linear, 3 cubic B-spline.
        order_seg: label interpolation: 0 nearest, 1 per-label linear + argmax.
        anisotropy_threshold: when ``max / min`` of the source (or else the target) spacing exceeds
            it, the coarse axis is resampled on its own with ``order_z`` (nnU-Net's separate z).
        order_z: the order of that coarse axis (0 nearest, 1 linear; per-label for labels).
        ct_stats: ``{channel: {"lower", "upper", "mean", "std"}}`` given up front (no fit needed).
        orientation: None keeps each case's voxel layout; ``"RAS"``, ``"LPS"`` or another
            orientation code first reorients every case (image and labels) to the closest layout of
            that code (axes permuted and reversed from its ``direction``, no interpolation). Per-axis
            ``target_spacing`` and the preprocessed arrays then follow the reoriented axes; the
            transform is recorded in ``properties["orientation"]`` and undone by
            :func:`invert_labels` / :func:`invert_probabilities`.
    """

    target_spacing: SpacingSpec = None
    normalization: str | Sequence[str] = "zscore"
    crop_nonzero: bool = True
    max_locations: int = 10000
    seed: int = 0
    ct: dict[int, CTNormalization] = field(default_factory=dict)
    order_data: int = 3
    order_seg: int = 1
    anisotropy_threshold: float = 3.0
    order_z: int = 0
    ct_stats: dict[int, dict[str, float]] | None = None
    orientation: str | None = None

    def __post_init__(self) -> None:
        if self.orientation is not None:
            from delira.data.formats.cases import _check_orientation

            self.orientation = _check_orientation(self.orientation)
        if self.target_spacing is not None:
            if isinstance(self.target_spacing, (int, float)):
                self.target_spacing = float(self.target_spacing)
            else:
                self.target_spacing = tuple(None if s is None else float(s) for s in self.target_spacing)
            values = [self.target_spacing] if isinstance(self.target_spacing, float) else self.target_spacing
            if any(s is not None and not s > 0 for s in values):
                raise ValueError(f"target_spacing must be positive (mm), got {self.target_spacing}")
        if not isinstance(self.normalization, str):
            self.normalization = tuple(self.normalization)
        schemes = (self.normalization,) if isinstance(self.normalization, str) else self.normalization
        for s in schemes:
            if s not in NORMALIZATION_SCHEMES:
                raise ValueError(
                    f"normalization must be one of {NORMALIZATION_SCHEMES} (one for all channels or one per "
                    f"channel), got {s!r}"
                )
        _check_order(self.order_data, (0, 1, 3), "order_data")
        _check_order(self.order_seg, (0, 1), "order_seg")
        _check_order(self.order_z, (0, 1), "order_z")
        if not self.anisotropy_threshold > 1:
            raise ValueError(
                f"anisotropy_threshold must be > 1 (a max/min spacing ratio), got {self.anisotropy_threshold}"
            )
        if self.ct_stats:
            self.ct_stats = {
                int(c): {k: float(v[k]) for k in ("lower", "upper", "mean", "std") if k in v}
                for c, v in self.ct_stats.items()
            }
            for c, norm in _ct_from_stats(self.ct_stats).items():
                self.ct.setdefault(c, norm)

    def scheme(self, channel: int) -> str:
        """The normalisation scheme of ``channel``."""
        if isinstance(self.normalization, str):
            return self.normalization
        if channel >= len(self.normalization):
            raise ValueError(
                f"normalization lists {len(self.normalization)} schemes but the data has channel {channel}; "
                "give one scheme per channel"
            )
        return self.normalization[channel]

    def params(self) -> dict[str, Any]:
        """The parameters that determine the output (the cache key), JSON friendly."""
        out = asdict(self)
        out.pop("ct")
        out["normalization"] = (
            self.normalization if isinstance(self.normalization, str) else list(self.normalization)
        )
        if isinstance(self.target_spacing, tuple):
            out["target_spacing"] = list(self.target_spacing)
        out["ct_stats"] = (
            {str(c): dict(sorted(v.items())) for c, v in sorted(self.ct_stats.items())}
            if self.ct_stats
            else None
        )
        if self.orientation is None:
            out.pop("orientation")  # the cache keys of runs without reorientation stay as they were
        return out

    def needs_fit(self, num_channels: int) -> bool:
        """True when some channel uses the dataset-wide CT normalisation that is not fitted yet."""
        return any(self.scheme(c) == "ct" and c not in self.ct for c in range(num_channels))

    def fit(self, dataset: Dataset, samples_per_case: int = 10000) -> None:
        """Fit the CT statistics of every ``"ct"`` channel that has none yet, on the foreground voxels
        of ``dataset`` (channels given by ``ct_stats`` or fitted before are kept).

        Foreground: ``seg > 0`` where the samples have ``seg``, else the non-zero voxels. At most
        ``samples_per_case`` voxels per case, drawn with ``seed``.

        Raises:
            DatasetError: cases that cannot be read or fail the checks (all listed).
        """
        from delira.data.checks import scan_cases

        rng = np.random.default_rng(self.seed)
        per_channel: dict[int, list[np.ndarray]] = {}

        def collect(i: int, sample: dict[str, Any]) -> None:
            data = np.asarray(sample["data"])
            todo = [c for c in range(data.shape[0]) if self.scheme(c) == "ct" and c not in self.ct]
            if not todo:
                return
            mask = np.asarray(sample["seg"])[0] > 0 if "seg" in sample else np.any(data != 0, axis=0)
            for c in todo:
                values = data[c][mask]
                if values.size > samples_per_case:
                    values = values[rng.choice(values.size, size=samples_per_case, replace=False)]
                per_channel.setdefault(c, []).append(values)

        scan_cases(dataset, collect, desc="fitting CT statistics")  # in order: deterministic
        for c, chunks in per_channel.items():
            self.ct[c] = CTNormalization.fit(np.concatenate(chunks))

    def normalize(self, data: np.ndarray) -> np.ndarray:
        """Normalise a (cropped) ``(C, *spatial)`` image channel by channel; float32 ``(C, *spatial)``."""
        out = np.empty(data.shape, dtype=np.float32)
        mask = None
        for c in range(data.shape[0]):
            scheme = self.scheme(c)
            channel = data[c]
            if scheme == "zscore":
                mean, std = (
                    float(np.mean(channel, dtype=np.float64)),
                    float(np.std(channel, dtype=np.float64)),
                )
                np.divide(np.subtract(channel, mean, dtype=np.float32), max(std, 1e-8), out=out[c])
            elif scheme == "zscore_nonzero":
                if mask is None:
                    mask = np.any(data != 0, axis=0)
                values = channel[mask]
                mean = float(np.mean(values, dtype=np.float64)) if values.size else 0.0
                std = float(np.std(values, dtype=np.float64)) if values.size else 1.0
                np.divide(np.subtract(channel, mean, dtype=np.float32), max(std, 1e-8), out=out[c])
                out[c][~mask] = 0.0
            elif scheme == "ct":
                if c not in self.ct:
                    raise RuntimeError(
                        f"channel {c} uses CT normalisation but the statistics are not fitted; call "
                        "Preprocessor.fit(training_dataset) first (PreprocessedDataset does it for you) or "
                        "pass ct_stats={channel: {lower, upper, mean, std}}"
                    )
                out[c] = self.ct[c](channel)
            else:
                out[c] = channel
        return out

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Preprocess one sample (with or without ``"seg"``: prediction inputs have none).

        Args:
            sample: ``{"data": (C, *spatial), "seg": (1, *spatial) integers (optional), "spacing",
                "origin", "direction", "case_id", ...}``.

        Returns:
            ``{"data": float32 (C, *shape), "seg": int16 (1, *shape) (if given), "spacing": the new
            spacing, "original_spacing", "original_shape", "bbox": the crop in original voxels,
            "class_locations": {label: (K, ndim) int64} (if seg), "properties": everything
            :func:`invert_probabilities` needs (a JSON-friendly dict: ``original_shape``,
            ``orientation`` (None, or the :meth:`delira.io.OrientationTransform.to_dict` record of
            the reorientation), ``bbox``, ``shape_after_crop``, ``shape_after_resample``,
            ``original_spacing``, ``spacing``, ``origin``, ``direction``, ``order_data``,
            ``order_seg``, ``order_z``, ``separate_axis``)}`` plus the sample's other metadata.
            ``original_*``, ``origin`` and ``direction`` describe the case as given; with
            ``orientation`` the crop box ``bbox`` and the later shapes and spacings are on the
            reoriented axes.
        """
        data = np.asarray(sample["data"])
        if data.ndim < 2:
            raise ValueError(f"data has shape {data.shape}; expected (C, *spatial) with a channel axis first")
        ndim = data.ndim - 1
        seg = np.asarray(sample["seg"]) if sample.get("seg") is not None else None
        if seg is not None:
            if seg.ndim == ndim:
                seg = seg[None]
            if seg.shape != (1, *data.shape[1:]):
                raise ValueError(
                    f"seg has shape {seg.shape} but data has spatial shape {data.shape[1:]}; pass seg as "
                    "(1, *spatial) on the image's grid or leave it out"
                )
            if seg.dtype.kind not in "iub":
                seg = seg.astype(np.int16)
        spacing = tuple(float(s) for s in sample.get("spacing", (1.0,) * ndim))
        if len(spacing) != ndim:
            raise ValueError(
                f"spacing {spacing} has {len(spacing)} entries but data {data.shape} has {ndim} spatial axes"
            )
        origin = sample.get("origin")
        origin = [0.0] * ndim if origin is None else [float(o) for o in np.asarray(origin).reshape(-1)]
        direction = sample.get("direction")
        direction = np.eye(ndim) if direction is None else np.asarray(direction, dtype=np.float64)
        out = {k: v for k, v in sample.items() if k not in ("data", "seg", "class_locations", "properties")}
        out["original_spacing"] = spacing
        out["original_shape"] = tuple(data.shape[1:])
        original_shape = tuple(data.shape[1:])
        orientation = None
        if self.orientation is not None:
            data, seg, spacing, orientation = _reorient_case(
                data, seg, spacing, origin, direction, self.orientation
            )
        bbox = tuple((0, n) for n in data.shape[1:])
        if self.crop_nonzero:
            data, seg, bbox = crop_to_nonzero(data, seg)
        out["bbox"] = bbox
        shape_after_crop = tuple(data.shape[1:])
        data = self.normalize(data)
        target = resolve_spacing(self.target_spacing, spacing)
        shape = (
            target_shape(shape_after_crop, spacing, target)
            if self.target_spacing is not None
            else shape_after_crop
        )
        axis = (
            separate_axis(spacing, target, self.anisotropy_threshold) if shape != shape_after_crop else None
        )
        data = resample_image(data, shape, self.order_data, order_z=self.order_z, axis=axis)
        if seg is not None:
            seg = resample_labels(
                np.ascontiguousarray(seg, dtype=np.int16),
                shape,
                self.order_seg,
                order_z=self.order_z,
                axis=axis,
            )
        out["data"] = np.ascontiguousarray(data, dtype=np.float32)
        out["spacing"] = tuple(target)
        out["properties"] = {
            "original_shape": list(original_shape),
            "orientation": orientation,
            "bbox": [list(b) for b in bbox],
            "shape_after_crop": list(shape_after_crop),
            "shape_after_resample": list(shape),
            "original_spacing": list(out["original_spacing"]),
            "spacing": list(target),
            "origin": origin,
            "direction": direction.tolist(),
            "order_data": self.order_data,
            "order_seg": self.order_seg,
            "order_z": self.order_z,
            "separate_axis": axis,
        }
        if seg is not None:
            out["seg"] = np.ascontiguousarray(seg, dtype=np.int16)
            out["class_locations"] = class_locations(
                out["seg"], max_per_class=self.max_locations, seed=self.seed
            )
        return out


def _reorient_case(
    data: np.ndarray,
    seg: np.ndarray | None,
    spacing: tuple[float, ...],
    origin: Sequence[float],
    direction: np.ndarray,
    code: str,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...], dict[str, Any]]:
    """``(C, *spatial)`` data and seg reoriented to ``code``: ``(data, seg, spacing, record)``."""
    from delira.io.orientation import orientation_transform

    try:
        transform = orientation_transform(direction, code, shape=data.shape[1:])
    except ValueError as exc:
        raise ValueError(
            f"cannot reorient the case to {code!r}: {exc}; give the sample a 'direction' of "
            f"({data.ndim - 1}, {data.ndim - 1}) for its {data.ndim - 1} spatial axes"
        ) from exc
    data = transform.apply_array(data, axis=1)
    if seg is not None:
        seg = transform.apply_array(seg, axis=1)
    spacing, _, _ = transform.apply_geometry(spacing, origin, direction)
    return data, seg, spacing, transform.to_dict()


# -- back onto the original grid ----------------------------------------------------------------------
def _orientation_of(properties: Mapping[str, Any], original: tuple[int, ...]) -> Any:
    """The case's :class:`delira.io.OrientationTransform` (None: not reoriented)."""
    record = properties.get("orientation")
    if record is None:
        return None
    from delira.io.orientation import OrientationTransform

    transform = OrientationTransform.from_dict(record)
    if transform.shape != original:
        raise ValueError(
            f"properties['orientation'] reorients the spatial shape {transform.shape} but the case's "
            f"original_shape is {original}; pass the unchanged 'properties' dict of this case"
        )
    return transform


def _check_properties(array: np.ndarray, properties: Mapping[str, Any], what: str) -> tuple:
    try:
        original = tuple(int(n) for n in properties["original_shape"])
        crop = tuple(int(n) for n in properties["shape_after_crop"])
        bbox = tuple((int(a), int(b)) for a, b in properties["bbox"])
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"properties lack {exc}; pass the 'properties' dict that Preprocessor returned for this case"
        ) from exc
    orientation = _orientation_of(properties, original)
    if array.ndim != len(original) + 1:
        raise ValueError(
            f"{what} has shape {array.shape}; expected (K, *spatial) with {len(original)} spatial axes "
            f"(the case's original shape is {original})"
        )
    expected = properties.get("shape_after_resample")
    if expected is not None and tuple(array.shape[1:]) != tuple(int(n) for n in expected):
        raise ValueError(
            f"{what} has spatial shape {array.shape[1:]} but the case was preprocessed to {tuple(expected)}; "
            "predict on the whole preprocessed volume (or pass the properties of this case)"
        )
    axis = properties.get("separate_axis")
    grid = original if orientation is None else orientation.target_shape  # the grid that was cropped
    return (
        grid,
        crop,
        bbox,
        (None if axis is None else int(axis)),
        int(properties.get("order_z", 0)),
        orientation,
    )


def invert_probabilities(probs: np.ndarray, properties: Mapping[str, Any]) -> np.ndarray:
    """Class probabilities on the preprocessed grid -> on the case's original grid.

    Resampled (linear; the coarse axis separately with the case's ``order_z`` when preprocessing
    did so) to the cropped original size, then un-cropped: outside the crop box the background
    (class 0) has probability 1, the other classes 0; a reoriented case (``Preprocessor(orientation=...)``)
    is then put back in its original axis order and direction (bit-exact).

    Args:
        probs: ``(K, *spatial)`` float probabilities (``spatial`` = the preprocessed shape).
        properties: the ``"properties"`` dict of :meth:`Preprocessor.__call__` for the case.

    Returns:
        ``(K, *original_shape)`` float32.
    """
    probs = np.asarray(probs)
    grid, crop, bbox, axis, order_z, orientation = _check_properties(probs, properties, "probs")
    inner = resample_image(probs.astype(np.float32, copy=False), crop, 1, order_z=order_z, axis=axis)
    out = np.zeros((probs.shape[0], *grid), dtype=np.float32)
    out[0] = 1.0
    out[(slice(None), *(slice(a, b) for a, b in bbox))] = inner
    if orientation is not None:
        out = np.ascontiguousarray(orientation.invert_array(out, axis=1))
    return out


def invert_labels(labels: np.ndarray, properties: Mapping[str, Any]) -> np.ndarray:
    """A label map on the preprocessed grid -> on the case's original grid (0 outside the crop box).

    Resampled with the case's ``order_seg`` (nearest or per-label linear + argmax), the coarse axis
    separately with ``order_z`` when preprocessing did so; a reoriented case is then put back in
    its original axis order and direction (bit-exact).

    Args:
        labels: integer ``(1, *spatial)`` or ``(*spatial)`` on the preprocessed grid.
        properties: the ``"properties"`` dict of :meth:`Preprocessor.__call__` for the case.

    Returns:
        ``(1, *original_shape)`` (or ``(*original_shape)`` for a ``(*spatial)`` input), the input dtype.
    """
    labels = np.asarray(labels)
    squeeze = labels.ndim == len(properties["original_shape"])
    if squeeze:
        labels = labels[None]
    grid, crop, bbox, axis, order_z, orientation = _check_properties(labels, properties, "labels")
    order = int(properties.get("order_seg", 1))
    inner = resample_labels(labels, crop, order, order_z=order_z, axis=axis)
    out = np.zeros((labels.shape[0], *grid), dtype=labels.dtype)
    out[(slice(None), *(slice(a, b) for a, b in bbox))] = inner
    if orientation is not None:
        out = np.ascontiguousarray(orientation.invert_array(out, axis=1))
    return out[0] if squeeze else out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class PreprocessedDataset:
    """A dataset preprocessed once and served from memory-mapped ``.npy`` files.

    On construction, every case of ``source`` that is not in the cache yet is preprocessed and
    written to ``cache_dir/<key>/`` (``<case>_data.npy``, ``<case>_seg.npy``,
    ``<case>_locations.npz``, ``<case>.json``); ``<key>`` hashes the preprocessing parameters, the
    case ids and ``source_id``, so a change of any of them uses a new folder. CT statistics are
    fitted on ``source`` first (unless given as ``ct_stats``) and stored in ``plan.json``. Every
    case read is checked (:func:`delira.data.check_case`: NaN images, label shape, geometry and
    values, unreadable files); the problems of all cases are raised together as one
    :class:`~delira.data.DatasetError` after the good cases are written. Every file is written
    atomically, the case's ``.json`` last (it marks the case done).

    Args:
        source: the raw dataset (e.g. a :class:`~delira.data.formats.DecathlonDataset`).
        preprocessor: the :class:`Preprocessor`.
        cache_dir: where the cache folders live.
        num_workers: threads preprocessing cases in parallel (0: this thread).
        source_id: identifies the raw data in the key (default ``repr(source)``, which names the
            folder for the file datasets).

    Samples: ``{"data": read-only float32 memmap (C, *shape), "seg": read-only int16 memmap
    (1, *shape), "class_locations": {label: (K, ndim) int64}, "case_id", "spacing",
    "properties": dict (see :meth:`Preprocessor.__call__`), ...}``.
    """

    def __init__(
        self,
        source: Dataset,
        preprocessor: Preprocessor,
        cache_dir: str | os.PathLike[str],
        num_workers: int = 0,
        source_id: str | None = None,
    ) -> None:
        if len(source) == 0:
            raise ValueError("the source dataset is empty; nothing to preprocess")
        self.preprocessor = preprocessor
        self.case_ids = case_ids_of(source)
        labels = getattr(source, "labels", None)
        self.labels = list(labels) if labels is not None else None
        self.key = self.cache_key(
            preprocessor, self.case_ids, repr(source) if source_id is None else source_id
        )
        self.folder = Path(cache_dir) / self.key
        self.folder.mkdir(parents=True, exist_ok=True)
        plan_path = self.folder / "plan.json"
        if plan_path.is_file():
            plan = json.loads(plan_path.read_text())
            preprocessor.ct = {int(c): CTNormalization(**v) for c, v in plan["ct"].items()}
        todo = [i for i, c in enumerate(self.case_ids) if not Path(f"{self._base(c)}.json").is_file()]
        if todo and self._needs_fit(source, todo[0]):
            preprocessor.fit(source)
        if not plan_path.is_file():
            plan = {
                "version": _CACHE_VERSION,
                "params": preprocessor.params(),
                "ct": {str(c): asdict(v) for c, v in preprocessor.ct.items()},
                "case_ids": self.case_ids,
            }
            _write_bytes(plan_path, json.dumps(plan, indent=2).encode())
        if todo:
            from delira.data.checks import scan_cases

            def run(i: int, sample: dict[str, Any]) -> None:
                self._write_case(self.case_ids[i], preprocessor(sample))

            scan_cases(source, run, num_workers=num_workers, indices=todo)

    def _needs_fit(self, source: Dataset, index: int) -> bool:
        schemes = self.preprocessor.normalization
        if "ct" not in ((schemes,) if isinstance(schemes, str) else schemes):
            return False
        try:
            channels = np.asarray(source[index]["data"]).shape[0]
        except Exception:  # a broken case: fit() reads every case and lists the problems
            return True
        return self.preprocessor.needs_fit(channels)

    @staticmethod
    def cache_key(preprocessor: Preprocessor, case_ids: Sequence[str], source_id: str) -> str:
        """The cache folder name: a hash of the parameters, the case ids and the source id."""
        doc = json.dumps(
            {
                "version": _CACHE_VERSION,
                "params": preprocessor.params(),
                "cases": list(case_ids),
                "source": source_id,
            },
            sort_keys=True,
        )
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    def _base(self, case_id: str) -> Path:
        """The cache files' path prefix of a case (ids that are not plain file names are escaped)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", case_id).lstrip(".")
        if stem != case_id:
            stem = f"{stem}_{hashlib.sha256(case_id.encode()).hexdigest()[:8]}"
        return self.folder / stem

    def _write_case(self, case_id: str, sample: dict[str, Any]) -> None:
        base = self._base(case_id)
        _save_npy(Path(f"{base}_data.npy"), sample["data"])
        meta = {k: _jsonable(v) for k, v in sample.items() if k not in ("data", "seg", "class_locations")}
        meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        if "properties" in sample:
            meta["properties"] = json.loads(json.dumps(sample["properties"], default=_jsonable))
        if "seg" in sample:
            _save_npy(Path(f"{base}_seg.npy"), sample["seg"])
            locations = {str(c): v for c, v in sample["class_locations"].items()}

            def write_locations(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, **locations)

            atomic_write(Path(f"{base}_locations.npz"), write_locations)
        meta["has_seg"] = "seg" in sample
        _write_bytes(Path(f"{base}.json"), json.dumps(meta).encode())  # written last: marks the case done

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = _check_index(index, len(self), type(self).__name__)
        base = self._base(self.case_ids[i])
        meta_path = Path(f"{base}.json")
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} is missing from the preprocessing cache; delete {self.folder} and rebuild it"
            )
        meta = json.loads(meta_path.read_text())
        sample: dict[str, Any] = {"data": np.load(f"{base}_data.npy", mmap_mode="r")}
        if meta.pop("has_seg"):
            sample["seg"] = np.load(f"{base}_seg.npy", mmap_mode="r")
            with np.load(f"{base}_locations.npz") as f:
                sample["class_locations"] = {int(c): f[c] for c in f.files}
        for k, v in meta.items():
            if k == "properties":
                sample[k] = v
            elif isinstance(v, list):
                sample[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            else:
                sample[k] = v
        return sample

    def __repr__(self) -> str:
        return f"PreprocessedDataset({len(self)} cases in {str(self.folder)!r})"


# -- atomic files -------------------------------------------------------------------------------------
def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically with :func:`delira.io.atomic_write`: ``write(tmp)`` on a unique
    temporary sibling, fsync, rename it over ``path``, fsync the folder. At every moment ``path`` is
    the complete old or the complete new file, also when several processes write it at once.
    (delira.io is imported here, on first write, so that ``import delira.data`` stays numpy-only.)"""
    from delira.io import atomic_write as io_atomic_write

    io_atomic_write(Path(path), write)


def _write_bytes(path: Path, payload: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))

    atomic_write(path, write)
