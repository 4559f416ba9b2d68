"""Backend selection and the calls into an executor.

Backends: ``"cpu"`` (the compiled extension), ``"batchgenerators"`` (numpy/scipy with
batchgenerators' interpolation, used when the extension is missing or when asked for), and
``"auto"``: ``cpu`` when the extension loaded, else the fallback with a single warning.
"""

from __future__ import annotations

import numpy as np

from delira.augment import _extension
from delira.augment._program import Program

BACKENDS = ("auto", "cpu", "batchgenerators")


def resolve(backend: str) -> str:
    """The concrete backend (``cpu`` or ``batchgenerators``) for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; use one of {', '.join(map(repr, BACKENDS))}")
    if backend == "cpu":
        if _extension._C is None:
            raise RuntimeError(
                f"backend='cpu' needs the compiled extension, which did not load ({_extension.IMPORT_ERROR}); "
                "reinstall delira-augment with a C++ compiler present, or use backend='batchgenerators'"
            )
        return "cpu"
    if backend == "auto":
        if _extension._C is not None:
            return "cpu"
        _extension.warn_fallback("augmentation")
    return "batchgenerators"


def resample(
    data: np.ndarray | None,
    seg: np.ndarray | None,
    out_shape: tuple[int, ...],
    affine: np.ndarray,
    *,
    elastic=None,
    order_data: int = 1,
    mode_data: int = 0,
    cval_data: float = 0.0,
    order_seg: int = 0,
    mode_seg: int = 0,
    cval_seg: float = 0.0,
    program: Program | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Resample ``data`` ``(N, C, *S)`` and ``seg`` onto ``out_shape`` with ``x = affine @ [o, 1] + e(o)``.

    ``affine`` is ``(N, ndim, ndim + 1)``; ``elastic`` an ``ElasticField`` whose values are already in
    input voxels. The intensity ``program`` is applied to data in the same pass.
    """
    n = (data if data is not None else seg).shape[0]
    program = program if program is not None else Program(n)
    if resolve(backend) == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.resample(
            data,
            seg,
            out_shape,
            affine,
            elastic,
            order_data,
            mode_data,
            cval_data,
            order_seg,
            mode_seg,
            cval_seg,
            program,
        )
    sd = len(out_shape)
    empty = np.zeros((0,), dtype=np.float32)
    return _extension._C.resample(
        data,
        seg,
        list(out_shape),
        np.ascontiguousarray(affine, dtype=np.float32),
        None if elastic is None else elastic.values,
        empty if elastic is None else elastic.origin.reshape(n, sd),
        empty if elastic is None else elastic.spacing.reshape(n, sd),
        order_data,
        mode_data,
        float(cval_data),
        order_seg,
        mode_seg,
        float(cval_seg),
        **program.kernel_args(),
    )


def run_program(x: np.ndarray, program: Program, backend: str = "auto") -> np.ndarray:
    """Apply ``program`` to the float array ``x`` ``(N, C, *spatial)``; returns a new contiguous array."""
    if resolve(backend) == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.run_program(x, program)
    return _extension._C.apply_program(x, **program.kernel_args())


def gaussian_blur(
    x: np.ndarray, sigma: np.ndarray, truncate: float = 4.0, backend: str = "auto"
) -> np.ndarray:
    """Separable gaussian filter (mode reflect) of ``x`` ``(N, C, *spatial)`` with ``sigma`` ``(N, ndim)``."""
    if resolve(backend) == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.gaussian_blur(x, sigma, truncate)
    return _extension._C.gaussian_blur(x, np.ascontiguousarray(sigma, dtype=np.float32), float(truncate))
