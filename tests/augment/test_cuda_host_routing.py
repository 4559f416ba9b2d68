"""Host-side checks of the CUDA path, without a GPU: a stand-in ``cupy`` whose arrays expose
``__cuda_array_interface__`` (fake device pointers, no memory) goes through the real functional layer,
transforms and bindings.

With a GPU-less CUDA build, a call that reaches the compiled CUDA executor fails at its first CUDA call
with the runtime's "no device" error (a RuntimeError naming the CUDA call). That proves the Python
layer routed the input to the CUDA executor and that the bindings accepted the arguments it built
(dtype, shapes, strides, stream) instead of failing on them (``incompatible function arguments``), or
the input being copied to the host. Argument errors raised before any CUDA call (mismatched devices,
too many intensity operations) come out as ValueError here too.

Skipped where a GPU is visible: the fake pointers must never reach a real device (the ``cuda`` tests
cover these paths there), and without CUDA in the build.
"""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import numpy as np
import pytest

import delira.augment as da
from delira.augment import _extension
from delira.augment import functional as F

_C = _extension._C


def _skip_reason() -> str | None:
    if _C is None or not da.build_info()["cuda_compiled"]:
        return "delira-augment was built without CUDA"
    if _C.cuda_device_count()[0] > 0:
        return "a CUDA device is visible: fake device pointers must not reach it (the cuda tests cover this)"
    return None


# A marker, not a module-level skip: `pytest -m cuda` (scripts/gpu_check.sh) deselects these tests
# instead of reporting a skipped module.
pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

NO_DEVICE = r"delira\.augment CUDA error in cudaPointerGetAttributes"


# ---------------------------------------------------------------------------------------------
# A stand-in cupy: arrays with shape, dtype, strides, a device and __cuda_array_interface__, and the
# few module functions delira.augment calls.


class _Device:
    def __init__(self, index: int) -> None:
        self.id = index

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


class FakeCudaArray:
    """A device array without memory; pointers are distinct fake addresses."""

    __module__ = "cupy"  # delira.augment._arrays.namespace() tells frameworks apart by the class's module
    _next_ptr = 0x7F00_0000_0000

    def __init__(self, shape, dtype, strides=None, ptr=None, device=0, values=None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        if strides is None:  # elements, C order
            strides, step = [], 1
            for extent in reversed(self.shape):
                strides.append(step)
                step *= max(extent, 1)
            strides = tuple(reversed(strides))
        self.elem_strides = tuple(strides)
        if ptr is None:
            ptr = FakeCudaArray._next_ptr
            FakeCudaArray._next_ptr += 1 << 24
        self.ptr = ptr
        self.device = _Device(device)
        self.values = values  # host values of index arrays (cupy.asarray of a numpy array)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def __cuda_array_interface__(self) -> dict:
        contiguous = self.elem_strides == FakeCudaArray(self.shape, self.dtype, ptr=1).elem_strides
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ptr if self.size else 0, False),
            "strides": None if contiguous else tuple(s * self.dtype.itemsize for s in self.elem_strides),
            "version": 3,
        }

    def _new(self, shape, dtype=None) -> FakeCudaArray:
        return FakeCudaArray(shape, self.dtype if dtype is None else dtype, device=self.device.id)

    def reshape(self, *shape) -> FakeCudaArray:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        return self._new(shape)

    def copy(self, order: str = "C") -> FakeCudaArray:
        return self._new(self.shape)

    def astype(self, dtype) -> FakeCudaArray:
        return self._new(self.shape, dtype)

    def __getitem__(self, idx) -> FakeCudaArray:
        if isinstance(idx, FakeCudaArray):  # integer index array along axis 0, on the device
            Fake.index_arrays.append(idx)
            return self._new((len(idx.values), *self.shape[1:]))
        if isinstance(idx, np.ndarray):
            raise TypeError("cupy does not index with numpy arrays")
        if isinstance(idx, (int, np.integer)):
            return self._new(self.shape[1:])
        if isinstance(idx, slice):
            return self._new((len(range(*idx.indices(self.shape[0]))), *self.shape[1:]))
        if idx is None:
            return self._new((1, *self.shape))
        raise NotImplementedError(f"FakeCudaArray[{idx!r}]")


class Fake:
    """Records what the stand-in cupy was asked to do."""

    index_arrays: ClassVar[list[FakeCudaArray]] = []


def _fake_cupy_module() -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.ndarray = FakeCudaArray
    cupy.empty = lambda shape, dtype: FakeCudaArray(shape, dtype)
    cupy.asarray = lambda a: FakeCudaArray(np.shape(a), np.asarray(a).dtype, values=np.asarray(a))

    def concatenate(parts, axis=0):
        assert axis == 0
        first = parts[0]
        return FakeCudaArray(
            (sum(p.shape[0] for p in parts), *first.shape[1:]), first.dtype, device=first.device.id
        )

    cupy.concatenate = concatenate
    cuda = types.ModuleType("cupy.cuda")
    cuda.get_current_stream = lambda: types.SimpleNamespace(ptr=0)
    cuda.Device = _Device
    cupy.cuda = cuda
    return cupy


@pytest.fixture
def fake_cupy(monkeypatch):
    """The stand-in cupy imported as ``cupy``; returns its module."""
    module = _fake_cupy_module()
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setitem(sys.modules, "cupy.cuda", module.cuda)
    Fake.index_arrays = []
    return module


@pytest.fixture
def gpu_visible(monkeypatch, fake_cupy):
    """Pretend a GPU is visible, so that calls get past the device-count check into the bindings."""
    monkeypatch.setattr(_C, "cuda_device_count", lambda: (1, None))
    return fake_cupy


@pytest.fixture
def spy(monkeypatch):
    """Wraps a _C function to record its positional arguments; returns the list of calls."""

    def install(name: str) -> list:
        calls: list = []
        real = getattr(_C, name)

        def wrapper(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(_C, name, wrapper)
        return calls

    return install


def batch(dtype="float32", shape=(2, 1, 6, 7, 8), **kw) -> FakeCudaArray:
    return FakeCudaArray(shape, dtype, **kw)


# ---------------------------------------------------------------------------------------------
# Review finding 1: flip passes the dtype the binding takes.


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int16", "int32", "int64"])
def test_flip_reaches_the_binding_for_every_dtype(gpu_visible, spy, dtype):
    calls = spy("flip_cuda")
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.flip(batch(dtype), (2, 4))
    (args,) = calls
    assert args[2] == dtype  # the dtype's name, as the binding's signature takes it
    assert args[3] == [2, 1, 6, 7, 8] and args[5] == [2, 4]


def test_flip_binding_takes_dtype_names_and_numpy_dtypes(gpu_visible):
    # both spellings get through argument conversion and the geometry checks to the CUDA runtime
    for dtype in ("int16", np.dtype("int16"), np.int16):
        with pytest.raises(RuntimeError, match=NO_DEVICE):
            _C.flip_cuda(0x1000, 0x2000, dtype, [3, 4], [4, 1], [0], 0)
    with pytest.raises(TypeError, match="unsupported dtype"):
        _C.flip_cuda(0x1000, 0x2000, "float16", [3, 4], [4, 1], [0], 0)


def test_flip_of_an_empty_array_needs_no_device_call(gpu_visible):
    out = F.flip(batch(shape=(0, 3, 4)), 1)
    assert isinstance(out, FakeCudaArray) and out.shape == (0, 3, 4) and out.dtype == np.float32


def test_flip_negative_and_zero_strides_reach_the_binding(gpu_visible, spy):
    calls = spy("flip_cuda")
    x = FakeCudaArray((3, 4, 5), "float32", strides=(-20, 0, 1))
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.flip(x, 0)
    assert calls[0][4] == [-20, 0, 1]


def test_flip_refuses_unsupported_dtypes_before_the_binding(gpu_visible, spy):
    calls = spy("flip_cuda")
    with pytest.raises(TypeError, match="x has dtype bool"):
        F.flip(batch("bool"), 0)
    assert calls == []


def test_without_a_gpu_the_error_says_so(fake_cupy):
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        F.flip(batch(), 0)
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        F.gaussian_noise(batch(), 0.1, seed=0)


def test_other_cuda_array_types_get_a_clear_type_error():
    class NumbaLike:
        __module__ = "numba.cuda.cudadrv.devicearray"
        shape, dtype = (2, 3), np.dtype("float32")
        __cuda_array_interface__: ClassVar[dict] = {
            "shape": (2, 3),
            "typestr": "<f4",
            "data": (0x1000, False),
            "version": 3,
        }

    with pytest.raises(TypeError, match=r"__cuda_array_interface__.*cupy\.asarray"):
        F.flip(NumbaLike(), 0)


def test_masked_and_misaligned_cuda_arrays_are_refused(gpu_visible):
    from delira.augment._arrays import CudaArray

    x = batch()
    masked = types.SimpleNamespace(__cuda_array_interface__={**x.__cuda_array_interface__, "mask": object()})
    with pytest.raises(ValueError, match="masked"):
        CudaArray.from_array(masked)
    odd = FakeCudaArray((4, 4), "float32", strides=(4, 1))
    iface = {**odd.__cuda_array_interface__, "strides": (16, 2)}
    with pytest.raises(ValueError, match="not a multiple of its item size"):
        CudaArray.from_array(types.SimpleNamespace(__cuda_array_interface__=iface))


# ---------------------------------------------------------------------------------------------
# The fused pass and its argument checks.


@pytest.mark.parametrize("seg_dtype", ["uint8", "int16", "int32", "int64"])
@pytest.mark.parametrize("order", [0, 1, 3])
def test_spatial_transform_reaches_the_cuda_executor(gpu_visible, spy, seg_dtype, order):
    calls = spy("resample_cuda")
    affine = np.stack([F.transform_matrix((6, 7, 8), (4, 5, 6), rotation=0.1)[0]] * 2)
    prog = F.intensity.program_ops("gamma", 2, gamma=[0.8, 1.2])
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.spatial_transform(
            batch(), batch(seg_dtype), affine=affine, patch_size=(4, 5, 6), order_data=order, program=prog
        )
    args = calls[0]
    assert args[1] == "float32" and args[5] == seg_dtype and args[10] == [4, 5, 6]


def test_spatial_transform_with_negative_strides_passes_them_on(gpu_visible, spy):
    calls = spy("resample_cuda")
    x = FakeCudaArray((1, 1, 6, 7, 8), "float32", strides=(336, 336, 56, 8, -1))  # x[..., ::-1]
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.spatial_transform(x, None, affine=np.eye(3, 4)[None], patch_size=(6, 7, 8))
    assert calls[0][3] == [336, 336, 56, 8, -1]


def test_data_and_seg_on_different_devices_are_refused(gpu_visible):
    affine = np.stack([np.eye(3, 4)] * 2)
    with pytest.raises(ValueError, match=r"data on cuda:0, seg on cuda:1.*share a device"):
        F.spatial_transform(batch(), batch("int16", device=1), affine=affine, patch_size=(6, 7, 8))


def test_data_on_the_gpu_and_seg_on_the_host_are_refused(gpu_visible):
    affine = np.stack([np.eye(3, 4)] * 2)
    seg = np.zeros((2, 1, 6, 7, 8), np.int16)
    with pytest.raises(ValueError, match="data is a CUDA array but seg is a host array"):
        F.spatial_transform(batch(), seg, affine=affine, patch_size=(6, 7, 8))


def test_percentile_clip_reaches_the_cuda_executor(gpu_visible, spy):
    # PercentileClip runs on the GPU: its NaN check is the first CUDA call (the fake pointer fails there)
    nan_checks = spy("any_nan_cuda")
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.percentile_clip(batch(), 1.0, 99.0)
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        da.Compose([da.SpatialTransform((4, 5, 6)), da.PercentileClip()], seed=0)(data=batch())
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        da.PercentileClip()(data=batch("float64"))
    assert [c[1] for c in nan_checks] == ["float32", "float32", "float64"]
    assert nan_checks[0][2] == [2, 1, 6, 7, 8]


def test_too_many_intensity_ops_are_refused_before_any_cuda_call(gpu_visible):
    ops = [da.BrightnessAdditive() for _ in range(17)]
    with pytest.raises(ValueError, match="at most 16 intensity operations"):
        da.Compose(ops, seed=0)(data=batch())


def test_blur_and_program_reach_the_cuda_executor(gpu_visible, spy):
    blur, prog = spy("gaussian_blur_cuda"), spy("apply_program_cuda")
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.gaussian_blur(batch("float64"), 1.0)
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.contrast(batch(), 1.3)
    assert blur[0][1] == "float64" and prog[0][1] == "float32"


# ---------------------------------------------------------------------------------------------
# Review finding 4: transforms on CUDA arrays take the CUDA path (not a host copy, not a crash).


@pytest.mark.parametrize(
    "transform",
    [
        da.GaussianNoise(),
        da.BrightnessMultiplicative(),
        da.Gamma(),
        da.ZScoreNormalize(),
        da.Compose([da.Gamma(), da.GaussianNoise()], seed=0),  # no spatial head: fused program alone
        da.SimulateLowResolution(p=1.0),
        da.GaussianBlur(p=1.0),
        da.RandomApply(da.GaussianNoise(), p=1.0),
        da.OneOf([da.Contrast(), da.Gamma()]),
    ],
    ids=lambda t: type(t).__name__,
)
def test_transforms_route_cuda_arrays_to_the_cuda_executor(gpu_visible, transform):
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        transform(data=batch(), seg=batch("int16"))


def test_random_apply_and_one_of_split_cupy_batches_without_host_index_arrays(gpu_visible):
    data, seg = batch(shape=(5, 1, 6, 7, 8)), batch("uint8", shape=(5, 1, 6, 7, 8))
    for t in (da.RandomApply(da.GaussianNoise(), p=0.0), da.OneOf([da.Mirror(p_per_axis=0.0)])):
        out = t(rng=0, data=data, seg=seg)
        assert isinstance(out["data"], FakeCudaArray) and out["data"].shape == (5, 1, 6, 7, 8)
        assert isinstance(out["seg"], FakeCudaArray) and out["seg"].dtype == np.uint8
    assert Fake.index_arrays == []  # slices only: no index array copied to the device


@pytest.mark.parametrize(
    "crop",
    [da.CenterCrop((4, 4, 4)), da.RandomCrop((4, 4, 4)), da.ForegroundCrop((4, 4, 4), p_foreground=0.0)],
    ids=lambda t: type(t).__name__,
)
def test_crops_of_cuda_arrays_reach_the_cuda_executor(gpu_visible, spy, crop):
    calls = spy("crop_cuda")
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        crop(rng=0, data=batch(), seg=batch("int16"))
    (args,) = calls  # data first: the call fails there
    assert args[2] == "float32" and args[3] == [2, 1, 6, 7, 8] and args[5] == [2, 1, 4, 4, 4]
    assert args[6].shape == (2, 3) and args[6].dtype == np.int64  # per-sample starts


@pytest.mark.parametrize(
    "crop", [da.CenterCrop((4, 4, 4)), da.RandomCrop((4, 4, 4)), da.ForegroundCrop((4, 4, 4))]
)
def test_crops_of_mixed_host_and_cuda_arrays_are_refused(gpu_visible, crop):
    with pytest.raises(ValueError, match="seg is a CUDA array but data is a host array"):
        crop(data=np.zeros((2, 1, 6, 7, 8), np.float32), seg=batch("int16"))
    with pytest.raises(ValueError, match=r"data on cuda:0, seg on cuda:1.*share a device"):
        crop(data=batch(), seg=batch("int16", device=1))


def test_crop_passes_starts_and_the_pad_value_in_the_dtype(gpu_visible, spy):
    calls = spy("crop_cuda")
    x = FakeCudaArray((2, 1, 6, 7, 8), "int16", strides=(336, 336, 56, 8, -1))  # x[..., ::-1]
    with pytest.raises(RuntimeError, match=NO_DEVICE):
        F.crop(x, [[0, 3, 7], [5, 6, 9]], (4, 5, 6), pad_value=-3)
    args = calls[0]
    assert args[4] == [336, 336, 56, 8, -1]  # strides passed on: read in place
    np.testing.assert_array_equal(args[6], [[-2, 1, 4], [3, 4, 6]])  # center - size // 2
    assert np.int16(-3).tobytes() == args[7].to_bytes(8, "little")[:2]
    with pytest.raises(TypeError, match="x has dtype bool"):
        F.crop(batch("bool"), np.zeros((2, 3), int), (4, 4, 4))
    with pytest.raises(ValueError, match=r"center has shape \(3, 3\)"):
        F.crop(batch(), np.zeros((3, 3), int), (4, 4, 4))
