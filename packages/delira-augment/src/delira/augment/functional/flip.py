"""Reversal of array axes on the CPU or the GPU."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

from delira.augment import _arrays, _extension

MAX_NDIM = 5


def _normalize_axes(axes: int | Iterable[int] | None, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, bool) or not isinstance(axes, (int, np.integer, Iterable)):
        raise TypeError(f"flip: axes must be an int, a sequence of ints or None, got {axes!r}")
    raw = [axes] if isinstance(axes, (int, np.integer)) else list(axes)
    out: list[int] = []
    for a in raw:
        if isinstance(a, bool):
            raise TypeError(f"flip: axes must be ints, got the bool {a!r}")
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"flip: axes must be ints, got {a!r} of type {type(a).__name__}") from None
        if not -ndim <= a < ndim:
            raise ValueError(
                f"flip: axis {a} is out of range for an array with {ndim} dimensions "
                f"(valid axes are {-ndim} to {ndim - 1})"
            )
        a %= ndim
        if a in out:
            raise ValueError(f"flip: axis {a} is given more than once in axes={axes!r}")
        out.append(a)
    return tuple(out)


def _check_ndim(ndim: int) -> None:
    if not 1 <= ndim <= MAX_NDIM:
        raise ValueError(
            f"flip: x has {ndim} dimensions; supported are 1 to {MAX_NDIM} "
            "(for example (N, C, D, H, W)); reshape x to fold extra leading axes into N"
        )


def flip(x: Any, axes: int | Iterable[int] | None = None) -> Any:
    """Return a copy of ``x`` with the elements of ``axes`` in reverse order.

    Equivalent to ``numpy.flip(x, axes).copy()``, computed by the compiled kernels: the CPU
    executor for host arrays, the CUDA executor (on the caller's current stream) for CUDA arrays.

    Args:
        x: array of 1 to 5 dimensions, for example ``(N, C, D, H, W)``, with dtype float32,
            float64, uint8, int16, int32 or int64; any strides (negative and zero ones included). A
            numpy array, a torch tensor (CPU or CUDA; read detached), a cupy array, a tensorflow
            tensor or a jax array (CPU or GPU; GPU ones through DLPack).
        axes: axis or axes to reverse; negative values count from the end; None reverses all.

    Returns:
        A C-contiguous array of the same shape, dtype, device and framework as ``x``.

    Raises:
        TypeError: unsupported dtype or array type, or non-integer axes.
        ValueError: unsupported number of dimensions, an axis out of range or given twice.
        RuntimeError: a CUDA array given to a build without CUDA, or no visible GPU.
    """
    if _arrays.is_cuda_array(x):
        return _flip_cuda(x, axes)
    host, wrap = _arrays.to_host(x)
    _check_ndim(host.ndim)
    _arrays.check_dtype(host.dtype)
    axes_t = _normalize_axes(axes, host.ndim)
    if _extension._C is None:
        _extension.warn_fallback("flip")
        return wrap(np.ascontiguousarray(np.flip(host, axes_t)))
    return wrap(_extension._C.flip(host, list(axes_t)))


def _flip_cuda(x: Any, axes: int | Iterable[int] | None) -> Any:
    """The CUDA executor: the output allocated by x's framework on x's device, the caller's stream."""
    from delira.augment._cuda import require_cuda

    cuda = _arrays.CudaArray.from_array(x)
    _check_ndim(cuda.ndim)
    dtype = _arrays.check_dtype(cuda.dtype)
    axes_t = _normalize_axes(axes, cuda.ndim)
    module = require_cuda("flip")
    stream, device = _arrays.cuda_stream_and_device(cuda.obj)
    with device:
        out = _arrays.cuda_empty_like(cuda.obj, cuda.shape)
        module.flip_cuda(
            cuda.ptr,
            _arrays.CudaArray.from_array(out, "out").ptr,
            dtype,  # the dtype's name: the binding's argument
            list(cuda.shape),
            list(cuda.strides),
            list(axes_t),
            stream,
        )
    return _arrays.cuda_wrapper(x)(out)
