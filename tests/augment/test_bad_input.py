"""Bad or unusual input through the public API: it works as documented (checked against numpy/scipy) or
raises a ValueError/TypeError that names the argument and says how to fix it.

The decisions are listed in packages/delira-augment/README.md ("Inputs").
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

import delira.augment as da
from delira.augment import functional as F

SHAPE = (2, 1, 10, 11, 12)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


@pytest.fixture
def seg(x):
    return (x > 0.3).astype(np.int16) + (x > 1.0)


def _st(**kwargs):
    args = {"patch_size": (8, 9, 10), "rotation": (-25, 25), "scale": (0.85, 1.15), "backend": "cpu"} | kwargs
    return da.SpatialTransform(**args)


def _transforms():
    return [
        _st(),
        da.Mirror(backend="cpu"),
        da.RandomCrop((6, 6, 6)),
        da.CenterCrop((6, 6, 6)),
        da.ForegroundCrop((6, 6, 6)),
        da.GaussianNoise(backend="cpu"),
        da.GaussianBlur(backend="cpu"),
        da.Compose([_st(), da.Mirror(), da.Gamma(), da.GaussianNoise()]),
    ]


TRANSFORM_IDS = ["spatial", "mirror", "randomcrop", "centercrop", "fgcrop", "noise", "blur", "compose"]


# --- wrong rank ---------------------------------------------------------------------------------


@pytest.mark.parametrize("t", _transforms(), ids=TRANSFORM_IDS)
@pytest.mark.parametrize("index", [(0, 0), (None,)], ids=["3d", "6d"])
def test_transforms_reject_data_of_the_wrong_rank(t, x, index):
    bad = x[index]
    with pytest.raises(
        ValueError, match=rf"data has shape {tuple(bad.shape)}".replace("(", r"\(").replace(")", r"\)")
    ) as err:
        t(data=bad)
    assert "(N, C, D, H, W)" in str(err.value) and "data[None, None]" in str(err.value)


def test_functional_ops_with_the_wrong_rank(x):
    with pytest.raises(
        ValueError, match=r"data has shape \(10, 11, 12\); expected 3 spatial axes after \(N, C\)"
    ):
        F.spatial_transform(x[0, 0], affine=np.zeros((1, 3, 4)), patch_size=(4, 4, 4))
    with pytest.raises(
        ValueError, match=r"x has shape \(1, 2, 1, 10, 11, 12\); expected \(N, C, \*spatial\)"
    ):
        F.zscore_normalize(x[None])
    # documented: the intensity functions take (N, C, *spatial) with 1 to 3 spatial axes, so a 3-axis
    # array is (N, C, W); statistics are per sample and channel, as numpy computes them
    v = x[0, 0].astype(np.float64)
    ref = (v - v.mean(-1, keepdims=True)) / v.std(-1, keepdims=True)
    np.testing.assert_allclose(F.zscore_normalize(x[0, 0]), ref, atol=1e-5)


# --- seg of another shape -----------------------------------------------------------------------


@pytest.mark.parametrize("t", _transforms(), ids=TRANSFORM_IDS)
@pytest.mark.parametrize("cut", ["spatial", "batch"])
def test_seg_of_another_shape_or_batch_size_is_rejected(t, x, seg, cut):
    bad = seg[:, :, :7] if cut == "spatial" else seg[:1]
    with pytest.raises(
        ValueError, match=r"seg has shape .* but data has shape .*pass seg with the same batch size"
    ):
        t(data=x, seg=bad)


def test_functional_spatial_transform_rejects_mismatched_seg(x, seg):
    affine = np.broadcast_to(np.eye(3, 4), (2, 3, 4))
    with pytest.raises(ValueError, match=r"seg has shape .* but data has shape"):
        F.spatial_transform(x, seg[:, :, 1:], affine=affine, patch_size=(4, 4, 4))


# --- float16 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", _transforms(), ids=TRANSFORM_IDS)
def test_float16_data_is_computed_and_returned_as_float32(t, x, seg):
    half = x.astype(np.float16)
    out = t(rng=5, data=half, seg=seg)
    ref = t(rng=5, data=half.astype(np.float32), seg=seg)  # float16 -> float32 is exact
    assert out["data"].dtype == np.float32
    np.testing.assert_array_equal(out["data"], ref["data"])
    np.testing.assert_array_equal(out["seg"], ref["seg"])


def test_float16_through_the_functional_layer_names_x_and_the_fix(x):
    with pytest.raises(
        TypeError,
        match=r"x has dtype float16; images must be float32 or float64 \(convert with x.astype\('float32'\)\)",
    ):
        F.gamma(x.astype(np.float16), 1.2)
    with pytest.raises(TypeError, match=r"data has dtype float16.*data.astype"):
        F.spatial_transform(x.astype(np.float16), affine=np.zeros((2, 3, 4)), patch_size=(4, 4, 4))


# --- non-contiguous and negative strides --------------------------------------------------------


VIEWS = {
    "transposed": lambda a: a.transpose(0, 1, 4, 3, 2),
    "step2": lambda a: a[:, :, ::2],
    "negative": lambda a: a[..., ::-1],
    "both": lambda a: a[:, :, ::-2, :, 1::3],
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=list(VIEWS))
def test_strided_views_give_the_result_of_their_contiguous_copy(view, x, seg):
    xv, sv = view(x), view(seg)
    assert not xv.flags.c_contiguous
    for t in (_st(patch_size=None), da.Compose([_st(patch_size=None), da.Contrast(), da.Mirror()]),
              da.CenterCrop((3, 3, 3)), da.ZScoreNormalize(backend="cpu")):  # fmt: skip
        out = t(rng=2, data=xv, seg=sv)
        ref = t(rng=2, data=np.ascontiguousarray(xv), seg=np.ascontiguousarray(sv))
        np.testing.assert_array_equal(out["data"], ref["data"])
        np.testing.assert_array_equal(out["seg"], ref["seg"])
        assert out["data"].flags.c_contiguous


@pytest.mark.parametrize("view", VIEWS.values(), ids=list(VIEWS))
def test_strided_views_against_scipy(view, x):
    xv = view(x)[0, 0]
    m = np.array([[0.95, 0.1, 0.0, 0.3], [-0.1, 1.0, 0.0, -0.2], [0.0, 0.05, 1.05, 0.1], [0, 0, 0, 1]])
    out = F.affine_resample(xv, m, order=1, mode="nearest")
    ref = ndi.affine_transform(np.ascontiguousarray(xv, np.float64), m, order=1, mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-4)
    np.testing.assert_allclose(
        F.brightness_multiplicative(view(x), 1.5), view(x) * np.float32(1.5), rtol=1e-6
    )
    np.testing.assert_allclose(
        F.gaussian_blur(view(x), 1.0),
        ndi.gaussian_filter(view(x).astype(np.float64), (0, 0, 1, 1, 1)),
        atol=1e-4,
    )


# --- torch tensors that require grad -------------------------------------------------------------


@pytest.mark.torch
def test_tensors_that_require_grad_are_read_detached(x, seg):
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    st = da.Compose([_st(), da.GaussianNoise(), da.BrightnessMultiplicative()])
    out = st(rng=4, data=xt, seg=torch.from_numpy(seg))
    ref = st(rng=4, data=x, seg=seg)
    assert isinstance(out["data"], torch.Tensor) and not out["data"].requires_grad
    assert out["data"].grad_fn is None
    np.testing.assert_array_equal(out["data"].numpy(), ref["data"])
    np.testing.assert_array_equal(out["seg"].numpy(), ref["seg"])
    assert xt.requires_grad and xt.grad is None  # the input is untouched


# --- crop larger than the input ------------------------------------------------------------------


def test_crop_larger_than_the_input(x, seg):
    for cls in (da.RandomCrop, da.CenterCrop, da.ForegroundCrop):
        with pytest.raises(
            ValueError, match=r"crop size \(12, 12, 12\) is larger than the input .*pad_if_needed=True"
        ):
            cls((12, 12, 12), pad_if_needed=False)(data=x, seg=seg)
    out = da.CenterCrop((12, 12, 12), pad_value=-5.0)(data=x, seg=seg)
    ref = np.pad(
        x, ((0, 0), (0, 0), (1, 1), (1, 0), (0, 0)), constant_values=-5.0
    )  # centre voxel at shape // 2
    np.testing.assert_array_equal(out["data"], ref)
    np.testing.assert_array_equal(out["seg"], np.pad(seg, ((0, 0), (0, 0), (1, 1), (1, 0), (0, 0))))


# --- NaN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1, 3])
def test_nan_propagates_through_resampling_as_in_scipy(order):
    x = np.random.default_rng(1).normal(size=(9, 10, 11)).astype(np.float32)
    x[4, 5, 6] = np.nan
    m = np.eye(4)
    m[:3, :3] = [[0.9, 0.1, 0.0], [-0.1, 0.95, 0.0], [0.0, 0.0, 1.05]]
    m[:3, 3] = 0.37
    out = F.affine_resample(x, m, order=order, mode="nearest")
    ref = ndi.affine_transform(x.astype(np.float64), m, order=order, mode="nearest")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out).any()
    finite = ~np.isnan(ref)
    np.testing.assert_allclose(out[finite], ref[finite], atol=1e-4)


def test_nan_in_intensity_ops_follows_numpy(x):
    xn = x.copy()
    xn[0, 0, 3, 4, 5] = np.nan
    hit = np.zeros(SHAPE, bool)
    hit[0, 0, 3, 4, 5] = True
    np.testing.assert_array_equal(
        np.isnan(F.gaussian_noise(xn, 0.1, seed=0)), hit
    )  # voxel-wise: only that voxel
    np.testing.assert_array_equal(F.brightness_additive(xn, 1.0), xn + np.float32(1.0))  # NaN == NaN here
    np.testing.assert_array_equal(F.clip(xn, -1, 1), np.clip(xn, -1, 1))
    for op in (F.zscore_normalize, lambda a: F.contrast(a, 1.3), lambda a: F.gamma(a, 1.2)):
        out, clean = op(xn), op(x)  # per sample and channel statistics: the whole channel becomes NaN
        assert np.isnan(out[0, 0]).all()
        np.testing.assert_array_equal(out[1], clean[1])  # the other sample is unaffected
    v = x[1, 0].astype(np.float64)
    np.testing.assert_allclose(F.zscore_normalize(xn)[1, 0], (v - v.mean()) / v.std(), atol=1e-5)
    with pytest.raises(ValueError, match=r"percentile_clip got data that contains NaN.*nan_to_num"):
        F.percentile_clip(xn)
    with pytest.raises(ValueError, match="percentile_clip got data that contains NaN"):
        da.Compose([_st(), da.PercentileClip()])(data=xn)


# --- integer data and labels ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int64", "int16", "uint8"])
def test_integer_data_is_rejected_with_the_fix(x, dtype):
    for t in (_st(), da.GaussianNoise(), da.Compose([_st(), da.Gamma()])):
        with pytest.raises(
            TypeError,
            match=rf"data has dtype {dtype}; images must be float32 or float64 \(convert with data.astype\('float32'\)\)",
        ):
            t(data=(x * 10).astype(dtype))


def test_int64_labels_are_resampled_exactly():
    """Labels beyond float32's integer range survive (nearest sampling copies, it does not round-trip floats)."""
    rng = np.random.default_rng(3)
    labels = (2**40 + rng.integers(0, 5, size=(2, 1, 9, 10, 11))).astype(np.int64)
    m = np.eye(4)[[1, 0, 2, 3]]  # swap the first two axes, then shift: integer coordinates, no ties
    m[:3, 3] = [1, -2, 3]
    out = F.affine_resample(labels, m, (10, 9, 11), order=0, mode="constant", cval=7)
    assert out.dtype == np.int64
    for i in range(2):
        ref = ndi.affine_transform(
            labels[i, 0], m, output_shape=(10, 9, 11), order=0, mode="constant", cval=7
        )
        np.testing.assert_array_equal(out[i, 0], ref)
    data = rng.normal(size=(2, 1, 9, 10, 11)).astype(np.float32)
    st = da.SpatialTransform((9, 10, 11), rotation=0, scale=1, order_seg=0)
    res = st(data=data, seg=labels)  # identity transform: an exact copy
    np.testing.assert_array_equal(res["seg"], labels)
    np.testing.assert_array_equal(res["data"], data)


def test_bool_seg_is_computed_as_uint8_and_returned_as_bool(x, seg):
    mask = seg > 0
    for t in (
        _st(),
        _st(order_seg=1),
        da.Mirror(),
        da.CenterCrop((6, 6, 6)),
        da.Compose([_st(), da.Mirror()]),
    ):
        out = t(rng=9, data=x, seg=mask)
        ref = t(rng=9, data=x, seg=mask.astype(np.uint8))
        assert out["seg"].dtype == np.bool_
        np.testing.assert_array_equal(out["seg"], ref["seg"].astype(bool))
        np.testing.assert_array_equal(out["data"], ref["data"])
    with pytest.raises(TypeError, match=r"seg has dtype bool; segmentations must be uint8.*seg.astype"):
        F.spatial_transform(seg=mask, affine=np.broadcast_to(np.eye(3, 4), (2, 3, 4)), patch_size=(4, 4, 4))


# --- empty arrays ----------------------------------------------------------------------------------


@pytest.mark.parametrize("t", _transforms(), ids=TRANSFORM_IDS)
@pytest.mark.parametrize("where", ["batch", "spatial"])
def test_empty_arrays_are_rejected_by_the_transforms(t, x, seg, where):
    cut = (slice(0, 0),) if where == "batch" else (slice(None), slice(None), slice(0, 0))
    with pytest.raises(
        ValueError, match=r"data has shape .*, which is empty; every axis needs at least one element"
    ):
        t(data=x[cut], seg=seg[cut])


def test_empty_arrays_in_the_functional_layer(x):
    # documented: affine_resample and flip return an empty result of the right shape ...
    assert F.affine_resample(x[:, :, :0], np.eye(4)).shape == (2, 1, 0, 11, 12)
    assert F.affine_resample(x[0, 0], np.eye(4), (0, 3, 3)).shape == (0, 3, 3)
    assert da.flip(x[:0], 2).shape == (0, *SHAPE[1:])
    # ... the batch operations refuse, naming the argument
    with pytest.raises(ValueError, match=r"x has shape \(0, 1, 10, 11, 12\), which is empty"):
        F.gaussian_noise(x[:0], 0.1)
    with pytest.raises(ValueError, match=r"data has shape .*, which is empty"):
        F.spatial_transform(x[:, :, :0], affine=np.zeros((2, 3, 4)), patch_size=(4, 4, 4))


@pytest.mark.torch
def test_torch_bfloat16_names_the_fix(x):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"x is a torch.bfloat16 tensor.*x.float\(\)"):
        F.zscore_normalize(torch.from_numpy(x).to(torch.bfloat16))
