"""The compiled executors check their arguments with one set of checks (csrc/core/spec.h).

The kernels are called directly, past the Python layer's own validation, as another project binding
the extension would call them: each inconsistent call raises ValueError or TypeError with a message
that names the argument and the fix, before any kernel runs. The CUDA entry points share the CPU's
checks, so they raise the same errors without touching device memory (no GPU is needed: the checks
fail before the first CUDA call).
"""

from __future__ import annotations

import numpy as np
import pytest

from delira.augment import _extension

_C = _extension._C
pytestmark = pytest.mark.skipif(_C is None, reason="the compiled extension did not load")

N, SHAPE = 2, (4, 5, 6)


def identity_affine(n: int = N, nd: int = 3) -> np.ndarray:
    a = np.zeros((n, nd, nd + 1), np.float32)
    a[:, :, :nd] = np.eye(nd)
    return a


def no_program(n: int = N) -> dict:
    return {
        "op_kinds": [],
        "op_refs": [],
        "op_params": np.zeros((n, 0, 3), np.float32),
        "op_active": np.zeros((n, 0), bool),
        "seeds": np.zeros(n, np.uint64),
    }


def cpu_resample(data, seg=None, *, affine=None, order_data=1, order_seg=0, out_shape=SHAPE):
    """_C.resample with the argument order of bindings.cpp (no elastic field)."""
    affine = identity_affine() if affine is None else affine
    return _C.resample(
        data, seg, list(out_shape), affine, None, np.zeros(0, np.float32), np.zeros(0, np.float32),
        order_data, 0, 0.0, order_seg, 0, 0.0, **no_program(),
    )  # fmt: skip


def cuda_resample(dtype="float32", seg_dtype=None, *, affine=None, order_data=1):
    """_C.resample_cuda with made-up device pointers: only the checks may run."""
    affine = identity_affine() if affine is None else affine
    shape, strides = [N, 1, *SHAPE], [120, 120, 30, 6, 1]
    seg = (0, "float32", [], []) if seg_dtype is None else (8, seg_dtype, shape, strides)
    p = no_program()
    return _C.resample_cuda(
        4, dtype, shape, strides, *seg, 16, 24 if seg_dtype else 0, list(SHAPE), affine, None,
        np.zeros(0, np.float32), np.zeros(0, np.float32), order_data, 0, 0.0, 0, 0, 0.0,
        p["op_kinds"], p["op_refs"], p["op_params"], p["op_active"], p["seeds"], 0,
    )  # fmt: skip


def test_a_consistent_call_runs():
    x = np.arange(N * 120, dtype=np.float32).reshape(N, 1, *SHAPE)
    out, seg = cpu_resample(x)
    np.testing.assert_array_equal(out, x)  # identity affine, same shape: the input back
    assert seg is None


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"data": np.zeros((N, 1, *SHAPE), np.int32)},
            TypeError,
            ["data has dtype int32", "float32 or float64"],
        ),
        (
            {"data": np.zeros((N, 1, *SHAPE), np.float32), "seg": np.zeros((N, 1, *SHAPE), np.float32)},
            TypeError,
            ["seg has dtype float32", "integer dtype"],
        ),
        (
            {"data": np.zeros((N, 1, *SHAPE), np.float32), "order_data": 2},
            ValueError,
            ["order_data is 2", "3 (cubic"],
        ),
        ({"data": np.zeros((N, 1, *SHAPE), np.float32), "order_seg": 3}, ValueError, ["order_seg is 3"]),
        (
            {"data": np.zeros((N, 1, *SHAPE), np.float32), "affine": identity_affine(3)},
            ValueError,
            ["affine has 36 entries", "(N, ndim, ndim + 1) = 24"],
        ),
        (
            {"data": np.zeros((N, 1, 4, 5), np.float32)},
            ValueError,
            ["data has shape (2, 1, 4, 5)", "3 spatial axes"],
        ),
        (
            {"data": np.zeros((N, 1, *SHAPE), np.float32), "seg": np.zeros((3, 1, *SHAPE), np.int16)},
            ValueError,
            ["data has 2 samples but seg has 3"],
        ),
    ],
)
def test_the_cpu_executor_names_what_is_wrong(kwargs, error, words):
    with pytest.raises(error) as info:
        cpu_resample(**kwargs)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_program_and_blur_checks():
    x = np.zeros((N, 1, *SHAPE), np.int16)
    with pytest.raises(TypeError, match="x has dtype int16; intensity operations need float32 or float64"):
        _C.apply_program(x, **no_program())
    with pytest.raises(ValueError, match=r"sigma has 3 values; expected \(N, ndim\) = 6"):
        _C.gaussian_blur(x.astype(np.float32), np.ones(3, np.float32), 4.0)


cuda_compiled = pytest.mark.skipif(
    _C is None or not hasattr(_C, "resample_cuda"), reason="delira-augment was built without CUDA"
)


@cuda_compiled
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"dtype": "int32"}, TypeError, ["data has dtype int32", "float32 or float64"]),
        ({"seg_dtype": "float64"}, TypeError, ["seg has dtype float64", "integer dtype"]),
        ({"order_data": 2}, ValueError, ["order_data is 2"]),
        ({"affine": identity_affine(3)}, ValueError, ["affine has 36 entries"]),
    ],
)
def test_the_cuda_executor_shares_the_cpu_checks(kwargs, error, words):
    with pytest.raises(error) as info:
        cuda_resample(**kwargs)
    for w in words:
        assert w in str(info.value), str(info.value)


@cuda_compiled
def test_cuda_program_and_blur_checks():
    shape = [N, 1, *SHAPE]
    p = no_program()
    with pytest.raises(TypeError, match="x has dtype int16; intensity operations need float32 or float64"):
        _C.apply_program_cuda(8, "int16", shape, p["op_kinds"], p["op_refs"], p["op_params"], p["op_active"],
                              p["seeds"], 0)  # fmt: skip
    with pytest.raises(ValueError, match=r"sigma has 3 values; expected \(N, ndim\) = 6"):
        _C.gaussian_blur_cuda(8, "float32", shape, np.ones(3, np.float32), 4.0, 0)
