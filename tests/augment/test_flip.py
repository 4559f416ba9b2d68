"""delira.augment.flip against numpy.flip, the reference."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import delira.augment as da
from delira.augment import _extension

DTYPES = ["float32", "float64", "uint8", "int16", "int32", "int64"]


def _random(shape, dtype, rng):
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
def test_every_axis_subset_matches_numpy(dtype, ndim):
    rng = np.random.default_rng(ndim)
    shape = (3, 4, 2, 5, 3)[:ndim]
    x = _random(shape, dtype, rng)
    for r in range(ndim + 1):
        for axes in itertools.combinations(range(ndim), r):
            out = da.flip(x, axes)
            assert out.dtype == x.dtype
            assert out.flags.c_contiguous
            np.testing.assert_array_equal(out, np.flip(x, axes))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    rng = np.random.default_rng(0)
    base = _random((4, 6, 8, 10), dtype, rng)
    views = [
        base[:, ::2, 1::3, ::-1],  # strided, offset and reversed
        base.transpose(3, 1, 0, 2),  # permuted
        np.broadcast_to(base[:1], (3, 6, 8, 10)),  # zero stride
        np.asfortranarray(base),
    ]
    for view in views:
        for axes in [(0,), (1, 3), (0, 1, 2, 3), ()]:
            np.testing.assert_array_equal(da.flip(view, axes), np.flip(view, axes))


def test_negative_int_and_none_axes():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(da.flip(x, -1), np.flip(x, -1))
    np.testing.assert_array_equal(da.flip(x, [-3, 1]), np.flip(x, (0, 1)))
    np.testing.assert_array_equal(da.flip(x), np.flip(x))
    np.testing.assert_array_equal(da.flip(x, np.int64(2)), np.flip(x, 2))


def test_large_volume_and_thread_counts_give_identical_results():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 40, 48, 56)).astype(np.float32)
    expected = np.flip(x, (2, 4))
    saved = da.get_num_threads()
    try:
        for n in (1, 2, 3):
            da.set_num_threads(n)
            assert da.get_num_threads() == n
            np.testing.assert_array_equal(da.flip(x, (2, 4)), expected)
    finally:
        da.set_num_threads(saved)


def test_empty_array():
    x = np.zeros((0, 3, 4), dtype=np.int32)
    out = da.flip(x, 1)
    assert out.shape == (0, 3, 4)


def test_input_is_not_modified_and_output_is_new():
    x = np.arange(12, dtype=np.int16).reshape(3, 4)
    before = x.copy()
    out = da.flip(x, 0)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(out, x)


@pytest.mark.parametrize("dtype", ["bool", "float16", "uint16", "complex64", "int8", "uint32"])
def test_unsupported_dtypes_raise_type_error(dtype):
    with pytest.raises(TypeError, match=r"dtype .* not supported; supported are float32"):
        da.flip(np.zeros((2, 2), dtype=dtype), 0)


def test_non_native_byte_order_raises_type_error():
    with pytest.raises(TypeError, match="native byte order"):
        da.flip(np.zeros((2, 2), dtype=">f4"), 0)


@pytest.mark.parametrize(
    ("axes", "error", "match"),
    [
        (3, ValueError, "axis 3 is out of range for an array with 3 dimensions"),
        ((-4,), ValueError, "axis -4 is out of range"),
        ((0, -3), ValueError, "given more than once"),
        ((1.5,), TypeError, "axes must be ints"),
        ("0", TypeError, "axes must be ints"),
        (True, TypeError, "axes must be an int"),
    ],
)
def test_bad_axes(axes, error, match):
    with pytest.raises(error, match=match):
        da.flip(np.zeros((2, 3, 4), dtype=np.float32), axes)


def test_bad_ndim_and_bad_input_type():
    with pytest.raises(ValueError, match="6 dimensions; supported are 1 to 5"):
        da.flip(np.zeros((1,) * 6, dtype=np.float32), 0)
    with pytest.raises(ValueError, match="0 dimensions"):
        da.flip(np.array(1.0, dtype=np.float32), ())
    with pytest.raises(TypeError, match="must be an array"):
        da.flip([[1.0, 2.0]], 0)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cpu_tensors_in_and_out(dtype):
    import torch

    rng = np.random.default_rng(2)
    x = torch.from_numpy(_random((2, 3, 5, 4), dtype, rng))
    view = x.permute(0, 1, 3, 2)[:, :, ::2]
    out = da.flip(view, (1, 3))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == x.dtype
    assert torch.equal(out, torch.flip(view, (1, 3)))


@pytest.mark.torch
def test_torch_tensor_requiring_grad():
    import torch

    x = torch.randn(2, 3, requires_grad=True)
    assert torch.equal(da.flip(x, 1), torch.flip(x.detach(), (1,)))


@pytest.mark.tf
def test_tensorflow_tensors_in_and_out():
    import tensorflow as tf

    x = tf.reshape(tf.range(24, dtype=tf.float32), (2, 3, 4))
    out = da.flip(x, (0, 2))
    assert isinstance(out, tf.Tensor)
    np.testing.assert_array_equal(out.numpy(), tf.reverse(x, axis=[0, 2]).numpy())


def test_fallback_without_extension(monkeypatch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "IMPORT_ERROR", "simulated missing extension")
    monkeypatch.setattr(_extension, "_warned", False)
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)[:, ::-1]
    with pytest.warns(RuntimeWarning, match="simulated missing extension"):
        out = da.flip(x, (0, 2))
    np.testing.assert_array_equal(out, np.flip(x, (0, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        da.flip(x, 1)
    assert da.build_info()["compiled"] is False
