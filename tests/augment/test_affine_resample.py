"""affine_resample against scipy.ndimage.affine_transform, the reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from delira.augment import functional as F
from tests.augment.conftest import random_affine

MODES = ["constant", "nearest", "reflect", "mirror"]


def _coords(m, out_shape):
    nd = len(out_shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in out_shape], indexing="ij")).reshape(nd, -1)
    return (m[:nd, :nd] @ grid + m[:nd, nd : nd + 1]).reshape((nd, *out_shape))


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_linear_and_cubic_match_scipy(nd, order, mode):
    rng = np.random.default_rng(hash((nd, order, mode)) % 2**32)
    in_shape, out_shape = (13, 14, 15)[:nd], (12, 11, 16)[:nd]
    for _ in range(4):
        x = rng.standard_normal(in_shape).astype(np.float32)
        m = random_affine(rng, nd, in_shape, out_shape)
        ref = ndi.affine_transform(
            x.astype(np.float64), m, output_shape=out_shape, order=order, mode=mode, cval=0.7
        )
        out = F.affine_resample(x, m, out_shape, order=order, mode=mode, cval=0.7)
        assert out.shape == out_shape and out.dtype == np.float32
        assert np.abs(out - ref).max() <= 1e-4


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_nearest_matches_scipy_away_from_ties(nd, mode):
    rng = np.random.default_rng(nd)
    in_shape, out_shape = (13, 14, 15)[:nd], (12, 11, 16)[:nd]
    x = rng.standard_normal(in_shape)
    m = random_affine(rng, nd, in_shape, out_shape)
    ref = ndi.affine_transform(x, m, output_shape=out_shape, order=0, mode=mode, cval=-3.0)
    out = F.affine_resample(x, m, out_shape, order=0, mode=mode, cval=-3.0)
    c = _coords(m, out_shape)
    frac = c - np.floor(c)
    # away from rounding ties and from the exact volume border (where float32 rounding decides)
    safe = (np.abs(frac - 0.5) > 1e-3).all(0) & (np.abs(c) > 1e-3).all(0)
    safe &= (np.abs(c - (np.asarray(in_shape) - 1).reshape((nd,) + (1,) * nd)) > 1e-3).all(0)
    assert safe.mean() > 0.9
    np.testing.assert_array_equal(out[safe], ref[safe])


def test_float64_and_batch_layouts():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 10, 11))
    m = random_affine(rng, 3, (9, 10, 11), (8, 8, 8))
    out = F.affine_resample(x, m, (8, 8, 8), order=1)
    assert out.shape == (2, 3, 8, 8, 8) and out.dtype == np.float64
    for i in range(2):
        for c in range(3):
            ref = ndi.affine_transform(x[i, c], m, output_shape=(8, 8, 8), order=1)
            np.testing.assert_allclose(out[i, c], ref, atol=1e-4)
    # (C, *spatial) and the (ndim, ndim + 1) form of the matrix
    out2 = F.affine_resample(x[0], m[:3], (8, 8, 8), order=1)
    np.testing.assert_allclose(out2, out[0], atol=1e-12)


def test_non_contiguous_input():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((20, 22, 24)).astype(np.float32)
    view = base[::2, 1::2, ::-1].transpose(2, 0, 1)
    m = random_affine(rng, 3, view.shape, (7, 8, 9), 0.2)
    ref = ndi.affine_transform(
        np.ascontiguousarray(view, dtype=np.float64), m, output_shape=(7, 8, 9), order=1
    )
    np.testing.assert_allclose(F.affine_resample(view, m, (7, 8, 9)), ref, atol=1e-4)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "int64"])
def test_labels_nearest_equal_scipy_and_keep_dtype(dtype):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, (12, 13, 14)).astype(dtype)
    m = np.eye(4)
    m[:3, :3] = np.diag([0.5, 1.0, 2.0])
    m[:3, 3] = [0.25, 1.0, -1.0]  # no ties: coordinates are multiples of 0.5 + 0.25
    ref = ndi.affine_transform(labels, m, output_shape=(12, 13, 7), order=0, mode="constant", cval=0)
    out = F.affine_resample(labels, m, (12, 13, 7), order=0)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(out, ref)


def test_labels_linear_is_argmax_of_interpolated_one_hot():
    rng = np.random.default_rng(6)
    labels = ndi.zoom(rng.integers(0, 3, (5, 5, 5)), 3, order=0).astype(np.int16)  # blobs
    m = random_affine(rng, 3, labels.shape, (12, 12, 12), 0.2)
    out = F.affine_resample(labels, m, (12, 12, 12), order=1)
    scores = np.stack(
        [
            ndi.affine_transform((labels == k).astype(float), m, output_shape=(12, 12, 12), order=1)
            for k in range(3)
        ]
    )
    ref = scores.argmax(0)
    inside = scores.sum(0) > 0.999  # voxels whose taps are all inside the volume
    top2 = np.sort(scores, axis=0)[-2:]
    no_tie = (top2[1] - top2[0]) > 1e-4
    mask = inside & no_tie
    assert mask.mean() > 0.5
    np.testing.assert_array_equal(out[mask], ref[mask])
    assert set(np.unique(out)) <= {0, 1, 2}


def test_identity_is_exact_and_output_shape_defaults_to_input():
    x = np.random.default_rng(7).standard_normal((6, 7, 8)).astype(np.float32)
    for order in (0, 1, 3):
        np.testing.assert_allclose(F.affine_resample(x, np.eye(4), order=order), x, atol=2e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"matrix": np.eye(5)}, ValueError, "matrix has shape"),
        ({"matrix": np.full((4, 4), np.nan)}, ValueError, "NaN"),
        ({"matrix": np.eye(4), "order": 2}, ValueError, "order=2"),
        ({"matrix": np.eye(4), "mode": "wrap"}, ValueError, "mode='wrap' is not a border mode"),
        ({"matrix": np.eye(4), "cval": float("nan")}, ValueError, "cval must be finite"),
        ({"matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]}, ValueError, "last row"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        F.affine_resample(np.zeros((4, 4, 4), np.float32), **kwargs)


def test_bad_input_arrays():
    with pytest.raises(ValueError, match="x has shape"):
        F.affine_resample(np.zeros((4, 4), np.float32), np.eye(4))
    with pytest.raises(TypeError, match="dtype float16"):
        F.affine_resample(np.zeros((4, 4, 4), np.float16), np.eye(4))
    with pytest.raises(ValueError, match="order=3 is not defined for label arrays"):
        F.affine_resample(np.zeros((4, 4, 4), np.int16), np.eye(4), order=3)
    assert F.affine_resample(np.zeros((0, 4, 4, 4), np.float32), np.eye(4)).shape == (0, 4, 4, 4)
