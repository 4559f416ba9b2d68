"""Fixtures of the delira.augment tests."""

from __future__ import annotations

import numpy as np
import pytest

import delira.augment as da


@pytest.fixture
def threads():
    """Restores the engine's thread count after a test that changes it."""
    saved = da.get_num_threads()
    yield
    da.set_num_threads(saved)


def random_affine(
    rng: np.random.Generator, nd: int, in_shape, out_shape, strength: float = 0.3
) -> np.ndarray:
    """A random homogeneous matrix that maps the output grid roughly onto the input (some voxels outside)."""
    a = np.eye(nd) + rng.normal(0, strength, (nd, nd))
    centre_out = (np.asarray(out_shape) - 1) / 2
    centre_in = (np.asarray(in_shape) - 1) / 2
    b = centre_in - a @ centre_out + rng.normal(0, 1.5, nd)
    m = np.eye(nd + 1)
    m[:nd, :nd], m[:nd, nd] = a, b
    return m


def sphere(shape, center, radius) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    c = np.asarray(center, dtype=float).reshape((-1,) + (1,) * len(shape))
    return np.sqrt(((grid - c) ** 2).sum(0)) <= radius
