"""Collation of samples into batches."""

from __future__ import annotations

import numpy as np
import pytest

from delira.data import collate


def sample(i, shape=(1, 2, 3), dtype=np.float32):
    return {
        "data": np.full(shape, i, dtype=dtype),
        "label": i,
        "weight": 0.5 * i,
        "case_id": f"c{i}",
        "spacing": (1.0, 2.0),
    }


def test_arrays_are_stacked_numbers_become_arrays_rest_lists():
    batch = collate([sample(1), sample(2), sample(3)])
    assert list(batch) == ["data", "label", "weight", "case_id", "spacing"]
    assert batch["data"].shape == (3, 1, 2, 3) and batch["data"].dtype == np.float32
    np.testing.assert_array_equal(batch["data"][:, 0, 0, 0], [1, 2, 3])
    assert batch["label"].dtype.kind == "i"
    np.testing.assert_array_equal(batch["label"], [1, 2, 3])
    np.testing.assert_array_equal(batch["weight"], [0.5, 1.0, 1.5])
    assert batch["case_id"] == ["c1", "c2", "c3"]
    assert batch["spacing"] == [(1.0, 2.0)] * 3


def test_shape_mismatch_names_the_sample_and_the_key():
    with pytest.raises(ValueError, match=r"sample 17 \(batch position 1\) has 'data' of shape \(1, 2, 4\)"):
        collate([sample(0), sample(1, shape=(1, 2, 4))], keys=[4, 17])


def test_dtype_and_key_mismatch_are_errors():
    with pytest.raises(ValueError, match="dtype float64"):
        collate([sample(0), sample(1, dtype=np.float64)])
    other = sample(1)
    del other["label"]
    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        collate([sample(0), other])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_allocate_receives_the_stacked_specs_and_is_used():
    buffers = {}

    def allocate(specs):
        for key, shape, dtype in specs:
            buffers[key] = np.zeros(shape, dtype)
        return buffers

    batch = collate([sample(1), sample(2)], allocate=allocate)
    assert batch["data"] is buffers["data"]
    np.testing.assert_array_equal(buffers["data"][:, 0, 0, 0], [1, 2])
