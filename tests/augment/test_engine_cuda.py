"""The CUDA executor against the CPU engine, numpy and cupyx.scipy.ndimage (run where an NVIDIA GPU exists).

The first test runs everywhere (backend resolution); tests/augment/test_cuda_host_routing.py checks
the host side of the CUDA path without a GPU.

Tolerances against the CPU engine: both executors compute every coordinate and the elastic field in
the same order (csrc/core/geometry.h), so they differ only where the compilers contract a multiply and
an add into an FMA differently: about one ulp of the coordinate (1e-5 voxels at |x| ~ 30), times the
gradient of white noise (up to ~8 per voxel) and the z-score's 1/std (~2). The CPU engine's own builds
without and with FMA (DELIRA_AUGMENT_ISA=base vs avx512) differ by exactly that on the case of
``test_fused_pass_matches_the_cpu_engine``: at most 1.3e-5 (order 1) and 2.3e-5 (order 3), 99.9 % of
the voxels within 8.8e-6 and 1.1e-5. Hence ``assert_close_to_cpu``: 99.9 % of the voxels within 3e-5
(5e-5 with the cubic prefilter, in float on the GPU and in double on the CPU) and all within 5e-4.
Nearest-neighbour sampling (order 0 and labels) may flip at coordinates that close to a tie: at most
0.1 % of the voxels.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import delira.augment as da
from delira.augment import _engine
from delira.augment import functional as F
from delira.augment.functional import elastic as E


def test_backend_and_device_must_agree():
    with pytest.raises(ValueError, match="backend='cpu' got CUDA arrays"):
        _engine.resolve("cpu", cuda_input=True)
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA arrays"):
        _engine.resolve("cuda", cuda_input=False)
    assert _engine.resolve("auto", cuda_input=True) == "cuda"


def host(x) -> np.ndarray:
    """A CUDA result (torch or cupy) on the host."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    import cupy

    return cupy.asnumpy(x)


def assert_close_to_cpu(gpu, cpu: np.ndarray, typical: float = 3e-5, worst: float = 5e-4) -> None:
    diff = np.abs(host(gpu).astype(np.float64) - np.asarray(cpu, np.float64))
    assert np.quantile(diff, 0.999) <= typical, f"99.9 % quantile of |diff| is {np.quantile(diff, 0.999):.2e}"
    assert diff.max() <= worst, f"max |diff| is {diff.max():.2e}"


def assert_labels_close(gpu, cpu: np.ndarray, fraction: float = 1e-3) -> None:
    mismatch = (host(gpu) != cpu).mean()
    assert mismatch <= fraction, f"{mismatch:.2e} of the labels differ"


def _case(rng, n=3, shape=(20, 22, 24), patch=(16, 18, 20)):
    data = rng.standard_normal((n, 2, *shape)).astype(np.float32)
    seg = rng.integers(0, 4, (n, 1, *shape)).astype(np.int16)
    a, lin = zip(
        *[
            F.transform_matrix(
                shape,
                patch,
                rotation=rng.uniform(-0.5, 0.5, 3),
                scale=rng.uniform(0.8, 1.2),
                mirror=rng.random(3) < 0.5,
            )
            for _ in range(n)
        ]
    )
    field = E.random_field(rng, patch, np.full(n, 2.0), np.full(n, 7.0))
    return data, seg, np.stack(a), np.stack(lin), field, patch


@pytest.mark.cuda
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("order_seg", [0, 1])
def test_fused_pass_matches_the_cpu_engine(order, order_seg):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(order * 2 + order_seg)
    data, seg, affine, linear, field, patch = _case(rng)
    prog = F.intensity.program_ops("multiply", 3, factor=1.2)
    prog.extend(F.intensity.program_ops("gamma", 3, gamma=[0.7, 1.0, 1.4]))
    prog.extend(F.intensity.program_ops("zscore", 3))
    kw = dict(
        affine=affine,
        linear=linear,
        elastic=field,
        patch_size=patch,
        order_data=order,
        order_seg=order_seg,
        program=prog,
    )
    cpu_d, cpu_s = F.spatial_transform(data, seg, **kw)
    gpu_d, gpu_s = F.spatial_transform(torch.from_numpy(data).cuda(), torch.from_numpy(seg).cuda(), **kw)
    assert gpu_d.is_cuda and gpu_s.dtype == torch.int16
    if order == 0:  # nearest: a voxel at a tie may take the neighbour
        assert (np.abs(host(gpu_d) - cpu_d) > 1e-5).mean() <= 1e-3
    else:  # order 3: the GPU prefilters in float in place, the CPU a double copy of each line
        assert_close_to_cpu(gpu_d, cpu_d, typical=3e-5 if order == 1 else 5e-5)
    assert_labels_close(gpu_s, cpu_s)


@pytest.mark.cuda
def test_mirroring_and_labels_are_identical_to_the_cpu():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    data = rng.standard_normal((2, 1, 16, 17, 18)).astype(np.float32)
    seg = rng.integers(0, 3, (2, 1, 16, 17, 18)).astype(np.uint8)
    flags = np.array([[True, False, True], [False, True, False]])
    affine = np.stack([F.transform_matrix(data.shape[2:], data.shape[2:], mirror=f)[0] for f in flags])
    d, s = F.spatial_transform(
        torch.from_numpy(data).cuda(), torch.from_numpy(seg).cuda(), affine=affine, patch_size=data.shape[2:]
    )
    for i in range(2):
        axes = [a + 1 for a in np.flatnonzero(flags[i])]
        np.testing.assert_array_equal(d[i].cpu().numpy(), np.flip(data[i], axes))
        np.testing.assert_array_equal(s[i].cpu().numpy(), np.flip(seg[i], axes))


@pytest.mark.cuda
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "mirror"])
def test_affine_resample_matches_cupyx(order, mode):
    cupy = pytest.importorskip("cupy")
    ndi = pytest.importorskip("cupyx.scipy.ndimage")
    rng = np.random.default_rng(2)
    x = cupy.asarray(rng.standard_normal((14, 15, 16)).astype(np.float32))
    m = np.eye(4)
    m[:3, :3] += rng.normal(0, 0.2, (3, 3))
    m[:3, 3] = rng.normal(0, 1.5, 3)
    ref = ndi.affine_transform(
        x.astype(cupy.float64), cupy.asarray(m), output_shape=(12, 13, 14), order=order, mode=mode
    )
    out = F.affine_resample(x, m, (12, 13, 14), order=order, mode=mode)
    assert isinstance(out, cupy.ndarray)
    diff = cupy.abs(out - ref)
    if order == 0:
        assert float((diff > 1e-5).mean()) < 0.01  # ties
    else:
        assert float(diff.max()) <= 1e-4


@pytest.mark.cuda
def test_compose_on_torch_cuda_equals_cpu_with_the_same_seed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4, 1, 24, 24, 24)).astype(np.float32)
    seg = rng.integers(0, 3, (4, 1, 24, 24, 24)).astype(np.int16)

    def make():
        return da.Compose(
            [
                da.SpatialTransform((16, 16, 16), elastic_alpha=(0, 900), elastic_sigma=(9, 13)),
                da.GaussianNoise((0, 0.1)),
                da.BrightnessMultiplicative(),
                da.Gamma(),
                da.Mirror(),
            ],
            seed=9,
        )

    cpu = make()(data=data, seg=seg)
    gpu = make()(data=torch.from_numpy(data).cuda(), seg=torch.from_numpy(seg).cuda())
    # noise comes from the same counter-based generator: results agree to float precision
    assert_close_to_cpu(gpu["data"], cpu["data"])
    assert_labels_close(gpu["seg"], cpu["seg"])


@pytest.mark.cuda
def test_intensity_and_blur_match_the_cpu():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).standard_normal((3, 2, 12, 13, 14)).astype(np.float32)
    xt = torch.from_numpy(x).cuda()
    for fn in (
        lambda a: F.gamma(a, [0.7, 1.0, 1.5]),
        lambda a: F.contrast(a, 1.3),
        lambda a: F.zscore_normalize(a),
        lambda a: F.gaussian_noise(a, 0.3, seed=1),
        lambda a: F.gaussian_blur(a, [1.0, 0.5, 2.0]),
    ):
        assert np.abs(fn(xt).cpu().numpy() - fn(x)).max() < 1e-4


@pytest.mark.cuda
def test_runs_on_the_callers_stream_without_blocking():
    torch = pytest.importorskip("torch")
    x = torch.randn(8, 1, 64, 64, 64, device="cuda")
    affine = np.stack([F.transform_matrix((64,) * 3, (48,) * 3, rotation=0.2)[0]] * 8)
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()  # x is complete before the side stream reads it
    with torch.cuda.stream(stream):
        out, _ = F.spatial_transform(x, None, affine=affine, patch_size=(48, 48, 48))
    stream.synchronize()
    ref, _ = F.spatial_transform(x.cpu().numpy(), None, affine=affine, patch_size=(48, 48, 48))
    assert_close_to_cpu(out, ref)


# ---------------------------------------------------------------------------------------------
# Review finding 4: every transform on CUDA arrays runs on the GPU and equals the CPU run.


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch", "cupy"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: da.GaussianNoise(seed=3),
        lambda: da.BrightnessMultiplicative(seed=3),
        lambda: da.Gamma(seed=3),
        lambda: da.ZScoreNormalize(seed=3),
        lambda: da.Contrast(seed=3),
        lambda: da.GaussianBlur(p=0.7, seed=3),
        lambda: da.Compose(
            [da.Gamma(), da.GaussianNoise(), da.BrightnessAdditive()], seed=3
        ),  # no spatial head
        lambda: da.RandomApply(da.GaussianNoise(), p=0.5, seed=3),
        lambda: da.OneOf([da.Contrast(), da.Gamma(), da.Mirror()], seed=3),
        lambda: da.Mirror(seed=3),
    ],
    ids=[
        "noise",
        "multiply",
        "gamma",
        "zscore",
        "contrast",
        "blur",
        "compose",
        "random_apply",
        "one_of",
        "mirror",
    ],
)
def test_transforms_on_cuda_arrays_equal_the_cpu(framework, make):
    xp = pytest.importorskip(framework)
    rng = np.random.default_rng(5)
    data = rng.standard_normal((6, 1, 10, 11, 12)).astype(np.float32)
    seg = rng.integers(0, 3, (6, 1, 10, 11, 12)).astype(np.uint8)
    to_gpu = (lambda a: xp.from_numpy(a).cuda()) if framework == "torch" else xp.asarray
    cpu = make()(data=data, seg=seg)
    gpu = make()(data=to_gpu(data), seg=to_gpu(seg))
    assert type(gpu["data"]) is type(to_gpu(data))  # stays on the GPU, in the input's framework
    assert_close_to_cpu(gpu["data"], cpu["data"])
    np.testing.assert_array_equal(host(gpu["seg"]), cpu["seg"])


@pytest.mark.cuda
def test_simulate_low_resolution_on_cuda_equals_the_cpu():
    torch = pytest.importorskip("torch")
    data = np.random.default_rng(6).standard_normal((4, 2, 12, 14, 16)).astype(np.float32)
    cpu = da.SimulateLowResolution(p=0.7, seed=2)(data=data)["data"]
    gpu = da.SimulateLowResolution(p=0.7, seed=2)(data=torch.from_numpy(data).cuda())["data"]
    assert gpu.is_cuda and gpu.shape == data.shape
    assert_close_to_cpu(
        gpu, cpu, typical=5e-5
    )  # cubic upsampling: see test_fused_pass_matches_the_cpu_engine


# ---------------------------------------------------------------------------------------------
# Inputs: requires_grad, label dtypes, strides, devices, float64.


@pytest.mark.cuda
def test_requires_grad_inputs_are_read_detached_as_on_the_cpu():
    torch = pytest.importorskip("torch")
    x = torch.randn(2, 1, 10, 11, 12, device="cuda", requires_grad=True)
    affine = np.stack([F.transform_matrix((10, 11, 12), (8, 8, 8), rotation=0.3)[0]] * 2)
    outs = [
        F.spatial_transform(x, None, affine=affine, patch_size=(8, 8, 8))[0],
        F.gamma(x, 1.3),
        F.flip(x, (2,)),
        da.Mirror(p_per_axis=0.5, seed=0)(data=x)["data"],
        da.RandomApply(da.GaussianNoise(), p=0.5, seed=0)(data=x)["data"],
    ]
    for out in outs:
        assert not out.requires_grad and out.grad_fn is None
    ref = F.spatial_transform(x.detach().cpu().numpy(), None, affine=affine, patch_size=(8, 8, 8))[0]
    assert_close_to_cpu(outs[0], ref)
    assert x.grad is None


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "int64"])
def test_labels_of_every_dtype_are_copied_exactly(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    top = 2**40 if dtype == "int64" else np.iinfo(dtype).max  # int64: labels beyond float32's 2**24
    seg = rng.integers(0, top, (2, 1, 12, 13, 14), dtype=np.int64).astype(dtype)
    # integer translations and mirroring: every coordinate is exact, the result is a slice of the input
    flags = np.array([[True, False, False], [False, True, True]])
    affine = np.stack([F.transform_matrix((12, 13, 14), (8, 9, 10), mirror=f)[0] for f in flags])
    out = F.spatial_transform(None, torch.from_numpy(seg).cuda(), affine=affine, patch_size=(8, 9, 10))[1]
    assert str(out.dtype) == f"torch.{dtype}"
    for i in range(2):
        start = np.array([12, 13, 14]) // 2 - np.array([8, 9, 10]) // 2
        ref = seg[i, :, start[0] : start[0] + 8, start[1] : start[1] + 9, start[2] : start[2] + 10]
        np.testing.assert_array_equal(
            out[i].cpu().numpy(), np.flip(ref, [a + 1 for a in np.flatnonzero(flags[i])])
        )
    # with rotations: the same labels as the CPU (ties aside), order 0 and 1
    rot = np.stack([F.transform_matrix((12, 13, 14), (8, 9, 10), rotation=0.4)[0]] * 2)
    for order_seg in (0, 1):
        kw = dict(affine=rot, patch_size=(8, 9, 10), order_seg=order_seg)
        gpu = F.spatial_transform(None, torch.from_numpy(seg).cuda(), **kw)[1]
        assert_labels_close(gpu, F.spatial_transform(None, seg, **kw)[1], fraction=5e-3)


@pytest.mark.cuda
def test_non_contiguous_and_negative_stride_inputs_equal_their_contiguous_copies():
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 1, 10, 11, 12)).astype(np.float32)
    affine = np.stack([F.transform_matrix((12, 11, 10), (8, 8, 8), rotation=0.2)[0]] * 2)
    views = [
        (cupy.asarray(x)[..., ::-1].transpose(0, 1, 4, 3, 2), x[..., ::-1].transpose(0, 1, 4, 3, 2)),
        (torch.from_numpy(x).cuda().permute(0, 1, 4, 3, 2), x.transpose(0, 1, 4, 3, 2)),
    ]
    for gpu_view, cpu_view in views:
        for order in (0, 1, 3):
            kw = dict(affine=affine, patch_size=(8, 8, 8), order_data=order)
            gpu = F.spatial_transform(gpu_view, None, **kw)[0]
            cpu = F.spatial_transform(np.ascontiguousarray(cpu_view), None, **kw)[0]
            if order:
                assert_close_to_cpu(gpu, cpu, typical=3e-5 if order == 1 else 5e-5)
            else:
                assert (np.abs(host(gpu) - cpu) > 1e-5).mean() <= 1e-3


@pytest.mark.cuda
def test_float64_data_is_computed_in_double():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    # values that float32 cannot hold: rounding anywhere on the GPU would show
    x = 1.0 + rng.integers(0, 1000, (2, 1, 8, 9, 10)) * 1e-12 + rng.standard_normal((2, 1, 8, 9, 10)) * 1e-9
    xt = torch.from_numpy(x).cuda()
    identity = np.stack([np.eye(3, 4)] * 2)
    copy, _ = F.spatial_transform(xt, None, affine=identity, patch_size=(8, 9, 10), order_data=0)
    np.testing.assert_array_equal(copy.cpu().numpy(), x)
    np.testing.assert_array_equal(F.brightness_multiplicative(xt, 1.0).cpu().numpy(), x)
    np.testing.assert_array_equal(F.gaussian_blur(xt, 0.0).cpu().numpy(), x)
    z = F.zscore_normalize(xt, eps=1e-15).cpu().numpy()  # statistics in double (numpy's population std)
    flat = x.reshape(2, 1, -1)
    ref = (flat - flat.mean(-1, keepdims=True)) / flat.std(-1, keepdims=True)
    # float32 statistics would be off by ~6e-8 / 1e-9 = 60 standard deviations
    np.testing.assert_allclose(z.reshape(2, 1, -1), ref, rtol=0, atol=1e-4)


# Not marked `cuda`: scripts/gpu_check.sh runs on one GPU and counts every skipped cuda test as a failure.
def test_inputs_on_another_device_run_there():
    torch = pytest.importorskip("torch")
    if not da.build_info()["cuda_compiled"] or torch.cuda.device_count() < 2:
        pytest.skip("needs delira-augment built with CUDA and two GPUs")
    x = np.random.default_rng(10).standard_normal((2, 1, 10, 11, 12)).astype(np.float32)
    affine = np.stack([F.transform_matrix((10, 11, 12), (8, 8, 8), rotation=0.2)[0]] * 2)
    with torch.cuda.device(0):
        out, _ = F.spatial_transform(
            torch.from_numpy(x).to("cuda:1"), None, affine=affine, patch_size=(8, 8, 8)
        )
    assert out.device == torch.device("cuda:1")
    assert_close_to_cpu(out, F.spatial_transform(x, None, affine=affine, patch_size=(8, 8, 8))[0])
    seg = torch.zeros((2, 1, 10, 11, 12), dtype=torch.int16, device="cuda:0")
    with pytest.raises(ValueError, match="share a device"):
        F.spatial_transform(torch.from_numpy(x).to("cuda:1"), seg, affine=affine, patch_size=(8, 8, 8))


@pytest.mark.cuda
def test_offsets_beyond_2_31_elements():
    torch = pytest.importorskip("torch")
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs a GPU with 40 GiB")
    side = 1300  # 1300^3 = 2.2e9 voxels > 2**31
    x = torch.zeros((1, 1, side, side, side), dtype=torch.float32, device="cuda")
    corner = torch.arange(64, dtype=torch.float32, device="cuda").reshape(4, 4, 4) + 1
    x[0, 0, -4:, -4:, -4:] = corner
    affine = np.concatenate([np.eye(3), np.full((3, 1), side - 4.0)], axis=1)[None]
    out, _ = F.spatial_transform(x, None, affine=affine, patch_size=(4, 4, 4))
    assert torch.equal(out[0, 0], corner)  # input offsets beyond 2**31
    flipped = F.flip(x, (4,))
    assert torch.equal(flipped[0, 0, -4:, -4:, :4], corner.flip(-1))  # input and output offsets
    del flipped, x
    # output offsets beyond 2**31 in the fused pass: 2 x 1030^3 voxels, each sample one constant
    small = torch.arange(2 * 8**3, dtype=torch.float32, device="cuda").reshape(2, 1, 8, 8, 8)
    pinned = np.zeros((2, 3, 4))
    pinned[:, :, 3] = 5.0  # every output voxel samples input voxel (5, 5, 5)
    big, _ = F.spatial_transform(small, None, affine=pinned, patch_size=(1030, 1030, 1030), order_data=0)
    for i in range(2):
        assert float(big[i].amin()) == float(big[i].amax()) == float(small[i, 0, 5, 5, 5])


# ---------------------------------------------------------------------------------------------
# Streams, synchronisation, threads, random numbers.


@pytest.mark.cuda
def test_every_call_is_ordered_on_the_callers_stream():
    torch = pytest.importorskip("torch")
    x = torch.ones((2, 1, 16, 16, 16), device="cuda")
    affine = np.stack([np.eye(3, 4)] * 2)
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # the write below lands well after the calls are issued
        x.fill_(2.0)
        outs = [
            F.spatial_transform(x, None, affine=affine, patch_size=(16, 16, 16))[0],
            F.brightness_multiplicative(x, 1.0),
            F.gaussian_blur(x, 1.0),
            F.flip(x, (3,)),
        ]
    stream.synchronize()
    for out in outs:  # issued on another stream, they would have read the ones
        assert float((out - 2.0).abs().amax()) < 1e-5


@pytest.mark.cuda
def test_cupy_calls_run_on_cupys_current_stream():
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    y = cupy.ones((2, 1, 8, 8, 8), dtype=cupy.float32)
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)
        torch.as_tensor(y, device="cuda").fill_(3.0)  # the same memory, through __cuda_array_interface__
    with cupy.cuda.ExternalStream(stream.cuda_stream):
        out = F.flip(y, (2,))
        res, _ = F.spatial_transform(y, None, affine=np.stack([np.eye(3, 4)] * 2), patch_size=(8, 8, 8))
    stream.synchronize()
    assert float(out.min()) == float(res.min()) == 3.0


@pytest.mark.cuda
def test_calls_do_not_synchronise_the_host():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 1, 24, 24, 24, device="cuda")
    seg = torch.randint(0, 3, (4, 1, 24, 24, 24), dtype=torch.int16, device="cuda")
    torch.cuda.synchronize()  # the inputs are complete before the side stream reads them
    pipe = da.Compose(
        [
            da.SpatialTransform((16, 16, 16), elastic_magnitude=(0, 2), order_data=3),
            da.Gamma(),
            da.ZScoreNormalize(),
        ],
        seed=0,
    )
    calls = [
        lambda: pipe(data=x, seg=seg),
        lambda: F.gaussian_blur(x, 1.0),
        lambda: F.contrast(x, 1.2),
        lambda: F.flip(x, (2,)),
    ]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for call in calls:  # warm-up: memory pool and staging buffers are created once
            call()
        stream.synchronize()
        for call in calls:
            torch.cuda._sleep(1_000_000_000)  # ~0.5 s of GPU work queued ahead of the call
            call()
            assert not stream.query(), "the call waited for the stream: a hidden synchronisation"
            stream.synchronize()


@pytest.mark.cuda
def test_concurrent_calls_from_threads_and_streams_equal_sequential_ones():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    data = torch.from_numpy(rng.standard_normal((3, 1, 20, 20, 20)).astype(np.float32)).cuda()
    seg = torch.from_numpy(rng.integers(0, 3, (3, 1, 20, 20, 20)).astype(np.int16)).cuda()

    def run(seed):
        pipe = da.Compose(
            [da.SpatialTransform((16, 16, 16), elastic_magnitude=(0, 2)), da.GaussianNoise(), da.Gamma()],
            seed=seed,
        )
        return [pipe(data=data, seg=seg) for _ in range(4)]

    expected = {seed: run(seed) for seed in range(6)}
    torch.cuda.synchronize()
    shared = torch.cuda.Stream()
    results, errors = {}, []

    def worker(seed):
        try:
            stream = shared if seed % 2 else torch.cuda.Stream()  # half share one stream, half have their own
            with torch.cuda.stream(stream):
                results[seed] = run(seed)
            stream.synchronize()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for seed, outs in expected.items():
        for got, want in zip(results[seed], outs):
            assert torch.equal(got["data"], want["data"]) and torch.equal(got["seg"], want["seg"])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_noise_draws_are_the_cpus_for_the_same_seed(dtype):
    torch = pytest.importorskip("torch")
    zeros = np.zeros((3, 2, 9, 10, 11), dtype)
    gpu = F.gaussian_noise(torch.from_numpy(zeros).cuda(), 1.0, seed=42)
    cpu = F.gaussian_noise(zeros, 1.0, seed=42)
    assert np.abs(gpu.cpu().numpy() - cpu).max() <= 1e-5  # the same counter-RNG value at every voxel
    assert torch.equal(gpu, F.gaussian_noise(torch.from_numpy(zeros).cuda(), 1.0, seed=42))
    assert abs(float(gpu.std()) - 1.0) < 0.05
