"""seed_everything seeds Python, numpy, torch, TensorFlow and the loader."""

from __future__ import annotations

import random

import numpy as np
import pytest

from delira.training import seed_everything


def _draw_basic():
    return random.random(), np.random.rand()  # noqa: NPY002 - the legacy global generator is under test


def test_python_and_numpy_and_loader():
    class Loader:
        seed = 0

    loader = Loader()
    seed_everything(7, loader=loader)
    first = _draw_basic()
    seed_everything(7)
    assert _draw_basic() == first
    assert first[1] == np.random.RandomState(7).rand()  # the legacy generator seeded with 7
    assert loader.seed == 7
    with pytest.raises(ValueError, match="seed must be an int"):
        seed_everything(-1)


@pytest.mark.torch
def test_torch():
    import torch

    seed_everything(3, frameworks=("torch",))
    a = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(a, torch.rand(3))


@pytest.mark.tf
def test_tensorflow():
    import tensorflow as tf

    seed_everything(3, frameworks=("tensorflow",))
    a = tf.random.uniform((3,)).numpy()
    seed_everything(3, frameworks=("tensorflow",))
    np.testing.assert_array_equal(a, tf.random.uniform((3,)).numpy())
