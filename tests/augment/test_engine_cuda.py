"""The CUDA executor against the CPU engine and cupyx.scipy.ndimage (run where an NVIDIA GPU exists).

The first tests run everywhere: they check the errors for CUDA inputs that cannot run.
"""

from __future__ import annotations

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
    tol = 1e-5 if order < 3 else 1e-4
    assert np.abs(gpu_d.cpu().numpy() - cpu_d).max() <= tol
    assert (gpu_s.cpu().numpy() != cpu_s).mean() < 1e-3  # labels: only float32 ties may differ


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
    assert np.abs(gpu["data"].cpu().numpy() - cpu["data"]).max() < 1e-4
    np.testing.assert_array_equal(gpu["seg"].cpu().numpy(), cpu["seg"])


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
    with torch.cuda.stream(stream):
        out, _ = F.spatial_transform(x, None, affine=affine, patch_size=(48, 48, 48))
    stream.synchronize()
    ref, _ = F.spatial_transform(x.cpu().numpy(), None, affine=affine, patch_size=(48, 48, 48))
    assert np.abs(out.cpu().numpy() - ref).max() < 1e-5
