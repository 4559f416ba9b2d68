"""Backend selection and the calls into an executor.

Backends: ``"cpu"`` (the compiled extension), ``"batchgenerators"`` (numpy/scipy with
batchgenerators' interpolation, used when the extension is missing or when asked for), and
``"auto"``: ``cpu`` when the extension loaded, else the fallback with a single warning.
"""

from __future__ import annotations

import numpy as np

from delira.augment import _arrays, _extension
from delira.augment._cuda import require_cuda
from delira.augment._program import Program

BACKENDS = ("auto", "cpu", "cuda", "batchgenerators")


def resolve(backend: str, cuda_input: bool = False) -> str:
    """The concrete backend (``cpu``, ``cuda`` or ``batchgenerators``) for ``backend`` and the input's device."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; use one of {', '.join(map(repr, BACKENDS))}")
    if cuda_input:
        if backend not in ("auto", "cuda"):
            raise ValueError(
                f"backend={backend!r} got CUDA arrays; use backend='cuda' or 'auto', or move the arrays to the "
                "CPU first (x.cpu() / cupy.asnumpy(x))"
            )
        return "cuda"
    if backend == "cuda":
        raise ValueError(
            "backend='cuda' needs CUDA arrays (torch CUDA tensors or cupy arrays); move the batch to the GPU "
            "(x.cuda()) or use backend='auto'"
        )
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
    cuda = isinstance(data, _arrays.CudaArray) or isinstance(seg, _arrays.CudaArray)
    if cuda and not (
        (data is None or isinstance(data, _arrays.CudaArray))
        and (seg is None or isinstance(seg, _arrays.CudaArray))
    ):
        raise ValueError("data and seg must both be CUDA arrays or both host arrays; move one of them")
    target = resolve(backend, cuda)
    if target != "cpu":  # the CUDA executor and the fallback take the same arguments
        from delira.augment import _fallback

        executor = _resample_cuda if target == "cuda" else _fallback.resample
        return executor(
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
    target = resolve(backend, isinstance(x, _arrays.CudaArray))
    if target == "cuda":
        out = _arrays.cuda_contiguous_copy(x.obj)
        module = require_cuda("intensity transforms")
        stream, device = _arrays.cuda_stream_and_device(out)
        with device:
            module.apply_program_cuda(
                _arrays.CudaArray.from_array(out).ptr,
                x.dtype.name,
                list(x.shape),
                *_program_args(program),
                stream,
            )
        return out
    if target == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.run_program(x, program)
    return _extension._C.apply_program(x, **program.kernel_args())


def gaussian_blur(
    x: np.ndarray, sigma: np.ndarray, truncate: float = 4.0, backend: str = "auto"
) -> np.ndarray:
    """Separable gaussian filter (mode reflect) of ``x`` ``(N, C, *spatial)`` with ``sigma`` ``(N, ndim)``."""
    target = resolve(backend, isinstance(x, _arrays.CudaArray))
    if target == "cuda":
        out = _arrays.cuda_contiguous_copy(x.obj)
        module = require_cuda("gaussian_blur")
        stream, device = _arrays.cuda_stream_and_device(out)
        with device:
            module.gaussian_blur_cuda(
                _arrays.CudaArray.from_array(out).ptr,
                x.dtype.name,
                list(x.shape),
                np.ascontiguousarray(sigma, dtype=np.float32),
                float(truncate),
                stream,
            )
        return out
    if target == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.gaussian_blur(x, sigma, truncate)
    return _extension._C.gaussian_blur(x, np.ascontiguousarray(sigma, dtype=np.float32), float(truncate))


def _resample_cuda(
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
    program: Program,
):
    """The fused pass on the GPU: outputs allocated through the input's framework, the caller's stream."""
    module = require_cuda("spatial_transform")
    like = data if data is not None else seg
    n, sd = like.shape[0], len(out_shape)
    out_d = None if data is None else _arrays.cuda_empty_like(data.obj, data.shape[:2] + tuple(out_shape))
    out_s = None if seg is None else _arrays.cuda_empty_like(seg.obj, seg.shape[:2] + tuple(out_shape))
    empty = np.zeros((0,), dtype=np.float32)

    def describe(a):
        return (0, "float32", [], []) if a is None else (a.ptr, a.dtype.name, list(a.shape), list(a.strides))

    def pointer(o):
        return 0 if o is None else _arrays.CudaArray.from_array(o).ptr

    stream, device = _arrays.cuda_stream_and_device(like.obj)
    with device:
        module.resample_cuda(
            *describe(data),
            *describe(seg),
            pointer(out_d),
            pointer(out_s),
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
            *_program_args(program),
            stream,
        )
    return out_d, out_s


def _program_args(program: Program) -> list:
    args = program.kernel_args()
    return [args["op_kinds"], args["op_refs"], args["op_params"], args["op_active"], args["seeds"]]
