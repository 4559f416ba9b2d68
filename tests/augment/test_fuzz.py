"""Property-based fuzzing of the kernel entry points: random shapes, strides, dtypes and parameters.

Every call must either succeed with an output of the documented shape and dtype, or raise a
ValueError / TypeError; never crash. The Makefile's ``test-fuzz-sanitize`` runs this file against a
build of the extension with AddressSanitizer and UBSan (DELIRA_AUGMENT_EXTENSION points at it).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import delira.augment as da
from delira.augment import functional as F
from delira.augment._program import OpKind, Program

# DELIRA_FUZZ_EXAMPLES raises the number of examples (the sanitizer run of the Makefile uses more).
SETTINGS = settings(
    max_examples=int(os.environ.get("DELIRA_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def arrays(draw, kind):
    nd = draw(st.sampled_from([2, 3]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    shape = tuple(draw(st.integers(1, 7)) for _ in range(nd))
    if kind == "image":
        dtype = draw(st.sampled_from(["float32", "float64"]))
        base = draw(st.integers(0, 2**31)).__index__()
        x = np.random.default_rng(base).standard_normal((n, c, *shape)).astype(dtype)
    else:
        dtype = draw(st.sampled_from(["uint8", "int16", "int32", "int64"]))
        x = np.random.default_rng(draw(st.integers(0, 2**31))).integers(0, 4, (n, c, *shape)).astype(dtype)
    layout = draw(st.sampled_from(["contiguous", "reversed", "transposed", "strided"]))
    if layout == "reversed":
        x = x[..., ::-1]
    elif layout == "transposed":
        x = np.swapaxes(x, -1, -2)
    elif layout == "strided":
        big = np.repeat(x, 2, axis=-1)
        x = big[..., ::2]
    return x


matrices = st.lists(st.floats(-3, 3, allow_nan=False), min_size=12, max_size=12)


@SETTINGS
@given(
    x=arrays("image"),
    seg=st.booleans(),
    entries=matrices,
    order=st.sampled_from([0, 1, 3]),
    order_seg=st.sampled_from([0, 1]),
    mode=st.sampled_from(["constant", "nearest", "reflect", "mirror"]),
    patch=st.lists(st.integers(1, 6), min_size=3, max_size=3),
    elastic=st.floats(0, 4),
    scale=st.floats(1, 6),
    ops=st.lists(st.sampled_from(list(OpKind)), max_size=5),
)
def test_spatial_transform_never_crashes(x, seg, entries, order, order_seg, mode, patch, elastic, scale, ops):
    nd = x.ndim - 2
    n = x.shape[0]
    m = np.asarray(entries[: nd * (nd + 1)]).reshape(nd, nd + 1)
    affine = np.repeat(m[None], n, axis=0)
    labels = np.random.default_rng(0).integers(0, 3, x.shape).astype(np.int16) if seg else None
    patch_t = tuple(patch[:nd])
    field = F.elastic.random_field(np.random.default_rng(1), patch_t, np.full(n, elastic), np.full(n, scale))
    prog = Program(n)
    for kind in ops:
        params = {
            OpKind.NOISE: (0.1,),
            OpKind.MULTIPLY: (1.5,),
            OpKind.ADD: (0.5,),
            OpKind.CLIP: (-1.0, 1.0),
            OpKind.CONTRAST: (1.2, 1.0),
            OpKind.GAMMA: (0.8, 0.0, 1.0),
            OpKind.RESTORE_STATS: (0.0,),
            OpKind.ZSCORE: (1e-8,),
            OpKind.PERCENTILE_CLIP: (5.0, 95.0),
            OpKind.RICIAN: (0.1,),
            OpKind.SHIFT_MIN: (),
        }[kind]
        prog.add(kind, *params, ref=0 if kind == OpKind.RESTORE_STATS else -1)
    prog.seeds = np.arange(n, dtype=np.uint64)
    out, out_seg = F.spatial_transform(
        x,
        labels,
        affine=affine,
        linear=np.repeat(np.eye(nd)[None], n, 0),
        elastic=field,
        patch_size=patch_t,
        order_data=order,
        order_seg=order_seg,
        mode_data=mode,
        mode_seg=mode,
        program=prog,
    )
    assert out.shape == x.shape[:2] + patch_t and out.dtype == x.dtype
    assert np.isfinite(out).all()
    if seg:
        assert out_seg.shape == labels.shape[:2] + patch_t
        assert set(np.unique(out_seg)) <= set(np.unique(labels)) | {0}


@SETTINGS
@given(x=arrays("label"), entries=matrices, order=st.sampled_from([0, 1]))
def test_label_resampling_never_crashes(x, entries, order):
    nd = x.ndim - 2
    m = np.vstack([np.asarray(entries[: nd * (nd + 1)]).reshape(nd, nd + 1), np.eye(nd + 1)[nd]])
    out = F.affine_resample(x, m, order=order)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert set(np.unique(out)) <= set(np.unique(x)) | {0}


@SETTINGS
@given(x=arrays("image"), sigma=st.floats(0, 3), zoom=st.floats(0.2, 1.0), std=st.floats(0, 2))
def test_intensity_entry_points_never_crash(x, sigma, zoom, std):
    for out in (
        F.gaussian_blur(x, sigma),
        F.simulate_low_resolution(x, zoom),
        F.gaussian_noise(x, std, seed=0),
        F.gamma(x, 1.3),
        F.percentile_clip(x, 1, 99),
    ):
        assert out.shape == x.shape and out.dtype == x.dtype and np.isfinite(out).all()


@SETTINGS
@given(bad=st.sampled_from(["nan_matrix", "inf_cval", "wrong_affine", "bad_grid", "bad_program"]))
def test_inconsistent_kernel_calls_raise_instead_of_crashing(bad):
    from delira.augment import _extension

    c = _extension._C
    x = np.zeros((1, 1, 4, 4, 4), np.float32)
    kernel_args = Program(1).kernel_args()
    empty = np.zeros(0, np.float32)
    affine = np.zeros((1, 3, 4), np.float32)
    if bad == "nan_matrix":
        with pytest.raises(ValueError):
            F.spatial_transform(x, affine=np.full((1, 3, 4), np.nan), patch_size=(2, 2, 2))
    elif bad == "inf_cval":
        with pytest.raises(ValueError):
            F.spatial_transform(x, affine=affine, patch_size=(2, 2, 2), cval_data=float("inf"))
    elif bad == "wrong_affine":
        with pytest.raises(ValueError):
            c.resample(
                x,
                None,
                [2, 2, 2],
                np.zeros((2, 3, 4), np.float32),
                None,
                empty,
                empty,
                1,
                0,
                0.0,
                0,
                0,
                0.0,
                **kernel_args,
            )
    elif bad == "bad_grid":
        with pytest.raises(ValueError):
            c.resample(
                x,
                None,
                [2, 2, 2],
                affine,
                np.zeros((1, 3, 2, 2, 2), np.float32),
                np.zeros((1, 3), np.float32),
                np.ones((1, 3), np.float32),
                1,
                0,
                0.0,
                0,
                0,
                0.0,
                **kernel_args,
            )
    else:
        args = dict(
            kernel_args,
            op_kinds=[42],
            op_refs=[-1],
            op_params=np.zeros((1, 1, 3), np.float32),
            op_active=np.ones((1, 1), bool),
        )
        with pytest.raises(ValueError):
            c.resample(x, None, [2, 2, 2], affine, None, empty, empty, 1, 0, 0.0, 0, 0, 0.0, **args)
    assert da.build_info()["compiled"]
