"""Reorientation in delira.data: Preprocessor(orientation=...) recorded in the properties and undone
by invert_labels / invert_probabilities, and datasets read reoriented; references: nibabel's
as_closest_canonical and as_reoriented, and the labels as stored."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest

from delira.data import (
    CacheDataset,
    DecathlonDataset,
    LazyDataset,
    PreprocessedDataset,
    Preprocessor,
    invert_labels,
    invert_probabilities,
)

nib = pytest.importorskip("nibabel", reason="nibabel is not installed")
from nibabel import orientations as nio  # noqa: E402

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
SHAPE = (7, 6, 5)
SPACING = (0.8, 1.1, 2.5)
SIGNED_PERMUTATIONS = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3)
]


def _ras_affine(perm, signs, spacing=SPACING):
    affine = np.zeros((4, 4))
    for k, (w, s) in enumerate(zip(perm, signs)):
        affine[w, k] = s * spacing[k]
    affine[:, 3] = (5.0, -3.0, 12.5, 1.0)
    return affine


def _case(perm, signs, seed=0):
    """A sample as a file dataset gives it (LPS geometry) and the nibabel images it came from."""
    rng = np.random.default_rng(seed)
    image = (rng.random(SHAPE) + 1).astype(np.float32)
    image[:1], image[:, -2:] = 0, 0  # a zero border that the crop removes
    seg = rng.integers(0, 3, SHAPE).astype(np.int16)
    seg[image == 0] = 0
    affine = _ras_affine(perm, signs)
    lps = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    sample = {
        "data": image[None],
        "seg": seg[None],
        "spacing": tuple(spacing),
        "origin": tuple(RAS_TO_LPS @ affine[:3, 3]),
        "direction": lps / spacing,
        "case_id": "c",
    }
    return sample, nib.Nifti1Image(image, affine), nib.Nifti1Image(seg, affine)


def _nibabel_reoriented(img, code):
    if code == "RAS":
        return nib.as_closest_canonical(img)
    ornt = nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(tuple(code)))
    return img.as_reoriented(ornt)


@pytest.mark.parametrize("code", ["RAS", "LPS"])
def test_canonical_prediction_ends_in_the_original_orientation_bit_exactly(code):
    pre = Preprocessor(normalization="none", orientation=code)
    for perm, signs in SIGNED_PERMUTATIONS:
        sample, img, seg_img = _case(perm, signs)
        out = pre(sample)
        props = json.loads(json.dumps(out["properties"]))  # as a cache stores them
        canonical = _nibabel_reoriented(img, code)
        canonical_seg = np.asarray(_nibabel_reoriented(seg_img, code).dataobj)
        # preprocessed = nibabel's reorientation, then the crop to the nonzero box
        box = tuple(slice(a, b) for a, b in props["bbox"])
        np.testing.assert_array_equal(out["data"][0], canonical.get_fdata()[box])
        np.testing.assert_array_equal(out["seg"][0], canonical_seg[box])
        assert out["spacing"] == pytest.approx(canonical.header.get_zooms()[:3])
        assert props["orientation"]["target"] == code
        assert props["original_shape"] == list(SHAPE)
        assert props["original_spacing"] == pytest.approx(SPACING)
        # a label map "predicted" in the canonical orientation goes back onto the stored grid
        back = invert_labels(out["seg"], props)
        assert back.dtype == np.int16 and back.flags.c_contiguous
        np.testing.assert_array_equal(back, sample["seg"])
        np.testing.assert_array_equal(invert_labels(out["seg"][0], props), sample["seg"][0])
        onehot = np.stack([(out["seg"][0] == k).astype(np.float32) for k in range(3)])
        probs = invert_probabilities(onehot, props)
        expected = np.stack([(sample["seg"][0] == k) for k in range(3)]).astype(np.float32)
        np.testing.assert_array_equal(probs, expected)


def test_reorientation_with_resampling_lands_on_the_original_grid():
    sample, _, _ = _case((2, 0, 1), (-1, 1, -1))
    plain = Preprocessor(target_spacing=1.0, normalization="none", crop_nonzero=False)
    oriented = Preprocessor(target_spacing=1.0, normalization="none", crop_nonzero=False, orientation="RAS")
    a, b = plain(sample), oriented(sample)
    assert sorted(a["data"].shape[1:]) == sorted(b["data"].shape[1:])  # the same grid, axes permuted
    back_a = invert_labels(a["seg"], a["properties"])
    back_b = invert_labels(b["seg"], b["properties"])
    assert back_b.shape == sample["seg"].shape
    assert np.mean(back_a == back_b) > 0.98  # the same resampling, up to ties of the argmax


def test_two_dimensional_case():
    data = np.arange(12, dtype=np.float32).reshape(1, 3, 4) + 1
    seg = (data > 6).astype(np.int16)
    sample = {"data": data, "seg": seg, "spacing": (1.0, 2.0), "direction": np.eye(2), "case_id": "2d"}
    out = Preprocessor(normalization="none", orientation="RAS")(sample)  # "LP" -> "RA": both reversed
    np.testing.assert_array_equal(out["data"], data[:, ::-1, ::-1])
    np.testing.assert_array_equal(invert_labels(out["seg"], out["properties"]), seg)


def test_cache_keeps_the_record_and_keys_on_the_orientation(tmp_path):
    sample, _, _ = _case((1, 2, 0), (1, -1, 1))
    source = LazyDataset([0], lambda i: sample, case_ids=["c"])
    pre = Preprocessor(normalization="none", orientation="RAS")
    ds = PreprocessedDataset(source, pre, tmp_path, source_id="c")
    props = ds[0]["properties"]
    assert props == pre(sample)["properties"]
    np.testing.assert_array_equal(invert_labels(np.asarray(ds[0]["seg"]), props), sample["seg"])
    keys = {
        PreprocessedDataset.cache_key(Preprocessor(orientation=o), ["c"], "c") for o in (None, "RAS", "LPS")
    }
    assert len(keys) == 3
    assert "orientation" not in Preprocessor().params()  # runs without it keep their cache keys


def test_bad_orientation_is_refused_up_front():
    with pytest.raises(ValueError, match=r"'RAQ'.*one of L/R"):
        Preprocessor(orientation="RAQ")
    sample, _, _ = _case((0, 1, 2), (1, 1, 1))
    sample["direction"] = np.eye(2)
    with pytest.raises(ValueError, match="cannot reorient the case"):
        Preprocessor(orientation="RAS")(sample)


# -- datasets read reoriented --------------------------------------------------------------------------------
def _msd(root, perm, signs):
    _, img, seg_img = _case(perm, signs)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    nib.save(img, str(root / "imagesTr" / "c_001.nii.gz"))
    nib.save(seg_img, str(root / "labelsTr" / "c_001.nii.gz"))
    meta = {
        "modality": {"0": "MR"},
        "labels": {"0": "background", "1": "a", "2": "b"},
        "training": [{"image": "./imagesTr/c_001.nii.gz", "label": "./labelsTr/c_001.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return img, seg_img


def test_decathlon_dataset_reads_every_file_reoriented(tmp_path):
    pytest.importorskip("delira.io")
    img, seg_img = _msd(tmp_path, (2, 0, 1), (-1, 1, -1))
    ds = DecathlonDataset(tmp_path, orientation="ras")
    sample = ds[0]
    canonical = nib.as_closest_canonical(img)
    np.testing.assert_array_equal(sample["data"][0], canonical.get_fdata())
    np.testing.assert_array_equal(sample["seg"][0], np.asarray(nib.as_closest_canonical(seg_img).dataobj))
    np.testing.assert_allclose(sample["spacing"], canonical.header.get_zooms()[:3], rtol=1e-6)
    lps = RAS_TO_LPS @ canonical.affine[:3, :3] / np.asarray(canonical.header.get_zooms()[:3])
    np.testing.assert_allclose(sample["direction"], lps, atol=1e-6)
    assert "orientation='RAS'" in repr(ds) and repr(ds) != repr(DecathlonDataset(tmp_path))
    # the checked path (files read one by one) gives the same case, and so does a pickled copy
    cached = CacheDataset(ds, check=True)[0]
    np.testing.assert_array_equal(cached["data"], sample["data"])
    np.testing.assert_array_equal(cached["seg"], sample["seg"])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds))[0]["data"], sample["data"])


def test_decathlon_dataset_then_preprocessor_record_goes_back_to_the_files(tmp_path):
    pytest.importorskip("delira.io")
    _, seg_img = _msd(tmp_path, (1, 0, 2), (1, -1, -1))
    raw = DecathlonDataset(tmp_path)
    ds = PreprocessedDataset(raw, Preprocessor(normalization="none", orientation="RAS"), tmp_path / "cache")
    out = ds[0]
    canonical_seg = np.asarray(nib.as_closest_canonical(seg_img).dataobj)
    box = tuple(slice(a, b) for a, b in out["properties"]["bbox"])
    np.testing.assert_array_equal(out["seg"][0], canonical_seg[box])
    back = invert_labels(np.asarray(out["seg"]), out["properties"])
    np.testing.assert_array_equal(back[0], np.asarray(seg_img.dataobj))  # the label file as stored
    with pytest.raises(ValueError, match="orientation"):
        DecathlonDataset(tmp_path, orientation="XYZ")


def test_the_fingerprint_cache_key_follows_the_orientation():
    """A fingerprint of the files as stored must not be reused for a reoriented dataset."""
    from delira.data.fingerprint import dataset_signature

    class Cases(list):
        orientation = None

    plain, ras = Cases([{"case_id": "a"}]), Cases([{"case_id": "a"}])
    ras.orientation = "RAS"
    assert "orientation" not in dataset_signature(plain)
    assert dataset_signature(ras)["orientation"] == "RAS"
    assert dataset_signature(plain) != dataset_signature(ras)
