"""Elastic deformation fields: smooth random displacements from a cubic B-spline control grid.

The field is parameterised by ``magnitude`` (RMS displacement per axis, in voxels) and ``scale``
(the spacing of the control points, in voxels: larger is smoother). A field is evaluated at every
output voxel inside the fused kernel, so its cost does not grow with the number of control points.

batchgenerators parameterises the same kind of field by ``alpha`` and ``sigma`` (white noise in
[-1, 1] smoothed with a gaussian of width ``sigma`` and multiplied by ``alpha``);
:func:`elastic_from_batchgenerators` converts: the RMS of the smoothed noise is
``alpha / sqrt(3) * (2 sqrt(pi) sigma) ** (-ndim / 2)`` and its correlation length matches a control
spacing of ``sqrt(3) * sigma``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Mean over one knot interval of the sum of squared cubic B-spline weights (= 151/315): the
# variance of a 1D B-spline field with unit-variance control points.
_BSPLINE_VARIANCE = 151.0 / 315.0


@dataclass
class ElasticField:
    """Control points of per-sample elastic fields over the output grid.

    Attributes:
        values: ``(N, ndim, *grid)`` float32 displacements in output voxels (before the affine part).
        origin: ``(N, ndim)`` float32, output index of control point 0 along each axis.
        spacing: ``(N, ndim)`` float32, control point spacing in output voxels.
    """

    values: np.ndarray
    origin: np.ndarray
    spacing: np.ndarray


def elastic_from_batchgenerators(alpha: float, sigma: float, ndim: int = 3) -> tuple[float, float]:
    """Convert batchgenerators' elastic ``(alpha, sigma)`` to ``(magnitude, scale)`` in voxels.

    Example: alpha=900, sigma=11 in 3D gives a magnitude of about 2.1 voxels and a scale of 19 voxels.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    magnitude = alpha / math.sqrt(3.0) * (2.0 * math.sqrt(math.pi) * sigma) ** (-ndim / 2.0)
    return magnitude, math.sqrt(3.0) * sigma


def grid_shape(patch_shape: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """Number of control points per axis that covers ``patch_shape`` at spacing ``scale``."""
    return tuple(math.floor((p - 1) / scale) + 4 for p in patch_shape)


def random_field(
    rng: np.random.Generator, patch_shape: tuple[int, ...], magnitude: np.ndarray, scale: np.ndarray
) -> ElasticField:
    """Draw one field per sample with RMS ``magnitude[n]`` voxels and control spacing ``scale[n]``.

    Args:
        rng: source of the control point values.
        patch_shape: output spatial shape (2 or 3 entries).
        magnitude: ``(N,)`` RMS displacement per axis in voxels (0 gives no deformation).
        scale: ``(N,)`` control point spacing in voxels (> 0).
    """
    ndim = len(patch_shape)
    magnitude = np.asarray(magnitude, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    n = magnitude.shape[0]
    shape = tuple(max(g) for g in zip(*(grid_shape(patch_shape, s) for s in scale)))
    std = magnitude / _BSPLINE_VARIANCE ** (ndim / 2.0)
    values = rng.standard_normal((n, ndim, *shape)).astype(np.float32)
    values *= std.reshape((n,) + (1,) * (ndim + 1)).astype(np.float32)
    spacing = np.repeat(scale[:, None], ndim, axis=1).astype(np.float32)
    return ElasticField(values, -spacing.copy(), spacing)


def control_weights(length: int, origin: float, spacing: float, grid: int) -> np.ndarray:
    """``(length, grid)`` B-spline weights of the control points at output indices 0..length-1.

    The same arithmetic as the kernels (``csrc/core/geometry.h``), used by the fallback backend.
    """
    origin32, inv = np.float32(origin), np.float32(1.0) / np.float32(spacing)
    w = np.zeros((length, grid), dtype=np.float64)
    for o in range(length):
        t = (np.float32(o) - origin32) * inv
        f0 = np.float32(math.floor(t)) if t >= 0 else np.float32(-1.0)
        k = int(f0) - 1
        frac = np.float32(t - f0)
        if k < 0:
            k, frac = 0, np.float32(0.0)
        if k > grid - 4:
            k, frac = max(grid - 4, 0), np.float32(1.0)
        frac = min(frac, np.float32(0.999999))
        u = 1.0 - frac
        w[o, k : k + 4] = [
            u**3 / 6,
            (3 * frac**3 - 6 * frac**2 + 4) / 6,
            (-3 * frac**3 + 3 * frac**2 + 3 * frac + 1) / 6,
            frac**3 / 6,
        ]
    return w


def evaluate(field: ElasticField, patch_shape: tuple[int, ...]) -> np.ndarray:
    """Dense displacements ``(N, ndim, *patch_shape)`` float64 of ``field`` (for the fallback and tests)."""
    n, ndim = field.values.shape[:2]
    out = np.empty((n, ndim, *patch_shape))
    letters = "ijk"[:ndim]
    for i in range(n):
        mats = [
            control_weights(
                patch_shape[d],
                float(field.origin[i, d]),
                float(field.spacing[i, d]),
                field.values.shape[2 + d],
            )
            for d in range(ndim)
        ]
        spec = ",".join(f"{o}{g}" for o, g in zip("xyz"[:ndim], letters)) + f",q{letters}->q{'xyz'[:ndim]}"
        out[i] = np.einsum(spec, *mats, field.values[i].astype(np.float64))
    return out
