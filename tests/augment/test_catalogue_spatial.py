"""Discrete spatial ops of the catalogue (Rot90, TransposeAxes, BlankRectangles) and dummy-2D spatial transforms.

References: numpy.rot90 / numpy.transpose per sample, batchgeneratorsv2's transforms with the same
parameters, hand-computed box fills, and the 2D spatial transform applied slice by slice.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import delira.augment as da
from delira.augment.transforms.discrete import blank_rectangles, permute_axes, rot90


def _batch(shape, n=4, c=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "data": rng.standard_normal((n, c, *shape)).astype(np.float32),
        "seg": rng.integers(0, 4, (n, 1, *shape)).astype(np.int16),
    }


def _np_rotate(x, rots):
    for k, (a, b) in rots:
        x = np.rot90(x, k, axes=(1 + a, 1 + b))  # x is one sample (C, *spatial)
    return x


# --- Rot90 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, axes, combos",
    [((8, 8, 8), (0, 1, 2), 1), ((8, 8, 8), (0, 1, 2), (1, 3)), ((6, 8, 8), (1, 2), 2), ((8, 8), (0, 1), 1)],
)
def test_rot90_is_numpy_rot90_per_sample_on_data_and_seg(shape, axes, combos):
    batch = _batch(shape, n=6)
    t = da.Rot90(axes=axes, num_combinations=combos, p=0.8)
    out = t(rng=3, **batch)
    params = da.Rot90(axes=axes, num_combinations=combos, p=0.8).draw(np.random.default_rng(3), 6)
    for i, rots in enumerate(params):
        for key in ("data", "seg"):
            ref = batch[key][i] if rots is None else _np_rotate(batch[key][i], rots)
            np.testing.assert_array_equal(out[key][i], ref)
            assert out[key].dtype == batch[key].dtype
    assert not np.shares_memory(out["data"], batch["data"])


def test_rot90_draws_every_allowed_plane_and_turn_uniformly():
    params = da.Rot90(num_rot=(1, 2, 3), axes=(0, 1, 2)).draw(np.random.default_rng(0), 9000)
    counts: dict = {}
    for rots in params:
        assert len(rots) == 1
        counts[rots[0]] = counts.get(rots[0], 0) + 1
    expected = {(k, plane) for k in (1, 2, 3) for plane in ((0, 1), (0, 2), (1, 2))}
    assert set(counts) == expected
    assert all(abs(c / 9000 - 1 / 9) < 0.02 for c in counts.values())
    only_12 = da.Rot90(num_rot=(1,), axes=(2, 1)).draw(np.random.default_rng(1), 50)
    assert {r[0] for r in only_12} == {(1, (1, 2))}


def test_rot90_probability_and_combination_count():
    params = da.Rot90(p=0.3).draw(np.random.default_rng(0), 4000)
    assert abs(np.mean([p is not None for p in params]) - 0.3) < 0.03
    params = da.Rot90(num_combinations=(1, 3)).draw(np.random.default_rng(0), 4000)
    counts = np.bincount([len(p) for p in params], minlength=4) / 4000
    # bgv2: round(uniform(1, 3)): 1 on [1, 1.5), 2 on [1.5, 2.5), 3 on [2.5, 3]
    np.testing.assert_allclose(counts, [0, 0.25, 0.5, 0.25], atol=0.03)
    unchanged = da.Rot90(p=0.0)(**_batch((8, 8, 8)))
    np.testing.assert_array_equal(unchanged["data"], _batch((8, 8, 8))["data"])


@pytest.mark.parametrize("seed", range(4))
def test_rot90_matches_batchgeneratorsv2_with_its_parameters(seed):
    torch = pytest.importorskip("torch")
    from batchgeneratorsv2.transforms.spatial.rot90 import Rot90Transform

    b = _batch((8, 8, 8), n=1, seed=seed)
    bg = Rot90Transform(num_axis_combinations=3, num_rot_per_combination=(1, 2, 3), allowed_axes={0, 1, 2})
    np.random.seed(seed)  # noqa: NPY002 (bgv2 draws from the legacy global generator)
    params = bg.get_parameters(image=torch.from_numpy(b["data"][0]))
    ref = bg.apply(
        {"image": torch.from_numpy(b["data"][0]), "segmentation": torch.from_numpy(b["seg"][0])}, **params
    )
    img, seg = b["data"], b["seg"]
    for k, axes in zip(params["num_rot_per_combination"], params["axis_combinations"]):
        spatial = (axes[0] - 1, axes[1] - 1)  # bgv2 counts the channel axis
        img, seg = rot90(img, k, spatial), rot90(seg, k, spatial)
    np.testing.assert_array_equal(img[0], ref["image"].numpy())
    np.testing.assert_array_equal(seg[0], ref["segmentation"].numpy())


def test_rot90_refuses_non_square_planes_and_bad_arguments():
    with pytest.raises(ValueError, match=r"sizes \(8, 8, 6\).*num_rot=\(2,\)"):
        da.Rot90()(**_batch((8, 8, 6)))
    # 180 degrees keeps any shape
    b = _batch((8, 6, 5))
    out = da.Rot90(num_rot=(2,))(rng=0, **b)
    params = da.Rot90(num_rot=(2,)).draw(np.random.default_rng(0), 4)
    for i, rots in enumerate(params):
        np.testing.assert_array_equal(out["data"][i], _np_rotate(b["data"][i], rots))
    # axes of equal size inside an anisotropic volume
    da.Rot90(axes=(1, 2))(**_batch((5, 8, 8)))
    with pytest.raises(ValueError, match=r"2 spatial axes.*axes=\(0, 1\)"):
        da.Rot90()(**_batch((8, 8)))
    with pytest.raises(ValueError, match="at least 2"):
        da.Rot90(axes=(1,))
    with pytest.raises(ValueError, match="repeats"):
        da.Rot90(axes=(1, 1))
    with pytest.raises(ValueError, match="num_rot"):
        da.Rot90(num_rot=())
    with pytest.raises(ValueError, match="num_rot"):
        da.Rot90(num_rot=(1.5,))
    with pytest.raises(TypeError, match="sequence of spatial axis indices"):
        da.Rot90(axes=2)
    with pytest.raises(ValueError, match="probability"):
        da.Rot90(p=1.5)


# --- TransposeAxes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, axes", [((8, 8, 8), (0, 1, 2)), ((5, 8, 8), (1, 2)), ((8, 8), (0, 1))])
def test_transpose_is_numpy_transpose_per_sample(shape, axes):
    batch = _batch(shape, n=6)
    out = da.TransposeAxes(axes=axes, p=0.7)(rng=5, **batch)
    params = da.TransposeAxes(axes=axes, p=0.7).draw(np.random.default_rng(5), 6, len(shape))
    for i, order in enumerate(params):
        for key in ("data", "seg"):
            ref = (
                batch[key][i] if order is None else np.transpose(batch[key][i], (0, *(1 + o for o in order)))
            )
            np.testing.assert_array_equal(out[key][i], ref)
        if order is not None:
            assert sorted(order) == list(range(len(shape)))
            assert all(order[d] == d for d in range(len(shape)) if d not in axes)


def test_transpose_draws_every_permutation():
    params = da.TransposeAxes().draw(np.random.default_rng(0), 6000, 3)
    perms = {p for p in params}
    assert perms == set(itertools.permutations(range(3)))
    counts = [sum(p == q for p in params) / 6000 for q in perms]
    assert max(abs(c - 1 / 6) for c in counts) < 0.02


@pytest.mark.parametrize("seed", range(4))
def test_transpose_matches_batchgeneratorsv2_with_its_parameters(seed):
    torch = pytest.importorskip("torch")
    from batchgeneratorsv2.transforms.spatial.transpose import TransposeAxesTransform

    b = _batch((7, 7, 7), n=1, seed=seed)
    bg = TransposeAxesTransform({0, 1, 2})
    np.random.seed(seed)  # noqa: NPY002 (bgv2 draws from the legacy global generator)
    params = bg.get_parameters(image=torch.from_numpy(b["data"][0]))
    ref = bg.apply(
        {"image": torch.from_numpy(b["data"][0]), "segmentation": torch.from_numpy(b["seg"][0])}, **params
    )
    order = [a - 1 for a in params["axis_order"][1:]]
    np.testing.assert_array_equal(permute_axes(b["data"], order)[0], ref["image"].numpy())
    np.testing.assert_array_equal(permute_axes(b["seg"], order)[0], ref["segmentation"].numpy())


def test_transpose_refuses_unequal_axes_like_batchgeneratorsv2():
    torch = pytest.importorskip("torch")
    from batchgeneratorsv2.transforms.spatial.transpose import TransposeAxesTransform

    with pytest.raises(ValueError):
        TransposeAxesTransform({0, 1, 2})(image=torch.zeros(1, 6, 8, 8))
    with pytest.raises(ValueError, match=r"sizes \(6, 8, 8\)"):
        da.TransposeAxes()(**_batch((6, 8, 8)))
    with pytest.raises(ValueError, match="do not fit"):
        da.TransposeAxes(axes=(1, 2))(**_batch((8, 8)))
    with pytest.raises(ValueError, match="at least 2"):
        da.TransposeAxes(axes=(0,))


# --- BlankRectangles ----------------------------------------------------------------------------------
def test_one_box_is_filled_with_its_own_mean_and_nothing_else_changes():
    b = _batch((10, 12, 9), n=3, c=1)
    t = da.BlankRectangles(num_rectangles=1, size=((2, 6), (3, 7), (1, 5)), fill="mean")
    out = t(rng=2, **b)
    np.testing.assert_array_equal(out["seg"], b["seg"])
    for i in range(3):
        changed = out["data"][i, 0] != b["data"][i, 0]
        idx = np.argwhere(changed)
        lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
        box = tuple(slice(a, z) for a, z in zip(lo, hi))
        assert changed[box].all() and changed.sum() == changed[box].size  # one solid box
        assert 2 <= hi[0] - lo[0] < 6 and 3 <= hi[1] - lo[1] < 7 and 1 <= hi[2] - lo[2] < 5
        np.testing.assert_allclose(out["data"][i, 0][box], b["data"][i, 0][box].mean(), rtol=1e-6)


def test_blank_rectangles_transform_is_its_draw_applied_in_order():
    b = _batch((9, 9, 9), n=4, c=3)
    kw = dict(num_rectangles=(1, 4), size=(2, 3, 4), fill=(5.0, 6.0), p=0.75, p_per_channel=0.5)
    out = da.BlankRectangles(**kw)(rng=9, **b)["data"]
    boxes = da.BlankRectangles(**kw).draw(np.random.default_rng(9), 4, 3, (9, 9, 9))
    ref = b["data"].copy()
    for i, c, lower, upper, fill in boxes:
        assert 5.0 <= fill <= 6.0 and [u - lo for lo, u in zip(lower, upper)] == [2, 3, 4]
        assert all(0 <= lo and u <= 9 for lo, u in zip(lower, upper))
        ref[i, c, lower[0] : upper[0], lower[1] : upper[1], lower[2] : upper[2]] = fill
    np.testing.assert_array_equal(out, ref)


def test_blank_rectangles_channels_counts_and_clipping():
    b = _batch((6, 6), n=50, c=3)
    boxes = da.BlankRectangles(num_rectangles=(2, 4), size=4, apply_to_channels=(0, 2)).draw(
        np.random.default_rng(0), 50, 3, (6, 6)
    )
    assert {c for _, c, *_ in boxes} == {0, 2}
    per = np.bincount([i * 3 + c for i, c, *_ in boxes], minlength=150).reshape(50, 3)
    assert set(per[:, [0, 2]].ravel()) == {2, 3} and not per[:, 1].any()  # high excluded, as bgv2
    big = da.BlankRectangles(num_rectangles=1, size=(20, 3)).draw(np.random.default_rng(0), 5, 1, (6, 6))
    assert all(lower[0] == 0 and upper[0] == 6 and upper[1] - lower[1] == 3 for _, _, lower, upper, _ in big)
    square = da.BlankRectangles(num_rectangles=3, size=((1, 5), (5, 6)), force_square=True).draw(
        np.random.default_rng(0), 20, 1, (6, 6)
    )
    assert all(upper[0] - lower[0] == upper[1] - lower[1] for _, _, lower, upper, _ in square)
    out = da.BlankRectangles(size=3, p_per_channel=0.0)(**b)
    np.testing.assert_array_equal(out["data"], b["data"])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fill", ["mean", 0.5])
def test_blank_rectangles_match_batchgeneratorsv2_with_its_parameters(seed, fill):
    torch = pytest.importorskip("torch")
    from batchgeneratorsv2.transforms.noise.blank_rectangle import BlankRectangleTransform

    b = _batch((12, 12, 12), n=1, c=2, seed=seed)
    bg = BlankRectangleTransform(
        rectangle_size=((2, 7), (2, 7), (2, 7)),
        # bgv2's docs name np.mean, which numpy 2 cannot apply to a torch tensor; the same mean:
        rectangle_value=(lambda x: x.mean()) if fill == "mean" else fill,
        num_rectangles=(3, 8),  # overlapping boxes: each mean is taken after the boxes before it
    )
    np.random.seed(seed)  # noqa: NPY002 (bgv2 draws from the legacy global generator)
    img = torch.from_numpy(b["data"][0].copy())
    params = bg.get_parameters(image=img)
    ref = bg._apply_to_image(img, **params).numpy()
    boxes = [(0, c, lb, ub, fill) for c, rects in enumerate(params["rectangles"]) for lb, ub in rects]
    np.testing.assert_allclose(blank_rectangles(b["data"], boxes)[0], ref, rtol=1e-6, atol=1e-7)


def test_blank_rectangles_bad_arguments():
    with pytest.raises(ValueError, match="high is excluded"):
        da.BlankRectangles(num_rectangles=(3, 3))
    with pytest.raises(ValueError, match=">= 1"):
        da.BlankRectangles(size=0)
    with pytest.raises(ValueError, match="'mean'"):
        da.BlankRectangles(fill="max")
    with pytest.raises(TypeError, match="fill='mean'"):
        da.BlankRectangles(fill=np.mean)
    with pytest.raises(ValueError, match="probability"):
        da.BlankRectangles(p_per_channel=2.0)
    with pytest.raises(ValueError, match="channels"):
        da.BlankRectangles(apply_to_channels=(3,))(**_batch((6, 6), c=2))
    with pytest.raises(ValueError, match="channel indices >= 0"):
        da.BlankRectangles(apply_to_channels=(-1,))
    with pytest.raises(ValueError, match="one entry per axis"):
        da.BlankRectangles(size=(2, 2, 2))(**_batch((6, 6)))
    with pytest.raises(TypeError, match="float32"):
        da.BlankRectangles()(data=np.zeros((1, 1, 6, 6), np.int32))


# --- frameworks ----------------------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize(
    "make",
    [lambda: da.Rot90(), lambda: da.TransposeAxes(), lambda: da.BlankRectangles(size=3, fill=(1.0, 2.0))],
)
def test_torch_cpu_tensors_in_and_out(make):
    import torch

    b = _batch((8, 8, 8))
    out = make()(rng=4, data=torch.from_numpy(b["data"]), seg=torch.from_numpy(b["seg"]))
    ref = make()(rng=4, **b)
    assert isinstance(out["data"], torch.Tensor) and out["data"].dtype == torch.float32
    assert isinstance(out["seg"], torch.Tensor) and out["seg"].dtype == torch.int16
    np.testing.assert_array_equal(out["data"].numpy(), ref["data"])
    np.testing.assert_array_equal(out["seg"].numpy(), ref["seg"])


@pytest.mark.tf
def test_tensorflow_cpu_tensors_and_bool_seg_in_and_out():
    import tensorflow as tf

    b = _batch((6, 6, 6))
    for make in (lambda: da.Rot90(), lambda: da.TransposeAxes(), lambda: da.BlankRectangles(size=3)):
        out = make()(rng=4, data=tf.constant(b["data"]), seg=tf.constant(b["seg"]))
        ref = make()(rng=4, **b)
        assert isinstance(out["data"], tf.Tensor) and out["seg"].dtype == tf.int16
        np.testing.assert_array_equal(out["data"].numpy(), ref["data"])
        np.testing.assert_array_equal(out["seg"].numpy(), ref["seg"])
        as_bool = make()(rng=4, data=b["data"], seg=b["seg"] > 1)["seg"]
        assert as_bool.dtype == bool
        np.testing.assert_array_equal(as_bool, ref["seg"] > 1)


@pytest.mark.parametrize(
    "framework", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]
)
def test_functional_ops_in_each_framework_equal_numpy(framework):
    """The framework-native paths that CUDA inputs take, run here on CPU tensors."""
    x = _batch((5, 5, 5), n=2)["data"]
    if framework == "torch":
        import torch

        wrap, back = torch.from_numpy, lambda t: t.numpy()
    else:
        import tensorflow as tf

        wrap, back = tf.constant, lambda t: t.numpy()
    for k in range(-1, 5):
        for axes in ((0, 1), (0, 2), (1, 2), (2, 0)):
            ref = np.rot90(x, k, axes=(2 + axes[0], 2 + axes[1]))
            np.testing.assert_array_equal(back(rot90(wrap(x), k, axes)), ref)
    for order in itertools.permutations(range(3)):
        np.testing.assert_array_equal(
            back(permute_axes(wrap(x), order)), np.transpose(x, (0, 1, *(2 + o for o in order)))
        )
    boxes = [
        (1, 0, [0, 1, 2], [3, 4, 5], "mean"),
        (0, 1, [1, 1, 1], [2, 5, 3], -2.0),
        (1, 0, [2, 2, 2], [5, 5, 5], "mean"),
    ]
    np.testing.assert_allclose(back(blank_rectangles(wrap(x), boxes)), blank_rectangles(x, boxes), rtol=1e-6)


@pytest.mark.cuda
def test_cuda_arrays_stay_on_the_gpu_and_match_the_host():
    import torch

    b = _batch((8, 8, 8))
    for make in (lambda: da.Rot90(), lambda: da.TransposeAxes(), lambda: da.BlankRectangles(size=3)):
        out = make()(rng=1, data=torch.from_numpy(b["data"]).cuda(), seg=torch.from_numpy(b["seg"]).cuda())
        ref = make()(rng=1, **b)
        assert out["data"].is_cuda and out["seg"].is_cuda and out["seg"].dtype == torch.int16
        np.testing.assert_allclose(out["data"].cpu().numpy(), ref["data"], rtol=1e-6)
        np.testing.assert_array_equal(out["seg"].cpu().numpy(), ref["seg"])
        with pytest.raises(ValueError, match="CUDA array but seg is a host array"):
            make()(data=torch.from_numpy(b["data"]).cuda(), seg=b["seg"])
    try:
        import cupy
    except ImportError:
        return
    for make in (lambda: da.Rot90(), lambda: da.TransposeAxes(), lambda: da.BlankRectangles(size=3)):
        out = make()(rng=1, data=cupy.asarray(b["data"]), seg=cupy.asarray(b["seg"]))
        ref = make()(rng=1, **b)
        assert isinstance(out["data"], cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(out["data"]), ref["data"], rtol=1e-6)
        np.testing.assert_array_equal(cupy.asnumpy(out["seg"]), ref["seg"])


# --- dummy 2D ------------------------------------------------------------------------------------------
def _slice_by_slice(batch, axis, patch, seed, **kw):
    """Reference: a 2D SpatialTransform of the in-plane shape on every slice, each with the same draws."""
    plane_patch = tuple(p for d, p in enumerate(patch) if d != axis)
    outs = {"data": [], "seg": []}
    for j in range(batch["data"].shape[2 + axis]):
        sl = {k: np.ascontiguousarray(np.take(x, j, axis=2 + axis)) for k, x in batch.items()}
        out = da.SpatialTransform(plane_patch, **kw)(rng=seed, **sl)
        for k in outs:
            outs[k].append(out[k])
    return {k: np.stack(v, axis=2 + axis) for k, v in outs.items()}


@pytest.mark.parametrize(
    "axis, shape, patch, kw",
    [
        (0, (5, 16, 14), (5, 12, 12), dict(rotation=(-60, 60), scale=(0.8, 1.25))),
        (0, (4, 14, 14), (4, 14, 14), dict(elastic_magnitude=(1, 2), elastic_scale=(4, 6), order_seg=1)),
        (1, (12, 3, 12), (10, 3, 10), dict(scale_per_axis=True, shear=(-0.1, 0.1), order_data=3)),
        (2, (12, 13, 4), (12, 12, 4), dict(translation=(-2, 2), elastic_magnitude=(0, 2), random_crop=True)),
    ],
)
def test_dummy_2d_is_the_2d_transform_on_every_slice(axis, shape, patch, kw):
    b = _batch(shape, n=3)
    out = da.SpatialTransform(patch, dummy_2d_axis=axis, **kw)(rng=11, **b)
    ref = _slice_by_slice(b, axis, patch, 11, **kw)
    assert out["data"].shape == (3, 2, *patch)
    np.testing.assert_allclose(out["data"], ref["data"], atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(out["seg"], ref["seg"])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_dummy_2d_keeps_every_slice_in_place(axis):
    shape = [12, 12, 12]
    shape[axis] = 6
    index = np.arange(6, dtype=np.float32).reshape([-1 if d == axis else 1 for d in range(3)])
    data = np.broadcast_to(index, shape)[None, None].repeat(4, axis=0).copy()
    kw = dict(rotation=(-180, 180), scale=(0.7, 1.4), elastic_magnitude=(1, 3), elastic_scale=(4, 6))
    t = da.SpatialTransform(None, dummy_2d_axis=axis, mode_data="nearest", **kw)
    out = t(rng=0, data=data)["data"]
    np.testing.assert_allclose(
        out, data, atol=1e-5
    )  # slice j holds j everywhere: nothing moved along the axis
    # and the drawn map is the identity along the axis (rows and columns), compared with scipy
    import scipy.ndimage as ndi

    affine, _, _, patch = t.draw(np.random.default_rng(0), 4, tuple(shape), None)
    other = [d for d in range(3) if d != axis]
    np.testing.assert_array_equal(affine[:, axis, :3], np.eye(3)[axis][None].repeat(4, 0))
    np.testing.assert_array_equal(affine[:, other, axis], 0.0)
    rigid = da.SpatialTransform(None, dummy_2d_axis=axis, rotation=(-180, 180), scale=(0.7, 1.4))
    vol = _batch(tuple(shape), n=2, c=1)["data"]
    got = rigid(rng=1, data=vol)["data"]
    aff, *_ = rigid.draw(np.random.default_rng(1), 2, tuple(shape), None)
    for i in range(2):
        ref = ndi.affine_transform(vol[i, 0], aff[i, :, :3], aff[i, :, 3], output_shape=patch, order=1)
        np.testing.assert_allclose(got[i, 0], ref, atol=2e-5)


def test_dummy_2d_random_crop_along_the_axis_is_an_integer_shift():
    index = np.arange(10, dtype=np.float32).reshape(-1, 1, 1)
    data = np.broadcast_to(index, (10, 8, 8))[None, None].repeat(20, axis=0).copy()
    t = da.SpatialTransform((4, 8, 8), dummy_2d_axis=0, random_crop=True, mode_data="nearest")
    out = t(rng=3, data=data)["data"]
    starts = out[:, 0, :, 3, 3][:, 0]
    np.testing.assert_allclose(out[:, 0, :, 3, 3], starts[:, None] + np.arange(4), atol=1e-5)
    assert set(np.round(starts).astype(int)) <= set(range(7)) and len(set(np.round(starts))) > 2


def test_dummy_2d_fuses_in_compose_with_mirror_and_intensity():
    b = _batch((4, 12, 12), n=4)
    members = lambda: [  # noqa: E731
        da.SpatialTransform((4, 10, 10), dummy_2d_axis=0, elastic_magnitude=(1, 2), elastic_scale=(4, 5)),
        da.BrightnessMultiplicative((0.5, 2.0)),
        da.Mirror(axes=(0, 1, 2)),
    ]
    fused = da.Compose(members())(rng=2, **b)
    plain = da.Compose(members(), fuse=False)(rng=2, **b)
    # float32 rounding of the mirrored field: the 2e-5 of test_fused_compose_equals_unfused_without_noise
    # times the brightness factor (up to 2), relative for the large values
    np.testing.assert_allclose(fused["data"], plain["data"], atol=4e-5, rtol=2e-5)
    np.testing.assert_array_equal(fused["seg"], plain["seg"])


def test_dummy_2d_bad_arguments():
    for bad in (3, -1, True, 1.5):
        with pytest.raises(ValueError, match="dummy_2d_axis"):
            da.SpatialTransform(dummy_2d_axis=bad)
    with pytest.raises(ValueError, match="3D patch_size"):
        da.SpatialTransform((12, 12), dummy_2d_axis=0)
    with pytest.raises(ValueError, match="one in-plane range"):
        da.SpatialTransform(rotation=[(-10, 10), (0, 0), (0, 0)], dummy_2d_axis=0)
    with pytest.raises(ValueError, match="needs 3D data"):
        da.SpatialTransform(dummy_2d_axis=0)(**_batch((8, 8)))


@pytest.mark.cuda
def test_dummy_2d_on_cuda_matches_the_host():
    import torch

    b = _batch((4, 12, 12))
    make = lambda: da.SpatialTransform((4, 10, 10), dummy_2d_axis=0, elastic_magnitude=(1, 2))  # noqa: E731
    out = make()(rng=5, data=torch.from_numpy(b["data"]).cuda(), seg=torch.from_numpy(b["seg"]).cuda())
    ref = make()(rng=5, **b)
    assert out["data"].is_cuda
    np.testing.assert_allclose(out["data"].cpu().numpy(), ref["data"], atol=1e-4)
    assert (out["seg"].cpu().numpy() != ref["seg"]).mean() < 1e-3  # nearest-label ties within FMA rounding
