"""Array interop: which framework an input belongs to, host views of it, and wrapping results.

Host inputs (numpy arrays, torch CPU tensors, tensorflow CPU tensors) are viewed as numpy arrays
without a copy (torch's shared-memory ``.numpy()``, tensorflow through DLPack); results are handed
back in the input's type (torch without a copy; tensorflow with one, as it needs aligned buffers).
CUDA inputs (torch CUDA tensors, cupy arrays) are described by their ``__cuda_array_interface__``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

SUPPORTED_DTYPES = ("float32", "float64", "uint8", "int16", "int32", "int64")


def _framework(x: Any) -> str:
    module = type(x).__module__.split(".")[0]
    if isinstance(x, np.ndarray):
        return "numpy"
    if module == "torch" and "torch" in sys.modules:
        import torch

        if isinstance(x, torch.Tensor):
            return "torch"
    if module == "cupy":
        return "cupy"
    if module in ("tensorflow", "tensorflow.python") or type(x).__name__ == "EagerTensor":
        return "tensorflow"
    return "other"


class _DLPackCapsule:
    """Presents a DLPack capsule (from tf.experimental.dlpack) through the ``__dlpack__`` protocol."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


def is_cuda_array(x: Any) -> bool:
    """True for arrays that live in CUDA device memory (torch CUDA tensors, cupy arrays)."""
    fw = _framework(x)
    if fw == "torch":
        return bool(x.is_cuda)
    return fw == "cupy"


def to_host(x: Any, name: str = "x") -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """View ``x`` as a numpy array and return a function that wraps a result like ``x``.

    Raises:
        TypeError: when ``x`` is not an array this package can read.
    """
    fw = _framework(x)
    if fw == "numpy":
        return x, lambda out: out
    if fw == "torch":
        import torch

        host = x.detach().resolve_conj().resolve_neg().numpy()
        return host, torch.from_numpy
    if fw == "tensorflow":
        import tensorflow as tf

        if "CPU" not in getattr(x, "device", "CPU").upper():
            raise TypeError(
                f"{name} is a tensorflow tensor on {x.device}; tensorflow GPU tensors are not supported yet: "
                "pass it on the CPU, or as a torch/cupy CUDA array (zero-copy through DLPack)"
            )
        # In through DLPack without a copy (a read-only view). Out with one copy: TensorFlow requires its
        # buffers aligned beyond numpy's guarantee (kernels abort on IsAligned), so wrapping the numpy
        # result through DLPack is not safe.
        host = np.from_dlpack(_DLPackCapsule(tf.experimental.dlpack.to_dlpack(x)))
        return host, tf.convert_to_tensor
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        raise TypeError(
            f"{name} must be an array (numpy, torch or tensorflow), got {type(x).__name__}; "
            f"wrap it with numpy.asarray({name})"
        )
    if hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return np.asarray(x), lambda out: out
    raise TypeError(
        f"{name} must be a numpy array, torch tensor or tensorflow tensor, got {type(x).__name__}"
    )


def check_dtype(dtype: Any, name: str = "x") -> str:
    """Return the dtype name if the kernels support it, else raise a TypeError saying what to do."""
    dt = np.dtype(dtype)
    if dt.name not in SUPPORTED_DTYPES or not dt.isnative:
        raise TypeError(
            f"{name} has dtype {dt.str if not dt.isnative else dt.name}, which is not supported; "
            f"supported are {', '.join(SUPPORTED_DTYPES)} in native byte order "
            f"(convert with {name}.astype('float32') or {name}.astype('int16'))"
        )
    return dt.name


def np_dtype(x: Any) -> np.dtype:
    """The numpy dtype of a numpy, torch, cupy or tensorflow array."""
    if isinstance(x, np.ndarray):
        return x.dtype
    fw = _framework(x)
    if fw == "torch":
        import torch

        return (
            np.dtype(torch.empty((), dtype=x.dtype).numpy().dtype)
            if x.dtype != torch.bfloat16
            else np.dtype("V2")
        )
    if fw == "tensorflow":
        return np.dtype(x.dtype.as_numpy_dtype)
    return np.dtype(x.dtype)


@dataclass
class CudaArray:
    """A CUDA array described by its ``__cuda_array_interface__`` (strides in elements).

    Has ``shape``, ``ndim``, ``size`` and ``dtype`` (numpy) like an array, so the argument checks
    apply to it unchanged; ``obj`` is the framework array itself.
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    framework: str
    obj: Any = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def dtype_name(self) -> str:
        return self.dtype.name

    @classmethod
    def from_array(cls, x: Any, name: str = "x") -> CudaArray:
        iface = x.__cuda_array_interface__
        shape = tuple(int(s) for s in iface["shape"])
        dt = np.dtype(iface["typestr"])
        itemsize = dt.itemsize
        if iface.get("strides") is None:
            strides = []
            step = 1
            for extent in reversed(shape):
                strides.append(step)
                step *= max(extent, 1)
            strides_elems = tuple(reversed(strides))
        else:
            byte_strides = iface["strides"]
            if any(s % itemsize for s in byte_strides):
                raise ValueError(
                    f"{name} has a stride that is not a multiple of its item size; pass a contiguous copy"
                )
            strides_elems = tuple(int(s) // itemsize for s in byte_strides)
        return cls(int(iface["data"][0]), shape, strides_elems, dt, _framework(x), x)


def cuda_empty_like(x: Any, shape: tuple[int, ...]) -> Any:
    """A new C-contiguous device array of ``shape`` with ``x``'s dtype, device and framework."""
    if _framework(x) == "torch":
        import torch

        return torch.empty(tuple(shape), dtype=x.dtype, device=x.device)
    import cupy

    with x.device:
        return cupy.empty(tuple(shape), dtype=x.dtype)


def cuda_contiguous_copy(x: Any) -> Any:
    """A new C-contiguous copy of the CUDA array ``x`` in its framework (the output of in-place kernels)."""
    if _framework(x) == "torch":
        return x.detach().clone(memory_format=__import__("torch").contiguous_format)
    import cupy

    with x.device:
        return cupy.ascontiguousarray(x).copy()


def cuda_stream_and_device(x: Any) -> tuple[int, Any]:
    """The caller's current CUDA stream handle for ``x``'s device, and a context manager for the device."""
    if _framework(x) == "torch":
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream), torch.cuda.device(x.device)
    import cupy

    with x.device:
        stream = cupy.cuda.get_current_stream().ptr
    return int(stream), x.device
