"""The :class:`Image` record: voxels plus the geometry that places them in the patient."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Image"]


def _as_float_tuple(values: Any, name: str, ndim: int) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
    if len(out) != ndim:
        raise ValueError(
            f"{name} has {len(out)} values {out} but the image has {ndim} spatial axes; "
            f"pass one value per spatial axis, in (x, y, z) order"
        )
    return out


@dataclass(eq=False)
class Image:
    """A medical image: the voxel array and the geometry that maps voxel indices to the world.

    Axis order, the same for every file format: ``array`` is indexed ``array[x, y, z]`` (ITK index
    order, like nibabel and MONAI; ``array[x, y]`` in 2D, so a PNG's ``(row, col)`` pixels appear
    transposed), with any non-spatial axes (time, channels, vector components) after the spatial
    ones. World coordinates are LPS millimetres (ITK and DICOM convention), and the world position
    of the voxel at index ``i`` (a column vector of ``ndim`` indices) is
    ``origin + direction @ diag(spacing) @ i``.

    Attributes:
        array: the voxels, shape ``(X, Y[, Z], *extra)``, any numpy dtype.
        spacing: voxel size along each spatial axis, ``(sx, sy[, sz])`` floats > 0. Defaults to 1.
        origin: world position of the first voxel's centre, ``(ox, oy[, oz])``. Defaults to 0.
        direction: ``(ndim, ndim)`` float64 matrix whose column ``k`` is the world direction of
            array axis ``k`` (unit vectors). Defaults to the identity.
        meta: the file's raw header as a dict (format specific; ``meta["format"]`` names the
            format it was read from). Not used for the geometry.

    The number of spatial axes ``ndim`` is ``len(spacing)``; when no geometry is given it is
    ``min(array.ndim, 3)``.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        ndim = self._infer_ndim()
        if ndim < 1 or ndim > self.array.ndim:
            raise ValueError(
                f"the geometry describes {ndim} spatial axes but array has shape {self.array.shape}; "
                "the spatial axes must come first in the array, so pass geometry for at most "
                f"{self.array.ndim} axes"
            )
        self.spacing = _as_float_tuple(
            (1.0,) * ndim if self.spacing is None else self.spacing, "spacing", ndim
        )
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be finite and > 0, got {self.spacing}")
        self.origin = _as_float_tuple((0.0,) * ndim if self.origin is None else self.origin, "origin", ndim)
        direction = np.eye(ndim) if self.direction is None else np.array(self.direction, dtype=np.float64)
        if direction.shape != (ndim, ndim):
            raise ValueError(
                f"direction has shape {direction.shape} but the image has {ndim} spatial axes; "
                f"pass a ({ndim}, {ndim}) matrix whose columns are the axis directions"
            )
        if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError(f"direction must be an invertible finite matrix, got {direction.tolist()}")
        self.direction = direction
        if self.meta is None:
            self.meta = {}

    def _infer_ndim(self) -> int:
        for value in (self.spacing, self.origin):
            if value is not None:
                return int(np.asarray(value).size)
        if self.direction is not None:
            return int(np.asarray(self.direction).shape[0])
        return min(self.array.ndim, 3)

    @property
    def ndim(self) -> int:
        """The number of spatial axes (2 or 3, rarely 1)."""
        return len(self.spacing)  # type: ignore[arg-type]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial part of ``array.shape``: ``(X, Y[, Z])``."""
        return tuple(self.array.shape[: self.ndim])

    @property
    def affine(self) -> np.ndarray:
        """The ``(ndim + 1, ndim + 1)`` float64 matrix mapping homogeneous voxel indices to LPS mm."""
        out = np.eye(self.ndim + 1)
        out[: self.ndim, : self.ndim] = self.direction * np.asarray(self.spacing)[None, :]
        out[: self.ndim, self.ndim] = self.origin
        return out

    def has_default_geometry(self) -> bool:
        """True when spacing is 1, origin 0 and direction the identity (what PNG/TIFF can store)."""
        return (
            all(s == 1.0 for s in self.spacing)  # type: ignore[union-attr]
            and all(o == 0.0 for o in self.origin)  # type: ignore[union-attr]
            and np.array_equal(self.direction, np.eye(self.ndim))
        )

    def __repr__(self) -> str:
        return (
            f"Image(array={self.array.dtype}{list(self.array.shape)}, spacing={self.spacing}, "
            f"origin={self.origin}, direction={np.asarray(self.direction).tolist()}, "
            f"meta=<{len(self.meta)} keys>)"
        )
