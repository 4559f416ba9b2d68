"""pytest-benchmark suite: each delira.augment operation on one 1 x 128^3 sample (single thread).

Run with ``.venv/bin/python -m pytest benchmarks/augment --benchmark-only`` (not part of the test
suite); ``--benchmark-json out.json`` saves the figures.
"""

from __future__ import annotations

import numpy as np
import pytest

import delira.augment as da
from delira.augment import functional as F
from delira.augment.functional import elastic as E

SHAPE = (1, 1, 128, 128, 128)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    saved = da.get_num_threads()
    da.set_num_threads(1)
    yield
    da.set_num_threads(saved)


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    return rng.standard_normal(SHAPE, dtype=np.float32), rng.integers(0, 3, SHAPE).astype(np.int16)


def _affine(shape, patch, **kw):
    a, lin = F.transform_matrix(shape, patch, **kw)
    return a[None], lin[None]


@pytest.mark.parametrize("order", [0, 1, 3])
def test_affine_resample(benchmark, volume, order):
    m = np.eye(4)
    m[:3, :3] = F.rotation_matrix([0.3, 0.2, 0.1], 3)
    benchmark(F.affine_resample, volume[0], m, order=order)


def test_spatial_rotation_scale_data_and_seg(benchmark, volume):
    a, _ = _affine(SHAPE[2:], (96, 96, 96), rotation=[0.3, 0.2, 0.1], scale=1.2)
    benchmark(F.spatial_transform, volume[0], volume[1], affine=a, patch_size=(96, 96, 96))


def test_spatial_with_elastic(benchmark, volume):
    a, lin = _affine(SHAPE[2:], (96, 96, 96), rotation=[0.3, 0.2, 0.1], scale=1.2)
    field = E.random_field(np.random.default_rng(0), (96, 96, 96), np.array([2.0]), np.array([19.0]))
    benchmark(
        F.spatial_transform,
        volume[0],
        volume[1],
        affine=a,
        linear=lin,
        elastic=field,
        patch_size=(96, 96, 96),
    )


@pytest.mark.parametrize(
    "name",
    [
        "gaussian_noise",
        "brightness_multiplicative",
        "contrast",
        "gamma",
        "zscore_normalize",
        "percentile_clip",
    ],
)
def test_intensity(benchmark, volume, name):
    args = {
        "gaussian_noise": (0.1,),
        "brightness_multiplicative": (1.1,),
        "contrast": (1.2,),
        "gamma": (0.8,),
    }
    benchmark(getattr(F, name), volume[0], *args.get(name, ()))


def test_gaussian_blur(benchmark, volume):
    benchmark(F.gaussian_blur, volume[0], 1.0)


def test_simulate_low_resolution(benchmark, volume):
    benchmark(F.simulate_low_resolution, volume[0], 0.5)


def test_mirror(benchmark, volume):
    benchmark(F.mirror, volume[0], (0, 1, 2))


@pytest.mark.parametrize("stage", ["affine", "elastic", "seg", "full"])
def test_canonical_fused_pass(benchmark, stage):
    """The canonical workload's fused kernel call (1 x 160^3 -> 128^3) restricted to a stage and those
    before it, with fixed parameters (``delira-augment-bench --profile`` reports the differences)."""
    from delira.augment import _engine
    from delira.augment._program import Program
    from delira.augment.bench import _draw_fused, _fused_spec, _inputs, delira_pipeline

    data, seg = _inputs(1, 160)
    pipe = delira_pipeline((128, 128, 128))
    affine, linear, field, patch, program = _draw_fused(pipe, np.random.default_rng(1), 1, (160, 160, 160))
    spatial = pipe.members()[0]
    if stage != "full":
        program = Program(1, [], program.seeds)
    spec = _fused_spec(spatial, affine, linear, field, patch, program, elastic=stage != "affine")
    benchmark(_engine.resample, data, seg if stage in ("seg", "full") else None, spec, "cpu")
