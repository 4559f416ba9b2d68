"""The CUDA flip executor against torch.flip and cupy.flip on a GPU (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest

import delira.augment as da

pytestmark = pytest.mark.cuda

DTYPES = ["float32", "float64", "uint8", "int16", "int32", "int64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cuda_tensors_match_torch_flip(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((2, 3, 9, 10, 11)) * 50).astype(dtype)
    x = torch.from_numpy(host).cuda()
    for view in (x, x.permute(0, 1, 4, 3, 2)[:, :, ::2], x[..., 1:]):
        for axes in [(2,), (2, 3, 4), (0, 1), ()]:
            out = da.flip(view, axes)
            assert out.is_cuda and out.dtype == view.dtype and out.is_contiguous()
            assert torch.equal(out, torch.flip(view, axes) if axes else view.clone())


def test_torch_cuda_uses_current_stream_and_device():
    torch = pytest.importorskip("torch")
    x = torch.arange(4 * 64 * 64, dtype=torch.float32, device="cuda").reshape(4, 64, 64)
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()  # x is complete before the side stream reads it
    with torch.cuda.stream(stream):
        out = da.flip(x, (1,))
    stream.synchronize()
    assert torch.equal(out, torch.flip(x, (1,)))


def test_cupy_arrays_match_cupy_flip():
    cupy = pytest.importorskip("cupy")
    x = cupy.arange(3 * 5 * 7, dtype=cupy.int16).reshape(3, 5, 7)[:, ::2]
    out = da.flip(x, (0, 2))
    assert isinstance(out, cupy.ndarray)
    assert bool((out == cupy.flip(x, (0, 2))).all())


def test_cupy_negative_and_zero_strides_match_cupy_flip():
    cupy = pytest.importorskip("cupy")
    x = cupy.arange(2 * 5 * 7, dtype=cupy.float64).reshape(2, 5, 7)
    for view in (x[..., ::-1], x[:, ::-2, 1:], cupy.broadcast_to(x[:, :1], (2, 4, 7))):
        out = da.flip(view, (1, 2))
        assert out.flags.c_contiguous
        assert bool((out == cupy.flip(view, (1, 2))).all())


def test_torch_tensor_that_requires_grad_is_read_detached():
    torch = pytest.importorskip("torch")
    x = torch.randn(2, 3, 4, device="cuda", requires_grad=True)
    out = da.flip(x, (1,))
    assert not out.requires_grad and torch.equal(out, torch.flip(x.detach(), (1,)))


def test_torch_expanded_view_with_zero_strides():
    torch = pytest.importorskip("torch")
    x = torch.arange(6, dtype=torch.int32, device="cuda").reshape(1, 6).expand(4, 6)
    assert torch.equal(da.flip(x, (0, 1)), torch.flip(x, (0, 1)))
