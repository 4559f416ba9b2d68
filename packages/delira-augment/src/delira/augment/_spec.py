"""The resample spec: everything the fused spatial pass needs besides the arrays themselves.

:class:`ResampleSpec` mirrors ``delira::cpu::SpatialSpec`` (``csrc/cpu/engine.h``) plus the intensity
program that runs in the same pass. It is validated once, when it is built, and then handed to one of
the three executors, each of which asks it for its own call arguments:

- the CPU extension ``_C.resample``: :meth:`ResampleSpec.cpu_args`,
- the CUDA extension ``_C.resample_cuda``: :meth:`ResampleSpec.cuda_args`,
- the numpy/scipy fallback ``_fallback.resample``: :meth:`ResampleSpec.fallback_args`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from delira.augment import _validate as v
from delira.augment._program import Program

if TYPE_CHECKING:  # functional imports the engine, which imports this module
    from delira.augment.functional.elastic import ElasticField

DATA_ORDERS = (0, 1, 3)
SEG_ORDERS = (0, 1)


class BorderMode(IntEnum):
    """Border modes shared with ``csrc/core/boundary.h`` (``delira::BorderMode``)."""

    CONSTANT = 0
    NEAREST = 1
    REFLECT = 2
    MIRROR = 3

    @property
    def scipy_name(self) -> str:
        """The name scipy.ndimage (and batchgenerators) use for this mode."""
        return self.name.lower()


def _border_mode(value: Any, name: str) -> BorderMode:
    if isinstance(value, BorderMode):
        return value
    if isinstance(value, str):
        return BorderMode(v.mode_code(value, name))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) <= 3:
        return BorderMode(int(value))
    raise ValueError(
        f"{name}={value!r} is not a border mode; use one of 'constant', 'nearest', 'reflect', 'mirror'"
    )


def _float32_array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values (or values beyond float32's range)")
    arr.setflags(write=False)
    return arr


def check_sampling(
    order_data: Any, mode_data: Any, cval_data: Any, order_seg: Any, mode_seg: Any, cval_seg: Any
) -> dict[str, Any]:
    """Validate the sampling fields of a spec (shared with ``SpatialTransform``'s constructor).

    Returns:
        The fields normalised: ints for the orders, :class:`BorderMode` for the modes, floats for cvals.

    Raises:
        ValueError / TypeError: naming the field and its allowed values.
    """
    if isinstance(order_data, bool) or order_data not in DATA_ORDERS:
        raise ValueError(f"order_data={order_data!r}; use 0 (nearest), 1 (linear) or 3 (cubic)")
    if isinstance(order_seg, bool) or order_seg not in SEG_ORDERS:
        raise ValueError(f"order_seg={order_seg!r}; use 0 (nearest) or 1 (per-label linear + argmax)")
    return {
        "order_data": int(order_data),
        "mode_data": _border_mode(mode_data, "mode_data"),
        "cval_data": v.finite(cval_data, "cval_data"),
        "order_seg": int(order_seg),
        "mode_seg": _border_mode(mode_seg, "mode_seg"),
        "cval_seg": v.finite(cval_seg, "cval_seg"),
    }


@dataclass(frozen=True, eq=False)
class ResampleSpec:
    """One fused resampling pass for a batch of ``N`` samples: ``x = affine @ [o, 1] + e(o)``.

    Field names follow ``delira::cpu::SpatialSpec``; equality is identity (the spec holds arrays). Arrays are stored as read-only C-contiguous
    float32 (the kernels' precision), so a spec can be shared and reused safely.

    Attributes:
        out_shape: output spatial shape, 2 or 3 non-negative ints.
        affine: ``(N, ndim, ndim + 1)`` maps from output voxel index to input coordinate.
        elastic: ``(N, ndim, *grid)`` elastic control points (displacements in input voxels, each grid
            axis >= 4 points), or None for no deformation.
        grid_origin: ``(N, ndim)`` output index of control point 0 per axis (required with ``elastic``).
        grid_spacing: ``(N, ndim)`` control point spacing in output voxels, > 0 (required with ``elastic``).
        order_data: 0 nearest, 1 linear, 3 cubic B-spline.
        mode_data: border mode of the image: a :class:`BorderMode`, its code or its name.
        cval_data: image value outside the input in constant mode (finite).
        order_seg: 0 nearest, 1 per-label linear interpolation followed by argmax.
        mode_seg, cval_seg: the same for the segmentation.
        program: intensity operations applied to the resampled image in the same pass (empty: none).

    Raises:
        ValueError: on any inconsistent or out-of-range field; the message names the field.
    """

    out_shape: tuple[int, ...]
    affine: np.ndarray
    elastic: np.ndarray | None = None
    grid_origin: np.ndarray | None = None
    grid_spacing: np.ndarray | None = None
    order_data: int = 1
    mode_data: BorderMode = BorderMode.CONSTANT
    cval_data: float = 0.0
    order_seg: int = 0
    mode_seg: BorderMode = BorderMode.CONSTANT
    cval_seg: float = 0.0
    program: Program = field(default=None)  # type: ignore[assignment]  # None -> an empty program

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        shape = self.out_shape
        if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3):
            raise ValueError(f"out_shape={shape!r} must have 2 or 3 entries (the output spatial shape)")
        put("out_shape", v.int_tuple(tuple(shape), len(shape), "out_shape", minimum=0))
        nd = self.ndim
        affine = np.asarray(self.affine)
        if affine.ndim != 3 or affine.shape[1:] != (nd, nd + 1):
            raise ValueError(
                f"affine has shape {affine.shape}; expected (N, ndim, ndim + 1) = (N, {nd}, {nd + 1}) "
                f"for out_shape {self.out_shape}"
            )
        n = affine.shape[0]
        put("affine", _float32_array(affine, "affine", affine.shape))
        if self.elastic is None:
            if self.grid_origin is not None or self.grid_spacing is not None:
                raise ValueError(
                    "grid_origin and grid_spacing are only meaningful with elastic; leave them None"
                )
        else:
            values = np.asarray(self.elastic)
            if values.ndim != nd + 2 or values.shape[:2] != (n, nd):
                raise ValueError(
                    f"elastic has shape {values.shape}; expected (N, ndim, *grid) = ({n}, {nd}, ...) "
                    f"with {nd} grid axes"
                )
            if min(values.shape[2:]) < 4:
                raise ValueError(
                    f"elastic has a grid of {values.shape[2:]} control points; every axis needs at least 4"
                )
            if self.grid_origin is None or self.grid_spacing is None:
                raise ValueError("elastic needs grid_origin and grid_spacing, both (N, ndim)")
            put("elastic", _float32_array(values, "elastic", values.shape))
            put("grid_origin", _float32_array(self.grid_origin, "grid_origin", (n, nd)))
            spacing = _float32_array(self.grid_spacing, "grid_spacing", (n, nd))
            if np.any(spacing <= 0):
                raise ValueError(f"grid_spacing must be > 0, got {spacing.tolist()}")
            put("grid_spacing", spacing)
        sampling = check_sampling(
            self.order_data, self.mode_data, self.cval_data, self.order_seg, self.mode_seg, self.cval_seg
        )
        for name, value in sampling.items():
            put(name, value)
        program = Program(n) if self.program is None else self.program
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program or None, got {type(program).__name__}")
        if program.n != n:
            raise ValueError(
                f"program is built for {program.n} samples but affine has {n}; build it with Program({n})"
            )
        put("program", program)

    @classmethod
    def from_field(
        cls, out_shape: tuple[int, ...], affine: Any, field: ElasticField | None, **kwargs: Any
    ) -> ResampleSpec:
        """A spec whose elastic part comes from an :class:`ElasticField` (values in input voxels)."""
        if field is None:
            return cls(tuple(out_shape), affine, **kwargs)
        return cls(tuple(out_shape), affine, field.values, field.origin, field.spacing, **kwargs)

    # Derived fields (as in SpatialSpec).
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions, 2 or 3."""
        return len(self.out_shape)

    @property
    def n(self) -> int:
        """Batch size ``N`` the spec is built for."""
        return int(self.affine.shape[0])

    @property
    def grid(self) -> tuple[int, ...]:
        """Control points per axis of the elastic grid; ``()`` without elastic."""
        return () if self.elastic is None else tuple(int(g) for g in self.elastic.shape[2:])

    def elastic_field(self) -> ElasticField | None:
        """The elastic part as an :class:`ElasticField` (float32 arrays), or None."""
        if self.elastic is None:
            return None
        from delira.augment.functional.elastic import ElasticField

        return ElasticField(self.elastic, self.grid_origin, self.grid_spacing)

    def check_batch(self, data: Any, seg: Any) -> None:
        """Raise ValueError unless ``data`` / ``seg`` (``(N, C, *spatial)``, either may be None) fit the spec."""
        if data is None and seg is None:
            raise ValueError("nothing to resample: give data, seg or both")
        for name, x in (("data", data), ("seg", seg)):
            if x is None:
                continue
            shape = tuple(int(s) for s in x.shape)
            if len(shape) != self.ndim + 2 or shape[0] != self.n:
                raise ValueError(
                    f"{name} has shape {shape}; the spec expects (N, C, *spatial) with N = {self.n} and "
                    f"{self.ndim} spatial axes"
                )

    # One method per executor.
    def _elastic_args(self) -> tuple[Any, np.ndarray, np.ndarray]:
        empty = np.zeros((0,), dtype=np.float32)
        if self.elastic is None:
            return None, empty, empty
        return self.elastic, self.grid_origin, self.grid_spacing

    def _sampling_args(self) -> tuple[int, int, float, int, int, float]:
        return (
            self.order_data,
            int(self.mode_data),
            float(self.cval_data),
            self.order_seg,
            int(self.mode_seg),
            float(self.cval_seg),
        )

    def cpu_args(self, data: np.ndarray | None, seg: np.ndarray | None) -> tuple[tuple, dict[str, Any]]:
        """``(args, kwargs)`` of ``_C.resample`` for host arrays ``data`` / ``seg`` (either may be None)."""
        args = (data, seg, list(self.out_shape), self.affine, *self._elastic_args(), *self._sampling_args())
        return args, self.program.kernel_args()

    def cuda_args(self, data: Any, seg: Any, out_data_ptr: int, out_seg_ptr: int, stream: int) -> tuple:
        """Positional arguments of ``_C.resample_cuda``.

        Args:
            data, seg: :class:`~delira.augment._arrays.CudaArray` descriptions of the inputs, or None.
            out_data_ptr, out_seg_ptr: device pointers of the C-contiguous outputs (0 for none).
            stream: the CUDA stream handle to run on.
        """

        def describe(a: Any) -> tuple:
            return (
                (0, "float32", [], []) if a is None else (a.ptr, a.dtype.name, list(a.shape), list(a.strides))
            )

        k = self.program.kernel_args()
        return (
            *describe(data),
            *describe(seg),
            out_data_ptr,
            out_seg_ptr,
            list(self.out_shape),
            self.affine,
            *self._elastic_args(),
            *self._sampling_args(),
            k["op_kinds"],
            k["op_refs"],
            k["op_params"],
            k["op_active"],
            k["seeds"],
            stream,
        )

    def fallback_args(self) -> dict[str, Any]:
        """Keyword arguments of the numpy/scipy fallback: scipy mode names instead of codes."""
        return {
            "out_shape": self.out_shape,
            "affine": self.affine,
            "elastic": self.elastic_field(),
            "order_data": self.order_data,
            "mode_data": self.mode_data.scipy_name,
            "cval_data": float(self.cval_data),
            "order_seg": self.order_seg,
            "mode_seg": self.mode_seg.scipy_name,
            "cval_seg": float(self.cval_seg),
            "program": self.program,
        }
