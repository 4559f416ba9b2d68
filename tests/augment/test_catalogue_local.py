"""Augmentation catalogue, group filters: SimulateLowResolution per axis/channel and the local ops.

References: batchgeneratorsv2's ``SimulateLowResolutionTransform`` and ``transforms/local`` with their
random parameters fixed (callables per axis/channel, or degenerate ranges ``(v, v)``), mpmath for the
Gaussian's voxel integrals far in its tail, and hand-computed properties.
"""

from __future__ import annotations

import numpy as np
import pytest

import delira.augment as da
from delira.augment import functional as F
from delira.augment.functional import local as L

torch = pytest.importorskip("torch")
bgv2_lowres = pytest.importorskip("batchgeneratorsv2.transforms.spatial.low_resolution")
bgv2_local = pytest.importorskip("batchgeneratorsv2.transforms.local.local_transform")
from batchgeneratorsv2.transforms.local.brightness_gradient import (  # noqa: E402
    BrightnessGradientAdditiveTransform,
)
from batchgeneratorsv2.transforms.local.local_contrast import LocalContrastTransform  # noqa: E402
from batchgeneratorsv2.transforms.local.local_gamma import LocalGammaTransform  # noqa: E402
from batchgeneratorsv2.transforms.local.local_smoothing import LocalSmoothingTransform  # noqa: E402

SHAPES = [(14, 18, 12), (20, 17)]


def _image(shape, c=2, n=1, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c, *shape)) * 2 + 1).astype(np.float32)


def _bgv2(transform, sample: np.ndarray) -> np.ndarray:
    """batchgeneratorsv2 on one sample ``(C, *spatial)``."""
    return transform(image=torch.from_numpy(sample.copy()))["image"].numpy()


# --- SimulateLowResolution ---------------------------------------------------------------------------
# batchgeneratorsv2 downsamples with torch's 'nearest-exact' and upsamples (bi/tri)linearly
# (align_corners=False); delira's order_down=0 / order_up=1 are the same maps: they agree to float
# rounding. Zooms are chosen exactly representable in float32 (bgv2 keeps them in a float32 tensor).


@pytest.mark.parametrize("shape", SHAPES)
def test_low_resolution_per_axis_matches_bgv2(shape):
    x = _image(shape, c=2)
    zooms = [0.5, 0.75, 0.625][: len(shape)]
    ref = _bgv2(
        bgv2_lowres.SimulateLowResolutionTransform(
            scale=lambda image, channel, dim: zooms[dim],
            synchronize_channels=True,
            synchronize_axes=False,
            ignore_axes=None,
        ),
        x[0],
    )
    out = F.simulate_low_resolution(x, np.array([zooms]), order_down=0, order_up=1)
    np.testing.assert_allclose(out[0], ref, atol=2e-6)
    assert not np.allclose(out, x, atol=1e-3)  # it did change the image


@pytest.mark.parametrize("shape", SHAPES)
def test_low_resolution_per_channel_and_axis_matches_bgv2(shape):
    x = _image(shape, c=3)
    nd = len(shape)
    table = np.array([[0.5, 0.75, 0.375], [0.875, 0.5, 0.625], [0.25, 1.0, 0.5]])[:, :nd]
    ref = _bgv2(
        bgv2_lowres.SimulateLowResolutionTransform(
            scale=lambda image, channel, dim: float(table[channel, dim]),
            synchronize_channels=False,
            synchronize_axes=False,
            ignore_axes=None,
        ),
        x[0],
    )
    out = F.simulate_low_resolution(x, table[None], order_down=0, order_up=1)
    np.testing.assert_allclose(out[0], ref, atol=2e-6)


@pytest.mark.parametrize("zoom", [0.5, 0.75])
def test_low_resolution_default_cubic_up_against_bgv2_linear(zoom):
    """The default order_up=3 (cubic B-spline) against bgv2's trilinear upsampling, on a smooth volume
    of unit std: the same nearest-down grid, so they differ by the interpolation only (measured: mean
    |diff| 0.03 to 0.06, max 0.3) and lose about as much detail (mean |change| within 25%)."""
    ndi = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    x = ndi.gaussian_filter(rng.standard_normal((1, 1, 24, 24, 24)), (0, 0, 3, 3, 3))
    x = (x / x.std()).astype(np.float32)
    ref = _bgv2(
        bgv2_lowres.SimulateLowResolutionTransform(
            scale=(zoom, zoom), synchronize_channels=True, synchronize_axes=True, ignore_axes=None
        ),
        x[0],
    )
    out = F.simulate_low_resolution(x, zoom)[0]
    assert np.abs(out - ref).mean() < 0.08
    change, ref_change = np.abs(out - x[0]).mean(), np.abs(ref - x[0]).mean()
    assert abs(change - ref_change) < 0.25 * ref_change


def test_low_resolution_nnunet_setting_matches_bgv2():
    """nnU-Net v2's use: one zoom per channel for all axes (synchronize_axes=True,
    synchronize_channels=False), here with the channels' zooms fixed, and axis 0 ignored (dummy 2D)."""
    x = _image((10, 24, 20), c=3)
    per_channel = [0.5, 0.75, 0.625]
    ref = _bgv2(
        bgv2_lowres.SimulateLowResolutionTransform(
            scale=lambda image, channel, dim: per_channel[channel],
            synchronize_channels=False,
            synchronize_axes=True,
            ignore_axes=(0,),
            p_per_channel=1.0,
        ),
        x[0],
    )
    zoom = np.repeat(np.array(per_channel)[:, None], 3, axis=1)
    zoom[:, 0] = 1.0
    out = F.simulate_low_resolution(x, zoom[None], order_down=0, order_up=1)
    np.testing.assert_allclose(out[0], ref, atol=2e-6)


def test_low_resolution_transform_ignore_axes_and_allowed_channels_match_bgv2():
    x = _image((16, 12, 14), c=3, n=2)
    kw = {"ignore_axes": (0,), "allowed_channels": (0, 2)}
    ours = da.SimulateLowResolution(
        zoom=(0.5, 0.5), order_up=1, per_axis=True, per_channel=True, seed=0, **kw
    )
    out = ours(data=x.copy())["data"]
    ref_t = bgv2_lowres.SimulateLowResolutionTransform(
        scale=(0.5, 0.5), synchronize_channels=False, synchronize_axes=False, p_per_channel=1.0, **kw
    )
    for i in range(2):
        np.testing.assert_allclose(out[i], _bgv2(ref_t, x[i]), atol=2e-6)
    np.testing.assert_array_equal(out[:, 1], x[:, 1])  # not an allowed channel: untouched
    # axis 0 is kept at full resolution: every row along axis 0 is resampled on its own
    assert not np.allclose(out[:, 0], x[:, 0], atol=1e-3)


def test_low_resolution_default_draws_are_unchanged():
    """Defaults: one zoom per sample for all axes and channels, the stream of draws as before."""
    x = _image((12, 12, 12), c=2, n=4, seed=3)
    out = da.SimulateLowResolution(p=0.7, seed=2)(data=x.copy())["data"]
    rng = np.random.default_rng(2)
    active = rng.random(4) < 0.7
    zoom = rng.uniform(0.5, 1.0, 4)
    for i in range(4):
        want = F.simulate_low_resolution(x[i : i + 1], zoom[i]) if active[i] else x[i : i + 1]
        np.testing.assert_allclose(out[i : i + 1], want, atol=1e-6)


def test_low_resolution_p_per_channel_leaves_the_other_channels_untouched():
    x = _image((10, 10, 10), c=16, n=4, seed=5)
    out = da.SimulateLowResolution(zoom=0.5, per_channel=True, p_per_channel=0.5, seed=1)(data=x.copy())[
        "data"
    ]
    low = F.simulate_low_resolution(x, 0.5)
    same = np.array([[np.array_equal(out[i, k], x[i, k]) for k in range(16)] for i in range(4)])
    np.testing.assert_allclose(out[~same], low[~same], atol=1e-6)  # the others: resized
    assert 16 <= same.sum() <= 48  # about half of 64 channels (binomial, p 0.5: 5 sigma ~ 20)


def test_low_resolution_per_axis_draws_one_zoom_per_axis():
    """per_axis: one zoom per axis, drawn after the per-sample p as the docstring says; nearest down
    and up on an image of distinct values keeps ``round(size * zoom)`` distinct values per axis."""
    x = np.arange(40 * 40, dtype=np.float32).reshape(1, 1, 40, 40)
    out = da.SimulateLowResolution(zoom=(0.2, 0.9), per_axis=True, order_up=0, seed=4)(data=x.copy())["data"]
    rng = np.random.default_rng(4)
    rng.random(1)  # the sample's p
    z = rng.uniform(0.2, 0.9, 2)
    assert len(np.unique(out[0, 0, :, 0])) == round(40 * z[0])
    assert len(np.unique(out[0, 0, 0, :])) == round(40 * z[1])
    assert round(40 * z[0]) != round(40 * z[1])


def test_low_resolution_bad_arguments():
    with pytest.raises(ValueError, match="ignore_axes"):
        da.SimulateLowResolution(ignore_axes=(3,))
    with pytest.raises(TypeError, match="ignore_axes"):
        da.SimulateLowResolution(ignore_axes=(0.5,))
    with pytest.raises(ValueError, match="p_per_channel"):
        da.SimulateLowResolution(p_per_channel=1.5)
    with pytest.raises(ValueError, match="order_up"):
        da.SimulateLowResolution(order_up=2)
    with pytest.raises(ValueError, match="spatial axes"):
        da.SimulateLowResolution(ignore_axes=(2,))(data=np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="channels"):
        da.SimulateLowResolution(allowed_channels=(5,))(data=np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="zoom has shape"):
        F.simulate_low_resolution(np.zeros((2, 1, 8, 8), np.float32), np.ones((2, 1, 2, 1)))
    with pytest.raises(ValueError, match="zoom"):
        F.simulate_low_resolution(np.zeros((2, 1, 8, 8), np.float32), np.ones((2, 3)))


@pytest.mark.cuda
def test_low_resolution_per_channel_on_cuda_equals_the_cpu():
    x = _image((16, 16, 16), c=3, n=3)
    kw = {"zoom": (0.4, 0.9), "per_axis": True, "per_channel": True, "p_per_channel": 0.6, "p": 0.8}
    cpu = da.SimulateLowResolution(seed=3, **kw)(data=x.copy())["data"]
    gpu = da.SimulateLowResolution(seed=3, **kw)(data=torch.from_numpy(x).cuda())["data"]
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-4)


# --- the weight map ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, loc, sigma",
    [
        ((14, 18, 12), (0.3, 0.6, 0.8), (4.0, 7.0, 3.0)),
        ((14, 18, 12), (-0.3, 1.2, 0.5), (6.0, 9.0, 20.0)),
        ((20, 17), (0.5, 0.1), (2.5, 30.0)),
        ((20, 17), (-0.2, 1.1), (5.0, 3.0)),
    ],
)
def test_gaussian_weights_match_bgv2_kernel(shape, loc, sigma):
    ref = bgv2_local.LocalTransform(scale=lambda s, d: sigma[d], loc=lambda s, d: loc[d])._generate_kernel(
        shape
    )
    w = L.gaussian_weights(shape, np.asarray(loc) * shape, sigma)
    assert w.shape == shape and w.dtype == np.float64
    np.testing.assert_allclose(w, ref, atol=2e-6)


def test_gaussian_weights_hand_properties():
    shape = (15, 9, 11)
    w = L.gaussian_weights(shape, (7.0, 4.0, 5.0), (3.0, 2.0, 4.0))
    assert w[7, 4, 5] == pytest.approx(1.0)  # the voxel holding the centre
    corners = [w[i, j, k] for i in (0, 14) for j in (0, 8) for k in (0, 10)]
    assert min(corners) == 0.0 and w.min() == 0.0 and w.max() == pytest.approx(1.0)
    # symmetric about the centre voxel, separable: each axis' profile is a scaled 1-D map
    np.testing.assert_allclose(w[::-1, ::-1, ::-1], w, atol=1e-12)
    # the centre outside: the nearest voxel gets 1
    w2 = L.gaussian_weights((10, 10), (-4.0, 5.0), (3.0, 2.0))
    assert w2[0, 5] == pytest.approx(1.0) and np.all(np.diff(w2[:, 5]) <= 0)
    # nothing varies: all 0 (the op is the identity)
    assert np.all(L.gaussian_weights((1, 1, 1), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) == 0)
    assert L.gaussian_weights((6, 7), (2.0, 3.0), (1.0, 1.0), np.float32).dtype == np.float32


def test_gaussian_weights_far_in_the_tail_against_mpmath():
    """Centre 20 sigma outside the image: bgv2's float32 CDF differences are 0 there; the erfc
    differences keep the profile (mpmath's quadrature at 50 digits is the reference)."""
    mpmath = pytest.importorskip("mpmath")
    size, centre, sigma = 12, -100.0, 5.0

    def integral(i):  # the Gaussian's density integrated numerically over the voxel
        a, b = (i - 0.5 - centre) / sigma, (i + 0.5 - centre) / sigma
        return mpmath.quad(lambda t: mpmath.npdf(t), [a, b])

    with mpmath.workdps(50):
        k = [integral(i) for i in range(size)]
        ratio = [float(v / k[0]) for v in k]  # decreasing away from the centre: voxel 0 is the max
    low = ratio[-1]
    ref = np.array([(r - low) / (1 - low) for r in ratio])
    w = L.gaussian_weights((size,), (centre,), (sigma,))
    np.testing.assert_allclose(w, ref, rtol=1e-9, atol=1e-12)


# --- the local ops against batchgeneratorsv2 ---------------------------------------------------------
# Per-axis centres and sigmas are fixed with callables on bgv2's side; the op through the functional
# layer with the same explicit values.

LOC = (0.3, 0.7, 0.55)
SIG = (5.0, 8.0, 4.0)


def _fixed(shape):
    nd = len(shape)
    kw = {"scale": lambda s, d: SIG[d], "loc": lambda s, d: LOC[d]}
    w = L.gaussian_weights(shape, np.asarray(LOC[:nd]) * shape, SIG[:nd], np.float32)
    return kw, w


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.6, 1.8])
def test_local_gamma_matches_bgv2(shape, gamma):
    x = _image(shape, c=2)
    kw, w = _fixed(shape)
    ref = _bgv2(LocalGammaTransform(gamma=(gamma, gamma), **kw), x[0])
    for c in range(2):
        np.testing.assert_allclose(L.local_gamma(x[0, c], w, gamma), ref[c], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_local_contrast_matches_bgv2(shape):
    x = _image(shape, c=2)
    kw, w = _fixed(shape)
    ref = _bgv2(LocalContrastTransform(new_contrast=(1.7, 1.7), **kw), x[0])
    for c in range(2):
        np.testing.assert_allclose(L.local_contrast(x[0, c], w, 1.7), ref[c], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_local_smoothing_matches_bgv2(shape):
    x = _image(shape, c=2)
    kw, w = _fixed(shape)
    ref = _bgv2(LocalSmoothingTransform(smoothing_strength=(0.8, 0.8), kernel_size=(1.3, 1.3), **kw), x[0])
    for c in range(2):
        np.testing.assert_allclose(L.local_smoothing(x[0, c], w, 1.3, 0.8), ref[c], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mean_centered", [True, False])
def test_brightness_gradient_matches_bgv2(shape, mean_centered):
    x = _image(shape, c=2)
    kw, w = _fixed(shape)
    t = BrightnessGradientAdditiveTransform(max_strength=(-1.5, -1.5), mean_centered=mean_centered, **kw)
    ref = _bgv2(t, x[0])
    for c in range(2):
        np.testing.assert_allclose(L.brightness_gradient(x[0, c], w, -1.5, mean_centered), ref[c], atol=1e-5)


# The transforms with degenerate ranges: every draw is fixed, so bgv2's transform is the reference.
CASES = [
    (
        lambda kw: da.LocalGamma(gamma=(0.5, 0.5), **kw),
        lambda kw: LocalGammaTransform(gamma=(0.5, 0.5), **kw),
    ),
    (
        lambda kw: da.LocalContrast(factor=(0.4, 0.4), **kw),
        lambda kw: LocalContrastTransform(new_contrast=(0.4, 0.4), **kw),
    ),
    (
        lambda kw: da.LocalSmoothing(sigma=(2.0, 2.0), strength=(1.0, 1.0), **kw),
        lambda kw: LocalSmoothingTransform(smoothing_strength=(1.0, 1.0), kernel_size=(2.0, 2.0), **kw),
    ),
    (
        lambda kw: da.BrightnessGradient(max_strength=(2.0, 2.0), clip_intensities=True, **kw),
        lambda kw: BrightnessGradientAdditiveTransform(max_strength=(2.0, 2.0), clip_intensities=True, **kw),
    ),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make_ours, make_ref", CASES)
@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("slab", [None, 1], ids=["one-slab", "row-slabs"])
def test_local_transforms_match_bgv2_with_fixed_draws(shape, make_ours, make_ref, same, slab, monkeypatch):
    if slab is not None:  # one row of the weight map at a time: the slab loop's boundaries
        monkeypatch.setattr(L, "_SLAB", slab)
    x = _image(shape, c=2, n=2)
    kw = {"scale": (6.0, 6.0), "loc": (0.4, 0.4), "same_for_all_channels": same}
    out = make_ours(kw)(data=x.copy(), seg=np.zeros((2, 1, *shape), np.uint8))["data"]
    for i in range(2):
        np.testing.assert_allclose(out[i], _bgv2(make_ref(kw), x[i]), atol=1e-5)
    assert not np.allclose(out, x, atol=1e-3)


def test_weight_map_profiles_give_the_dense_map_and_its_statistics(monkeypatch):
    shape = (13, 10, 7)
    m = L.gaussian_weight_map(shape, (2.0, 11.0, 3.5), (3.0, 5.0, 2.0))
    dense = m.dense()
    np.testing.assert_allclose(dense, L.gaussian_weights(shape, (2.0, 11.0, 3.5), (3.0, 5.0, 2.0)))
    assert m.sum() == pytest.approx(dense.sum(), rel=1e-12)
    assert m.mean() == pytest.approx(dense.mean(), rel=1e-12)
    assert (m.min(), m.max()) == (dense.min(), pytest.approx(dense.max()))
    monkeypatch.setattr(L, "_SLAB", 7 * 10 * 3)  # slabs of 3 rows, the last one shorter
    x = _image(shape, c=1)[0, 0]
    w32 = m.dense(np.float32)
    for op, args in [
        (L.local_gamma, (0.4,)),
        (L.local_contrast, (2.5,)),
        (L.local_smoothing, (1.0, 0.7)),
        (L.brightness_gradient, (-0.8,)),
    ]:
        out = np.full_like(x, np.nan)
        res = op(x, m, *args, out=out)
        assert res is out
        np.testing.assert_allclose(out, op(x, w32, *args), atol=1e-5)


# --- hand-computed properties --------------------------------------------------------------------------


def test_local_ops_are_the_identity_where_the_weight_is_zero_and_full_at_one():
    x = _image((16, 16, 16), c=1)[0, 0]
    w = L.gaussian_weights(x.shape, (3.0, 3.0, 3.0), (2.0, 2.0, 2.0), np.float32)
    zero = w == 0
    assert zero.any() and w[3, 3, 3] == 1.0
    lo, hi = x.min(), x.max()
    g = L.local_gamma(x, w, 2.0)
    np.testing.assert_allclose(g[zero], x[zero], atol=1e-5)
    np.testing.assert_allclose(g[3, 3, 3], ((x[3, 3, 3] - lo) / (hi - lo)) ** 2 * (hi - lo) + lo, rtol=1e-5)
    assert g.min() >= lo - 1e-5 and g.max() <= hi + 1e-5  # the value range is retained
    c = L.local_contrast(x, w, 3.0)
    np.testing.assert_array_equal(c[zero], x[zero])
    m = (x.astype(np.float64) * w).sum() / w.sum()
    np.testing.assert_allclose(c[3, 3, 3], (x[3, 3, 3] - m) * 3.0 + m, rtol=1e-5)
    s = L.local_smoothing(x, w, 1.0, 1.0)
    np.testing.assert_array_equal(s[zero], x[zero])
    b = L.brightness_gradient(x, w, 0.5, mean_centered=True)
    np.testing.assert_allclose(b.mean(dtype=np.float64), x.mean(dtype=np.float64), atol=1e-5)
    assert np.abs(b - x).max() == pytest.approx(0.5, rel=1e-5)


def test_local_transforms_seed_p_and_channels():
    x = _image((12, 12, 12), c=3, n=3)
    t = da.LocalGamma(scale=(3.0, 6.0), loc=(0.0, 1.0), gamma=(0.3, 0.6), same_for_all_channels=False)
    a = t(rng=5, data=x.copy())["data"]
    np.testing.assert_array_equal(a, t(rng=5, data=x.copy())["data"])
    assert not np.array_equal(a, t(rng=6, data=x.copy())["data"])
    np.testing.assert_array_equal(da.LocalContrast(p=0.0)(rng=1, data=x.copy())["data"], x)
    np.testing.assert_array_equal(da.BrightnessGradient(p_per_channel=0.0)(rng=1, data=x.copy())["data"], x)
    # p < 1 leaves the other samples' draws alone: sample outputs are either unchanged or as with p = 1
    full = da.LocalSmoothing(scale=4.0, loc=0.5, p=1.0)(rng=3, data=x.copy())["data"]
    part = da.LocalSmoothing(scale=4.0, loc=0.5, p=0.5)(rng=3, data=x.copy())["data"]
    for i in range(3):
        assert np.array_equal(part[i], x[i]) or np.array_equal(part[i], full[i])


def test_local_transform_keeps_torch_tensors():
    x = torch.from_numpy(_image((8, 9, 10), c=1, n=2))
    out = da.LocalContrast(scale=3.0, loc=0.5)(data=x)["data"]
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == torch.float32


def test_local_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        da.LocalGamma(scale=(0.0, 5.0))
    with pytest.raises(ValueError, match="gamma"):
        da.LocalGamma(gamma=(0.0, 1.0))
    with pytest.raises(ValueError, match="p_per_channel"):
        da.LocalContrast(p_per_channel=2.0)
    with pytest.raises(ValueError, match="strength"):
        da.LocalSmoothing(strength=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"min 2\.0 is larger"):
        da.BrightnessGradient(max_strength=(2.0, 1.0))
    with pytest.raises(ValueError, match="weights has shape"):
        L.local_gamma(np.zeros((4, 4), np.float32), np.zeros((4, 5)), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        L.gaussian_weights((4, 4), (1.0, 1.0), (0.0, 1.0))
    with pytest.raises(TypeError, match="float32 or float64"):
        L.local_contrast(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1.0)


LOCAL_ON_DEVICE = [
    lambda: da.LocalGamma(scale=4.0, loc=(0.2, 0.8)),
    lambda: da.LocalContrast(scale=(3.0, 6.0), loc=(0.2, 0.8), same_for_all_channels=False),
    lambda: da.BrightnessGradient(scale=4.0, loc=(0.2, 0.8), max_strength=(-2.0, 2.0), clip_intensities=True),
]


@pytest.mark.parametrize("make", LOCAL_ON_DEVICE, ids=["gamma", "contrast", "gradient"])
def test_local_transforms_framework_path_for_cuda_tensors(make, monkeypatch):
    """The branch for torch CUDA tensors (the formulas in torch, the weight map multiplied out from its
    profiles) run on CPU torch tensors standing in for CUDA ones: the host path's result."""
    from delira.augment import _arrays

    x = _image((9, 10, 11), c=2, n=3)
    want = make()(rng=3, data=x.copy())["data"]
    monkeypatch.setattr(_arrays, "is_cuda_array", lambda a: isinstance(a, torch.Tensor))
    xt = torch.from_numpy(x.copy())
    got = make().apply({"data": xt}, np.random.default_rng(3))["data"]
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    np.testing.assert_array_equal(xt.numpy(), x)  # the input is not changed


def test_local_transforms_host_round_trip_for_other_gpu_frameworks(monkeypatch):
    """tensorflow (and jax) GPU arrays take a host round trip: run with CPU tf tensors standing in."""
    tf = pytest.importorskip("tensorflow")
    from delira.augment import _arrays

    x = _image((9, 10, 11), c=2, n=2)
    want = da.LocalGamma(scale=4.0, loc=(0.2, 0.8))(rng=3, data=x.copy())["data"]
    monkeypatch.setattr(_arrays, "is_cuda_array", lambda a: _arrays.namespace(a) == "tensorflow")
    got = da.LocalGamma(scale=4.0, loc=(0.2, 0.8)).apply({"data": tf.constant(x)}, np.random.default_rng(3))
    assert _arrays.namespace(got["data"]) == "tensorflow"
    np.testing.assert_array_equal(got["data"].numpy(), want)


@pytest.mark.cuda
def test_local_transforms_on_cuda_round_trip_equal_the_cpu():
    x = _image((12, 12, 12), c=2, n=2)
    for make in (da.LocalGamma, da.LocalContrast, da.LocalSmoothing, da.BrightnessGradient):
        cpu = make(scale=4.0, loc=(0.2, 0.8))(rng=2, data=x.copy())["data"]
        gpu = make(scale=4.0, loc=(0.2, 0.8))(rng=2, data=torch.from_numpy(x).cuda())["data"]
        assert gpu.is_cuda
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-5)
