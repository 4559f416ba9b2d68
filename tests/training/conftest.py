"""Shared fixtures of the trainer tests: a learnable synthetic segmentation task on 8^3 volumes."""

from __future__ import annotations

import numpy as np
import pytest


def threshold_cases(num_cases: int, size: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Cases ``{"data": (1, s, s, s) float32, "seg": (1, s, s, s) int16}`` with seg = data > 0:
    learnable voxel by voxel."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(num_cases):
        data = rng.normal(size=(1, size, size, size)).astype(np.float32)
        cases.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return cases


@pytest.fixture
def threshold_loaders():
    """``(train_loader, val_loader)``: delira.data loaders of 16 / 4 threshold cases, batch 4."""
    from delira.data import DataLoader

    train = DataLoader(threshold_cases(16, seed=0), batch_size=4, shuffle=True, seed=3)
    val = DataLoader(threshold_cases(4, seed=1), batch_size=4)
    return train, val


@pytest.fixture
def make_cases():
    """The :func:`threshold_cases` factory."""
    return threshold_cases


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread per framework: the machine's cores are shared and the models are tiny."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)
