"""Host-side checks of what the CUDA PercentileClip and crops compute, without a GPU.

The CUDA executor selects the percentiles' order statistics by radix selection on the float's bits
(csrc/cuda/engine_cuda.cu: order_key, four 8-bit histogram passes) and interpolates as the CPU
executor does; its crop kernel reads ``in[n, c, start + o]`` with ``start = center - size // 2`` and
pads outside. Here the same definitions are written in numpy and checked against numpy's own
``percentile``/``sort`` and against ``numpy.pad`` + slicing, and the CPU executor is checked against
them; the ``cuda`` tests (test_cuda_transforms_gpu.py) compare the GPU with the CPU exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from delira.augment import functional as F
from delira.augment.functional.spatial import crop_starts

# ---------------------------------------------------------------------------------------------
# Percentiles


def order_key(values: np.ndarray) -> np.ndarray:
    """The kernel's key: float32 bits mapped to uint32 of the same order."""
    u = np.asarray(values, np.float32).view(np.uint32)
    return np.where(u & 0x80000000, ~u, u | 0x80000000).astype(np.uint32)


def key_value(keys: np.ndarray) -> np.ndarray:
    k = np.asarray(keys, np.uint32)
    return np.where(k & 0x80000000, k & 0x7FFFFFFF, ~k).astype(np.uint32).view(np.float32)


def radix_select(values: np.ndarray, rank: int) -> np.float32:
    """The kernel's selection: the value of ``rank`` in ascending order, from four 8-bit histograms."""
    keys = order_key(values)
    prefix, mask = 0, 0
    for shift in (24, 16, 8, 0):
        match = keys[(keys & mask) == prefix]
        hist = np.bincount((match >> shift) & 0xFF, minlength=256)
        below = np.concatenate([[0], np.cumsum(hist)])
        digit = int(np.searchsorted(below, rank, side="right") - 1)
        rank -= int(below[digit])
        prefix |= digit << shift
        mask |= 0xFF << shift
    return key_value(np.array([prefix], np.uint32))[0]


def percentile_reference(values: np.ndarray, pct: float) -> np.float32:
    """The definition both executors implement (cpu/engine.cpp: percentile)."""
    v = np.sort(np.asarray(values, np.float32).ravel())
    m = v.size
    pos = np.float64(np.float32(pct)) / 100.0 * (m - 1)
    lo = int(np.floor(pos))
    frac = pos - lo
    if frac == 0.0 or lo + 1 >= m:
        return v[lo]
    return np.float32(np.float64(v[lo]) + frac * (np.float64(v[lo + 1]) - np.float64(v[lo])))


def _special_values(rng) -> np.ndarray:
    return np.concatenate(
        [
            rng.standard_normal(500).astype(np.float32) * 1e3,
            np.float32([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38]),
            np.round(rng.standard_normal(300)).astype(np.float32),  # many ties
        ]
    )


def test_order_key_orders_floats_as_their_values():
    v = _special_values(np.random.default_rng(0))
    keys = order_key(v)
    by_key = v[np.argsort(keys, kind="stable")]
    np.testing.assert_array_equal(by_key, np.sort(v))  # -0.0 == 0.0 for the comparison
    np.testing.assert_array_equal(key_value(keys).view(np.uint32), v.view(np.uint32))  # exact inverse


@pytest.mark.parametrize("seed", range(5))
def test_radix_selection_finds_every_order_statistic(seed):
    rng = np.random.default_rng(seed)
    v = (
        _special_values(rng)
        if seed == 0
        else rng.standard_normal(int(rng.integers(1, 3000))).astype(np.float32)
    )
    s = np.sort(v)
    for rank in {0, len(v) - 1, *rng.integers(0, len(v), 20).tolist()}:
        assert radix_select(v, rank) == s[rank]


@pytest.mark.parametrize("pct", [0.0, 0.5, 1.0, 2.5, 25.0, 50.0, 73.3, 99.5, 100.0])
def test_percentile_definition_is_numpys_linear_percentile(pct):
    v = np.random.default_rng(1).standard_normal(1237).astype(np.float32)
    expected = np.percentile(v.astype(np.float64), np.float64(np.float32(pct)), method="linear")
    assert percentile_reference(v, pct) == pytest.approx(expected, rel=2e-7, abs=1e-30)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_percentile_clip_matches_the_definition_exactly(dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 2, 7, 8, 9)) * 5).astype(dtype)
    x[0, 0] = np.round(x[0, 0])  # ties
    lo_pct, hi_pct = 3.7, 96.1
    out = F.percentile_clip(x, lo_pct, hi_pct)
    for n in range(3):
        for c in range(2):
            lo = percentile_reference(x[n, c], lo_pct)
            hi = percentile_reference(x[n, c], hi_pct)
            v32 = x[n, c].astype(np.float32)
            expected = np.where(v32 < lo, lo, np.where(v32 > hi, hi, v32))  # the clip in float
            np.testing.assert_array_equal(out[n, c], expected.astype(dtype))


# ---------------------------------------------------------------------------------------------
# Crops


def crop_reference(x: np.ndarray, center: np.ndarray, size, pad_value) -> np.ndarray:
    """numpy.pad + slicing: the patch of ``size`` whose voxel ``size // 2`` is ``center``."""
    size = np.asarray(size)
    margin = int(size.max() + np.abs(center).max() + max(x.shape))
    nd = x.ndim - 2
    out = []
    for i in range(x.shape[0]):
        padded = np.pad(
            x[i], [(0, 0)] + [(margin, margin)] * nd, constant_values=np.asarray(pad_value).astype(x.dtype)
        )
        start = center[i] - size // 2 + margin
        out.append(padded[(slice(None), *[slice(s, s + e) for s, e in zip(start, size)])])
    return np.stack(out)


def test_crop_starts_are_center_minus_half_the_size():
    np.testing.assert_array_equal(crop_starts([[4, 0, 9]], (5, 4, 1), 1), [[2, -2, 9]])
    with pytest.raises(ValueError, match=r"center has shape \(2,\)"):
        crop_starts([1, 2], (3, 3), 1)


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int16", "int32", "int64"])
def test_crop_with_padding_equals_numpy_pad_and_slice(dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 100, (3, 2, 7, 8, 9)).astype(dtype)
    size = (5, 11, 4)  # larger than the input along axis 1: padded on both sides
    center = np.array([[3, 4, 4], [0, 7, 8], [-2, 20, 3]])  # near, at and beyond the border
    for pad in (0, 7, -1.5):
        np.testing.assert_array_equal(F.crop(x, center, size, pad), crop_reference(x, center, size, pad))


def test_crop_reads_strided_inputs_as_their_contiguous_copy():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((2, 9, 3, 8, 10)).astype(np.float32)
    x = base.transpose(0, 2, 1, 3, 4)[:, :, ::-2, :, ::-1]  # (2, 3, 5, 8, 10), negative strides
    center = np.array([[2, 4, 5], [4, 0, 9]])
    np.testing.assert_array_equal(
        F.crop(x, center, (3, 5, 6)), crop_reference(np.ascontiguousarray(x), center, (3, 5, 6), 0)
    )
