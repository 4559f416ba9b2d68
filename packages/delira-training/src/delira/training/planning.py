"""The experiment planner: a dataset fingerprint in, a complete, commented Delira config out.

``delira plan DATASET_OR_CONFIG`` (and :func:`plan_dataset` / :func:`plan_experiment`) derive every
data-dependent choice of a segmentation experiment from a :class:`delira.data.fingerprint.Fingerprint`
(per case shape, spacing, shape after cropping to the nonzero region; per channel foreground intensity
statistics) and write it as an editable YAML whose comments give the reason of each choice. The ideas
are nnU-Net's (Isensee et al. 2021); the rules, thresholds and code are Delira's own:

Target spacing
    The median spacing per axis. When the median spacing is anisotropic (its max / min exceeds
    :data:`ANISOTROPY_THRESHOLD` = 3, one coarse axis), the coarse axis instead gets the
    :data:`COARSE_PERCENTILE` (10th) percentile of that axis's spacings over the cases (numpy's
    linear interpolation between order statistics), so that the thick-slice cases are not all
    downsampled further. It is clamped from below at the coarsest fine-axis target spacing: the
    coarse axis is never made finer than the fine axes (nnU-Net's clamp). The result may be less
    anisotropic than the threshold; the topology below then simply treats it as near-isotropic.

3D or 2D
    2D (``data.spatial_dims: 2``, slices taken along ``data.slice_axis``) when the data is 2D, when
    the median extent along the thin axis (the coarse axis of anisotropic data, else the axis with
    the fewest resampled voxels) is below :data:`MIN_3D_EXTENT` = 16 voxels (a 3D network could pool
    it at most once or twice), or when the target spacing's max / min exceeds
    :data:`EXTREME_ANISOTROPY` = 10 (a 3D network would see mostly in-plane context anyway). A 2D
    plan keeps the in-plane target spacing and writes ``null`` for the slice axis (each case keeps
    its own spacing there); the patch covers the two in-plane axes.

Normalization (one scheme per channel, from ``channel_names``)
    ``CT`` (any case) -> ``ct``: clip to the foreground 0.5 / 99.5 percentiles of the dataset and
    z-score with the foreground mean and std (``data.preprocessing.ct_stats``). ``none`` /
    ``nonorm`` -> ``none``. Every other modality -> per-case ``zscore``, or ``zscore_nonzero``
    (statistics and normalization inside the nonzero mask) when cropping to the nonzero region
    shrinks the median case volume by at least 25 % (:data:`NONZERO_SHRINK`): then the zero
    background is large and would distort the statistics.

Topology (:func:`plan_topology`)
    Stage 0 has stride 1 on every axis. Each further stage pools (stride 2) every axis whose feature
    map still has at least ``2 * MIN_FEATURE_MAP`` = 8 voxels (so the bottleneck keeps >= 4) and
    whose current spacing is at most :data:`POOL_SPACING_RATIO` = 2x the finest current spacing of
    those axes: anisotropic axes wait until the fine axes have caught up ("pools the fine axes
    first"). The kernel is 3 along an axis whose current spacing is within 2x of the finest spacing
    and 1 along the others (once 3, it stays 3). At most :data:`MAX_STAGES` stages (6 in 3D, 7 in
    2D); stage ``i`` has ``32 * 2**i`` features capped at 320 (3D) / 512 (2D). The patch is rounded
    up per axis to a multiple of the product of that axis's strides.

Patch and batch within a memory budget
    The patch starts as a box of equal physical extent per axis holding :data:`PATCH_VOXEL_CAP`
    voxels (256^3 in 3D, 2048^2 in 2D), capped at the median resampled shape. While
    :func:`delira.models.memory.estimate_unet_memory_bytes` at batch 2 exceeds the usable memory,
    the axis that is largest relative to the median shape is shrunk by the smallest step that makes
    the (re-derived) padded patch smaller, and the topology is recomputed. Usable GPU memory is the
    budget minus a reserve of ``max(1 GiB, 10 %)`` for the CUDA context, cuDNN workspaces and
    allocator fragmentation (:data:`GPU_RESERVE_GIB`, :data:`GPU_RESERVE_FRACTION`). Then the batch
    grows from 2 while it fits, capped so that one batch covers at most 5 % of the dataset's
    (resampled, cropped) voxels (:data:`MAX_BATCH_FRACTION`), and at least 2. ``device: cpu`` plans
    for :data:`CPU_MEMORY_GIB` = 2 GiB and batch 2. The estimate assumes float32 training and
    Adam's two moments (``parameter_copies=4``).

Augmentation scaled to the patch
    Rotation ranges per rotation axis (angle ``k`` turns the plane of the other two axes, in voxel
    space as ``delira.augment`` does). Isotropic 3D: +-30 deg about every axis. Anisotropic 3D (the
    median spacing is anisotropic, or the patch is more than 3x longer than its shortest axis):
    +-180 deg about the coarse axis and tilts of the coarse axis limited to
    ``min(15, atan(patch_coarse / patch_inplane))`` degrees, so that a tilted patch corner moves
    out of plane by at most half the patch thickness (nnU-Net's "dummy 2D" idea, scaled to the
    patch). 2D: +-180 deg. Scale [0.7, 1.4], p_rotation = p_scale = 0.2, no elastic deformation,
    mirroring along every axis.

Training
    ``ce+dice`` loss, 250 batches per epoch, 33 % foreground patches (nnU-Net's values), 200 epochs
    (a fifth of nnU-Net's 1000, so that a first run of each fold takes hours rather than days; raise
    it with ``--set training.epochs=1000`` for nnU-Net's full schedule), AdamW at 3e-4 with weight decay 3e-5 and a cosine schedule
    (nnU-Net's Adam variant: Delira's config has no momentum key for nnU-Net's SGD with Nesterov
    momentum 0.99), 5 folds.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "COARSE_PERCENTILE",
    "CPU_MEMORY_GIB",
    "EXTREME_ANISOTROPY",
    "MAX_STAGES",
    "MIN_3D_EXTENT",
    "Plan",
    "Topology",
    "add_plan_arguments",
    "plan_dataset",
    "plan_experiment",
    "plan_to_yaml",
    "plan_topology",
    "run_plan",
]

ANISOTROPY_THRESHOLD = 3.0  #: max / min of the median spacing above which one axis counts as coarse
COARSE_PERCENTILE = 10.0  #: percentile of the coarse axis's spacings used as its target spacing
MIN_3D_EXTENT = 16  #: median resampled voxels along the thin axis below which the plan is 2D
EXTREME_ANISOTROPY = 10.0  #: target spacing max / min above which the plan is 2D
NONZERO_SHRINK = 0.25  #: cropping to the nonzero region shrinks the median volume by this: zscore_nonzero
MIN_FEATURE_MAP = 4  #: an axis is pooled only while its pooled feature map keeps at least this many voxels
POOL_SPACING_RATIO = 2.0  #: pool / use kernel 3 along an axis within this factor of the finest spacing
MAX_STAGES = {3: 6, 2: 7}  #: most stages (resolution levels) of the UNet
BASE_FEATURES = 32  #: features of stage 0; stage i has BASE_FEATURES * 2**i, capped
MAX_FEATURES = {3: 320, 2: 512}  #: feature cap per stage
PATCH_VOXEL_CAP = {3: 256**3, 2: 2048**2}  #: voxels of the initial patch before the memory fit
GPU_RESERVE_GIB = 1.0  #: GPU memory kept free (CUDA context, cuDNN workspaces, fragmentation), at least
GPU_RESERVE_FRACTION = 0.1  #: ... or this share of the GPU memory, whichever is larger
CPU_MEMORY_GIB = 2.0  #: memory budget of a CPU plan (batch 2)
MAX_BATCH_FRACTION = 0.05  #: one batch covers at most this share of the dataset's voxels
MIN_BATCH = 2
GIB = 1024**3


@dataclass
class Plan:
    """The result of planning.

    Attributes:
        config: a complete Delira config (``delira.training.config.load_config`` accepts it;
            ``delira run plan.yaml`` trains it).
        reasons: dotted config key (``"data.preprocessing.target_spacing"``) -> one-line reason.
        summary: what was derived from the fingerprint: median spacing and shape, anisotropy,
            resampled median shape, memory estimate and budget, dataset voxels, ...
    """

    config: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    """A UNet topology for one patch.

    Attributes:
        strides: per stage, per axis (stage 0 all ones), ``len == num_stages``.
        kernel_sizes: per stage, per axis, 3 or 1.
        features: channels per stage.
        patch_size: the patch rounded up per axis to a multiple of :attr:`divisor`.
        divisor: per axis, the product of that axis's strides.
    """

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    features: tuple[int, ...]
    patch_size: tuple[int, ...]
    divisor: tuple[int, ...]

    @property
    def pools_per_axis(self) -> tuple[int, ...]:
        """How often each axis is pooled."""
        return tuple(round(math.log2(d)) for d in self.divisor)


def plan_topology(
    spacing: Sequence[float], patch_size: Sequence[int], *, max_stages: int | None = None
) -> Topology:
    """Strides, kernel sizes and features of a UNet for ``patch_size`` voxels at ``spacing`` mm.

    Args:
        spacing: voxel spacing per axis (mm), 2 or 3 positive numbers.
        patch_size: patch size per axis (voxels), one positive int per axis.
        max_stages: most stages (default :data:`MAX_STAGES` of the dimensionality).

    Returns:
        The :class:`Topology` (rules in the module docstring); its ``patch_size`` is ``patch_size``
        rounded up to a multiple of the per-axis stride product.

    Raises:
        ValueError: spacing and patch size of different lengths, not 2 or 3 axes, or non-positive.
    """
    nd = len(spacing)
    if nd not in (2, 3) or len(patch_size) != nd:
        raise ValueError(
            f"plan_topology: spacing {tuple(spacing)} and patch_size {tuple(patch_size)} must both have "
            "2 or 3 entries, one per spatial axis"
        )
    if any(float(s) <= 0 for s in spacing) or any(int(p) < 1 for p in patch_size):
        raise ValueError(
            f"plan_topology: spacing {tuple(spacing)} and patch_size {tuple(patch_size)} must be positive"
        )
    stages_cap = MAX_STAGES[nd] if max_stages is None else int(max_stages)
    current = [float(s) for s in spacing]
    size = [int(p) for p in patch_size]
    kernel = [3 if s <= POOL_SPACING_RATIO * min(current) else 1 for s in current]
    strides: list[tuple[int, ...]] = [(1,) * nd]
    kernels: list[tuple[int, ...]] = [tuple(kernel)]
    while len(strides) < stages_cap:
        candidates = [a for a in range(nd) if size[a] >= 2 * MIN_FEATURE_MAP]
        if not candidates:
            break
        finest = min(current[a] for a in candidates)
        pooled = [a for a in candidates if current[a] <= POOL_SPACING_RATIO * finest]
        for a in pooled:
            current[a] *= 2
            size[a] = math.ceil(size[a] / 2)
        strides.append(tuple(2 if a in pooled else 1 for a in range(nd)))
        finest_all = min(current)
        kernel = [
            3 if kernel[a] == 3 or current[a] <= POOL_SPACING_RATIO * finest_all else 1 for a in range(nd)
        ]
        kernels.append(tuple(kernel))
    divisor = tuple(int(np.prod([s[a] for s in strides])) for a in range(nd))
    padded = tuple(math.ceil(int(p) / d) * d for p, d in zip(patch_size, divisor))
    features = tuple(min(BASE_FEATURES * 2**i, MAX_FEATURES[nd]) for i in range(len(strides)))
    return Topology(tuple(strides), tuple(kernels), features, padded, divisor)


# -- fingerprint helpers ----------------------------------------------------------------------------
def _cases(fingerprint: Any) -> list[Any]:
    cases = list(getattr(fingerprint, "cases", []) or [])
    if not cases:
        raise ValueError(
            "plan_experiment: the fingerprint has no cases; compute it from a dataset with training cases "
            "(delira.data.fingerprint.compute_fingerprint)"
        )
    return cases


def _spacings(fingerprint: Any, cases: Sequence[Any]) -> np.ndarray:
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    if spacings.ndim != 2 or spacings.shape[0] != len(cases) or spacings.shape[1] not in (2, 3):
        raise ValueError(
            f"plan_experiment: fingerprint.spacings has shape {spacings.shape}; expected (num_cases, 2 or 3) "
            f"with num_cases = {len(cases)}"
        )
    if not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
        bad = [c.case_id for c, s in zip(cases, spacings) if not np.all(np.isfinite(s)) or np.any(s <= 0)]
        raise ValueError(
            f"plan_experiment: cases {bad[:5]} have non-positive or non-finite spacings; fix their headers"
        )
    return spacings


def _resampled_shape(case: Any, target: Sequence[float | None]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in (case.shape_after_crop or case.shape))
    spacing = tuple(float(s) for s in case.spacing)
    return tuple(n if t is None else max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def _num(value: float, digits: int = 5) -> float:
    return float(round(float(value), digits))


def _fmt(values: Iterable[Any]) -> str:
    return "(" + ", ".join("null" if v is None else f"{v:g}" for v in values) + ")"


def _target_spacing(spacings: np.ndarray) -> tuple[list[float], dict[str, Any], str]:
    median = np.median(spacings, axis=0)
    ratio = float(median.max() / median.min())
    info: dict[str, Any] = {
        "median_spacing": [_num(v) for v in median],
        "anisotropy": _num(ratio, 3),
        "anisotropic": ratio > ANISOTROPY_THRESHOLD,
        "coarse_axis": None,
    }
    target = [float(v) for v in median]
    if ratio <= ANISOTROPY_THRESHOLD:
        return (
            [_num(v) for v in target],
            info,
            f"median spacing {_fmt(info['median_spacing'])} mm; max/min {ratio:.2f} <= "
            f"{ANISOTROPY_THRESHOLD:g}: isotropic enough, every axis at its median",
        )
    coarse = int(np.argmax(median))
    fine_max = max(float(median[a]) for a in range(len(median)) if a != coarse)
    p10 = float(np.percentile(spacings[:, coarse], COARSE_PERCENTILE))
    target[coarse] = max(p10, fine_max)
    info["coarse_axis"] = coarse
    info["coarse_percentile"] = _num(p10)
    clamp = f", clamped to the fine axes' {fine_max:g}" if p10 < fine_max else ""
    reason = (
        f"median spacing {_fmt(info['median_spacing'])} mm is anisotropic (max/min {ratio:.2f} > "
        f"{ANISOTROPY_THRESHOLD:g}); coarse axis {coarse} gets the {COARSE_PERCENTILE:g}th percentile of its "
        f"spacings, {p10:g} mm{clamp}, instead of the median {median[coarse]:g} mm"
    )
    return [_num(v) for v in target], info, reason


def _normalization(
    fingerprint: Any, cases: Sequence[Any]
) -> tuple[list[str], dict[int, dict[str, float]] | None, dict[str, str], float]:
    names = [str(n) for n in fingerprint.channel_names]
    if not names:
        raise ValueError(
            "plan_experiment: the fingerprint has no channel_names; one per image channel needed"
        )
    fractions = []
    for case in cases:
        full = float(np.prod([int(n) for n in case.shape]))
        crop = float(np.prod([int(n) for n in (case.shape_after_crop or case.shape)]))
        fractions.append(crop / full if full else 1.0)
    kept = float(np.median(fractions))
    schemes, stats, why = [], {}, []
    for index, name in enumerate(names):
        low = name.strip().lower()
        if low == "ct":
            if index >= len(fingerprint.intensity):
                raise ValueError(
                    f"plan_experiment: channel {index} ({name}) is CT but the fingerprint has intensity "
                    f"statistics for {len(fingerprint.intensity)} channel(s) only; recompute the fingerprint"
                )
            s = fingerprint.intensity[index]
            stats[index] = {
                "lower": float(s["percentile_00_5"]),
                "upper": float(s["percentile_99_5"]),
                "mean": float(s["mean"]),
                "std": float(s["std"]),
            }
            schemes.append("ct")
            why.append(
                f"channel {index} {name}: ct (clip to the foreground 0.5/99.5 percentiles "
                f"[{stats[index]['lower']:g}, {stats[index]['upper']:g}], z-score with mean "
                f"{stats[index]['mean']:g}, std {stats[index]['std']:g})"
            )
        elif low in ("none", "nonorm", "no_norm"):
            schemes.append("none")
            why.append(f"channel {index} {name}: none (named so)")
        elif kept <= 1.0 - NONZERO_SHRINK:
            schemes.append("zscore_nonzero")
            why.append(
                f"channel {index} {name}: z-score inside the nonzero mask (cropping keeps {kept:.0%} of the "
                f"median volume, <= {1 - NONZERO_SHRINK:.0%})"
            )
        else:
            schemes.append("zscore")
            why.append(
                f"channel {index} {name}: per-case z-score (not CT; cropping keeps {kept:.0%} of the median "
                f"volume, > {1 - NONZERO_SHRINK:.0%})"
            )
    reasons = {"data.preprocessing.normalization": "; ".join(why)}
    if stats:
        reasons["data.preprocessing.ct_stats"] = (
            "foreground intensity statistics of the CT channel(s) over all training cases (fingerprint)"
        )
    return schemes, (stats or None), reasons, kept


# -- memory -----------------------------------------------------------------------------------------
def _unet_config(topology: Topology, spatial_dims: int, in_channels: int, num_classes: int) -> Any:
    from delira.models.configs import UNetConfig

    return UNetConfig(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        features=topology.features,
        strides=tuple(topology.strides),
        kernel_sizes=tuple(topology.kernel_sizes),
        norm="instance",
        deep_supervision=False,
    )


def _estimate(topology: Topology, dims: int, channels: int, classes: int, batch: int) -> int:
    from delira.models.memory import estimate_unet_memory_bytes

    config = _unet_config(topology, dims, channels, classes)
    return int(estimate_unet_memory_bytes(config, list(topology.patch_size), batch))


def _budget(device: str, gpu_memory_gib: float | None) -> tuple[float, float, str]:
    """``(budget GiB, usable GiB, text)``."""
    if device.startswith("cpu"):
        return CPU_MEMORY_GIB, CPU_MEMORY_GIB, f"CPU plan: {CPU_MEMORY_GIB:g} GiB"
    if gpu_memory_gib is None:
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device")
            index = torch.device(device).index or 0
            gpu_memory_gib = torch.cuda.get_device_properties(index).total_memory / GIB
        except Exception as exc:
            raise ValueError(
                f"plan_experiment: gpu_memory_gib=None asks to read the GPU's memory, but that failed ({exc}); "
                "pass gpu_memory_gib (--gpu-memory GiB) or device='cpu' (--device cpu)"
            ) from exc
    budget = float(gpu_memory_gib)
    reserve = max(GPU_RESERVE_GIB, GPU_RESERVE_FRACTION * budget)
    usable = budget - reserve
    if usable <= 0:
        raise ValueError(
            f"plan_experiment: gpu_memory_gib={budget:g} leaves nothing after the {reserve:g} GiB reserve for the "
            f"CUDA context; pass more than {GPU_RESERVE_GIB:g} GiB or device='cpu'"
        )
    return budget, usable, f"{budget:g} GiB GPU minus a {reserve:g} GiB reserve = {usable:g} GiB usable"


def _fit_patch(
    spacing: Sequence[float],
    median: Sequence[int],
    dims: int,
    channels: int,
    classes: int,
    usable_bytes: float,
) -> tuple[Topology, int, int]:
    """Shrink the patch until batch 2 fits; returns ``(topology, estimate at batch 2, shrink steps)``."""
    inverse = np.array([1.0 / s for s in spacing])
    scale = (PATCH_VOXEL_CAP[dims] / float(np.prod(inverse))) ** (1.0 / dims)
    start = [max(1, min(round(v * scale), int(m))) for v, m in zip(inverse, median)]
    topology = plan_topology(spacing, start)
    if len(topology.strides) < 2:
        raise ValueError(
            f"plan_experiment: the median resampled shape {list(median)} is too small for a UNet, which pools "
            f"at least once (>= {2 * MIN_FEATURE_MAP} voxels along some axis); resample to a finer spacing "
            "(--set data.preprocessing.target_spacing=[...]) or use larger images"
        )
    estimate = _estimate(topology, dims, channels, classes, MIN_BATCH)
    steps = 0
    exhausted: set[int] = set()
    while estimate > usable_bytes:
        patch = list(topology.patch_size)
        order = sorted(
            (a for a in range(dims) if a not in exhausted), key=lambda a: -patch[a] / max(1, median[a])
        )
        if not order:
            smallest = estimate / GIB
            raise ValueError(
                f"plan_experiment: even the smallest patch {tuple(patch)} needs {smallest:.2f} GiB at batch "
                f"{MIN_BATCH}, more than the {usable_bytes / GIB:.2f} GiB usable; pass a larger gpu_memory_gib "
                "(--gpu-memory) or plan for fewer channels"
            )
        axis = order[0]
        volume = float(np.prod(patch))
        accepted = None
        for size in range(patch[axis] - 1, 2 * MIN_FEATURE_MAP - 1, -1):
            trial = list(patch)
            trial[axis] = size
            candidate = plan_topology(spacing, trial)
            if float(np.prod(candidate.patch_size)) < volume:
                accepted = candidate
                break
        if accepted is None:
            exhausted.add(axis)
            continue
        topology = accepted
        estimate = _estimate(topology, dims, channels, classes, MIN_BATCH)
        steps += 1
    return topology, estimate, steps


# -- the plan ---------------------------------------------------------------------------------------
def _rotation(
    dims: int, patch: Sequence[int], target: Sequence[float], anisotropic: bool
) -> tuple[list[list[float]], str]:
    if dims == 2:
        return [[-180.0, 180.0]], "2D: any in-plane rotation (+-180 deg)"
    patch_ratio = max(patch) / min(patch)
    if not anisotropic and patch_ratio <= ANISOTROPY_THRESHOLD:
        return [[-30.0, 30.0] for _ in range(3)], (
            f"isotropic 3D (spacing and patch {list(patch)} within {ANISOTROPY_THRESHOLD:g}x): +-30 deg about every axis"
        )
    coarse = int(np.argmax(target)) if anisotropic else int(np.argmin(patch))
    inplane = max(p for a, p in enumerate(patch) if a != coarse)
    tilt = float(min(15, math.floor(math.degrees(math.atan(patch[coarse] / inplane)))))
    ranges = [[-tilt, tilt] for _ in range(3)]
    ranges[coarse] = [-180.0, 180.0]
    why = "anisotropic spacing" if anisotropic else f"flat patch {list(patch)}"
    return ranges, (
        f"{why}: +-180 deg about the coarse axis {coarse}; tilts of that axis +-{tilt:g} deg = min(15, "
        f"atan({patch[coarse]}/{inplane})), so a tilted patch corner leaves the plane by at most half the "
        "patch thickness (nnU-Net's dummy-2D idea)"
    )


def plan_experiment(
    fingerprint: Any,
    *,
    dataset_path: str | None = None,
    gpu_memory_gib: float | None = 8.0,
    device: str = "cuda",
    backend: str = "torch",
    name: str | None = None,
) -> Plan:
    """Plan a segmentation experiment from a dataset fingerprint (rules in the module docstring).

    Args:
        fingerprint: a :class:`delira.data.fingerprint.Fingerprint` (or any object with its
            attributes): ``cases`` (each with ``case_id``, ``shape``, ``spacing``,
            ``shape_after_crop``), ``channel_names``, ``labels`` (``{int: name}``), ``intensity``
            (per channel ``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``) and ``spacings``
            (``(num_cases, ndim)`` float array).
        dataset_path: the MSD folder, written (absolute) to ``data.path``; None leaves ``data.path``
            null (set it before training).
        gpu_memory_gib: GPU memory to plan for (GiB); None reads it from the CUDA device with torch.
            Ignored when ``device`` is ``"cpu"`` (a CPU plan uses :data:`CPU_MEMORY_GIB`, batch 2).
        device: ``"cuda"``, ``"cuda:1"``, ... or ``"cpu"``; written to ``training.device``.
        backend: ``"torch"`` or ``"tf"``; written to ``backend`` (the same UNet config builds in both).
        name: the run name (default ``<dataset folder>-3d`` / ``-2d``).

    Returns:
        The :class:`Plan`: a complete config, a reason per derived key and a summary.

    Raises:
        ValueError: an empty or inconsistent fingerprint, an unknown backend, or a budget too small.
    """
    from delira.training.config import DEFAULTS

    if backend not in ("torch", "tf"):
        raise ValueError(f"plan_experiment: backend must be 'torch' or 'tf'; got {backend!r}")
    cases = _cases(fingerprint)
    spacings = _spacings(fingerprint, cases)
    ndim = spacings.shape[1]
    reasons: dict[str, str] = {}

    # target spacing
    target3, spacing_info, reasons["data.preprocessing.target_spacing"] = _target_spacing(spacings)
    resampled = np.array([_resampled_shape(c, target3) for c in cases], dtype=np.int64)
    median_shape = [round(float(v)) for v in np.median(resampled, axis=0)]

    # 3D or 2D
    coarse = spacing_info["coarse_axis"]
    target_ratio = max(target3) / min(target3)
    slice_axis: int | None = None
    if ndim == 2:
        dims, why2d = 2, "the images are 2D"
    else:
        thin = coarse if coarse is not None else int(np.argmin(median_shape))
        if median_shape[thin] < MIN_3D_EXTENT:
            dims, slice_axis = 2, thin
            why2d = (
                f"2D: the median resampled extent along axis {thin} is {median_shape[thin]} voxels < "
                f"{MIN_3D_EXTENT}, too few for a 3D network to pool; slices along axis {thin}"
            )
        elif coarse is not None and target_ratio > EXTREME_ANISOTROPY:
            dims, slice_axis = 2, thin
            why2d = (
                f"2D: the target spacing {_fmt(target3)} is extremely anisotropic (max/min {target_ratio:.1f} > "
                f"{EXTREME_ANISOTROPY:g}); slices along the coarse axis {thin}"
            )
        else:
            dims = 3
            why2d = (
                f"3D: median resampled shape {median_shape} has >= {MIN_3D_EXTENT} voxels along axis {thin} and "
                f"the target spacing's max/min {target_ratio:.2f} <= {EXTREME_ANISOTROPY:g}"
            )
    reasons["data.spatial_dims"] = why2d
    target: list[float | None] = list(target3)
    axes = list(range(ndim))
    if slice_axis is not None:
        target[slice_axis] = None
        axes.remove(slice_axis)
        reasons["data.slice_axis"] = f"2D slices of the 3D volumes are taken along axis {slice_axis}"
        reasons["data.preprocessing.target_spacing"] += (
            f"; 2D plan: axis {slice_axis} is null (each case keeps its own spacing there)"
        )
    plane_spacing = [float(target3[a]) for a in axes]
    plane_median = [median_shape[a] for a in axes]

    # normalization
    normalization, ct_stats, norm_reasons, kept = _normalization(fingerprint, cases)
    reasons.update(norm_reasons)

    # topology, patch and batch
    in_channels = len(fingerprint.channel_names)
    labels = {int(k): str(v) for k, v in dict(fingerprint.labels).items()}
    num_classes = max([0, *labels]) + 1
    if num_classes < 2:
        raise ValueError(
            f"plan_experiment: the fingerprint's labels {labels} name no foreground class; dataset.json must "
            "list at least one label besides 0 (background)"
        )
    budget, usable, budget_text = _budget(device, gpu_memory_gib)
    topology, estimate, steps = _fit_patch(
        plane_spacing, plane_median, dims, in_channels, num_classes, usable * GIB
    )
    patch = list(topology.patch_size)
    dataset_voxels = int(sum(int(np.prod(r)) for r in resampled))
    patch_voxels = int(np.prod(patch))
    cap = max(MIN_BATCH, int(MAX_BATCH_FRACTION * dataset_voxels // patch_voxels))
    batch = MIN_BATCH
    if not device.startswith("cpu"):
        while batch < cap:
            nxt = _estimate(topology, dims, in_channels, num_classes, batch + 1)
            if nxt > usable * GIB:
                break
            batch, estimate = batch + 1, nxt
    estimate = _estimate(topology, dims, in_channels, num_classes, batch)

    reasons["data.patch_size"] = (
        f"start: {round(PATCH_VOXEL_CAP[dims] ** (1 / dims))}^{dims} voxels of equal physical extent per axis, capped at the median "
        f"resampled shape {plane_median}; shrunk {steps} step(s) (the "
        f"axis largest relative to the median first) until batch {MIN_BATCH} fits {budget_text}; divisible by "
        f"the per-axis stride products {list(topology.divisor)}"
    )
    if device.startswith("cpu"):
        reasons["training.batch_size"] = f"CPU plan: batch {MIN_BATCH}"
    else:
        limit = "the 5% cap" if batch == cap else "memory"
        reasons["training.batch_size"] = (
            f"grown from {MIN_BATCH} while the estimate ({estimate / GIB:.2f} GiB at batch {batch}) fits "
            f"{usable:g} GiB and one batch covers <= {MAX_BATCH_FRACTION:.0%} of the dataset's {dataset_voxels} voxels "
            f"(cap {cap}); limited by {limit}"
        )
    reasons["model.args.strides"] = (
        f"pool an axis while its map has >= {2 * MIN_FEATURE_MAP} voxels and its spacing is <= "
        f"{POOL_SPACING_RATIO:g}x the finest (fine axes first); pools per axis {list(topology.pools_per_axis)}, "
        f"{len(topology.strides)} stages (max {MAX_STAGES[dims]})"
    )
    reasons["model.args.kernel_sizes"] = (
        f"3 along axes within {POOL_SPACING_RATIO:g}x of the finest current spacing, 1 along coarser ones"
    )
    reasons["model.args.features"] = f"{BASE_FEATURES}*2^i per stage, capped at {MAX_FEATURES[dims]}"
    reasons["model.args.num_classes"] = f"labels {labels} (background included)"
    reasons["model.args.in_channels"] = f"channels {list(fingerprint.channel_names)}"

    rotation, rotation_reason = _rotation(
        dims, patch, plane_spacing, spacing_info["anisotropic"] and dims == 3
    )
    reasons["data.augmentation.rotation"] = rotation_reason
    reasons["data.augmentation.scale"] = "zoom 0.7 to 1.4 with p 0.2, rotation p 0.2 (nnU-Net's ranges)"
    reasons["data.augmentation.p_elastic"] = "no elastic deformation (nnU-Net's default: costly, little gain)"
    reasons["data.augmentation.mirror_axes"] = (
        "mirror along every patch axis (also used for test-time mirroring)"
    )

    reasons["data.preprocessing.crop_nonzero"] = (
        f"crop each case to its nonzero region first (keeps {kept:.0%} of the median volume)"
    )
    reasons["data.preprocessing.order_data"] = (
        "cubic images, per-label linear labels; along the coarse axis of anisotropic cases nearest (order_z 0)"
    )
    reasons["data.batches_per_epoch"] = (
        "250 batches per epoch, 33% of patches centred on foreground (nnU-Net)"
    )
    reasons["training.epochs"] = (
        "200 epochs x 250 batches, a fifth of nnU-Net's 1000 so a first run takes hours, not days; "
        "--set training.epochs=1000 for nnU-Net's full schedule"
    )
    reasons["training.optimizer"] = (
        "AdamW 3e-4, weight decay 3e-5, cosine schedule (nnU-Net's Adam variant; the config has no momentum "
        "key for its SGD with Nesterov 0.99)"
    )
    reasons["training.loss"] = "cross-entropy + soft Dice (nnU-Net)"
    reasons["training.device"] = f"planned for {device}"
    reasons["backend"] = f"{backend}: the same UNet config builds in PyTorch and TensorFlow"
    reasons["experiment.folds"] = "5-fold cross-validation (nnU-Net)"

    workers = min(4, max(0, (os.cpu_count() or 1) - 1))
    reasons["training.workers"] = (
        f"{workers} loader worker process(es): min(4, CPUs - 1) of the planning machine"
    )

    folder = Path(dataset_path).resolve() if dataset_path else None
    run_name = name or f"{folder.name if folder else 'planned'}-{dims}d"
    config = copy.deepcopy(DEFAULTS)
    config["data"].pop("phantom", None)  # a decathlon plan; load_config restores the defaults
    config["name"] = run_name
    config["backend"] = backend
    config["task"] = "segmentation"
    config["model"] = {
        "name": "unet",
        "args": {
            "spatial_dims": dims,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "features": list(topology.features),
            "strides": [list(s) for s in topology.strides],
            "kernel_sizes": [list(k) for k in topology.kernel_sizes],
            "norm": "instance",
            "deep_supervision": False,
        },
    }
    data = config["data"]
    data.update(
        {
            "kind": "decathlon",
            "path": str(folder) if folder else None,
            "spatial_dims": dims,
            "slice_axis": slice_axis,
            "patch_size": patch,
            "batches_per_epoch": 250,
            "foreground_fraction": 0.33,
            "transforms": "canonical",
            "augmentation": {
                "rotation": rotation,
                "scale": [0.7, 1.4],
                "p_rotation": 0.2,
                "p_scale": 0.2,
                "p_elastic": 0.0,
                "mirror_axes": list(range(dims)),
            },
        }
    )
    data["preprocessing"].update(
        {
            "target_spacing": target,
            "normalization": normalization,
            "ct_stats": ct_stats,
            "crop_nonzero": True,
            "order_data": 3,
            "order_seg": 1,
            "order_z": 0,
            "anisotropy_threshold": ANISOTROPY_THRESHOLD,
        }
    )
    config["training"].update(
        {
            "loss": "ce+dice",
            "optimizer": "adamw",
            "lr": 3e-4,
            "weight_decay": 3e-5,
            "schedule": "cosine",
            "epochs": 200,
            "batch_size": batch,
            "precision": "32",
            "workers": workers,
            "device": device,
        }
    )
    config["experiment"]["folds"] = 5

    summary = {
        "dataset": str(folder) if folder else None,
        "num_cases": len(cases),
        "channels": list(fingerprint.channel_names),
        "labels": labels,
        "median_spacing": spacing_info["median_spacing"],
        "median_shape": [round(float(v)) for v in np.median([list(c.shape) for c in cases], axis=0)],
        "anisotropy": spacing_info["anisotropy"],
        "coarse_axis": coarse,
        "target_spacing": target,
        "resampled_median_shape": median_shape,
        "nonzero_volume_kept": _num(kept, 4),
        "spatial_dims": dims,
        "patch_size": patch,
        "batch_size": batch,
        "num_stages": len(topology.strides),
        "pools_per_axis": list(topology.pools_per_axis),
        "memory_estimate_gib": _num(estimate / GIB, 3),
        "memory_budget_gib": _num(budget, 3),
        "memory_usable_gib": _num(usable, 3),
        "dataset_voxels": dataset_voxels,
        "batch_voxel_fraction": _num(batch * patch_voxels / max(1, dataset_voxels), 4),
        "device": device,
        "backend": backend,
    }
    return Plan(config=config, reasons=reasons, summary=summary)


# -- YAML with comments -----------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors and aliases (a list used twice is written twice)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _scalar(value: Any) -> str:
    text = yaml.dump(
        value, Dumper=_Dumper, default_flow_style=True, width=1 << 30, allow_unicode=True
    ).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].rstrip()
    elif text == "...":
        text = ""
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _emit(
    mapping: Mapping[Any, Any],
    indent: int,
    prefix: str,
    reasons: Mapping[str, str],
    lines: list[str],
    used: set[str],
) -> None:
    pad = "  " * indent
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if indent == 0 and lines and lines[-1] != "":
            lines.append("")
        if dotted in reasons:
            lines.append(f"{pad}# {_one_line(reasons[dotted])}")
            used.add(dotted)
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{_scalar(key)}:")
            _emit(value, indent + 1, dotted, reasons, lines, used)
        else:
            lines.append(f"{pad}{_scalar(key)}: {_scalar(value)}")


def plan_to_yaml(plan: Plan) -> str:
    """The plan's config as YAML, each reason a comment above its key, the summary in a header.

    ``yaml.safe_load(plan_to_yaml(plan)) == plan.config``. Reasons whose key is not in the config
    are listed in the header.
    """
    lines = [
        "# Delira experiment plan, derived from the dataset fingerprint by `delira plan`.",
        "# Each choice carries its reason as a comment; edit any key here or with --set KEY=VALUE.",
        "# Train it with: delira run <this file>",
        "#",
        "# summary:",
    ]
    for key, value in plan.summary.items():
        lines.append(f"#   {key}: {_one_line(_scalar(value))}")
    body: list[str] = []
    used: set[str] = set()
    _emit(plan.config, 0, "", plan.reasons, body, used)
    rest = [k for k in plan.reasons if k not in used]
    if rest:
        lines += ["#", "# other reasons:"]
        lines += [f"#   {k}: {_one_line(plan.reasons[k])}" for k in rest]
    return "\n".join([*lines, "", *body]) + "\n"


# -- datasets and the command line ------------------------------------------------------------------
def _read_config(path: Path) -> dict[str, Any]:
    from delira.training.config import ConfigError, _load_yaml

    try:
        user = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from exc
    if not isinstance(user, Mapping):
        raise ConfigError(
            [f"the file holds a {type(user).__name__}, expected a mapping of sections"], str(path)
        )
    return dict(user)


def _dataset_of(path_or_config: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    path = Path(path_or_config)
    if path.is_dir():
        folder, user = path, {}
    elif path.is_file():
        user = _read_config(path)
        listed = (user.get("data") or {}).get("path")
        if not listed:
            raise ValueError(
                f"{path}: the config has no data.path; set data.path to the MSD dataset folder or pass the "
                "folder itself to delira plan"
            )
        folder = Path(listed).expanduser()
        if not folder.is_absolute() and not folder.exists() and (path.parent / folder).exists():
            folder = path.parent / folder  # relative to the config file
    else:
        raise FileNotFoundError(
            f"{path}: no such file or folder; pass an MSD dataset folder (with dataset.json) or a config YAML "
            "whose data.path names one"
        )
    if not (folder / "dataset.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no dataset.json; pass the MSD / nnU-Net raw dataset folder (the one holding dataset.json, "
            "imagesTr/ and labelsTr/)"
        )
    return folder.resolve(), user


def plan_dataset(
    path_or_config: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    overrides: Iterable[str] = (),
    **kw: Any,
) -> Plan:
    """Fingerprint (cached) and plan an MSD folder, apply ``--set`` overrides, optionally write the YAML.

    Args:
        path_or_config: an MSD dataset folder, or a config YAML whose ``data.path`` names one. From a
            config the plan keeps ``name``, the ``experiment`` section, ``training.workers`` and
            ``data.preprocessing.cache_dir``; everything else is derived (override it with ``overrides``).
        output: where to write the commented YAML (atomically); None writes nothing.
        num_workers: worker processes of the fingerprint.
        progress: show the fingerprint's progress bar.
        overrides: ``"a.b=value"`` strings (values parsed as YAML), applied last.
        **kw: passed to :func:`plan_experiment` (``gpu_memory_gib``, ``device``, ``backend``, ``name``).

    Returns:
        The :class:`Plan`; its config is validated by ``load_config``.

    Raises:
        FileNotFoundError: no such folder or file, or no dataset.json.
        delira.training.config.ConfigError: the config (after the overrides) is invalid.
    """
    from delira.training.config import apply_overrides, load_config, parse_override

    folder, user = _dataset_of(path_or_config)
    from delira.data.fingerprint import compute_fingerprint

    cache_dir = ((user.get("data") or {}).get("preprocessing") or {}).get("cache_dir")
    cache = Path(cache_dir) / "fingerprint.json" if cache_dir else folder / ".delira" / "fingerprint.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    # A reoriented dataset is planned on its reoriented axes (per-axis spacing, patch, strides).
    overrides = list(overrides)
    orientation = ((user.get("data") or {}).get("preprocessing") or {}).get("orientation")
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["data", "preprocessing", "orientation"]:
            orientation = value
    source: Any = str(folder)
    if orientation is not None:
        from delira.data import DecathlonDataset

        source = DecathlonDataset(folder, orientation=orientation)
    fingerprint = compute_fingerprint(source, num_workers=num_workers, progress=progress, cache=cache)
    if "backend" not in kw and user.get("backend") in ("torch", "tf"):
        kw["backend"] = user["backend"]
    if "name" not in kw and isinstance(user.get("name"), str):
        kw["name"] = user["name"]
    plan = plan_experiment(fingerprint, dataset_path=str(folder), **kw)
    config = plan.config
    if isinstance(user.get("experiment"), Mapping):
        config["experiment"].update(copy.deepcopy(dict(user["experiment"])))
    workers = (user.get("training") or {}).get("workers")
    if workers is not None:
        config["training"]["workers"] = workers
        plan.reasons["training.workers"] = "kept from the given config"
    if cache_dir:
        config["data"]["preprocessing"]["cache_dir"] = cache_dir
    if orientation is not None:
        config["data"]["preprocessing"]["orientation"] = orientation
        plan.reasons["data.preprocessing.orientation"] = (
            "kept: the fingerprint was taken on the reoriented cases"
        )
    overrides = list(overrides)
    config = apply_overrides(config, overrides)
    for text in overrides:
        keys, value = parse_override(text)
        plan.reasons[".".join(keys)] = f"set with --set {'.'.join(keys)}={_one_line(_scalar(value))}"
    load_config(config)  # raises ConfigError naming every problem
    plan.config = config
    plan.summary["fingerprint"] = str(cache)
    if output is not None:
        from delira.io import atomic_write

        text = plan_to_yaml(plan)
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp: tmp.write_text(text))
    return plan


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``delira plan``'s arguments to ``parser``.

    ``DATASET_OR_CONFIG``, ``-o/--output``, ``--gpu-memory GiB`` | ``--device cpu`` (mutually
    exclusive), ``--set KEY=VALUE`` (repeatable), ``--workers N``, ``--backend torch|tf``,
    ``--no-progress``.
    """
    parser.add_argument(
        "dataset_or_config",
        metavar="DATASET_OR_CONFIG",
        help="an MSD dataset folder or a config whose data.path names one",
    )
    parser.add_argument(
        "-o", "--output", default="plan.yaml", help="the plan YAML to write (default: plan.yaml)"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--gpu-memory",
        type=float,
        default=None,
        metavar="GiB",
        help="GPU memory to plan for (default: 8 GiB)",
    )
    budget.add_argument(
        "--device",
        choices=("cpu",),
        default=None,
        help=f"plan for CPU training ({CPU_MEMORY_GIB:g} GiB budget, batch {MIN_BATCH})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override a planned value (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=0, metavar="N", help="fingerprint worker processes")
    parser.add_argument(
        "--backend", choices=("torch", "tf"), default=None, help="framework of the plan (default: torch)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _table(plan: Plan) -> str:
    rows = []
    for key, reason in plan.reasons.items():
        node: Any = plan.config
        for part in key.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, Mapping) and part.isdigit() and int(part) in node:
                node = node[int(part)]
            else:
                node = "-"
                break
        value = _one_line(_scalar(node)) if not isinstance(node, Mapping) else "{...}"
        rows.append((key, value if len(value) <= 48 else value[:45] + "...", _one_line(reason)))
    wk = max(len(r[0]) for r in rows)
    wv = max(len(r[1]) for r in rows)
    return "\n".join(f"{k:<{wk}}  {v:<{wv}}  {r}" for k, v, r in rows)


def run_plan(args: argparse.Namespace) -> int:
    """``delira plan``: fingerprint and plan the dataset, print the reasons, write the YAML; returns 0."""
    kw: dict[str, Any] = {}
    if getattr(args, "device", None) == "cpu":
        kw["device"] = "cpu"
    elif getattr(args, "gpu_memory", None) is not None:
        kw["gpu_memory_gib"] = float(args.gpu_memory)
    if getattr(args, "backend", None):
        kw["backend"] = args.backend
    plan = plan_dataset(
        args.dataset_or_config,
        output=args.output,
        num_workers=args.workers,
        progress=not args.no_progress,
        overrides=args.set or [],
        **kw,
    )
    s = plan.summary
    print(
        f"delira plan: {s['num_cases']} cases, {s['spatial_dims']}D, patch {s['patch_size']}, batch "
        f"{s['batch_size']}, target spacing {s['target_spacing']}, ~{s['memory_estimate_gib']} GiB",
        flush=True,
    )
    print(_table(plan))
    print(f"wrote {args.output}; train it with: delira run {args.output}")
    sys.stdout.flush()
    return 0
