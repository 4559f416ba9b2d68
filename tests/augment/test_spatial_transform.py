"""The fused spatial transform: mirroring, elastic, alignment of image and labels, crops, seeds, threads."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

import delira.augment as da
from delira.augment import functional as F
from delira.augment.functional import elastic as E
from tests.augment.conftest import sphere


def _batch(rng, n=2, shape=(24, 26, 28), labels=3):
    data = rng.standard_normal((n, 1, *shape)).astype(np.float32)
    seg = rng.integers(0, labels, (n, 1, *shape)).astype(np.int16)
    return data, seg


def test_mirror_alone_equals_numpy_flip():
    rng = np.random.default_rng(0)
    data, seg = _batch(rng)
    for axes in [(0,), (1, 2), (0, 1, 2)]:
        flags = np.zeros((2, 3), bool)
        flags[:, list(axes)] = True
        affine = np.stack([F.transform_matrix(data.shape[2:], data.shape[2:], mirror=f)[0] for f in flags])
        out_d, out_s = F.spatial_transform(data, seg, affine=affine, patch_size=data.shape[2:], order_data=1)
        np.testing.assert_array_equal(out_d, np.flip(data, [a + 2 for a in axes]))
        np.testing.assert_array_equal(out_s, np.flip(seg, [a + 2 for a in axes]))


def test_mirror_transform_flips_per_sample_and_matches_flip():
    rng = np.random.default_rng(1)
    data, seg = _batch(rng, n=8)
    t = da.Mirror((0, 1, 2), p_per_axis=0.5, seed=3)
    out = t(data=data, seg=seg)
    flags = da.Mirror((0, 1, 2), p_per_axis=0.5, seed=3).draw_flags(np.random.default_rng(3), 8, 3)
    for i in range(8):
        axes = [a + 1 for a in np.flatnonzero(flags[i])]
        np.testing.assert_array_equal(out["data"][i], np.flip(data[i], axes))
        np.testing.assert_array_equal(out["seg"][i], np.flip(seg[i], axes))
    assert 0 < flags.mean() < 1


def test_zero_magnitude_elastic_equals_affine_alone():
    rng = np.random.default_rng(2)
    data, seg = _batch(rng)
    patch = (16, 18, 20)
    a, lin = zip(
        *[F.transform_matrix(data.shape[2:], patch, rotation=[0.2, -0.1, 0.3], scale=1.1) for _ in range(2)]
    )
    field = E.random_field(rng, patch, np.zeros(2), np.full(2, 8.0))
    plain = F.spatial_transform(data, seg, affine=np.stack(a), patch_size=patch)
    zero = F.spatial_transform(
        data, seg, affine=np.stack(a), linear=np.stack(lin), elastic=field, patch_size=patch
    )
    np.testing.assert_array_equal(plain[0], zero[0])
    np.testing.assert_array_equal(plain[1], zero[1])


def test_elastic_displacement_matches_dense_field_with_scipy():
    """The kernel's elastic field, evaluated densely in numpy, sampled with scipy.map_coordinates."""
    rng = np.random.default_rng(3)
    data, _ = _batch(rng, n=1)
    patch = (14, 15, 16)
    a, lin = F.transform_matrix(data.shape[2:], patch, rotation=[0.1, 0.2, 0.3], scale=0.9)
    field = E.random_field(rng, patch, np.array([2.5]), np.array([6.0]))
    out, _ = F.spatial_transform(
        data, None, affine=a[None], linear=lin[None], elastic=field, patch_size=patch
    )
    grid = np.stack(np.meshgrid(*[np.arange(p, dtype=float) for p in patch], indexing="ij"))
    disp = E.evaluate(field, patch)[0]
    coords = np.tensordot(a[:, :3], grid, axes=(1, 0)) + a[:, 3].reshape(3, 1, 1, 1)
    coords += np.tensordot(lin, disp, axes=(1, 0))
    ref = ndi.map_coordinates(data[0, 0].astype(float), coords, order=1, mode="constant", cval=0.0)
    assert np.abs(out[0, 0] - ref).max() < 1e-4


def test_elastic_magnitude_is_the_rms_displacement():
    rng = np.random.default_rng(4)
    patch = (40, 40, 40)
    field = E.random_field(rng, patch, np.full(16, 3.0), np.full(16, 8.0))
    disp = E.evaluate(field, patch)
    rms = np.sqrt((disp**2).mean())
    assert 2.4 < rms < 3.6, rms  # 3 voxels, within sampling error of 16 random fields


def test_batchgenerators_conversion_matches_the_rms_of_their_field():
    """elastic_from_batchgenerators against batchgenerators' own field (gaussian-smoothed noise)."""
    pytest.importorskip("batchgenerators")
    from batchgenerators.augmentations.utils import (
        create_zero_centered_coordinate_mesh,
        elastic_deform_coordinates,
    )

    np.random.seed(0)  # noqa: NPY002 - batchgenerators draws from the global generator
    shape, alpha, sigma = (64, 64, 64), 900.0, 11.0
    coords = create_zero_centered_coordinate_mesh(shape)
    disp = elastic_deform_coordinates(coords, alpha, sigma) - coords
    inner = disp[:, 16:-16, 16:-16, 16:-16]  # away from the zero-padded border of the smoothing
    magnitude, scale = E.elastic_from_batchgenerators(alpha, sigma, 3)
    assert 0.75 < np.sqrt((inner**2).mean()) / magnitude < 1.33
    assert scale == pytest.approx(np.sqrt(3) * sigma)


def test_labels_never_gain_values_and_stay_aligned_with_the_image():
    shape = (40, 40, 40)
    mask = sphere(shape, (20, 18, 21), 9)
    data = (mask.astype(np.float32) * 2.0 - 1.0)[None, None]
    seg = (mask.astype(np.int16) * 2)[None, None]  # labels {0, 2}
    t = da.Compose(
        [
            da.SpatialTransform(
                (32, 32, 32),
                rotation=(-30, 30),
                scale=(0.7, 1.4),
                elastic_alpha=(0, 900),
                elastic_sigma=(9, 13),
            ),
            da.Mirror((0, 1, 2)),
        ],
        seed=7,
    )
    for _ in range(4):
        out = t(data=np.repeat(data, 2, 0), seg=np.repeat(seg, 2, 0))
        assert set(np.unique(out["seg"])) <= {0, 2}
        for i in range(2):
            img_mask = out["data"][i, 0] > 0.0
            seg_mask = out["seg"][i, 0] == 2
            dice = 2 * (img_mask & seg_mask).sum() / (img_mask.sum() + seg_mask.sum())
            assert dice >= 0.95, dice


def test_patch_larger_than_volume_is_padded_with_cval():
    data = np.ones((1, 1, 8, 8, 8), np.float32)
    seg = np.ones((1, 1, 8, 8, 8), np.uint8)
    t = da.SpatialTransform((12, 12, 12), rotation=0, scale=1, cval_data=-5.0, cval_seg=0, seed=0)
    out = t(data=data, seg=seg)
    assert out["data"].shape == (1, 1, 12, 12, 12)
    np.testing.assert_array_equal(out["data"][0, 0, 2:10, 2:10, 2:10], 1.0)  # centred
    assert (out["data"][0, 0, :2] == -5.0).all() and (out["seg"][0, 0, :2] == 0).all()


def test_random_crop_stays_inside_and_varies():
    rng = np.random.default_rng(6)
    data = np.arange(30 * 30 * 30, dtype=np.float32).reshape(1, 1, 30, 30, 30).repeat(16, 0)
    t = da.SpatialTransform((10, 10, 10), rotation=0, scale=1, random_crop=True, order_data=0, seed=1)
    out = t(data=data)["data"]
    corners = set()
    for i in range(16):
        flat = int(out[i, 0, 0, 0, 0])
        z, y, x = np.unravel_index(flat, (30, 30, 30))
        np.testing.assert_array_equal(out[i, 0], data[0, 0, z : z + 10, y : y + 10, x : x + 10])
        corners.add((z, y, x))
    assert len(corners) > 8
    del rng


def test_same_seed_same_output_and_rng_argument():
    rng = np.random.default_rng(8)
    data, seg = _batch(rng)
    make = lambda: da.Compose(  # noqa: E731
        [
            da.SpatialTransform((16, 16, 16), elastic_magnitude=(0, 3)),
            da.GaussianNoise((0, 0.1)),
            da.Mirror(),
        ],
        seed=5,
    )
    a, b = make()(data=data, seg=seg), make()(data=data, seg=seg)
    np.testing.assert_array_equal(a["data"], b["data"])
    np.testing.assert_array_equal(a["seg"], b["seg"])
    c = make()(rng=np.random.default_rng(11), data=data, seg=seg)
    d = make()(rng=11, data=data, seg=seg)
    np.testing.assert_array_equal(c["data"], d["data"])
    assert not np.array_equal(a["data"], c["data"])


def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(9)
    data, seg = _batch(rng, n=2, shape=(30, 31, 32))
    pipeline = [
        da.SpatialTransform((20, 24, 28), elastic_alpha=(0, 900), elastic_sigma=(9, 13)),
        da.GaussianNoise((0, 0.1)),
        da.BrightnessMultiplicative(),
        da.Contrast(),
        da.Gamma(),
        da.Mirror(),
    ]
    outs = []
    for n in (1, 2, 3):
        da.set_num_threads(n)
        outs.append(da.Compose(pipeline, seed=4)(data=data, seg=seg))
    for o in outs[1:]:
        np.testing.assert_array_equal(o["data"], outs[0]["data"])
        np.testing.assert_array_equal(o["seg"], outs[0]["seg"])


def test_fused_compose_equals_unfused_without_noise():
    rng = np.random.default_rng(10)
    data, seg = _batch(rng)
    pipeline = [
        da.SpatialTransform((16, 18, 20), elastic_magnitude=(0, 2)),
        da.BrightnessMultiplicative(),
        da.Gamma(),
        da.Mirror(),
    ]
    fused = da.Compose(pipeline, seed=2)(data=data, seg=seg)
    plain = da.Compose(pipeline, seed=2, fuse=False)(data=data, seg=seg)
    np.testing.assert_allclose(fused["data"], plain["data"], atol=2e-5)
    np.testing.assert_array_equal(fused["seg"], plain["seg"])


def test_2d_transform_and_linear_labels():
    rng = np.random.default_rng(11)
    data = rng.standard_normal((3, 2, 40, 44)).astype(np.float32)
    seg = (sphere((40, 44), (20, 22), 12)[None, None] * np.array([1, 3])[None, :, None, None]).astype(
        np.uint8
    )
    seg = np.repeat(seg, 3, 0)
    out = da.SpatialTransform((32, 32), rotation=(-45, 45), order_seg=1, elastic_magnitude=(0, 2), seed=0)(
        data=data, seg=seg
    )
    assert out["data"].shape == (3, 2, 32, 32) and out["seg"].shape == (3, 2, 32, 32)
    assert set(np.unique(out["seg"][:, 0])) <= {0, 1} and set(np.unique(out["seg"][:, 1])) <= {0, 3}


def test_other_batch_entries_pass_through_and_keys_are_configurable():
    rng = np.random.default_rng(12)
    img = rng.standard_normal((2, 1, 16, 16, 16)).astype(np.float32)
    out = da.SpatialTransform((8, 8, 8), data_key="image", seg_key="label", seed=0)(
        image=img, case_id=["a", "b"]
    )
    assert out["image"].shape == (2, 1, 8, 8, 8) and out["case_id"] == ["a", "b"]
    with pytest.raises(KeyError, match="Set data_key/seg_key"):
        da.SpatialTransform((8, 8, 8))(image=img)
