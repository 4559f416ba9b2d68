"""Preprocessing against hand-computed values and scipy; the on-disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from delira.data import (
    CTNormalization,
    PreprocessedDataset,
    Preprocessor,
    SyntheticPhantomDataset,
    crop_to_nonzero,
    resample,
    resample_segmentation,
    zscore,
)
from delira.data.preprocessing import target_shape


def test_linear_resample_hand_computed():
    a = np.array([[0.0, 1.0, 2.0, 3.0]])
    # halve: output centres at input coordinates 0.5 and 2.5
    np.testing.assert_allclose(resample(a, (2,)), [[0.5, 2.5]])
    # double: centres at -0.25 (edge: 0), 0.25, 0.75, 1.25, ..., 3.25 (edge: 3)
    np.testing.assert_allclose(resample(a, (8,)), [[0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]])
    assert resample(a, (8,)).dtype == np.float64
    assert resample(a.astype(np.int16), (2,)).dtype == np.float32


def test_linear_resample_matches_scipy_map_coordinates():
    rng = np.random.default_rng(0)
    a = rng.random((2, 7, 9, 5)).astype(np.float32)
    shape = (11, 4, 8)
    coords = np.meshgrid(
        *[(np.arange(m) + 0.5) * (n / m) - 0.5 for n, m in zip(a.shape[1:], shape)], indexing="ij"
    )
    for c in range(2):
        ref = ndimage.map_coordinates(a[c].astype(np.float64), coords, order=1, mode="nearest")
        np.testing.assert_allclose(resample(a, shape)[c], ref, atol=1e-5)


def test_nearest_resample_and_segmentation_resample():
    a = np.array([[10, 20, 30, 40]], dtype=np.int16)
    np.testing.assert_array_equal(resample(a, (2,), order=0), [[20, 40]])  # coordinates 0.5 -> 1, 2.5 -> 3
    seg = np.zeros((1, 4, 4), dtype=np.int16)
    seg[0, :2, :2] = 1
    seg[0, 2:, 2:] = 2
    np.testing.assert_array_equal(resample_segmentation(seg, (2, 2)), [[[1, 0], [0, 2]]])
    up = resample_segmentation(seg, (8, 8))
    np.testing.assert_array_equal(up[0, :4, :4], 1)
    np.testing.assert_array_equal(up[0, 4:, 4:], 2)
    assert up.dtype == np.int16
    assert target_shape((10, 20), (1.0, 0.5), (2.0, 2.0)) == (5, 5)


def test_crop_to_nonzero_bbox():
    data = np.zeros((2, 6, 7, 8), dtype=np.float32)
    data[0, 1, 2, 3] = 1
    data[1, 4, 5, 6] = -2
    seg = np.ones((1, 6, 7, 8), dtype=np.int16)
    cropped, seg_c, bbox = crop_to_nonzero(data, seg)
    assert bbox == ((1, 5), (2, 6), (3, 7))
    assert cropped.shape == (2, 4, 4, 4) and seg_c.shape == (1, 4, 4, 4)
    assert cropped[0, 0, 0, 0] == 1 and cropped[1, 3, 3, 3] == -2
    assert crop_to_nonzero(np.zeros((1, 3, 3)))[2] == ((0, 3), (0, 3))


def test_zscore_per_channel_and_with_mask():
    data = np.array([[[1.0, 2.0, 3.0, 4.0]], [[10.0, 10.0, 30.0, 30.0]]])  # (2, 1, 4)
    out = zscore(data)
    std0 = np.sqrt(np.mean((np.array([1, 2, 3, 4]) - 2.5) ** 2))
    np.testing.assert_allclose(out[0, 0], (np.array([1, 2, 3, 4]) - 2.5) / std0, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], [-1, -1, 1, 1], rtol=1e-6)
    masked = zscore(data[:1], mask=np.array([[True, True, False, False]]))
    np.testing.assert_allclose(masked[0, 0], [-1, 1, 3, 5], rtol=1e-6)  # mean 1.5, std 0.5


def test_ct_normalization_clip_then_zscore():
    fg = np.arange(1, 1001, dtype=np.float64)
    norm = CTNormalization.fit(fg)
    assert norm.lower == pytest.approx(np.percentile(fg, 0.5)) == pytest.approx(5.995)
    assert norm.upper == pytest.approx(995.005)
    assert norm.mean == pytest.approx(500.5) and norm.std == pytest.approx(np.std(fg))
    out = norm(np.array([-100.0, 500.5, 2000.0]))
    np.testing.assert_allclose(
        out, [(5.995 - 500.5) / np.std(fg), 0.0, (995.005 - 500.5) / np.std(fg)], rtol=1e-5
    )
    with pytest.raises(ValueError, match="no foreground"):
        CTNormalization.fit(np.array([]))


def test_preprocessor_pipeline_hand_computed():
    data = np.zeros((1, 8, 8), dtype=np.float32)
    data[0, 2:6, 2:6] = np.arange(16).reshape(4, 4) + 1.0
    seg = np.zeros((1, 8, 8), dtype=np.int16)
    seg[0, 2:4, 2:4] = 1  # the top-left 2x2 block of the crop
    seg[0, 4, 5] = 1  # a quarter of the bottom-right block: background wins there
    sample = {"data": data, "seg": seg, "case_id": "a", "spacing": (1.0, 1.0)}
    # order_data=1: linear image resampling (the default is cubic, tested against scipy below)
    out = Preprocessor(target_spacing=(2.0, 2.0), normalization="zscore", order_data=1)(sample)
    assert out["bbox"] == ((2, 6), (2, 6)) and out["original_shape"] == (8, 8)
    crop = np.arange(16).reshape(4, 4) + 1.0
    z = (crop - crop.mean()) / crop.std()
    expected = z.reshape(2, 2, 2, 2).mean(axis=(1, 3))  # halving = mean of 2x2 blocks (linear, centred)
    np.testing.assert_allclose(out["data"][0], expected, rtol=1e-5)
    assert out["spacing"] == (2.0, 2.0) and out["case_id"] == "a"
    np.testing.assert_array_equal(out["seg"][0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(out["class_locations"][1], [[0, 0]])


def test_preprocessed_dataset_is_cached_by_parameters(tmp_path):
    source = SyntheticPhantomDataset(num_cases=3, shape=(20, 20, 20), seed=5)
    pre = Preprocessor(target_spacing=(2.0, 2.0, 2.0), normalization="ct")
    ds = PreprocessedDataset(source, pre, tmp_path)
    assert len(ds) == 3 and ds.case_ids == source.case_ids
    s = ds[1]
    assert isinstance(s["data"], np.memmap) and not s["data"].flags.writeable
    # CT stats: foreground (seg > 0) intensities of all training cases
    fg = np.concatenate([source[i]["data"][source[i]["seg"] > 0] for i in range(3)])
    assert pre.ct[0].mean == pytest.approx(float(fg.mean()), rel=1e-5)
    reference = Preprocessor(target_spacing=(2.0, 2.0, 2.0), normalization="ct", ct=pre.ct)(source[1])
    np.testing.assert_allclose(s["data"], reference["data"])
    np.testing.assert_array_equal(s["seg"], reference["seg"])
    assert s["spacing"] == (2.0, 2.0, 2.0) and s["bbox"] == reference["bbox"]
    for c, coords in reference["class_locations"].items():
        np.testing.assert_array_equal(s["class_locations"][c], coords)

    stamp = (ds.folder / "phantom_0001_data.npy").stat().st_mtime_ns
    again = PreprocessedDataset(
        source, Preprocessor(target_spacing=(2.0, 2.0, 2.0), normalization="ct"), tmp_path
    )
    assert again.folder == ds.folder
    assert (ds.folder / "phantom_0001_data.npy").stat().st_mtime_ns == stamp  # not recomputed
    other = PreprocessedDataset(source, Preprocessor(target_spacing=(4.0, 4.0, 4.0)), tmp_path)
    assert other.folder != ds.folder and other[0]["data"].shape[1:] != s["data"].shape[1:]


def test_case_ids_that_are_not_file_names_are_escaped(tmp_path):
    from delira.data import LazyDataset

    source = SyntheticPhantomDataset(num_cases=2, shape=(12, 12), seed=0)
    renamed = LazyDataset([0, 1], source.__getitem__, case_ids=["../escape", "a/b"])
    ds = PreprocessedDataset(renamed, Preprocessor(), tmp_path, source_id="renamed")
    assert all(p.parent == ds.folder for p in ds.folder.iterdir())
    assert not (tmp_path / "escape.json").exists()
    np.testing.assert_allclose(ds[1]["data"], Preprocessor()(source[1])["data"])


# -- spacing-aware resampling (issue 12) ----------------------------------------------------------------
from delira.data import (  # noqa: E402
    DatasetError,
    LazyDataset,
    invert_labels,
    invert_probabilities,
    resample_image,
    resample_labels,
)
from delira.data import preprocessing as pp  # noqa: E402
from delira.data.preprocessing import separate_axis  # noqa: E402


def _has_augment() -> bool:
    return pp._affine_backend() is not None


@pytest.fixture(params=["augment", "fallback"])
def backend(request, monkeypatch):
    """Runs a test on delira.augment's compiled resampler and on the numpy/scipy fallback."""
    if request.param == "augment" and not _has_augment():
        pytest.skip("delira.augment is not installed")
    if request.param == "fallback":
        monkeypatch.setattr(pp, "_affine_backend", lambda: None)
    return request.param


def _centres(n_in, n_out):
    return (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5


def _scipy_resample(channel, shape, order):
    """scipy.ndimage.map_coordinates on the aligned-centres grid, mode 'nearest' (the reference)."""
    coords = np.meshgrid(*[_centres(n, m) for n, m in zip(channel.shape, shape)], indexing="ij")
    return ndimage.map_coordinates(channel.astype(np.float64), coords, order=order, mode="nearest")


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resample_image_matches_scipy_map_coordinates(backend, order):
    rng = np.random.default_rng(1)
    a = rng.random((2, 9, 7, 6)).astype(np.float32)
    shape = (13, 5, 8)  # up, down and non-integer ratios
    out = resample_image(a, shape, order)
    assert out.shape == (2, *shape) and out.dtype == np.float32
    for c in range(2):
        np.testing.assert_allclose(out[c], _scipy_resample(a[c], shape, order), atol=1e-4)


@pytest.mark.parametrize("order_z", [0, 1])
def test_the_coarse_axis_is_resampled_separately_with_order_z(backend, order_z):
    rng = np.random.default_rng(2)
    a = rng.random((1, 8, 9, 5)).astype(np.float32)
    shape = (12, 6, 9)
    out = resample_image(a, shape, 3, order_z=order_z, axis=2)
    # reference: every slice cubic in-plane (scipy), then the slices along z with order_z
    in_plane = np.stack([_scipy_resample(a[0, :, :, k], shape[:2], 3) for k in range(5)], axis=-1)
    z = _centres(5, 9)
    if order_z == 0:
        idx = np.clip(np.floor(z + 0.5), 0, 4).astype(int)
        ref = in_plane[:, :, idx]
    else:
        lo = np.clip(np.floor(z), 0, 4).astype(int)
        hi = np.minimum(lo + 1, 4)
        w = np.clip(z, 0, 4) - lo
        ref = in_plane[:, :, lo] * (1 - w) + in_plane[:, :, hi] * w
    np.testing.assert_allclose(out[0], ref, atol=1e-4)
    # and it is not what a 3D cubic resampling gives
    assert np.abs(out[0] - _scipy_resample(a[0], shape, 3)).max() > 1e-2


def test_separate_axis_follows_nnunets_rule():
    assert separate_axis((0.8, 0.8, 3.0), (0.8, 0.8, 3.0)) == 2  # source anisotropic
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 4.0, 1.0)) == 1  # else the target
    assert separate_axis((1.0, 1.0, 2.0), (1.0, 1.0, 2.0)) is None  # ratio 2 <= 3
    assert separate_axis((4.0, 1.0, 4.0), (4.0, 1.0, 4.0)) is None  # two coarse axes
    assert separate_axis((0.5, 3.0), (0.5, 3.0)) is None  # 2D


def test_label_resampling_is_per_label_linear_plus_argmax(backend):
    rng = np.random.default_rng(3)
    seg = ndimage.zoom(rng.integers(0, 3, (4, 4, 3)), (3, 3, 3), order=0)[None].astype(np.int16)  # blobs
    shape = (17, 7, 11)
    out = resample_labels(seg, shape, 1)
    scores = np.stack([_scipy_resample((seg[0] == k).astype(np.float64), shape, 1) for k in range(3)])
    ref = scores.argmax(axis=0)
    assert out.dtype == np.int16 and out.shape == (1, *shape)
    assert np.mean(out[0] == ref) > 0.99  # ties (equal scores) may break either way
    nearest = resample_labels(seg, shape, 0)
    np.testing.assert_array_equal(nearest[0], _scipy_resample(seg[0], shape, 0).astype(np.int16))


def test_normalization_schemes_per_channel():
    data = np.zeros((3, 4, 4), dtype=np.float32)
    data[:, 1:3, 1:3] = np.arange(4, dtype=np.float32).reshape(2, 2) + 1  # 1..4 inside, zeros outside
    data[2, 1, 1] = 1000.0  # a CT outlier (inside the nonzero mask, which is over all channels)
    pre = Preprocessor(
        normalization=["zscore", "zscore_nonzero", "ct"],
        crop_nonzero=False,
        ct_stats={2: {"lower": 0.0, "upper": 3.0, "mean": 1.0, "std": 2.0}},
    )
    assert not pre.needs_fit(3)
    out = pre({"data": data, "case_id": "n"})["data"]
    ch0 = data[0]
    np.testing.assert_allclose(out[0], (ch0 - ch0.mean()) / ch0.std(), rtol=1e-5)
    inside = np.array([1, 2, 3, 4.0])
    expected = np.zeros((4, 4))
    expected[1:3, 1:3] = ((inside - inside.mean()) / inside.std()).reshape(2, 2)
    np.testing.assert_allclose(out[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2], (np.clip(data[2], 0, 3) - 1) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="normalization must be one of"):
        Preprocessor(normalization="minmax")


def test_fit_only_fits_the_missing_ct_channels():
    source = SyntheticPhantomDataset(num_cases=2, shape=(12, 12, 12), seed=1)
    two = LazyDataset(
        [0, 1],
        lambda i: {**source[i], "data": np.concatenate([source[i]["data"]] * 2)},
        case_ids=["a", "b"],
    )
    given = {"lower": -1.0, "upper": 1.0, "mean": 0.0, "std": 1.0}
    pre = Preprocessor(normalization="ct", ct_stats={0: given})
    assert pre.needs_fit(2)
    pre.fit(two)
    assert pre.ct[0] == CTNormalization(**given)  # kept
    fg = np.concatenate([source[i]["data"][source[i]["seg"] > 0] for i in range(2)])
    assert pre.ct[1].mean == pytest.approx(float(fg.mean()), rel=1e-5)


def test_target_spacing_none_entries_keep_that_axis():
    data = np.ones((1, 10, 10, 7), dtype=np.float32)
    out = Preprocessor(target_spacing=(2.0, 2.0, None), crop_nonzero=False)(
        {"data": data, "spacing": (1.0, 1.0, 3.5)}
    )
    assert out["data"].shape == (1, 5, 5, 7) and out["spacing"] == (2.0, 2.0, 3.5)
    single = Preprocessor(target_spacing=2.0, crop_nonzero=False)({"data": data, "spacing": (1.0, 1.0, 4.0)})
    assert single["data"].shape == (1, 5, 5, 14)
    with pytest.raises(ValueError, match="one entry per axis"):
        Preprocessor(target_spacing=(1.0, 1.0))({"data": data, "spacing": (1.0, 1.0, 1.0)})


def _anisotropic_case():
    """A sphere and a small ellipsoid in a (40, 36, 12) CT-like volume of 0.8 x 0.8 x 3 mm, zero border."""
    shape, spacing = (40, 36, 12), (0.8, 0.8, 3.0)
    mm = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    r = np.sqrt(mm[0] ** 2 + mm[1] ** 2 + mm[2] ** 2)
    seg = np.zeros(shape, dtype=np.int16)
    seg[r < 10] = 1
    seg[((mm[0] - 6) / 4) ** 2 + (mm[1] / 3) ** 2 + (mm[2] / 6) ** 2 < 1] = 2
    rng = np.random.default_rng(0)
    data = (100 + 50 * seg + rng.normal(0, 5, shape)).astype(np.float32)
    data[:3], data[:, :2], data[..., :1] = 0, 0, 0  # a zero border that the crop removes
    seg[:3], seg[:, :2], seg[..., :1] = 0, 0, 0
    return {
        "data": data[None],
        "seg": seg[None],
        "spacing": spacing,
        "case_id": "aniso",
        "origin": (1.0, 2.0, 3.0),
        "direction": np.eye(3),
    }


def _dice(a, b, k):
    return 2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))


def test_preprocess_then_invert_lands_back_on_the_original_grid(backend):
    sample = _anisotropic_case()
    pre = Preprocessor(target_spacing=(1.2, 1.2, 2.0))
    out = pre(sample)
    props = out["properties"]
    assert props["original_shape"] == [40, 36, 12] and props["bbox"] == [[3, 40], [2, 36], [1, 12]]
    assert props["shape_after_crop"] == [37, 34, 11]
    assert props["shape_after_resample"] == list(out["data"].shape[1:]) == [25, 23, 16]  # round(16.5) == 16
    assert props["original_spacing"] == [0.8, 0.8, 3.0] and props["spacing"] == [1.2, 1.2, 2.0]
    assert props["origin"] == [1.0, 2.0, 3.0] and props["direction"] == np.eye(3).tolist()
    assert (props["order_data"], props["order_seg"], props["order_z"], props["separate_axis"]) == (3, 1, 0, 2)
    json.dumps(props)  # JSON friendly
    # a smooth one-hot map of the preprocessed labels back onto the original grid
    onehot = np.stack([(out["seg"][0] == k).astype(np.float32) for k in range(3)])
    onehot = np.stack([ndimage.gaussian_filter(p, 0.5) for p in onehot])
    probs = invert_probabilities(onehot, props)
    assert probs.shape == (3, 40, 36, 12) and probs.dtype == np.float32
    np.testing.assert_array_equal(
        probs[:, :3], np.array([1, 0, 0])[:, None, None, None] * np.ones((3, 3, 36, 12))
    )
    labels = probs.argmax(axis=0)
    original = sample["seg"][0]
    assert _dice(labels, original, 1) >= 0.95
    assert _dice(labels, original, 2) >= 0.9  # a small ellipsoid, 3 slices thick at 3 mm
    back = invert_labels(out["seg"], props)
    assert back.shape == (1, 40, 36, 12) and back.dtype == np.int16
    assert _dice(back[0], original, 1) >= 0.95
    assert invert_labels(out["seg"][0], props).shape == (40, 36, 12)
    with pytest.raises(ValueError, match="preprocessed to"):
        invert_probabilities(onehot[:, :-1], props)


def test_a_prediction_input_without_seg_is_preprocessed_and_inverted():
    sample = _anisotropic_case()
    image = {k: v for k, v in sample.items() if k != "seg"}
    pre = Preprocessor(
        target_spacing=(1.2, 1.2, 2.0),
        normalization="ct",
        ct_stats={0: {"lower": 0.0, "upper": 200.0, "mean": 120.0, "std": 30.0}},
    )
    out = pre(image)
    assert "seg" not in out and "class_locations" not in out
    with_seg = pre(sample)
    np.testing.assert_allclose(out["data"], with_seg["data"])
    assert out["properties"] == with_seg["properties"]
    probs = np.full((2, *out["data"].shape[1:]), 0.5, dtype=np.float32)
    assert invert_probabilities(probs, out["properties"]).shape == (2, 40, 36, 12)


def test_cache_stores_properties_and_keys_every_new_field(tmp_path):
    source = LazyDataset([0], lambda i: _anisotropic_case(), case_ids=["aniso"])
    pre = Preprocessor(target_spacing=(1.2, 1.2, 2.0))
    ds = PreprocessedDataset(source, pre, tmp_path, source_id="aniso")
    assert ds[0]["properties"] == pre(_anisotropic_case())["properties"]
    assert not [p.name for p in ds.folder.iterdir() if p.name.endswith(".tmp")]  # atomic writes
    base = PreprocessedDataset.cache_key(pre, ["aniso"], "aniso")
    for change in (
        {"order_data": 1},
        {"order_seg": 0},
        {"order_z": 1},
        {"anisotropy_threshold": 5.0},
        {"normalization": "zscore_nonzero"},
        {"target_spacing": (1.2, 1.2, None)},
        {"ct_stats": {0: {"lower": 0, "upper": 1, "mean": 0, "std": 1}}},
    ):
        other = Preprocessor(**{"target_spacing": (1.2, 1.2, 2.0), **change})
        assert PreprocessedDataset.cache_key(other, ["aniso"], "aniso") != base, change


def test_preprocessed_dataset_lists_every_bad_case(tmp_path):
    def load(i):
        s = _anisotropic_case()
        if i > 0:
            s["data"][0, 5, 5, 5] = np.nan
        return {**s, "case_id": f"c{i}"}

    source = LazyDataset([0, 1, 2], load, case_ids=["c0", "c1", "c2"])
    with pytest.raises(DatasetError) as info:
        PreprocessedDataset(source, Preprocessor(target_spacing=(1.6, 1.6, 3.0)), tmp_path, num_workers=2)
    assert len(info.value.problems) == 2
    assert "case c1" in info.value.problems[0] and "case c2" in info.value.problems[1]
    (folder,) = tmp_path.iterdir()
    assert (folder / "c0.json").is_file() and not (folder / "c1.json").exists()  # the good case is kept


def test_preprocessing_a_broken_msd_folder_lists_every_problem(tmp_path):
    pytest.importorskip("nibabel")
    pytest.importorskip("delira.io")
    from test_checks import broken_folder

    from delira.data import DecathlonDataset

    raw = DecathlonDataset(broken_folder(tmp_path / "raw"), allow_missing=True)
    for normalization in ("ct", "zscore"):  # found by the CT fit, and by the preprocessing itself
        with pytest.raises(DatasetError) as info:
            PreprocessedDataset(raw, Preprocessor(normalization=normalization), tmp_path / "cache")
        assert len(info.value.problems) == 8
        assert all(f"case case_00{i}:" in p for i, p in zip(range(1, 9), info.value.problems))


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "a.json"
    pp.atomic_write(target, lambda tmp: tmp.write_bytes(b"old"))

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        pp.atomic_write(target, failing)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
