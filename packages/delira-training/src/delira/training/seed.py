"""``seed_everything``: one seed for Python, numpy, torch, TensorFlow/Keras and the data loader."""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np

__all__ = ["seed_everything"]


def seed_everything(seed: int, loader: Any = None, frameworks: tuple[str, ...] | None = None) -> int:
    """Seed every random number generator a training run draws from.

    Seeds Python's ``random``, numpy's global generator, ``PYTHONHASHSEED`` (for subprocesses),
    torch (CPU and CUDA) and TensorFlow/Keras (``keras.utils.set_random_seed``), and sets
    ``loader.seed`` where the loader has that attribute (``delira.data.DataLoader``: batch ``i`` of
    epoch ``e`` then depends only on ``(seed, e, i)``).

    Args:
        seed: a non-negative int below 2**32.
        loader: a data loader whose ``seed`` to set, or None.
        frameworks: which of ``"torch"`` / ``"tensorflow"`` to seed; None seeds those already
            imported (so that seeding never imports a framework the run does not use).

    Returns:
        ``seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}; pass e.g. seed=0")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator is what we seed
    os.environ["PYTHONHASHSEED"] = str(seed)
    wanted = (
        set(frameworks)
        if frameworks is not None
        else {m for m in ("torch", "tensorflow") if m in sys.modules}
    )
    if "torch" in wanted:
        import torch

        torch.manual_seed(seed)  # also seeds every CUDA device
    if "tensorflow" in wanted:
        import keras

        keras.utils.set_random_seed(seed)  # python, numpy, tensorflow and Keras' SeedGenerator
    if loader is not None and hasattr(loader, "seed"):
        loader.seed = seed
    return seed
