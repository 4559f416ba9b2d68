"""Noise and filter ops of the augmentation catalogue against scipy's distributions and batchgeneratorsv2.

Rician noise (a pointwise op of the intensity program, and batchgeneratorsv2's variant with the
minimum shift and retained statistics), sharpening, median filter, gaussian blur per channel, and
contrast with retained range / inverted gamma beside batchgeneratorsv2 with the same fixed parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats as st

import delira.augment as da
from delira.augment import _engine
from delira.augment import functional as F
from delira.augment.functional import intensity as FI

BACKENDS = ["cpu", "batchgenerators"]
P_MIN = 1e-3  # KS p-value below which two samples are called different (fixed seeds: not flaky)


def _bgv2(module: str):
    return pytest.importorskip(f"batchgeneratorsv2.transforms.{module}")


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    smooth = ndi.gaussian_filter(rng.standard_normal((2, 2, 12, 14, 16)), (0, 0, 1.5, 1.5, 1.5))
    return (smooth * 4 + rng.standard_normal(smooth.shape) * 0.2 + 1).astype(np.float32)


# --- Rician noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", [0.0, 1.0, 20.0])
def test_rician_noise_follows_scipy_rice(backend, level):
    sigma = 0.5
    x = np.full((2, 1, 32, 32, 32), level, np.float32)
    y = F.rician_noise(x, sigma, retain_stats=False, seed=1, backend=backend).ravel().astype(np.float64)
    assert st.kstest(y, st.rice(b=level / sigma, scale=sigma).cdf).pvalue > P_MIN
    tol = 4 * sigma / np.sqrt(y.size)  # a few standard errors
    np.testing.assert_allclose((y**2).mean(), level**2 + 2 * sigma**2, atol=tol * (2 * level + 2))
    if level == 0.0:  # Rayleigh(sigma)
        np.testing.assert_allclose(y.mean(), sigma * np.sqrt(np.pi / 2), atol=tol)
        np.testing.assert_allclose(y.std(), sigma * np.sqrt(2 - np.pi / 2), atol=tol)
    if level == 20.0:  # far from 0: nearly gaussian around sqrt(x^2 + sigma^2) with std sigma
        np.testing.assert_allclose(y.mean(), np.sqrt(level**2 + sigma**2), atol=tol)
        np.testing.assert_allclose(y.std(), sigma, rtol=0.02)


def test_rician_noise_cpu_engine_and_fallback_agree_in_distribution():
    x = np.full((2, 1, 32, 32, 32), 1.0, np.float32)
    x[:, :, :16] = 3.0
    a = F.rician_noise(x, 0.7, retain_stats=False, seed=5, backend="cpu")
    b = F.rician_noise(x, 0.7, retain_stats=False, seed=5, backend="batchgenerators")
    for part in (np.s_[:, :, :16], np.s_[:, :, 16:]):
        assert st.ks_2samp(a[part].ravel(), b[part].ravel()).pvalue > P_MIN


def test_rician_noise_seed_threads_and_zero_std(threads):
    x = np.full((3, 2, 10, 12, 14), 2.0, np.float32)
    a = F.rician_noise(x, [0.1, 0.5, 0.0], retain_stats=False, seed=3)
    np.testing.assert_array_equal(a[2], x[2])  # std 0: |x| = x
    da.set_num_threads(1)
    np.testing.assert_array_equal(F.rician_noise(x, [0.1, 0.5, 0.0], retain_stats=False, seed=3), a)
    assert not np.array_equal(F.rician_noise(x, 0.5, retain_stats=False, seed=4)[1], a[1])
    # The two normal values of a voxel are independent of its neighbours' (no shared Box-Muller pair).
    z = F.rician_noise(np.zeros((1, 1, 32, 32, 32), np.float32), 1.0, retain_stats=False, seed=0)[0, 0]
    corr = np.corrcoef(z[..., :-1].ravel(), z[..., 1:].ravel())[0, 1]
    assert abs(corr) < 0.02


@pytest.mark.parametrize("backend", BACKENDS)
def test_rician_noise_matches_batchgeneratorsv2_in_distribution(backend):
    torch = _torch()
    rician = _bgv2("noise.rician")
    sigma = 0.6
    x = np.zeros((2, 1, 32, 32, 32), np.float32)
    x[:, :, 16:] = 2.0
    x[1] -= 5.0  # bgv2 shifts by the minimum: a negative image gets the same noise
    torch.manual_seed(0)
    ref = np.stack(
        [
            rician.RicianNoiseTransform(noise_variance=(sigma, sigma))(image=torch.from_numpy(x[i].copy()))[
                "image"
            ].numpy()
            for i in range(2)
        ]
    )
    out = F.rician_noise(x, sigma, seed=2, backend=backend)
    for i in range(2):
        # Statistics retained: mean and std of every sample and channel are the input's.
        np.testing.assert_allclose(out[i].mean(), x[i].mean(), atol=1e-4)
        np.testing.assert_allclose(out[i].std(), x[i].std(), rtol=1e-4)
        for part in (np.s_[:, :16], np.s_[:, 16:]):
            assert st.ks_2samp(out[i][part].ravel(), ref[i][part].ravel()).pvalue > P_MIN


def test_rician_transform_draws_std_per_sample_and_respects_p():
    x = np.zeros((6, 1, 16, 16, 16), np.float32)
    out = da.RicianNoise(std=(0.2, 1.0), retain_stats=False, p=0.5, seed=0)(data=x)["data"]
    means = out.reshape(6, -1).mean(1)
    untouched = means == 0
    assert 0 < untouched.sum() < 6
    sigmas = means[~untouched] / np.sqrt(np.pi / 2)  # Rayleigh mean
    assert np.all((sigmas > 0.18) & (sigmas < 1.05)) and np.ptp(sigmas) > 0.02
    again = da.RicianNoise(std=(0.2, 1.0), retain_stats=False, p=0.5, seed=0)(data=x)["data"]
    np.testing.assert_array_equal(again, out)


@pytest.mark.parametrize("retain", [True, False])
def test_rician_noise_fuses_into_the_spatial_pass(retain, monkeypatch):
    rng = np.random.default_rng(3)
    data = (np.abs(rng.standard_normal((2, 1, 20, 20, 20))) + 1).astype(np.float32)
    spatial = da.SpatialTransform((16, 16, 16), rotation=(-20, 20), scale=(0.9, 1.1))
    # Without noise (std 0) the fused and the unfused pipelines give the same result.
    pipe = [spatial, da.BrightnessMultiplicative(), da.RicianNoise(std=0.0, retain_stats=retain), da.Gamma()]
    fused = da.Compose(pipe, seed=2)(data=data.copy())["data"]
    plain = da.Compose(pipe, seed=2, fuse=False)(data=data.copy())["data"]
    np.testing.assert_allclose(fused, plain, atol=2e-5)
    # With noise: one kernel pass (no separate program run) and the same distribution as unfused.
    calls = []
    run = _engine.run_program
    monkeypatch.setattr(_engine, "run_program", lambda *a, **k: calls.append(1) or run(*a, **k))
    const = np.full((2, 1, 40, 40, 40), 2.0, np.float32)
    centre = da.SpatialTransform((32, 32, 32), rotation=0.0, scale=1.0)
    pipe = [centre, da.RicianNoise(std=0.5, retain_stats=retain)]
    fused = da.Compose(pipe, seed=4)(data=const.copy())["data"]
    assert not calls
    plain = da.Compose(pipe, seed=4, fuse=False)(data=const.copy())["data"]
    assert calls
    assert st.ks_2samp(fused.ravel(), plain.ravel()).pvalue > P_MIN
    if not retain:
        assert st.kstest(fused.ravel().astype(np.float64), st.rice(b=4.0, scale=0.5).cdf).pvalue > P_MIN


def test_rician_noise_bad_arguments(image):
    with pytest.raises(ValueError, match="must be >= 0"):
        da.RicianNoise(std=(-0.1, 0.1))
    with pytest.raises(ValueError, match="larger than max"):
        da.RicianNoise(std=(0.2, 0.1))
    with pytest.raises(ValueError, match="probability"):
        da.RicianNoise(p=1.5)
    with pytest.raises(ValueError, match="std must be >= 0"):
        F.rician_noise(image, -1.0)


# --- sharpening -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_sharpen_equals_batchgeneratorsv2(image, ndim):
    torch = _torch()
    sharpen = _bgv2("noise.sharpen")
    x = image if ndim == 3 else image[:, :, 5]
    strengths = np.array([[0.1, 0.3], [0.0, 0.25]])
    clamp = np.array([[False, True], [True, False]])
    out = F.sharpen(x, strengths, clamp)
    ref = np.stack(
        [
            sharpen.SharpeningTransform()
            ._apply_to_image(
                torch.from_numpy(x[i].copy()),
                strengths=[float(s) for s in strengths[i]],
                clamp_intensities=list(clamp[i]),
                apply_channel=[True, True],
            )
            .numpy()
            for i in range(2)
        ]
    )
    np.testing.assert_allclose(out, ref, atol=2e-5)
    np.testing.assert_array_equal(out[1, 0], x[1, 0])  # strength 0
    # The transform with a fixed strength equals bgv2's with the same value, float64 kept.
    t = da.Sharpen(strength=0.2, seed=0)(data=x.astype(np.float64))["data"]
    assert t.dtype == np.float64
    bg = sharpen.SharpeningTransform(strength=0.2)
    ref = np.stack([bg(image=torch.from_numpy(x[i].copy()))["image"].numpy() for i in range(2)])
    np.testing.assert_allclose(t, ref, atol=2e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_sharpen_device_code_path_equals_numpy_on_torch_cpu_tensors(image, ndim):
    # The code that runs torch CUDA tensors on their device, here on CPU tensors: same result as numpy.
    torch = _torch()
    x = image if ndim == 3 else image[:, :, 5].copy()
    k = np.array([[0.1, 0.3], [0.0, 0.25]]).reshape((2, 2) + (1,) * ndim)
    clip = np.array([[False, True], [True, False]])
    out = FI._sharpen_arrays(torch.from_numpy(x), k, clip, "torch")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), F.sharpen(x, k.reshape(2, 2), clip), atol=1e-6)


def test_sharpen_draws_per_channel_and_checks_arguments(image, monkeypatch):
    seen = []
    real = FI.sharpen
    monkeypatch.setattr(FI, "sharpen", lambda x, s, c, **k: seen.append((s, c)) or real(x, s, c, **k))
    da.Sharpen(strength=(0.1, 0.3), p_clamp=0.5, seed=1)(data=image)
    da.Sharpen(strength=(0.1, 0.3), per_channel=False, p_per_channel=0.5, seed=1)(data=image)
    (s1, _), (s2, _) = seen
    assert np.all((s1 >= 0.1) & (s1 <= 0.3)) and np.all(s1[:, 0] != s1[:, 1])
    assert np.all((s2[:, 0] == s2[:, 1]) | (s2 == 0).any(1))
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        da.Sharpen()(data=image[:, :, 0, 0])
    with pytest.raises(ValueError, match="2 or 3 spatial axes"):
        F.sharpen(image[:, :, 0, 0], 0.2)
    with pytest.raises(ValueError, match="probability"):
        da.Sharpen(p_clamp=2)
    with pytest.raises(ValueError, match="strength has shape"):
        F.sharpen(image, [0.1, 0.2, 0.3])


# --- median filter --------------------------------------------------------------------------------


def test_median_filter_equals_scipy_and_batchgeneratorsv2(image):
    sizes = np.array([[3, 5], [1, 4]])
    out = F.median_filter(image, sizes)
    for i in range(2):
        for c in range(2):
            np.testing.assert_array_equal(out[i, c], ndi.median_filter(image[i, c], size=int(sizes[i, c])))
    torch = _torch()
    median = _bgv2("noise.median_filter")
    t = da.MedianFilter(size=3, seed=0)(data=image)["data"]
    bg = median.MedianFilterTransform(filter_size=3)
    ref = np.stack([bg(image=torch.from_numpy(image[i].copy()))["image"].numpy() for i in range(2)])
    np.testing.assert_array_equal(t, ref)


def test_median_filter_sizes_are_inclusive_and_per_channel(monkeypatch):
    seen = []
    real = FI.median_filter
    monkeypatch.setattr(FI, "median_filter", lambda x, s, **k: seen.append(s) or real(x, s, **k))
    x = np.random.default_rng(1).standard_normal((16, 3, 6, 6)).astype(np.float32)
    da.MedianFilter(size=(3, 4), seed=0)(data=x)
    da.MedianFilter(size=(3, 4), per_channel=False, p_per_channel=0.5, seed=0)(data=x)
    assert set(np.unique(seen[0])) == {3, 4}
    assert 0 in seen[1] and np.all((seen[1] == seen[1].max(1, keepdims=True)) | (seen[1] == 0))
    with pytest.raises(ValueError, match="pair of ints"):
        da.MedianFilter(size=(2.5, 4))
    with pytest.raises(ValueError, match=">= 1"):
        da.MedianFilter(size=0)


# --- gaussian blur per channel --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_blur_per_channel_matches_scipy(image, backend, monkeypatch):
    seen = []
    real = FI.gaussian_blur
    monkeypatch.setattr(FI, "gaussian_blur", lambda x, s, **k: seen.append(np.array(s)) or real(x, s, **k))
    out = da.GaussianBlur(sigma=(0.5, 2.0), per_channel=True, per_axis=True, seed=3, backend=backend)(
        data=image.copy()
    )["data"]
    sigma = seen[-1].reshape(2, 2, 3)
    assert not np.allclose(sigma[:, 0], sigma[:, 1]) and np.all((sigma >= 0.5) & (sigma <= 2.0))
    for i in range(2):
        for c in range(2):
            ref = ndi.gaussian_filter(image[i, c].astype(np.float64), sigma[i, c], mode="reflect")
            np.testing.assert_allclose(out[i, c], ref, atol=1e-5)
    # p_per_channel: some channels untouched; the default keeps one sigma for all channels.
    x = np.random.default_rng(2).standard_normal((8, 2, 8, 8)).astype(np.float32)
    out = da.GaussianBlur(per_channel=True, p_per_channel=0.5, seed=1, backend=backend)(data=x.copy())["data"]
    same = [np.array_equal(out[i, c], x[i, c]) for i in range(8) for c in range(2)]
    assert 0 < sum(same) < 16
    da.GaussianBlur(seed=1, backend=backend)(data=x.copy())
    assert seen[-1].shape == (8, 2) and np.all(seen[-1][:, 0] == seen[-1][:, 1])
    with pytest.raises(ValueError, match="probability"):
        da.GaussianBlur(p_per_channel=-0.5)


# --- contrast with retained range and inverted gamma beside bgv2 ---------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("factor", [0.6, 1.8])
def test_contrast_preserve_range_equals_batchgeneratorsv2(image, backend, factor):
    torch = _torch()
    contrast = _bgv2("intensity.contrast")
    bg = contrast.ContrastTransform((factor, factor), preserve_range=True, synchronize_channels=False)
    ref = np.stack([bg(image=torch.from_numpy(image[i].copy()))["image"].numpy() for i in range(2)])
    out = da.Contrast(factor=(factor, factor), preserve_range=True, seed=0, backend=backend)(
        data=image.copy()
    )
    np.testing.assert_allclose(out["data"], ref, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.7, 1.5])
@pytest.mark.parametrize("retain", [True, False])
def test_inverted_gamma_equals_batchgeneratorsv2(image, backend, gamma, retain):
    torch = _torch()
    gamma_mod = _bgv2("intensity.gamma")
    bg = gamma_mod.GammaTransform(
        (gamma, gamma),
        p_invert_image=1,
        synchronize_channels=False,
        p_per_channel=1,
        p_retain_stats=float(retain),
    )
    ref = np.stack([bg(image=torch.from_numpy(image[i].copy()))["image"].numpy() for i in range(2)])
    t = da.Gamma(gamma=(gamma, gamma), invert=True, retain_stats=retain, seed=0, backend=backend)
    np.testing.assert_allclose(t(data=image.copy())["data"], ref, atol=5e-5, rtol=1e-5)


# --- CUDA inputs (need a GPU; skipped here) -------------------------------------------------------


def _cuda(framework: str, a: np.ndarray):
    if framework == "torch":
        return _torch().from_numpy(np.ascontiguousarray(a)).cuda()
    return pytest.importorskip("cupy").asarray(a)


def _host(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    import cupy

    return cupy.asnumpy(x)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch", "cupy"])
@pytest.mark.parametrize("retain", [True, False])
def test_rician_noise_on_cuda_equals_the_cpu_engine(framework, retain):
    # The counter-based generator gives the same normal values on both executors; only the float
    # contraction of the arithmetic may differ (test_engine_cuda.py's tolerance).
    x = np.abs(np.random.default_rng(0).standard_normal((2, 2, 16, 18, 20))).astype(np.float32)
    cpu = F.rician_noise(x, [0.3, 0.6], retain_stats=retain, seed=7, backend="cpu")
    gpu = F.rician_noise(_cuda(framework, x), [0.3, 0.6], retain_stats=retain, seed=7)
    assert type(gpu).__module__.split(".")[0] == framework
    np.testing.assert_allclose(_host(gpu), cpu, atol=5e-5, rtol=1e-5)
    spatial = da.SpatialTransform((12, 12, 12), rotation=(-20, 20))
    pipe = da.Compose([spatial, da.RicianNoise(std=0.5, retain_stats=retain)], seed=3)
    on_cpu = pipe(data=x.copy())["data"]
    pipe = da.Compose([spatial, da.RicianNoise(std=0.5, retain_stats=retain)], seed=3)
    np.testing.assert_allclose(_host(pipe(data=_cuda(framework, x))["data"]), on_cpu, atol=2e-4, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch", "cupy"])
def test_host_filters_take_cuda_inputs_back_to_their_device(framework, image):
    for op, args in ((F.sharpen, (0.2, True)), (F.median_filter, (3,))):
        gpu = op(_cuda(framework, image), *args)
        assert type(gpu).__module__.split(".")[0] == framework
        np.testing.assert_array_equal(_host(gpu), op(image, *args))
    out = da.GaussianBlur(per_channel=True, seed=1)(data=_cuda(framework, image))["data"]
    ref = da.GaussianBlur(per_channel=True, seed=1)(data=image.copy())["data"]
    np.testing.assert_allclose(_host(out), ref, atol=1e-5)
