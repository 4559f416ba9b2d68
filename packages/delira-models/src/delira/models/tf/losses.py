"""Adapters for Keras losses on the channels-first outputs of the Delira networks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from delira.models.tf.layers import to_channels_last

__all__ = ["channels_first"]


def channels_first(loss: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Let a Keras loss that wants classes on the last axis take channels-first predictions.

    Keras' cross-entropies only reduce over the last axis, while the networks return logits
    ``(N, K, *spatial)``, as in PyTorch. The wrapper moves axis 1 of ``y_pred`` to the end:

    >>> ce = channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> ce(seg, logits)  # seg (N, *spatial) int, logits (N, K, *spatial) float32 -> scalar

    For ``(N, K)`` predictions it changes nothing.
    """

    def wrapped(y_true: Any, y_pred: Any) -> Any:
        return loss(y_true, to_channels_last(y_pred))

    wrapped.__name__ = f"channels_first({getattr(loss, 'name', type(loss).__name__)})"
    wrapped.__doc__ = f"``{wrapped.__name__}``: the loss on ``y_pred`` with axis 1 moved last."
    return wrapped
