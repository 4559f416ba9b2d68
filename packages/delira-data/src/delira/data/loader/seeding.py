"""The seed protocol that makes batch ``i`` of epoch ``e`` a function of ``(seed, e, i)`` only.

For every batch the loader builds ``ss = numpy.random.SeedSequence([seed, epoch, index])`` and,
in whichever process loads the batch:

1. seeds the global generators from it, ``numpy.random.seed(ss.generate_state(4))`` and
   ``random.seed(...)`` (so legacy code that draws from ``np.random`` / ``random`` -- datasets,
   batchgenerators transforms -- is reproducible too);
2. loads the samples ``dataset[key]`` in batch order and collates them;
3. calls each transform as ``transform(**batch)``; a transform whose signature has a parameter
   named ``rng`` is called as ``transform(**batch, rng=generator)`` with
   ``generator = numpy.random.default_rng(ss)`` (a single transform) or
   ``numpy.random.default_rng(ss.spawn(n)[k])`` (transform ``k`` of a sequence of ``n``).

In the main process (``num_workers=0``) the global generator states are saved before and restored
after each batch, so iterating a loader does not disturb the caller's random state.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "accepts_rng",
    "apply_transforms",
    "as_transform_list",
    "batch_seed_sequence",
    "seed_global_rngs",
]

Transform = Callable[..., Mapping[str, Any]]


def batch_seed_sequence(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    """``numpy.random.SeedSequence([seed, epoch, index])``: the root of all randomness of one batch."""
    return np.random.SeedSequence([int(seed), int(epoch), int(index)])


def seed_global_rngs(ss: np.random.SeedSequence) -> None:
    """Seed ``numpy.random``'s global generator and Python's ``random`` from ``ss``."""
    state = ss.generate_state(4)
    np.random.seed(state)  # noqa: NPY002 - the legacy global state is what we are seeding
    random.seed(int.from_bytes(state.tobytes(), "little"))


def accepts_rng(transform: Callable[..., Any]) -> bool:
    """True when ``transform``'s signature has a parameter named ``rng`` (passable by keyword)."""
    try:
        signature = inspect.signature(transform)
    except (TypeError, ValueError):
        return False
    parameter = signature.parameters.get("rng")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def as_transform_list(transforms: Transform | Sequence[Transform] | None) -> tuple[Transform, ...]:
    """``None`` -> ``()``, one callable -> ``(callable,)``, a sequence -> a tuple (each checked)."""
    if transforms is None:
        return ()
    items = (transforms,) if callable(transforms) else tuple(transforms)
    for t in items:
        if not callable(t):
            raise TypeError(
                f"transforms must be callables taking and returning a batch dict (transform(**batch) -> "
                f"dict) or a sequence of them; got {type(t).__name__}"
            )
    return items


def apply_transforms(
    batch: dict[str, Any], transforms: Sequence[Transform], ss: np.random.SeedSequence
) -> dict[str, Any]:
    """Apply ``transforms`` in order to ``batch`` with the ``rng`` protocol of this module.

    Args:
        batch: the collated batch, ``{"data": (N, C, *spatial), ...}``.
        transforms: callables ``transform(**batch[, rng=Generator]) -> dict``.
        ss: the batch's seed sequence (:func:`batch_seed_sequence`).

    Returns:
        The transformed batch dict.
    """
    if not transforms:
        return batch
    seeds = [ss] if len(transforms) == 1 else ss.spawn(len(transforms))
    for transform, child in zip(transforms, seeds):
        if accepts_rng(transform):
            out = transform(**batch, rng=np.random.default_rng(child))
        else:
            out = transform(**batch)
        if not isinstance(out, Mapping):
            name = getattr(transform, "__name__", type(transform).__name__)
            raise TypeError(
                f"transform {name} returned a {type(out).__name__}; transforms must return the batch dict "
                "(def transform(**batch): ...; return batch)"
            )
        batch = dict(out)
    return batch
