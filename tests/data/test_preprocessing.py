"""Preprocessing against hand-computed values and scipy; the on-disk cache."""

from __future__ import annotations

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
    out = Preprocessor(target_spacing=(2.0, 2.0), normalization="zscore")(sample)
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
