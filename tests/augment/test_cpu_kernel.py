"""The CPU engine's SIMD row kernel (csrc/cpu/row_simd.h) against scipy and numpy references.

The fused pass samples float32 images (linear) and labels (nearest) with an explicit AVX2/AVX-512
kernel, prepared one row ahead; these tests aim at what that path adds: row lengths that are not a
multiple of the vector width, labels of every dtype gathered as 32-bit words up to the last element
in memory, several channels, both spatial ranks and every border mode, each instruction set, and the
64-bit fallback for arrays whose offsets do not fit in 32 bits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi

import delira.augment as da
from delira.augment import _program
from delira.augment import functional as F
from delira.augment.functional import elastic as E
from tests.augment.conftest import random_affine

MODES = ["constant", "nearest", "reflect", "mirror"]
LABEL_DTYPES = [np.uint8, np.int16, np.int32, np.int64]


def _coordinates(affine, linear, field, patch):
    """Input coordinates (ndim, *patch) of the fused pass in float64: A o + b + linear e(o)."""
    nd = len(patch)
    grid = np.stack(np.meshgrid(*[np.arange(p, dtype=float) for p in patch], indexing="ij"))
    c = np.tensordot(affine[:, :nd], grid, axes=(1, 0)) + affine[:, nd].reshape((nd,) + (1,) * nd)
    if field is not None:
        c += np.tensordot(linear, E.evaluate(field, patch)[0], axes=(1, 0))
    return c


def _away_from_ties(c, in_shape):
    """Voxels whose nearest index and inside test do not hinge on float32 rounding."""
    nd = c.shape[0]
    frac = c - np.floor(c)
    upper = (np.asarray(in_shape) - 1).reshape((nd,) + (1,) * nd)
    return (np.abs(frac - 0.5) > 1e-3).all(0) & (np.abs(c) > 1e-3).all(0) & (np.abs(c - upper) > 1e-3).all(0)


def _check_against_scipy(nd, mode, label_dtype, spacing, seed, image=lambda a: a):
    rng = np.random.default_rng(seed)
    in_shape = (14, 15, 17)[-nd:]
    patch = (9, 10, 37)[-nd:]  # 37 = 2 * 16 + 5: a partial vector at the end of every row
    data = image(rng.standard_normal((1, 2, *in_shape)).astype(np.float32))
    labels = rng.integers(-3 if label_dtype != np.uint8 else 0, 200, (1, 2, *in_shape)).astype(label_dtype)
    affine = random_affine(rng, nd, in_shape, patch, 0.25)[:nd]
    linear = np.eye(nd)
    field = E.random_field(rng, patch, np.array([1.5]), np.array([spacing]))
    out_d, out_s = F.spatial_transform(
        data,
        labels,
        affine=affine[None],
        linear=linear[None],
        elastic=field,
        patch_size=patch,
        mode_data=mode,
        cval_data=0.7,
        mode_seg=mode,
        cval_seg=5,
    )
    c = _coordinates(affine, linear, field, patch)
    safe = _away_from_ties(c, in_shape)
    assert safe.mean() > 0.9
    for ch in range(2):
        ref_d = ndi.map_coordinates(data[0, ch].astype(np.float64), c, order=1, mode=mode, cval=0.7)
        assert np.abs(out_d[0, ch] - ref_d)[safe].max() <= 1e-4
        ref_s = ndi.map_coordinates(labels[0, ch], c, order=0, mode=mode, cval=5)
        np.testing.assert_array_equal(out_s[0, ch][safe], ref_s[safe])


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_image_and_labels_match_scipy(nd, mode, label_dtype):
    _check_against_scipy(nd, mode, label_dtype, 4.0, hash((nd, mode, np.dtype(label_dtype).name)) % 2**32)


@pytest.mark.parametrize(
    "image",
    [
        lambda a: a.astype(np.float64),  # float64 images take the portable loops ...
        lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1],  # ... as do images with a reversed last axis
    ],
    ids=["float64", "reversed"],
)
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int64])
def test_portable_image_path_with_kernel_labels(image, label_dtype):
    """The labels take the kernel while the image takes the portable loops, on the same rows."""
    _check_against_scipy(3, "constant", label_dtype, 4.0, 7, image)


@pytest.mark.parametrize("spacing", [2.0, 1.0])
def test_fine_elastic_grids_match_scipy(spacing):
    """22 and 40 control points along the rows (the AVX-512 coordinates pick up to 32 per lane with a
    permute; more take the portable loops)."""
    _check_against_scipy(3, "constant", np.int16, spacing, int(spacing * 10))


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
@pytest.mark.parametrize(
    "view",
    [
        lambda a: a,  # the last label in memory is sampled (32-bit words must not read past it)
        lambda a: a[:, :, ::-1, :, ::-1],  # negative strides: the last element is at offset 0
        lambda a: a[:, :, 1:, ::2, :],
        lambda a: a.transpose(0, 1, 4, 3, 2),
    ],
)
def test_labels_are_copied_exactly_up_to_the_end_of_memory(label_dtype, view):
    rng = np.random.default_rng(0)
    info = np.iinfo(label_dtype)
    base = rng.integers(info.min, info.max, (1, 1, 5, 6, 7), dtype=label_dtype, endpoint=True)
    labels = view(base)
    shape = labels.shape[2:]
    identity = np.hstack([np.eye(3), np.zeros((3, 1))])[None]
    _, out = F.spatial_transform(None, labels, affine=identity, patch_size=shape)
    np.testing.assert_array_equal(out, labels)
    # one voxel further than the volume on every axis: constant border, cval
    _, out = F.spatial_transform(
        None, labels, affine=identity, patch_size=tuple(s + 1 for s in shape), cval_seg=1
    )
    np.testing.assert_array_equal(out[0, 0, : shape[0], : shape[1], : shape[2]], labels[0, 0])
    assert (out[0, 0, shape[0]] == 1).all() and (out[0, 0, :, :, shape[2]] == 1).all()


_GUARD_PAGE_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
from delira.augment import functional as F
dtype = np.dtype(sys.argv[1])
page = mmap.PAGESIZE
buf = mmap.mmap(-1, 3 * page)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(addr + 2 * page, page, 0) == 0  # PROT_NONE: reading past the labels faults
shape = (1, 1, 3, 5, 7)
n = int(np.prod(shape))
labels = np.frombuffer(buf, dtype, n, 2 * page - n * dtype.itemsize).reshape(shape)
src = np.arange(n, dtype=np.int64).reshape(shape) % 100
np.copyto(np.frombuffer(buf, dtype, n, 2 * page - n * dtype.itemsize).reshape(shape), src.astype(dtype))
identity = np.hstack([np.eye(3), np.zeros((3, 1))])[None]
_, out = F.spatial_transform(None, labels, affine=identity, patch_size=shape[2:])
assert (out == src.astype(dtype)).all()
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard page: Linux only")
@pytest.mark.parametrize("label_dtype", ["uint8", "int16"])
def test_label_gathers_never_read_past_the_array(label_dtype):
    """Labels ending exactly where an unreadable page begins: the 32-bit word gathers of the kernel
    must not touch the bytes after the last label (a fault would kill the subprocess)."""
    run = subprocess.run(
        [sys.executable, "-c", _GUARD_PAGE_SCRIPT, label_dtype], capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int16])
def test_labels_spanning_fewer_than_four_bytes(label_dtype):
    labels = np.array([[[[[3]]]]], dtype=label_dtype)
    affine = np.array([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.5, -0.2]]])
    _, out = F.spatial_transform(None, labels, affine=affine, patch_size=(1, 1, 19), mode_seg="nearest")
    np.testing.assert_array_equal(out, np.full((1, 1, 1, 1, 19), 3, label_dtype))


def test_arrays_whose_offsets_exceed_32_bits_take_the_64_bit_path():
    """A (2, 2, 4) volume whose planes lie 2**30 elements apart (lazily allocated zeros, a few pages
    touched): the same result as its contiguous copy."""
    try:
        image_base = np.zeros(2**30 + 64, np.float32)  # 4 GiB of address space
        label_base = np.zeros(2**31 + 64, np.uint8)  # 2 GiB
    except MemoryError:
        pytest.skip("cannot reserve 6 GiB of address space here")
    rng = np.random.default_rng(1)
    image = np.lib.stride_tricks.as_strided(image_base, (1, 1, 2, 2, 4), (0, 0, 2**30 * 4, 64, 4))
    labels = np.lib.stride_tricks.as_strided(label_base, (1, 1, 2, 2, 4), (0, 0, 2**31, 16, 1))
    image[...] = rng.standard_normal(image.shape).astype(np.float32)
    labels[...] = rng.integers(0, 255, labels.shape).astype(np.uint8)
    affine = random_affine(rng, 3, (2, 2, 4), (3, 3, 5), 0.1)[:3][None]
    big = F.spatial_transform(image, labels, affine=affine, patch_size=(3, 3, 5), mode_data="nearest")
    small = F.spatial_transform(
        np.ascontiguousarray(image),
        np.ascontiguousarray(labels),
        affine=affine,
        patch_size=(3, 3, 5),
        mode_data="nearest",
    )
    np.testing.assert_allclose(big[0], small[0], atol=1e-6)
    np.testing.assert_array_equal(big[1], small[1])


def test_statistics_match_numpy_for_rows_of_any_length():
    """ZScore after resampling: the kernel's row sums (csrc/cpu/row_simd.h: row_sums) give numpy's
    mean and std, also for values far from zero and rows that are not a multiple of 16 long."""
    rng = np.random.default_rng(2)
    for last in (13, 16, 37):
        x = (50.0 + 2.0 * rng.standard_normal((2, 1, 5, 6, last))).astype(np.float32)
        prog = _program.Program(2)
        prog.add(_program.OpKind.ZSCORE, 1e-8)
        identity = np.repeat(np.hstack([np.eye(3), np.zeros((3, 1))])[None], 2, 0)
        out, _ = F.spatial_transform(x, None, affine=identity, patch_size=x.shape[2:], program=prog)
        x64 = x.astype(np.float64)
        ref = (x64 - x64.mean(axis=(2, 3, 4), keepdims=True)) / x64.std(axis=(2, 3, 4), keepdims=True)
        assert np.abs(out - ref).max() < 1e-4


def test_thread_counts_agree_with_labels_and_channels(threads):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2, 2, 30, 31, 33)).astype(np.float32)
    seg = rng.integers(0, 4, (2, 3, 30, 31, 33)).astype(np.uint8)
    pipeline = [
        da.SpatialTransform((21, 23, 19), elastic_alpha=(0, 900), elastic_sigma=(9, 13)),
        da.GaussianNoise((0, 0.1)),
        da.Gamma(retain_stats=True),
        da.Mirror(),
    ]
    outs = []
    for n in (1, 2, 3):
        da.set_num_threads(n)
        outs.append(da.Compose(pipeline, seed=4)(data=data, seg=seg))
    for o in outs[1:]:
        np.testing.assert_array_equal(o["data"], outs[0]["data"])
        np.testing.assert_array_equal(o["seg"], outs[0]["seg"])


_ISA_SCRIPT = """
import json, sys
import numpy as np
import delira.augment as da
rng = np.random.default_rng(5)
data = rng.standard_normal((2, 1, 26, 27, 28)).astype(np.float32)
seg = rng.integers(0, 3, (2, 1, 26, 27, 28)).astype(np.int16)
t = da.Compose([
    da.SpatialTransform((20, 21, 22), elastic_alpha=(0, 900), elastic_sigma=(9, 13)),
    da.GaussianNoise((0, 0.1)), da.BrightnessMultiplicative(), da.Gamma(retain_stats=True), da.Mirror(),
], seed=3)
out = t(data=data, seg=seg)
np.savez(sys.argv[1], data=out["data"], seg=out["seg"])
print(json.dumps(da.build_info()["cpu_isa"]))
"""


def test_every_instruction_set_gives_the_same_result(tmp_path):
    """The baseline (portable loops), AVX2 and AVX-512 builds of the engine agree: to float rounding
    for the image (the baseline has no FMA) and exactly for the labels away from float32 ties."""
    results = {}
    for isa in ("base", "avx2", "avx512"):
        path = tmp_path / f"{isa}.npz"
        env = dict(os.environ, DELIRA_AUGMENT_ISA=isa)
        run = subprocess.run(
            [sys.executable, "-c", _ISA_SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        used = json.loads(run.stdout.strip().splitlines()[-1])
        if used == isa:
            results[isa] = np.load(path)
    if len(results) < 2:
        pytest.skip(f"only {sorted(results)} available on this CPU/build")
    ref = results.pop("base") if "base" in results else results.pop(sorted(results)[0])
    for isa, r in results.items():
        assert np.abs(r["data"] - ref["data"]).max() < 5e-4, isa  # FMA or not, amplified by gamma
        assert (r["seg"] != ref["seg"]).mean() < 1e-3, isa
