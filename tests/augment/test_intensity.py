"""Intensity operations against numpy / scipy formulas, on both backends."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

import delira.augment as da
from delira.augment import functional as F

BACKENDS = ["cpu", "batchgenerators"]


@pytest.fixture
def x():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((3, 2, 10, 11, 12)) * 2 + 1).astype(np.float32)


def _per_sample_channel(x, fn):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = fn(i, x[i, c].astype(np.float64))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_brightness_and_clip(x, backend):
    np.testing.assert_allclose(
        F.brightness_multiplicative(x, [0.5, 1.0, 2.0], backend=backend),
        x * np.array([0.5, 1.0, 2.0], np.float32)[:, None, None, None, None],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        F.brightness_additive(x, 0.25, backend=backend), x + np.float32(0.25), rtol=1e-6
    )
    np.testing.assert_array_equal(F.clip(x, -1, 2, backend=backend), np.clip(x, -1, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preserve", [True, False])
def test_contrast(x, backend, preserve):
    factors = [0.5, 1.5, 2.0]

    def ref(i, v):
        y = (v - v.mean()) * factors[i] + v.mean()
        return np.clip(y, v.min(), v.max()) if preserve else y

    out = F.contrast(x, factors, preserve_range=preserve, backend=backend)
    np.testing.assert_allclose(out, _per_sample_channel(x, ref), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("invert", "retain"), [(False, True), (False, False), (True, True), (True, False)])
def test_gamma_follows_batchgenerators_formula(x, backend, invert, retain):
    gammas = [0.7, 1.0, 1.5]

    def ref(i, v):
        v = -v if invert else v
        mn, sd = v.mean(), v.std()
        lo, rng_ = v.min(), v.max() - v.min()
        y = np.power((v - lo) / (rng_ + 1e-7), gammas[i]) * (rng_ + 1e-7) + lo
        if retain:
            y = (y - y.mean()) / (y.std() + 1e-8) * sd + mn
        return -y if invert else y

    out = F.gamma(x, gammas, invert=invert, retain_stats=retain, backend=backend)
    np.testing.assert_allclose(out, _per_sample_channel(x, ref), atol=5e-5, rtol=1e-5)


def test_gamma_equals_batchgenerators_augment_gamma(x):
    bg = pytest.importorskip("batchgenerators.augmentations.color_augmentations")
    ref = np.stack(
        [bg.augment_gamma(x[i].copy(), (1.3, 1.3), retain_stats=True, per_channel=True) for i in range(3)]
    )
    np.testing.assert_allclose(F.gamma(x, 1.3), ref, atol=5e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zscore_and_percentile_clip(x, backend):
    z = F.zscore_normalize(x, backend=backend)
    np.testing.assert_allclose(z, _per_sample_channel(x, lambda i, v: (v - v.mean()) / v.std()), atol=1e-5)
    out = F.percentile_clip(x, 2.0, 97.0, backend=backend)
    ref = _per_sample_channel(x, lambda i, v: np.clip(v, *np.percentile(v.astype(np.float32), [2.0, 97.0])))
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-6)


def test_zscore_of_constant_image_uses_eps():
    x = np.full((1, 1, 4, 4, 4), 3.0, np.float32)
    np.testing.assert_array_equal(F.zscore_normalize(x), np.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_blur_matches_scipy(x, backend):
    sigma = np.array([[0.5, 1.0, 2.0], [1.0, 1.0, 1.0], [0.0, 2.5, 0.7]])
    out = F.gaussian_blur(x, sigma, backend=backend)
    ref = _per_sample_channel(x, lambda i, v: ndi.gaussian_filter(v, sigma[i], mode="reflect"))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_simulate_low_resolution():
    rng = np.random.default_rng(1)
    smooth = ndi.gaussian_filter(rng.standard_normal((2, 1, 24, 24, 24)), (0, 0, 3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(F.simulate_low_resolution(smooth, 1.0), smooth, atol=1e-5)  # zoom 1: identity
    low = F.simulate_low_resolution(smooth, 0.5)
    assert low.shape == smooth.shape
    # Blockwise nearest down-sampling keeps every second voxel: the upsampled image interpolates them exactly.
    np.testing.assert_allclose(
        low[:, :, ::2, ::2, ::2][..., 1:-1, 1:-1, 1:-1],
        smooth[:, :, ::2, ::2, ::2][..., 1:-1, 1:-1, 1:-1],
        atol=0.25,
    )
    np.testing.assert_allclose(
        low, F.simulate_low_resolution(smooth, 0.5, backend="batchgenerators"), atol=1e-5
    )


def test_gaussian_noise_statistics_seed_and_backends(threads):
    x = np.zeros((4, 1, 32, 32, 32), np.float32)
    a = F.gaussian_noise(x, [0.1, 0.5, 1.0, 0.0], seed=3)
    for i, s in enumerate([0.1, 0.5, 1.0]):
        assert abs(a[i].std() - s) < 0.02 * s and abs(a[i].mean()) < 0.02 * s
        # normal: about 68.3% within one standard deviation
        assert abs((np.abs(a[i]) < s).mean() - 0.6827) < 0.01
    np.testing.assert_array_equal(a[3], 0.0)
    da.set_num_threads(1)
    np.testing.assert_array_equal(F.gaussian_noise(x, [0.1, 0.5, 1.0, 0.0], seed=3), a)
    assert not np.array_equal(F.gaussian_noise(x, 0.5, seed=4)[1], a[1])
    fb = F.gaussian_noise(x, 0.5, seed=3, backend="batchgenerators")
    assert abs(fb.std() - 0.5) < 0.01


def test_noise_is_uncorrelated_between_neighbours():
    a = F.gaussian_noise(np.zeros((1, 1, 64, 64, 64), np.float32), 1.0, seed=0)[0, 0]
    for axis in range(3):
        corr = np.corrcoef(a.take(range(63), axis).ravel(), a.take(range(1, 64), axis).ravel())[0, 1]
        assert abs(corr) < 0.01


def test_float64_inputs_keep_their_dtype(x):
    out = F.gamma(x.astype(np.float64), 0.8)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, F.gamma(x, 0.8), atol=1e-4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: F.gamma(x, -1.0), ValueError, "gamma must be > 0"),
        (lambda x: F.gamma(x, float("nan")), ValueError, "NaN"),
        (lambda x: F.gaussian_noise(x, -0.1), ValueError, "std must be >= 0"),
        (lambda x: F.brightness_multiplicative(x, [1.0, 2.0]), ValueError, "factor has shape"),
        (lambda x: F.percentile_clip(x, 90, 10), ValueError, "min 90.0 is larger than max 10.0"),
        (lambda x: F.gaussian_blur(x, -1.0), ValueError, "sigma must be >= 0"),
        (lambda x: F.simulate_low_resolution(x, 1.5), ValueError, "zoom must be in"),
        (lambda x: F.contrast(x.astype(np.int16), 1.0), TypeError, "must be float32 or float64"),
        (lambda x: F.contrast(x[:0], 1.0), ValueError, "empty"),
        (lambda x: F.contrast(x[0, 0, 0], 1.0), ValueError, "expected \\(N, C, \\*spatial\\)"),
    ],
)
def test_bad_arguments(x, call, error, match):
    with pytest.raises(error, match=match):
        call(x)
