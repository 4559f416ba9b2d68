"""Compose never modifies the transforms it is built from."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import delira.augment as da

pytest.importorskip("batchgenerators")


def _same(a, b) -> bool:
    """Deep equality of transform state: generators by their state, arrays by value, transforms by __dict__."""
    if isinstance(a, np.random.Generator):
        return isinstance(b, np.random.Generator) and a.bit_generator.state == b.bit_generator.state
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, da.Transform):
        return type(a) is type(b) and _same(vars(a), vars(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _members():
    return [
        da.SpatialTransform(
            (12, 12, 12), rotation=(-20, 20), elastic_magnitude=(1, 2), seed=1, backend="cpu"
        ),
        da.Mirror(seed=2, backend="cpu"),
        da.GaussianNoise(std=(0.05, 0.1), seed=3, backend="cpu"),
        da.Gamma(seed=4, backend="cpu"),
        da.GaussianBlur(seed=5, backend="cpu"),
        da.ZScoreNormalize(backend="cpu"),
        da.RandomApply(da.Contrast(backend="cpu"), p=0.5, backend="cpu"),
    ]


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 1, 14, 15, 16)).astype(np.float32)
    return {"data": data, "seg": (data > 0.5).astype(np.int16)}


@pytest.mark.parametrize("backend", [None, "batchgenerators", "cpu"])
@pytest.mark.parametrize("fuse", [True, False])
def test_building_and_running_a_compose_leaves_members_unchanged(batch, backend, fuse):
    members = _members()
    before = copy.deepcopy(members)
    pipe = da.Compose(members, fuse=fuse, backend=backend, seed=0)
    for seed in (0, 1):
        pipe(rng=seed, **batch)
    pipe(**batch)  # the Compose's own generator
    assert all(a is b for a, b in zip(pipe.transforms, members))
    for original, copied in zip(members, before):
        assert _same(vars(original), vars(copied)), type(original).__name__


def test_a_transform_shared_by_two_composes_behaves_as_before_alone(batch):
    st = da.SpatialTransform((12, 12, 12), rotation=(-20, 20), scale=(0.9, 1.1), seed=1, backend="cpu")
    noise = da.BrightnessMultiplicative((0.8, 1.2), backend="cpu")
    alone_before = st(rng=7, **batch)
    a = da.Compose([st, noise], backend="batchgenerators")
    b = da.Compose([st, noise], backend="cpu")
    out_a, out_b = a(rng=3, **batch), b(rng=3, **batch)
    assert st.backend == "cpu" and noise.backend == "cpu"
    alone_after = st(rng=7, **batch)
    np.testing.assert_array_equal(alone_after["data"], alone_before["data"])
    np.testing.assert_array_equal(alone_after["seg"], alone_before["seg"])
    # the two Composes really ran on their backends: same parameters, float-precision agreement
    np.testing.assert_allclose(out_a["data"], out_b["data"], atol=2e-4)
    # running the "cpu" Compose again gives exactly its earlier output (nothing leaked from the other)
    np.testing.assert_array_equal(b(rng=3, **batch)["data"], out_b["data"])


def test_the_callers_batch_dict_is_not_modified(batch):
    before = {k: v.copy() for k, v in batch.items()}
    da.Compose(_members())(rng=0, **batch)
    for k in before:
        np.testing.assert_array_equal(batch[k], before[k])
