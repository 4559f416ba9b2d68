"""Backend selection and the calls into an executor.

Backends: ``"cpu"`` (the compiled extension), ``"batchgenerators"`` (numpy/scipy with
batchgenerators' interpolation, used when the extension is missing or when asked for), and
``"auto"``: ``cpu`` when the extension loaded, else the fallback with a single warning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays, _extension
from delira.augment._cuda import require_cuda
from delira.augment._program import OpKind, Program
from delira.augment._spec import ResampleSpec

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
    data: np.ndarray | _arrays.CudaArray | None,
    seg: np.ndarray | _arrays.CudaArray | None,
    spec: ResampleSpec,
    backend: str = "auto",
) -> tuple[Any, Any]:
    """Resample ``data`` ``(N, C, *S)`` and ``seg`` ``(N, Cs, *S)`` as ``spec`` describes, on ``backend``.

    Both are host (numpy) arrays or both :class:`~delira.augment._arrays.CudaArray` descriptions; either
    may be None. Returns ``(data_out, seg_out)`` of shapes ``(N, C, *spec.out_shape)`` and
    ``(N, Cs, *spec.out_shape)`` with the inputs' dtypes (None where the input was None).
    """
    if not isinstance(spec, ResampleSpec):
        raise TypeError(f"spec must be a ResampleSpec, got {type(spec).__name__}")
    spec.check_batch(data, seg)
    cuda = isinstance(data, _arrays.CudaArray) or isinstance(seg, _arrays.CudaArray)
    if cuda and not (
        (data is None or isinstance(data, _arrays.CudaArray))
        and (seg is None or isinstance(seg, _arrays.CudaArray))
    ):
        raise ValueError("data and seg must both be CUDA arrays or both host arrays; move one of them")
    if data is not None and not cuda:
        _check_percentile_input(data, spec.program)
    target = resolve(backend, cuda)
    if target == "cuda":
        return _resample_cuda(data, seg, spec)
    if target == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.resample(data, seg, spec)
    args, kwargs = spec.cpu_args(data, seg)
    return _extension._C.resample(*args, **kwargs)


def _check_percentile_input(x: np.ndarray, program: Program) -> None:
    """Percentiles of data with NaN are undefined in the kernels: refuse instead of clipping to garbage."""
    if any(op.kind == OpKind.PERCENTILE_CLIP for op in program.ops) and np.isnan(x).any():
        raise ValueError(
            "percentile_clip got data that contains NaN, whose percentiles are undefined; replace the NaN "
            "first (numpy.nan_to_num(data) or data[numpy.isnan(data)] = value), or leave PercentileClip out"
        )


def run_program(x: np.ndarray, program: Program, backend: str = "auto") -> np.ndarray:
    """Apply ``program`` to the float array ``x`` ``(N, C, *spatial)``; returns a new contiguous array."""
    cuda = isinstance(x, _arrays.CudaArray)
    if not cuda:
        _check_percentile_input(x, program)
    target = resolve(backend, cuda)
    if target == "cuda":
        return _cuda_in_place(x, "intensity transforms", "apply_program_cuda", *_program_args(program))
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
        sigma32 = np.ascontiguousarray(sigma, dtype=np.float32)
        return _cuda_in_place(x, "gaussian_blur", "gaussian_blur_cuda", sigma32, float(truncate))
    if target == "batchgenerators":
        from delira.augment import _fallback

        return _fallback.gaussian_blur(x, sigma, truncate)
    return _extension._C.gaussian_blur(x, np.ascontiguousarray(sigma, dtype=np.float32), float(truncate))


def _cuda_in_place(x: _arrays.CudaArray, operation: str, kernel: str, *args: Any) -> Any:
    """A C-contiguous copy of the CUDA array ``x`` run through the in-place ``kernel`` on the caller's stream.

    The kernel is called as ``kernel(ptr, dtype, shape, *args, stream)``.
    """
    out = _arrays.cuda_contiguous_copy(x.obj)
    module = require_cuda(operation)
    stream, device = _arrays.cuda_stream_and_device(out)
    with device:
        getattr(module, kernel)(
            _arrays.CudaArray.from_array(out).ptr, x.dtype.name, list(x.shape), *args, stream
        )
    return out


def _resample_cuda(data, seg, spec: ResampleSpec):
    """The fused pass on the GPU: outputs allocated through the input's framework, the caller's stream."""
    module = require_cuda("spatial_transform")
    like = data if data is not None else seg
    out_shape = spec.out_shape
    out_d = None if data is None else _arrays.cuda_empty_like(data.obj, data.shape[:2] + tuple(out_shape))
    out_s = None if seg is None else _arrays.cuda_empty_like(seg.obj, seg.shape[:2] + tuple(out_shape))

    def pointer(o):
        return 0 if o is None else _arrays.CudaArray.from_array(o).ptr

    stream, device = _arrays.cuda_stream_and_device(like.obj)
    with device:
        module.resample_cuda(*spec.cuda_args(data, seg, pointer(out_d), pointer(out_s), stream))
    return out_d, out_s


def _program_args(program: Program) -> list:
    args = program.kernel_args()
    return [args["op_kinds"], args["op_refs"], args["op_params"], args["op_active"], args["seeds"]]
