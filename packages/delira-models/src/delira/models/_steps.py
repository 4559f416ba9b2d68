"""Framework-neutral pieces of ``training_step``: picking the optimizer and the losses by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "compute_zero_weight_outputs",
    "deep_supervision_weights",
    "require_keys",
    "select_losses",
    "select_optimizer",
]


def select_optimizer(optimizers: Mapping[str, Any], model: str, key: str = "default") -> Any:
    """The optimizer under ``key``, or the only one when the dict holds exactly one.

    Raises:
        ValueError: no optimizer under ``key`` and not exactly one to fall back to.
    """
    if not isinstance(optimizers, Mapping):
        raise TypeError(
            f"{model}.training_step takes a dict of optimizers, e.g. {{{key!r}: optimizer}}; "
            f"got {type(optimizers).__name__}"
        )
    if key in optimizers:
        return optimizers[key]
    if key == "default" and len(optimizers) == 1:
        return next(iter(optimizers.values()))
    raise ValueError(
        f"{model}.training_step needs an optimizer under {key!r}; got keys {sorted(optimizers)}; "
        f"pass optimizers={{{key!r}: ...}}"
    )


def select_losses(losses: Mapping[str, Callable[..., Any]], model: str) -> Mapping[str, Callable[..., Any]]:
    """Check that ``losses`` is a non-empty dict of callables and return it."""
    if not isinstance(losses, Mapping) or not losses:
        raise ValueError(
            f"{model}.training_step needs a non-empty dict of loss callables, e.g. "
            f"{{'ce': loss_fn}}; got {losses!r}"
        )
    for name, fn in losses.items():
        if not callable(fn):
            raise TypeError(f"{model}.training_step: losses[{name!r}] is not callable ({type(fn).__name__})")
    return losses


def require_keys(batch: Mapping[str, Any], keys: tuple[str, ...], model: str) -> None:
    """Raise KeyError naming the missing batch keys and the ones present."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(
            f"{model} needs batch keys {list(keys)}; missing {missing}; the batch has {sorted(batch)}"
        )


def deep_supervision_weights(count: int) -> list[float]:
    """nnU-Net's loss weights of ``count`` deep-supervision outputs, full resolution first:
    ``1 / 2**k`` for ``k < count - 1`` and 0 for the lowest resolution, normalised to sum 1 (one
    output: ``[1.0]``). E.g. 4 outputs: ``[4/7, 2/7, 1/7, 0]``; 2 outputs: ``[1, 0]``.

    The one definition of these weights: ``UNet.compute_losses`` and delira-training's
    ``DeepSupervisionLoss`` both use it."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1 (the number of outputs), got {count!r}")
    if count == 1:
        return [1.0]
    raw = [0.5**k for k in range(count - 1)] + [0.0]
    return [w / sum(raw) for w in raw]


def compute_zero_weight_outputs() -> bool:
    """Whether outputs of weight 0 must still be computed (times 0) instead of skipped: under torch
    DistributedDataParallel with more than one process, where a head that gets no gradient makes
    the next step fail ("Expected to have finished reduction in the prior iteration ..."). Skipping
    them elsewhere saves their loss computation. Never imports torch."""
    import sys

    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    return dist.get_world_size() > 1
