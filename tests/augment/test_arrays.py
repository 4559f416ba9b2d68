"""The array-namespace helper and the resample spec (one spec, one method per executor)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.ndimage as ndi

from delira.augment import _arrays, _engine, _extension
from delira.augment._program import OpKind, Program
from delira.augment._spec import BorderMode, ResampleSpec

# ---------------------------------------------------------------------------------------------
# namespace and the per-namespace helpers


def test_namespace_of_numpy_and_non_arrays():
    assert _arrays.namespace(np.zeros(3)) == "numpy"
    assert _arrays.namespace(np.ma.masked_array([1.0, 2.0])) == "numpy"
    assert _arrays.namespace(np.memmap) == "other"  # a class, not an array
    for other in ([1, 2], (1,), 3.0, "x", None):
        assert _arrays.namespace(other) == "other"


@pytest.mark.torch
def test_namespace_of_torch_tensors_and_parameters():
    torch = pytest.importorskip("torch")
    assert _arrays.namespace(torch.zeros(2)) == "torch"
    assert _arrays.namespace(torch.nn.Parameter(torch.zeros(2))) == "torch"
    assert _arrays.namespace(torch.zeros(2).numpy()) == "numpy"


@pytest.mark.tf
def test_namespace_of_tensorflow_tensors_and_variables():
    tf = pytest.importorskip("tensorflow")
    assert _arrays.namespace(tf.zeros(2)) == "tensorflow"
    assert _arrays.namespace(tf.Variable([1.0])) == "tensorflow"
    assert _arrays.namespace(tf.zeros(2).numpy()) == "numpy"


def test_the_package_detects_frameworks_in_one_place():
    """No module but _arrays inspects type modules, sys.modules or framework classes."""
    from pathlib import Path

    import delira.augment as da

    root = Path(da.__file__).parent
    for path in root.rglob("*.py"):
        if path.name in ("_arrays.py", "_extension.py"):  # _extension registers the loaded _C module
            continue
        text = path.read_text()
        for needle in ("__module__", "sys.modules", "EagerTensor", "isinstance(x, torch"):
            assert needle not in text, f"{path.relative_to(root)} uses {needle}; use _arrays.namespace"


def _frameworks():
    out = [("numpy", np.asarray)]
    try:
        import torch

        out.append(("torch", torch.as_tensor))
    except ImportError:
        pass
    try:
        import tensorflow as tf

        out.append(("tensorflow", tf.convert_to_tensor))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize(("name", "make"), _frameworks(), ids=[f for f, _ in _frameworks()])
def test_concat_take_and_cast_stay_in_the_namespace(name, make):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    x = make(base)
    parts = [_arrays.take(x, np.array([2, 0])), _arrays.take(x, np.array([3]))]
    joined = _arrays.concat(parts, x)
    assert _arrays.namespace(joined) == name
    np.testing.assert_array_equal(np.asarray(joined), base[[2, 0, 3]])
    as_int = _arrays.cast(x, "int16")
    assert _arrays.namespace(as_int) == name and _arrays.np_dtype(as_int) == np.int16
    mask = _arrays.cast(make((base % 2).astype(np.uint8)), "bool")
    np.testing.assert_array_equal(np.asarray(mask), (base % 2).astype(bool))


# ---------------------------------------------------------------------------------------------
# ResampleSpec


def _affine(n: int, nd: int) -> np.ndarray:
    return np.broadcast_to(np.eye(nd, nd + 1), (n, nd, nd + 1)).copy()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"out_shape": (4,)}, ValueError, "out_shape=.* 2 or 3 entries"),
        ({"out_shape": (4, -1, 4)}, ValueError, "out_shape"),
        (
            {"affine": np.zeros((2, 3, 3))},
            ValueError,
            r"affine has shape \(2, 3, 3\); expected \(N, ndim, ndim \+ 1\)",
        ),
        ({"affine": np.full((2, 3, 4), np.nan)}, ValueError, "affine contains NaN"),
        ({"order_data": 2}, ValueError, "order_data=2; use 0"),
        ({"order_data": True}, ValueError, "order_data=True"),
        ({"order_seg": 3}, ValueError, "order_seg=3; use 0"),
        ({"mode_data": "wrap"}, ValueError, "mode_data='wrap' is not a border mode"),
        ({"mode_seg": 7}, ValueError, "mode_seg=7 is not a border mode"),
        ({"cval_data": float("inf")}, ValueError, "cval_data must be finite"),
        ({"cval_seg": "a"}, TypeError, "cval_seg must be a number"),
        ({"program": Program(3)}, ValueError, r"program is built for 3 samples but affine has 2"),
        (
            {
                "elastic": np.zeros((2, 3, 3, 4, 4)),
                "grid_origin": np.zeros((2, 3)),
                "grid_spacing": np.ones((2, 3)),
            },
            ValueError,
            "at least 4",
        ),
        ({"elastic": np.zeros((2, 3, 4, 4, 4))}, ValueError, "needs grid_origin and grid_spacing"),
        (
            {
                "elastic": np.zeros((2, 3, 4, 4, 4)),
                "grid_origin": np.zeros((2, 3)),
                "grid_spacing": np.zeros((2, 3)),
            },
            ValueError,
            "grid_spacing must be > 0",
        ),
        ({"grid_origin": np.zeros((2, 3))}, ValueError, "only meaningful with elastic"),
    ],
)
def test_spec_is_validated_once_when_built(kwargs, error, match):
    args = {"out_shape": (4, 5, 6), "affine": _affine(2, 3)} | kwargs
    with pytest.raises(error, match=match):
        ResampleSpec(**args)


def test_spec_is_frozen_and_normalised():
    affine = _affine(2, 2)
    spec = ResampleSpec([5, 6], affine, mode_data="reflect", mode_seg=1, cval_data=2)
    assert spec.out_shape == (5, 6) and spec.ndim == 2 and spec.n == 2 and spec.grid == ()
    assert spec.mode_data is BorderMode.REFLECT and spec.mode_seg is BorderMode.NEAREST
    assert spec.affine.dtype == np.float32 and spec.affine.flags.c_contiguous
    assert not spec.affine.flags.writeable
    assert isinstance(spec.program, Program) and spec.program.n == 2 and not spec.program
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.order_data = 3
    affine[:] = 7.0  # the spec holds its own copy
    assert spec.affine[0, 0, 0] == 1.0


def test_executor_arguments_follow_the_binding_signatures():
    """Hand-written expected argument lists of _C.resample and _C.resample_cuda (csrc/python/bindings.cpp)."""
    n, nd = 2, 3
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, nd, 4, 5, 6)).astype(np.float32)
    origin, spacing = -np.ones((n, nd)), np.full((n, nd), 3.0)
    prog = Program(n)
    prog.add(OpKind.MULTIPLY, [2.0, 3.0])
    spec = ResampleSpec(
        (7, 8, 9), _affine(n, nd), values, origin, spacing, order_data=3, mode_data="mirror",
        cval_data=1.5, order_seg=1, mode_seg="nearest", cval_seg=2.0, program=prog,
    )  # fmt: skip
    data, seg = np.zeros((n, 1, 3, 3, 3), np.float32), None
    args, kwargs = spec.cpu_args(data, seg)
    assert args[0] is data and args[1] is None and args[2] == [7, 8, 9]
    np.testing.assert_array_equal(args[3], _affine(n, nd).astype(np.float32))
    np.testing.assert_array_equal(args[4], values)
    np.testing.assert_array_equal(args[5], origin.astype(np.float32))
    np.testing.assert_array_equal(args[6], spacing.astype(np.float32))
    assert args[7:] == (3, 3, 1.5, 1, 1, 2.0)
    assert all(type(a) is int for a in (args[7], args[8], args[10], args[11]))
    assert sorted(kwargs) == ["op_active", "op_kinds", "op_params", "op_refs", "seeds"]
    assert kwargs["op_kinds"] == [int(OpKind.MULTIPLY)]
    np.testing.assert_array_equal(kwargs["op_params"][:, 0, 0], [2.0, 3.0])

    class Dev:
        ptr, dtype, shape, strides = 1234, np.dtype("float32"), (n, 1, 3, 3, 3), (27, 27, 9, 3, 1)

    cuda = spec.cuda_args(Dev(), None, 99, 0, 5)
    assert cuda[:8] == (1234, "float32", [n, 1, 3, 3, 3], [27, 27, 9, 3, 1], 0, "float32", [], [])
    assert cuda[8:11] == (99, 0, [7, 8, 9])
    assert cuda[15:21] == (3, 3, 1.5, 1, 1, 2.0)
    assert cuda[21] == [int(OpKind.MULTIPLY)] and cuda[22] == [-1] and cuda[-1] == 5 and len(cuda) == 27

    fb = spec.fallback_args()
    assert (fb["mode_data"], fb["mode_seg"]) == ("mirror", "nearest")
    assert fb["elastic"].values.shape == values.shape and fb["program"] is prog
    empty = ResampleSpec((7, 8, 9), _affine(n, nd)).cpu_args(data, seg)[0]
    assert empty[4] is None and empty[5].shape == (0,) and empty[6].shape == (0,)


@pytest.mark.parametrize("backend", ["cpu", "batchgenerators"])
def test_one_spec_runs_on_each_host_executor_like_scipy(backend):
    if backend == "cpu" and _extension._C is None:
        pytest.skip("the compiled extension is not built")
    if backend == "batchgenerators":
        pytest.importorskip("batchgenerators")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 9, 10, 11)).astype(np.float32)
    m = np.array([[0.9, 0.1, 0.0, 0.4], [-0.1, 1.0, 0.05, -0.3], [0.0, 0.0, 1.1, 0.2]])
    spec = ResampleSpec((8, 9, 10), np.stack([m, m]), order_data=1, mode_data="nearest")
    out, none = _engine.resample(x, None, spec, backend)
    assert none is None and out.shape == (2, 1, 8, 9, 10) and out.dtype == np.float32
    for i in range(2):
        ref = ndi.affine_transform(
            x[i, 0].astype(np.float64), m[:, :3], m[:, 3], output_shape=(8, 9, 10), order=1, mode="nearest"
        )
        np.testing.assert_allclose(out[i, 0], ref, atol=1e-4)


def test_engine_checks_arrays_against_the_spec():
    spec = ResampleSpec((4, 4, 4), _affine(2, 3))
    with pytest.raises(ValueError, match=r"data has shape \(3, 1, 4, 4, 4\); the spec expects .* N = 2"):
        _engine.resample(np.zeros((3, 1, 4, 4, 4), np.float32), None, spec, "auto")
    with pytest.raises(ValueError, match="give data, seg or both"):
        _engine.resample(None, None, spec, "auto")
    with pytest.raises(TypeError, match="spec must be a ResampleSpec"):
        _engine.resample(np.zeros((2, 1, 4, 4, 4), np.float32), None, {"out_shape": (4, 4, 4)}, "auto")
