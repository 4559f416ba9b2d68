"""PercentileClip, the crops and TensorFlow/JAX arrays through DLPack on the CUDA executor (needs a GPU).

PercentileClip and the crops involve no floating-point arithmetic that the compilers could contract
differently (order statistics, one interpolation written without contraction, copies), so the GPU
must give the CPU engine's result exactly. JAX GPU arrays go in and out through DLPack; where the
transform includes resampling, the tolerance of test_engine_cuda.py applies.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import delira.augment as da
from delira.augment import _extension
from delira.augment import functional as F

pytestmark = pytest.mark.cuda

FRAMEWORKS = ["torch", "cupy"]


def to_gpu(framework: str, a: np.ndarray):
    if framework == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(np.ascontiguousarray(a)).cuda()
    if framework == "cupy":
        return pytest.importorskip("cupy").asarray(a)
    jax = pytest.importorskip("jax")
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("jax has no GPU backend here")
    return jax.device_put(a, gpu)


def host(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy.asnumpy(x)
    return np.asarray(x)


def _values(rng, shape, dtype="float32") -> np.ndarray:
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    flat = x.reshape(-1)
    flat[: flat.size // 3] = np.round(flat[: flat.size // 3])  # many ties
    flat[::97] = -0.0
    flat[5], flat[17] = np.inf, -np.inf
    return x


# ---------------------------------------------------------------------------------------------
# PercentileClip


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pcts", [(0.5, 99.5), (0.0, 100.0), (25.0, 50.0), (13.37, 13.37)])
def test_percentile_clip_equals_the_cpu_exactly(framework, dtype, pcts):
    # 2 x 2 channels of 90 000 voxels: several blocks per channel in every selection pass
    x = _values(np.random.default_rng(0), (2, 2, 40, 45, 50), dtype)
    cpu = F.percentile_clip(x, *pcts)
    gpu = F.percentile_clip(to_gpu(framework, x), *pcts)
    np.testing.assert_array_equal(host(gpu), cpu)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_percentile_clip_transforms_equal_the_cpu_exactly(framework):
    rng = np.random.default_rng(1)
    data = _values(rng, (5, 3, 11, 12, 13))
    seg = rng.integers(0, 3, (5, 1, 11, 12, 13)).astype(np.int16)

    def make():  # an exact spatial head (integer crop, order 1 at integer coordinates) + exact ops
        return da.Compose(
            [
                da.SpatialTransform((9, 10, 11), rotation=0.0, scale=1.0, random_crop=True),
                da.BrightnessMultiplicative((0.5, 2.0)),
                da.PercentileClip(2.0, 97.0, p=0.6),
                da.Mirror(),
            ],
            seed=4,
        )

    cpu = make()(data=data, seg=seg)
    gpu = make()(data=to_gpu(framework, data), seg=to_gpu(framework, seg))
    np.testing.assert_array_equal(host(gpu["data"]), cpu["data"])
    np.testing.assert_array_equal(host(gpu["seg"]), cpu["seg"])
    alone_cpu = da.PercentileClip(10, 90, p=0.5, seed=3)(data=data)["data"]
    alone_gpu = da.PercentileClip(10, 90, p=0.5, seed=3)(data=to_gpu(framework, data))["data"]
    np.testing.assert_array_equal(host(alone_gpu), alone_cpu)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_percentile_clip_of_nan_data_is_the_cpus_value_error(framework):
    x = np.ones((1, 1, 4, 5, 6), np.float32)
    x[0, 0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        F.percentile_clip(x)
    with pytest.raises(ValueError, match="contains NaN"):
        F.percentile_clip(to_gpu(framework, x))
    with pytest.raises(ValueError, match="contains NaN"):
        da.Compose([da.SpatialTransform((3, 3, 3)), da.PercentileClip()], seed=0)(data=to_gpu(framework, x))


# ---------------------------------------------------------------------------------------------
# Crops


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("label_dtype", ["uint8", "int16", "int32", "int64"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: da.CenterCrop((6, 14, 5), pad_value=-2.5, pad_value_seg=7),  # padded along axis 1
        lambda: da.RandomCrop((6, 7, 5), seed=3),
        lambda: da.ForegroundCrop((6, 7, 5), p_foreground=0.7, seed=5),  # foreground from the GPU seg
    ],
    ids=["center", "random", "foreground"],
)
def test_crops_equal_the_cpu_exactly(framework, label_dtype, make):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((6, 2, 9, 10, 11)).astype(np.float32)
    seg = np.zeros((6, 1, 9, 10, 11), label_dtype)
    seg[:, :, 1:3, 2:4, 7:9] = 2
    seg[::2, :, 6, 8, 1] = 1
    cpu = make()(data=data, seg=seg)
    gpu = make()(data=to_gpu(framework, data), seg=to_gpu(framework, seg))
    assert type(gpu["data"]) is type(to_gpu(framework, data))
    np.testing.assert_array_equal(host(gpu["data"]), cpu["data"])
    np.testing.assert_array_equal(host(gpu["seg"]), cpu["seg"])
    assert host(gpu["seg"]).dtype == np.dtype(label_dtype)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_crop_of_strided_inputs_and_float64_equals_the_cpu(framework):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 9, 3, 8, 10))
    center = np.array([[2, 4, 5], [4, 0, 9]])
    dense = to_gpu(framework, base)
    view = dense.permute(0, 2, 1, 3, 4) if framework == "torch" else dense.transpose(0, 2, 1, 3, 4)
    view = view[:, :, ::2]
    view = view.flip(-1) if framework == "torch" else view[..., ::-1]
    expected = F.crop(
        np.ascontiguousarray(base.transpose(0, 2, 1, 3, 4)[:, :, ::2, :, ::-1]), center, (3, 5, 6), 1.5
    )
    np.testing.assert_array_equal(host(F.crop(view, center, (3, 5, 6), 1.5)), expected)


def test_foreground_crop_with_class_locations_on_the_gpu():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    data = rng.standard_normal((3, 1, 8, 9, 10)).astype(np.float32)
    locations = [{1: np.array([[1, 2, 3], [6, 7, 8]])}, {}, {2: np.array([[4, 4, 4]])}]
    cpu = da.ForegroundCrop((4, 4, 4), p_foreground=1.0, seed=1)(data=data, class_locations=locations)
    gpu = da.ForegroundCrop((4, 4, 4), p_foreground=1.0, seed=1)(
        data=torch.from_numpy(data).cuda(), class_locations=locations
    )
    np.testing.assert_array_equal(host(gpu["data"]), cpu["data"])


# ---------------------------------------------------------------------------------------------
# JAX GPU arrays through DLPack


EXACT = (
    da.CenterCrop,
    da.RandomCrop,
    da.ForegroundCrop,
    da.PercentileClip,
    da.Mirror,
    da.BrightnessMultiplicative,
)


@pytest.mark.parametrize(
    "transform",
    [
        da.CenterCrop((10, 15, 12)),
        da.RandomCrop((9, 10, 11)),
        da.ForegroundCrop((9, 10, 11), p_foreground=0.5),
        da.PercentileClip(1, 99),
        da.BrightnessMultiplicative(),
        da.Mirror(),
        da.GaussianBlur(p=1.0),
        da.SimulateLowResolution(p=1.0),
        da.Compose([da.SpatialTransform((8, 9, 10)), da.Gamma(), da.GaussianNoise(), da.Mirror()]),
        da.Compose([da.ZScoreNormalize(), da.Contrast()]),
        da.RandomApply(da.GaussianNoise(), p=0.5),
        da.OneOf([da.Gamma(), da.Mirror()]),
    ],
    ids=lambda t: type(t).__name__,
)
def test_jax_gpu_arrays_run_every_transform_and_come_back_as_jax_gpu_arrays(transform):
    rng = np.random.default_rng(5)
    data = rng.standard_normal((4, 1, 12, 13, 14)).astype(np.float32)
    seg = rng.integers(0, 3, (4, 1, 12, 13, 14)).astype(np.uint8)
    expected = transform(rng=11, data=data, seg=seg)
    out = transform(rng=11, data=to_gpu("jax", data), seg=to_gpu("jax", seg))
    for key in ("data", "seg"):
        arr = out[key]
        assert type(arr).__module__.startswith(("jax", "jaxlib")), type(arr)
        assert next(iter(arr.devices())).platform == "gpu"
        assert arr.dtype == expected[key].dtype and arr.shape == expected[key].shape
    if isinstance(transform, EXACT):
        np.testing.assert_array_equal(np.asarray(out["data"]), expected["data"])
    else:  # resampling, blur, statistics: the tolerances of test_engine_cuda.py
        diff = np.abs(np.asarray(out["data"], np.float64) - expected["data"])
        assert np.quantile(diff, 0.999) <= 5e-5 and diff.max() <= 1e-3, diff.max()
    mismatch = (np.asarray(out["seg"]) != expected["seg"]).mean()
    assert mismatch <= (1e-3 if isinstance(transform, da.Compose) else 0.0), mismatch  # nearest ties


class _Recorder:
    """Passes a jax array's DLPack export through, recording the arguments delira asks with."""

    __module__ = "jax"

    def __init__(self, x) -> None:
        self.x, self.calls = x, []
        self.shape, self.dtype = x.shape, x.dtype

    def __dlpack_device__(self):
        return self.x.__dlpack_device__()

    def __dlpack__(self, **kwargs):
        self.calls.append(kwargs)
        return self.x.__dlpack__(**kwargs)


def test_jax_inputs_are_asked_for_versioned_capsules_on_delira_stream_and_outputs_go_back_to_jax():
    jax = pytest.importorskip("jax")
    x = to_gpu("jax", np.arange(2 * 1 * 4 * 5 * 6, dtype=np.float32).reshape(2, 1, 4, 5, 6))
    from delira.augment import _arrays

    rec = _Recorder(x)
    a = _arrays.CudaArray.from_array(rec, "x")
    assert rec.calls[0] == {"max_version": (1, 0), "stream": _extension._C.interop_stream(0)}
    # jax takes max_version (0.11 still answers with an unversioned capsule, which the protocol allows),
    # or an older jax refuses it and is asked again without it
    assert len(rec.calls) == 1 or rec.calls[1] == {"stream": _extension._C.interop_stream(0)}
    assert a.owner.device_type == 2 and a.shape == x.shape and a.strides == (120, 120, 30, 6, 1)
    out = F.flip(x, (2, 4))
    assert isinstance(out, jax.Array)
    np.testing.assert_array_equal(np.asarray(out), np.flip(np.asarray(x), (2, 4)))
    del out, a
    gc.collect()


def test_cuda_buffers_export_to_torch_and_jax_and_free_their_memory():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    C = _extension._C
    stream = C.interop_stream(0)
    for _ in range(3):  # freed memory returns to delira's pool
        buf = C.CudaBuffer(0, "int16", [3, 4], stream)
        src = torch.arange(12, dtype=torch.int16, device="cuda").reshape(3, 4)
        torch.cuda.synchronize()
        C.flip_cuda(src.data_ptr(), buf.ptr, "int16", [3, 4], [4, 1], [1], stream)
        C.stream_synchronize(stream, 0)
        t = torch.from_dlpack(buf)  # versioned capsule, torch's stream
        assert buf.exported and t.data_ptr() == buf.ptr
        np.testing.assert_array_equal(t.cpu().numpy(), np.arange(12).reshape(3, 4)[:, ::-1])
        j = jax.dlpack.from_dlpack(buf)
        np.testing.assert_array_equal(np.asarray(j), np.arange(12).reshape(3, 4)[:, ::-1])
        del buf, t, j
        gc.collect()
    with pytest.raises(BufferError, match="copy=True"):
        C.CudaBuffer(0, "float32", [2], stream).__dlpack__(copy=True)
