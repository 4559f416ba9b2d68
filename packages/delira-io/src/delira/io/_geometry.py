"""Conversions between affine matrices (NIfTI, RAS) and spacing/origin/direction (ITK, LPS)."""

from __future__ import annotations

import numpy as np

# RAS (NIfTI, nibabel) and LPS (ITK, DICOM) differ by the sign of the first two world axes.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def geometry_from_ras_affine(
    affine: np.ndarray, ndim: int
) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """Split a NIfTI ``(4, 4)`` RAS voxel-to-world affine into LPS spacing, origin and direction.

    Args:
        affine: ``(4, 4)`` float, maps ``(i, j, k, 1)`` to RAS mm.
        ndim: number of spatial axes to return (2 or 3); for 2 the first two axes are kept.

    Returns:
        ``spacing`` (ndim floats, the column norms), ``origin`` (ndim floats) and ``direction``
        (``(ndim, ndim)`` float64, unit columns), all in LPS.

    Raises:
        ValueError: an axis of the affine has zero length.
    """
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    linear = lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing == 0) or not np.all(np.isfinite(lps)):
        raise ValueError(f"the affine {np.asarray(affine).tolist()} has an axis of zero length or NaNs")
    direction = linear / spacing[None, :]
    return (
        tuple(float(s) for s in spacing[:ndim]),
        tuple(float(o) for o in lps[:ndim, 3]),
        direction[:ndim, :ndim].copy(),
    )


def ras_affine_from_geometry(
    spacing: tuple[float, ...], origin: tuple[float, ...], direction: np.ndarray
) -> np.ndarray:
    """The ``(4, 4)`` NIfTI RAS affine of an LPS geometry with 2 or 3 spatial axes.

    A 2D geometry is embedded in 3D with a unit z axis at z = 0.
    """
    ndim = len(spacing)
    lps = np.eye(4)
    lps[:ndim, :ndim] = np.asarray(direction, dtype=np.float64) * np.asarray(spacing)[None, :]
    lps[:ndim, 3] = origin
    return RAS_TO_LPS @ lps
