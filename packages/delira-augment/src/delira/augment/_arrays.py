"""Array interop: which framework an input belongs to, host views of it, and wrapping results.

:func:`namespace` is the one place that tells frameworks apart (numpy, torch, cupy, tensorflow, jax);
:func:`concat`, :func:`take` and :func:`cast` do the few framework-specific array operations the
transforms need. Host inputs (numpy arrays, torch CPU tensors, tensorflow CPU tensors, jax CPU arrays)
are viewed as numpy arrays without a copy (torch's shared-memory ``.numpy()``; tensorflow and jax
through DLPack, imported at the C level by ``_C.DLPackTensor``); results are handed back in the
input's type (torch without a copy; tensorflow and jax with one, as tensorflow needs aligned buffers).

CUDA inputs: torch CUDA tensors and cupy arrays are described by their ``__cuda_array_interface__``
and run on the caller's current stream; tensorflow GPU tensors and jax GPU arrays are imported through
DLPack (:func:`dlpack_import`: versioned capsules where the producer offers them) and run on delira's
own stream of the device, their outputs allocated by delira (``_C.CudaBuffer``) and exported back to
the input's framework through DLPack (:func:`cuda_wrapper`). See the package README, "CUDA".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

SUPPORTED_DTYPES = ("float32", "float64", "uint8", "int16", "int32", "int64")


NAMESPACES = ("numpy", "torch", "cupy", "tensorflow", "jax")

# Root module of an array class -> its namespace. Checked along the class's MRO, so subclasses (a
# ``torch.nn.Parameter``, a tensorflow ``ResourceVariable``, a jaxlib array) resolve to their framework.
_ROOTS = {
    "numpy": "numpy",
    "torch": "torch",
    "cupy": "cupy",
    "cupy_backends": "cupy",
    "tensorflow": "tensorflow",
    "tf_keras": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
}


def namespace(x: Any) -> str:
    """The array framework ``x`` belongs to, without importing any framework.

    The one place where delira.augment tells frameworks apart; every other module asks this function.

    Args:
        x: any object; arrays are numpy arrays (and subclasses), torch tensors, cupy arrays,
            tensorflow tensors or variables, and jax arrays, on any device.

    Returns:
        ``"numpy"``, ``"torch"``, ``"cupy"``, ``"tensorflow"`` or ``"jax"``; ``"other"`` for anything else
        (a list, a scalar, an unknown array-like).
    """
    if isinstance(x, np.ndarray):
        return "numpy"
    for cls in type(x).__mro__:
        root = _ROOTS.get(cls.__module__.split(".")[0])
        if root is not None and root != "numpy":
            return root
    return "other"


class _DLPackCapsule:
    """Presents a host DLPack capsule through the ``__dlpack__`` protocol (numpy's importer, used only
    when the compiled extension is missing)."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13  # DLPack device types


def _is_capsule(x: Any) -> bool:
    return type(x).__name__ == "PyCapsule"


def dlpack_capsule(x: Any, stream: int | None = None) -> Any:
    """A DLPack capsule of ``x``: versioned (DLPack >= 1.0) where the producer offers it.

    ``stream`` is the consumer's stream for CUDA producers (the Array API's ``__dlpack__(stream=...)``:
    the producer makes the data ready on it); None for host arrays. TensorFlow's tensors have no
    ``__dlpack__``: ``tf.experimental.dlpack.to_dlpack`` (unversioned, no stream) is used.
    """
    if _is_capsule(x):
        return x
    if namespace(x) == "tensorflow":
        import tensorflow as tf

        return tf.experimental.dlpack.to_dlpack(x)
    kwargs = {} if stream is None else {"stream": stream}
    try:
        return x.__dlpack__(max_version=(1, 0), **kwargs)
    except TypeError:  # a producer older than DLPack 1.0: no max_version argument, unversioned capsule
        return x.__dlpack__(**kwargs)


def dlpack_import(x: Any, name: str = "x", stream: int | None = None) -> Any:
    """Import ``x`` (an array with ``__dlpack__``, a tensorflow tensor or a DLPack capsule) at the C level.

    Returns the ``_C.DLPackTensor``: pointer (data + byte_offset), shape, strides in elements, numpy
    type string, device, read-only flag; it calls the producer's deleter once when released or
    collected. Unsupported dtypes raise TypeError, unsupported devices ValueError, both naming ``name``.
    """
    from delira.augment import _extension

    if _extension._C is None:
        raise RuntimeError(
            f"{name}: importing DLPack arrays needs the compiled extension, which did not load "
            f"({_extension.IMPORT_ERROR}); reinstall delira-augment with a C++ compiler present"
        )
    return _extension._C.DLPackTensor(dlpack_capsule(x, stream), name)


def _host_view_dlpack(x: Any, name: str) -> np.ndarray:
    """A numpy view (no copy) of a host array exported through DLPack; read-only when the producer says so."""
    from delira.augment import _extension

    if _extension._C is None:  # no extension: numpy's own importer
        return np.from_dlpack(_DLPackCapsule(dlpack_capsule(x)))
    t = dlpack_import(x, name)
    if not t.is_host:
        raise TypeError(
            f"{name} is in GPU memory (DLPack device type {t.device_type}); expected a host array"
        )
    return np.asarray(t)  # numpy keeps `t` (and so the producer's memory) alive as the array's base


def _dlpack_device(x: Any) -> tuple[int, int] | None:
    try:
        dev = x.__dlpack_device__()
        return int(dev[0]), int(dev[1])
    except Exception:  # not a DLPack producer, or an array spread over several devices
        return None


def _tf_gpu_index(x: Any) -> int | None:
    """The GPU index of a tensorflow tensor on a GPU (``.../device:GPU:k``), else None."""
    device = str(getattr(x, "device", "") or "")
    marker = device.upper().rfind("GPU:")
    if marker < 0:
        return None
    digits = device[marker + 4 :].split("/")[0]
    return int(digits) if digits.isdigit() else 0


def _cuda_buffer_type() -> Any:
    from delira.augment import _extension

    return getattr(_extension._C, "CudaBuffer", None) if _extension._C is not None else None


def is_cuda_buffer(x: Any) -> bool:
    """True for delira's own device buffers (``_C.CudaBuffer``, outputs of calls on tensorflow/jax GPU arrays)."""
    cls = _cuda_buffer_type()
    return cls is not None and isinstance(x, cls)


def is_cuda_array(x: Any) -> bool:
    """True for arrays that live in CUDA device memory (torch CUDA tensors, cupy arrays, tensorflow GPU
    tensors, jax GPU arrays, delira's own ``CudaBuffer``)."""
    fw = namespace(x)
    if fw == "torch":
        return bool(x.is_cuda)
    if fw == "cupy":
        return True
    if fw == "tensorflow":
        return _tf_gpu_index(x) is not None
    if fw == "jax":
        dev = _dlpack_device(x)
        return dev is not None and dev[0] in (KDL_CUDA, KDL_CUDA_MANAGED)
    return is_cuda_buffer(x)


def uses_dlpack(x: Any) -> bool:
    """True for CUDA arrays that go through DLPack and delira's own stream (tensorflow, jax)."""
    return namespace(x) in ("tensorflow", "jax") or is_cuda_buffer(x)


def detach(x: Any) -> Any:
    """``x`` without autograd history (torch tensors; anything else is returned as it is)."""
    return x.detach() if namespace(x) == "torch" else x


def to_host(x: Any, name: str = "x") -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """View ``x`` as a numpy array and return a function that wraps a result like ``x``.

    Raises:
        TypeError: when ``x`` is not an array this package can read.
    """
    fw = namespace(x)
    if fw == "numpy":
        return x, lambda out: out
    if fw == "torch":
        import torch

        t = x.detach().resolve_conj().resolve_neg()  # no autograd history: augmentation is not differentiable
        if t.dtype == torch.bfloat16:
            raise TypeError(
                f"{name} is a torch.bfloat16 tensor, which numpy cannot hold; convert it with {name}.float()"
            )
        return t.numpy(), torch.from_numpy
    if fw == "tensorflow":
        import tensorflow as tf

        if _tf_gpu_index(x) is not None:
            raise TypeError(
                f"{name} is a tensorflow tensor on {x.device}, which this operation reads on the host only; "
                f"move it with tf.identity({name}) inside tf.device('/CPU:0'), or use a transform that runs on the GPU"
            )
        # In through DLPack without a copy. Out with one copy: TensorFlow requires its buffers aligned
        # beyond numpy's guarantee (kernels abort on IsAligned), so wrapping the numpy result through
        # DLPack is not safe.
        return _host_view_dlpack(x, name), tf.convert_to_tensor
    if fw == "jax":
        import jax.numpy as jnp

        if is_cuda_array(x):
            raise TypeError(
                f"{name} is a jax array on a GPU, which this operation reads on the host only; move it with "
                f"jax.device_put({name}, jax.devices('cpu')[0]), or use a transform that runs on the GPU"
            )
        if _dlpack_device(x) is not None:
            return _host_view_dlpack(x, name), jnp.asarray  # a view without a copy
        return np.asarray(x), jnp.asarray
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        raise TypeError(
            f"{name} must be an array (numpy, torch, tensorflow or jax), got {type(x).__name__}; "
            f"wrap it with numpy.asarray({name})"
        )
    if hasattr(x, "__cuda_array_interface__"):
        raise TypeError(
            f"{name} is a CUDA array of type {type(x).__name__} (it has __cuda_array_interface__); on the GPU "
            f"delira.augment takes torch CUDA tensors and cupy arrays: wrap it without a copy with "
            f"cupy.asarray({name}), or move it to the host first"
        )
    if hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return np.asarray(x), lambda out: out
    raise TypeError(
        f"{name} must be a numpy array, torch tensor, tensorflow tensor or jax array, got {type(x).__name__}; "
        f"convert it with numpy.asarray({name})"
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
    fw = namespace(x)
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
    apply to it unchanged; ``obj`` is the framework array itself (a torch tensor detached from
    autograd, which also keeps the memory alive while the description is in use) and ``device`` its
    CUDA device index. Strides may be negative or zero (read as they are by the kernels).
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    framework: str
    obj: Any = None
    device: int | None = None
    owner: Any = None  # the imported DLPack tensor (tensorflow, jax): keeps the memory alive

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
        """Describe the torch CUDA tensor or cupy array ``x``.

        torch tensors are read detached (``requires_grad=True`` is fine: the result has no autograd
        history, as on the CPU path).

        Raises:
            TypeError: a torch bfloat16 tensor (no numpy dtype; convert with ``x.float()``).
            ValueError: a masked array, or a stride that is not a multiple of the item size.
        """
        fw = namespace(x)
        if fw in ("tensorflow", "jax"):
            return cls._from_dlpack(x, name, fw)
        if fw == "torch":
            import torch

            if x.dtype == torch.bfloat16:
                raise TypeError(
                    f"{name} is a torch.bfloat16 tensor, which delira.augment does not support; convert it "
                    f"with {name}.float()"
                )
            x = x.detach().resolve_conj().resolve_neg()
        iface = x.__cuda_array_interface__
        if iface.get("mask") is not None:
            raise ValueError(f"{name} is a masked CUDA array; pass the array without its mask")
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
        return cls(int(iface["data"][0]), shape, strides_elems, dt, fw, x, cuda_device_index(x))

    @classmethod
    def _from_dlpack(cls, x: Any, name: str, fw: str) -> CudaArray:
        """Describe a tensorflow GPU tensor or jax GPU array, imported through DLPack at the C level.

        jax is asked for a versioned capsule with delira's stream of the device as the consumer stream,
        so jax makes the data ready on it; tensorflow's ``to_dlpack`` takes no stream, so delira waits
        for the device before reading the tensor.
        """
        from delira.augment._cuda import require_cuda

        module = require_cuda(name)
        device = cuda_device_index(x)
        stream = int(module.interop_stream(device))
        t = dlpack_import(x, name, None if fw == "tensorflow" else stream)
        if t.is_host:
            raise ValueError(
                f"{name} is in host memory (DLPack device type {t.device_type}); expected a GPU array"
            )
        if fw == "tensorflow":
            module.device_synchronize(
                t.device_id
            )  # no stream to order against: tensorflow's work must be done
        dt = np.dtype(t.typestr)
        return cls(int(t.ptr), tuple(t.shape), tuple(t.strides), dt, fw, x, int(t.device_id), owner=t)


def cuda_device_index(x: Any) -> int:
    """The CUDA device index of a torch CUDA tensor, cupy array, tensorflow GPU tensor, jax GPU array or
    delira ``CudaBuffer``."""
    fw = namespace(x)
    if fw == "torch":
        return int(x.device.index)
    if fw == "tensorflow":
        index = _tf_gpu_index(x)
        if index is None:
            raise ValueError(f"the tensorflow tensor on {x.device} is not on a GPU")
        return index
    if fw == "jax":
        dev = _dlpack_device(x)
        if dev is None:
            raise ValueError("the jax array is not on a single device; pass an array on one GPU")
        return dev[1]
    if is_cuda_buffer(x):
        return int(x.device)
    return int(x.device.id)


def check_same_device(arrays: dict[str, CudaArray]) -> None:
    """Raise ValueError, naming the arrays and the fix, unless all ``arrays`` are on one CUDA device."""
    devices = {name: a.device for name, a in arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on cuda:{d}" for name, d in devices.items())
        first = next(iter(devices))
        others = [name for name in devices if name != first]
        raise ValueError(
            f"{where}: the arrays of one call must share a device; move them with "
            f"{others[0]}.to({first}.device) (torch) or cupy.asarray({others[0]}) inside "
            f"cupy.cuda.Device({devices[first]})"
        )


def cuda_empty_like(x: Any, shape: tuple[int, ...]) -> Any:
    """A new C-contiguous device array of ``shape`` with ``x``'s dtype, device and framework.

    For tensorflow and jax arrays (and delira buffers) a ``_C.CudaBuffer`` allocated by delira on its
    stream of the device; :func:`cuda_wrapper` hands it to the framework once the kernels are queued.
    """
    if uses_dlpack(x):
        from delira.augment._cuda import require_cuda

        module = require_cuda("allocating the output")
        device = cuda_device_index(x)
        dtype = x.dtype if is_cuda_buffer(x) else np_dtype(x).name
        return module.CudaBuffer(device, dtype, [int(s) for s in shape], int(module.interop_stream(device)))
    if namespace(x) == "torch":
        import torch

        return torch.empty(tuple(shape), dtype=x.dtype, device=x.device)
    import cupy

    with x.device:
        return cupy.empty(tuple(shape), dtype=x.dtype)


def cuda_contiguous_copy(x: Any) -> Any:
    """A new C-contiguous copy of the CUDA array ``x`` in its framework (the output of in-place kernels).

    The copy is made on the caller's current stream of ``x``'s device, like any op of the framework;
    for tensorflow and jax arrays into a ``_C.CudaBuffer`` on delira's stream (a strided copy kernel).
    """
    if uses_dlpack(x):
        src = CudaArray.from_array(x, "x") if not is_cuda_buffer(x) else CudaArray.from_array(x)
        out = cuda_empty_like(x, src.shape)
        from delira.augment import _extension

        _extension._C.flip_cuda(
            src.ptr, out.ptr, src.dtype.name, list(src.shape), list(src.strides), [], out.stream
        )
        return out
    if namespace(x) == "torch":
        import torch

        return x.detach().clone(memory_format=torch.contiguous_format)
    with x.device:
        return x.copy(order="C")


def cuda_stream_and_device(x: Any) -> tuple[int, Any]:
    """The caller's current CUDA stream handle for ``x``'s device, and a context manager for the device.

    Delira's kernels run on this stream, as the framework's own ops would: inputs are read and
    outputs (allocated by the framework on the same stream) written there, with no synchronisation.
    As for any torch op, an input produced on another stream must be synchronised by the caller (or
    ``record_stream``-ed when it is freed while the call may still run); delira does not call
    ``record_stream`` itself.
    """
    if is_cuda_buffer(x):
        return int(x.stream), contextlib.nullcontext()
    if uses_dlpack(x):  # tensorflow, jax: no current stream to join; delira's own stream of the device
        from delira.augment._cuda import require_cuda

        return int(require_cuda("x").interop_stream(cuda_device_index(x))), contextlib.nullcontext()
    if namespace(x) == "torch":
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream), torch.cuda.device(x.device)
    import cupy

    with x.device:
        stream = cupy.cuda.get_current_stream().ptr
    return int(stream), x.device


def cuda_wrapper(x: Any) -> Callable[[Any], Any]:
    """The function that turns the result of a CUDA call on ``x`` into ``x``'s framework.

    torch and cupy results are allocated in their framework already (returned unchanged). Results for
    tensorflow and jax are ``_C.CudaBuffer``: delira waits for its stream (the call is synchronous, so
    the input, which delira holds only during the call, is no longer read), then exports the buffer
    through DLPack: ``jax.dlpack.from_dlpack`` (jax passes its stream, which is made to wait for the
    buffer) and ``tf.experimental.dlpack.from_dlpack``. The memory is freed when the framework releases it.
    """
    fw = namespace(x)

    def wrap(out: Any) -> Any:
        if not is_cuda_buffer(out):
            return out
        from delira.augment import _extension

        _extension._C.stream_synchronize(out.stream, out.device)
        if fw == "tensorflow":
            import tensorflow as tf

            return tf.experimental.dlpack.from_dlpack(out.__dlpack__(stream=-1))
        if fw == "jax":
            import jax.dlpack

            return jax.dlpack.from_dlpack(out)
        return out

    return wrap


def cuda_to_host(x: Any) -> np.ndarray:
    """A host (numpy) copy of the CUDA array ``x`` (torch, cupy, tensorflow, jax); synchronises."""
    fw = namespace(x)
    if fw == "torch":
        return x.detach().cpu().numpy()
    if fw == "cupy":
        import cupy

        return cupy.asnumpy(x)
    if fw == "tensorflow":
        return x.numpy()
    return np.asarray(x)


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    """``x`` reshaped (a view where the framework can), in ``x``'s namespace."""
    if namespace(x) == "tensorflow":
        import tensorflow as tf

        return tf.reshape(x, shape)
    return x.reshape(shape)


def concat(parts: list[Any], like: Any) -> Any:
    """Concatenate ``parts`` along axis 0 in the namespace of ``like`` (numpy, torch, cupy, tensorflow, jax)."""
    ns = namespace(like)
    if ns == "torch":
        import torch

        return torch.cat(parts, dim=0)
    if ns == "cupy":
        import cupy

        return cupy.concatenate(parts, axis=0)
    if ns == "tensorflow":
        import tensorflow as tf

        return tf.concat(parts, axis=0)
    if ns == "jax":
        import jax.numpy as jnp

        return jnp.concatenate(parts, axis=0)
    return np.concatenate(parts, axis=0)


def take(x: Any, idx: np.ndarray) -> Any:
    """``x[idx]`` along axis 0 for an int index array ``idx`` ``(K,)``, in ``x``'s namespace and device.

    A new array (torch: without autograd history). CUDA arrays (torch, cupy) are gathered from slices
    (``x[i : i + 1]``, concatenated on the device), so no index array is copied to the GPU: that copy
    from host memory would synchronise the stream, and cupy does not index with numpy arrays.
    """
    ns = namespace(x)
    if ns in ("torch", "cupy"):
        x = detach(x)
        rows = [int(i) for i in np.asarray(idx).reshape(-1)]
        if not rows:
            return x[0:0]
        return concat([x[i : i + 1] for i in rows], x)
    if ns == "tensorflow":
        import tensorflow as tf

        return tf.gather(x, idx)
    if ns in ("numpy", "jax"):
        return x[idx]
    return np.asarray(x)[idx]


def cast(x: Any, dtype: str) -> Any:
    """``x`` converted to the numpy dtype name ``dtype`` (a new array), in ``x``'s namespace and device."""
    ns = namespace(x)
    if ns == "torch":
        import torch

        return x.detach().to(getattr(torch, "bool" if dtype == "bool" else dtype))
    if ns == "tensorflow":
        import tensorflow as tf

        return tf.cast(x, dtype)
    if ns in ("numpy", "cupy", "jax"):
        return x.astype(dtype)
    return np.asarray(x).astype(dtype)
