"""The C-level DLPack importer (``_C.DLPackTensor``) and the host arrays that go through it.

Capsules come from numpy 2 (``__dlpack__(max_version=(1, 0))`` gives versioned capsules, the plain call
unversioned ones), from TensorFlow (``tf.experimental.dlpack.to_dlpack``) and from a producer written
here with ctypes from the DLPack specification (https://dmlc.github.io/dlpack/latest/), which sets what
numpy never does: a byte offset, NULL strides, the read-only flag, other versions, dtypes and devices,
and counts how often its deleter runs. Every imported view is compared with numpy's own view of the
same memory.
"""

from __future__ import annotations

import ctypes
import gc
import weakref

import numpy as np
import pytest

import delira.augment as da
from delira.augment import _arrays, _extension
from delira.augment import functional as F

_C = _extension._C
pytestmark = pytest.mark.skipif(_C is None, reason="the compiled extension is missing")

# ---------------------------------------------------------------------------------------------
# A DLPack producer from the specification's structures.


class DLDevice(ctypes.Structure):
    _fields_ = (("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32))


class DLDataType(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16))


class DLTensor(ctypes.Structure):
    _fields_ = (
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    )


class DLManagedTensor(ctypes.Structure):
    pass


LEGACY_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = (
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", LEGACY_DELETER),
)


class DLPackVersion(ctypes.Structure):
    _fields_ = (("major", ctypes.c_uint32), ("minor", ctypes.c_uint32))


class DLManagedTensorVersioned(ctypes.Structure):
    pass


VERSIONED_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = (
    ("version", DLPackVersion),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", VERSIONED_DELETER),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", DLTensor),
)

_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
_PyCapsule_GetName = ctypes.pythonapi.PyCapsule_GetName
_PyCapsule_GetName.restype = ctypes.c_char_p
_PyCapsule_GetName.argtypes = (ctypes.py_object,)

KDL_CPU, KDL_CUDA, KDL_OPENCL = 1, 2, 4
READ_ONLY = 1


class Producer:
    """One exported tensor over ``buffer`` (a numpy array whose memory the tensor describes)."""

    def __init__(
        self,
        buffer: np.ndarray,
        shape,
        strides=None,
        byte_offset: int = 0,
        dtype=(2, 32, 1),
        device=(KDL_CPU, 0),
        versioned: bool = True,
        version=(1, 0),
        flags: int = 0,
    ) -> None:
        self.buffer = buffer
        self.deleted = 0
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        self.strides = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
        t = DLTensor()
        t.data = buffer.ctypes.data
        t.device = DLDevice(*device)
        t.ndim = len(shape)
        t.dtype = DLDataType(*dtype)
        t.shape = self.shape
        t.strides = self.strides if self.strides is not None else None
        t.byte_offset = byte_offset
        if versioned:
            self.deleter = VERSIONED_DELETER(self._delete)
            self.managed = DLManagedTensorVersioned(DLPackVersion(*version), None, self.deleter, flags, t)
            name = b"dltensor_versioned"
        else:
            self.deleter = LEGACY_DELETER(self._delete)
            self.managed = DLManagedTensor(t, None, self.deleter)
            name = b"dltensor"
        self.name = ctypes.create_string_buffer(name)  # the capsule keeps a pointer to its name
        self.capsule = _PyCapsule_New(ctypes.addressof(self.managed), self.name, None)

    def _delete(self, _self) -> None:
        self.deleted += 1


def capsule_name(capsule) -> str:
    return _PyCapsule_GetName(capsule).decode()


# ---------------------------------------------------------------------------------------------
# numpy's capsules: versioned and unversioned.


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "uint8", "int16", "int32", "int64", "bool", "float16"]
)
def test_numpy_capsules_give_the_same_view(versioned, dtype):
    base = (np.arange(2 * 5 * 6) % 7).astype(dtype).reshape(2, 5, 6)
    x = base[:, ::-2, 1:]  # negative and non-unit strides
    capsule = x.__dlpack__(max_version=(1, 0)) if versioned else x.__dlpack__()
    assert capsule_name(capsule) == ("dltensor_versioned" if versioned else "dltensor")
    t = _C.DLPackTensor(capsule, "x")
    assert capsule_name(capsule) == ("used_dltensor_versioned" if versioned else "used_dltensor")
    assert t.versioned is versioned
    assert (t.version[0] == 1) if versioned else (t.version is None)
    assert t.shape == x.shape and t.strides == tuple(s // x.itemsize for s in x.strides)
    assert np.dtype(t.typestr) == x.dtype and t.itemsize == x.itemsize
    assert t.device_type == KDL_CPU and t.is_host and not t.readonly
    assert t.ptr == x.__array_interface__["data"][0]
    view = np.asarray(t)
    np.testing.assert_array_equal(view, x)
    assert np.shares_memory(view, base)  # a view, not a copy


def test_a_read_only_numpy_array_gives_a_read_only_view():
    x = np.arange(6.0)
    x.flags.writeable = False
    t = _C.DLPackTensor(x.__dlpack__(max_version=(1, 0)))
    assert t.readonly and t.flags & READ_ONLY
    assert not np.asarray(t).flags.writeable
    w = _C.DLPackTensor(np.arange(6.0).__dlpack__(max_version=(1, 0)))
    assert not w.readonly and np.asarray(w).flags.writeable


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_numpy_deleter_runs_once_when_the_import_is_released(versioned):
    x = np.arange(12.0).reshape(3, 4)
    alive = weakref.ref(x)
    capsule = x.__dlpack__(max_version=(1, 0)) if versioned else x.__dlpack__()
    t = _C.DLPackTensor(capsule)
    del x
    gc.collect()
    assert alive() is not None  # numpy's manager context holds the array until the deleter runs
    view = np.asarray(t)
    del t
    gc.collect()
    assert alive() is not None  # the view keeps the import (and the producer's array) alive
    del view
    gc.collect()
    assert alive() is None
    del capsule  # the consumed capsule's destructor must not call the deleter again (numpy would crash)
    gc.collect()


def test_a_capsule_is_consumed_once():
    capsule = np.zeros(3).__dlpack__(max_version=(1, 0))
    _C.DLPackTensor(capsule)
    with pytest.raises(ValueError, match="already consumed"):
        _C.DLPackTensor(capsule, "data")


def test_non_capsules_are_type_errors():
    with pytest.raises(TypeError, match="x must be a DLPack capsule"):
        _C.DLPackTensor(np.zeros(3), "x")


# ---------------------------------------------------------------------------------------------
# The producer written here: byte offset, NULL strides, flags, versions, dtypes, devices, deleter.


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_byte_offset_and_null_strides(versioned):
    buffer = np.arange(40, dtype=np.float32)
    p = Producer(buffer, (3, 4), strides=None, byte_offset=8 * 4, versioned=versioned)
    t = _C.DLPackTensor(p.capsule, "x")
    assert t.ptr == buffer.ctypes.data + 32
    assert t.strides == (4, 1)  # NULL strides: compact row-major
    np.testing.assert_array_equal(np.asarray(t), buffer[8:20].reshape(3, 4))
    assert p.deleted == 0
    t.release()
    assert p.deleted == 1 and t.released
    t.release()
    del t
    gc.collect()
    assert p.deleted == 1  # exactly once


def test_explicit_strides_in_elements():
    buffer = np.arange(60, dtype=np.int16)
    p = Producer(buffer, (3, 4), strides=(20, -2), byte_offset=6 * 2, dtype=(0, 16, 1))
    t = _C.DLPackTensor(p.capsule)
    expected = np.lib.stride_tricks.as_strided(buffer[6:], (3, 4), (40, -4))
    np.testing.assert_array_equal(np.asarray(t), expected)
    assert np.asarray(t).dtype == np.int16


def test_read_only_flag_of_a_versioned_producer():
    buffer = np.arange(4, dtype=np.float64)
    p = Producer(buffer, (4,), dtype=(2, 64, 1), flags=READ_ONLY)
    t = _C.DLPackTensor(p.capsule)
    assert t.readonly
    assert not np.asarray(t).flags.writeable
    np.testing.assert_array_equal(np.asarray(t), buffer)


def test_the_deleter_runs_once_when_the_import_is_collected():
    p = Producer(np.zeros(4, np.float32), (4,))
    t = _C.DLPackTensor(p.capsule)
    del t
    gc.collect()
    assert p.deleted == 1


def test_another_major_version_is_refused_and_not_consumed():
    p = Producer(np.zeros(4, np.float32), (4,), version=(2, 0))
    with pytest.raises(BufferError, match=r"DLPack version 2\.0 is not supported"):
        _C.DLPackTensor(p.capsule, "data")
    assert capsule_name(p.capsule) == "dltensor_versioned"  # the producer still owns it
    assert p.deleted == 0
    newer_minor = Producer(np.zeros(4, np.float32), (4,), version=(1, 3))
    assert _C.DLPackTensor(newer_minor.capsule).version == (1, 3)


@pytest.mark.parametrize(
    ("dtype", "message"),
    [
        ((4, 16, 1), "bfloat16"),
        ((2, 32, 4), "4 lanes"),
        ((2, 8, 1), "code 2 with 8 bits"),
        ((3, 64, 1), "code 3"),
        ((1, 4, 1), "not whole bytes"),
    ],
)
def test_unsupported_dtypes_are_type_errors_and_the_deleter_still_runs(dtype, message):
    p = Producer(np.zeros(8, np.float32), (2,), dtype=dtype)
    with pytest.raises(TypeError, match=message) as info:
        _C.DLPackTensor(p.capsule, "data")
    assert "data" in str(info.value)
    gc.collect()
    assert p.deleted == 1  # consumed, then released


def test_unsupported_devices_are_value_errors():
    p = Producer(np.zeros(4, np.float32), (4,), device=(KDL_OPENCL, 0))
    with pytest.raises(ValueError, match="data is on DLPack device type 4"):
        _C.DLPackTensor(p.capsule, "data")
    assert p.deleted == 1


def test_cuda_capsules_are_described_and_refused_as_host_memory():
    p = Producer(np.zeros(4, np.float32), (4,), device=(KDL_CUDA, 0))
    t = _C.DLPackTensor(p.capsule, "x")
    assert t.device_type == KDL_CUDA and not t.is_host
    with pytest.raises(ValueError, match="device memory"):
        np.asarray(t)


class _CudaProducer:
    """An array on a (claimed) CUDA device, exported through the protocol."""

    __module__ = "jax"  # namespace(): a jax array

    def __init__(self) -> None:
        self.buffer = np.zeros((1, 1, 4, 4, 4), np.float32)
        self.producer = None
        self.streams: list = []

    @property
    def shape(self):
        return self.buffer.shape

    @property
    def dtype(self):
        return self.buffer.dtype

    def __dlpack_device__(self):
        return (KDL_CUDA, 0)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        self.streams.append(stream)
        self.producer = Producer(self.buffer, self.buffer.shape, device=(KDL_CUDA, 0))
        return self.producer.capsule


def test_gpu_arrays_from_dlpack_producers_reach_the_no_gpu_error():
    if _C.cuda_device_count()[0] > 0:
        pytest.skip("a GPU is visible (the cuda tests cover GPU arrays)")
    x = _CudaProducer()
    assert _arrays.is_cuda_array(x)
    expected = "no GPU is visible" if da.build_info()["cuda_compiled"] else "built without CUDA"
    with pytest.raises(RuntimeError, match=expected):
        F.flip(x, 2)
    with pytest.raises(RuntimeError, match=expected):
        da.GaussianNoise()(data=x)
    assert x.producer is None  # refused before the array was exported


def test_the_importer_asks_for_versioned_capsules_first_and_falls_back():
    class Old:
        def __init__(self) -> None:
            self.calls: list = []

        def __dlpack__(self, stream=None):
            self.calls.append(stream)
            return np.arange(3.0).__dlpack__()

    old = Old()
    t = _arrays.dlpack_import(old)
    assert not t.versioned and old.calls == [None]
    np.testing.assert_array_equal(np.asarray(t), np.arange(3.0))
    assert _arrays.dlpack_import(np.arange(3.0)).versioned


# ---------------------------------------------------------------------------------------------
# TensorFlow and jax host arrays go through the same importer.


@pytest.mark.tf
def test_tensorflow_cpu_tensors_are_viewed_through_the_importer():
    tf = pytest.importorskip("tensorflow")
    x = tf.constant(np.arange(2 * 1 * 5 * 6, dtype=np.float32).reshape(2, 1, 5, 6))
    view, wrap = _arrays.to_host(x, "data")
    assert isinstance(view.base, _C.DLPackTensor)  # imported at the C level, no copy
    np.testing.assert_array_equal(view, x.numpy())
    out = wrap(view * 2)
    assert isinstance(out, tf.Tensor)
    np.testing.assert_array_equal(out.numpy(), x.numpy() * 2)


@pytest.mark.tf
def test_transforms_on_tensorflow_cpu_tensors_equal_numpy():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 1, 9, 10, 11)).astype(np.float32)
    seg = rng.integers(0, 3, (2, 1, 9, 10, 11)).astype(np.int16)
    make = lambda: da.Compose(  # noqa: E731
        [da.SpatialTransform((6, 7, 8)), da.PercentileClip(2, 98), da.Mirror(), da.CenterCrop((5, 5, 5))],
        seed=1,
    )
    expected = make()(data=data, seg=seg)
    out = make()(data=tf.constant(data), seg=tf.constant(seg))
    assert isinstance(out["data"], tf.Tensor) and isinstance(out["seg"], tf.Tensor)
    np.testing.assert_array_equal(out["data"].numpy(), expected["data"])
    np.testing.assert_array_equal(out["seg"].numpy(), expected["seg"])


def test_jax_cpu_arrays_are_viewed_through_the_importer():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    x = jax.device_put(np.arange(2 * 1 * 5 * 6, dtype=np.float32).reshape(2, 1, 5, 6), jax.devices("cpu")[0])
    view, _ = _arrays.to_host(x, "data")
    assert isinstance(view.base, _C.DLPackTensor)
    np.testing.assert_array_equal(view, np.asarray(x))
    data = np.asarray(x)[:, :, None].repeat(3, axis=2)
    out = da.Mirror(axes=(1,), p_per_axis=1.0)(data=jnp.asarray(data))["data"]
    np.testing.assert_array_equal(np.asarray(out), data[:, :, :, ::-1])
