"""Patches: cropping with padding, foreground patches, class locations, the oversampling share."""

from __future__ import annotations

import numpy as np
import pytest

from delira.data import (
    DataLoader,
    ForegroundOversamplingSampler,
    PatchDataset,
    PatchKey,
    SyntheticPhantomDataset,
    class_locations,
    crop_patch,
)


def test_crop_patch_inside_and_beyond_the_border():
    a = np.arange(2 * 4 * 5).reshape(2, 4, 5)
    np.testing.assert_array_equal(crop_patch(a, (1, 2), (2, 2)), a[:, 1:3, 2:4])
    out = crop_patch(a, (-1, 3), (3, 4), pad_value=-7)
    expected = np.full((2, 3, 4), -7)
    expected[:, 1:3, 0:2] = a[:, 0:2, 3:5]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(crop_patch(a, (10, 10), (2, 2)), np.zeros((2, 2, 2)))


def test_class_locations_are_the_voxels_of_each_class():
    seg = np.zeros((1, 6, 7), dtype=np.int16)
    seg[0, 1, 2] = 1
    seg[0, 4:6, 5] = 2
    loc = class_locations(seg)
    assert sorted(loc) == [1, 2]
    np.testing.assert_array_equal(loc[1], [[1, 2]])
    np.testing.assert_array_equal(loc[2], [[4, 5], [5, 5]])
    sub = class_locations(np.ones((1, 10, 10), dtype=np.int16), max_per_class=7)
    assert sub[1].shape == (7, 2) and len({tuple(x) for x in sub[1]}) == 7
    with pytest.raises(ValueError, match="expected"):
        class_locations(np.zeros((6, 7)))


def test_foreground_patches_contain_foreground():
    ds = SyntheticPhantomDataset(num_cases=3, shape=(32, 32, 32), seed=1)
    patches = PatchDataset(ds, (8, 8, 8))
    for seed in range(20):
        p = patches[PatchKey(seed % 3, True, seed)]
        assert p["data"].shape == (1, 8, 8, 8) and p["seg"].shape == (1, 8, 8, 8)
        assert (p["seg"] > 0).any()
        lower = p["patch_lower"]
        full = ds[seed % 3]
        window = (slice(None), *(slice(lo, lo + 8) for lo in lower))
        np.testing.assert_array_equal(p["data"], full["data"][window])
    random = patches[PatchKey(0, False, 5)]
    assert all(0 <= lo <= 24 for lo in random["patch_lower"])
    np.testing.assert_array_equal(patches[PatchKey(0, False, 5)]["data"], random["data"])


def test_patch_larger_than_image_is_padded_and_keeps_the_voxel():
    ds = SyntheticPhantomDataset(num_cases=1, shape=(12, 12), seed=2)
    p = PatchDataset(ds, (16, 10))[PatchKey(0, True, 3)]
    assert p["data"].shape == (1, 16, 10)
    assert p["patch_lower"][0] == -2 or p["patch_lower"][0] in range(-4, 1)
    assert (p["seg"] > 0).any()


def test_oversampling_forces_a_share_of_every_batch_onto_foreground():
    """Batch size 3, fraction 1/3: the last sample of each batch must hold foreground."""
    ds = SyntheticPhantomDataset(num_cases=4, shape=(48, 48), seed=0)
    sampler = ForegroundOversamplingSampler(ds, batch_size=3, foreground_fraction=1 / 3, num_samples=30)
    loader = DataLoader(PatchDataset(ds, (6, 6)), batch_size=3, sampler=sampler)
    forced = [bool((b["seg"][2] > 0).any()) for b in loader]
    assert all(forced)
