"""Batches as a ``tf.data.Dataset`` (TensorFlow is imported on first use only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["to_tf_dataset"]


def to_tf_dataset(loader: Any, keys: Sequence[str] | None = None, advance_epoch: bool = True) -> Any:
    """A ``tf.data.Dataset`` that yields the loader's batches as dicts of tensors.

    Args:
        loader: a :class:`~delira.data.DataLoader`.
        keys: the batch keys to include (default: every numpy array and every numeric list in the
            first batch of the loader's epoch, e.g. ``"data"``, ``"seg"``, ``"label"``; ``str``
            lists such as ``"case_id"`` are included when named here).
        advance_epoch: after each complete pass (one epoch), call ``loader.set_epoch(epoch + 1)``,
            so that iterating the dataset again (e.g. ``model.fit(ds, epochs=...)``) gives the
            next epoch; False: every pass repeats the current epoch.

    The element spec is taken from batch 0 of the current epoch (loaded once, in this process),
    with an unknown batch size (the last batch may be smaller). The arrays of each batch are
    handed to TensorFlow as they come from the loader's shared memory; TensorFlow's conversion to
    tensors is the only copy.
    """
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError("to_tf_dataset needs TensorFlow: pip install tensorflow-cpu") from exc
    first = loader.load(0)
    if keys is None:
        keys = [k for k, v in first.items() if isinstance(v, np.ndarray) and not v.dtype.hasobject]
    spec = {}
    for key in keys:
        if key not in first:
            raise KeyError(f"batches have no key {key!r}; they have {sorted(first)}")
        value = np.asarray(first[key])
        dtype = tf.string if value.dtype.kind in "US" else tf.as_dtype(value.dtype)
        spec[key] = tf.TensorSpec(shape=(None, *value.shape[1:]), dtype=dtype)
    del first

    def generate() -> Iterator[dict[str, Any]]:
        for batch in loader:
            yield {k: batch[k] if isinstance(batch[k], np.ndarray) else np.asarray(batch[k]) for k in keys}
        if advance_epoch:
            loader.set_epoch(loader.epoch + 1)

    return tf.data.Dataset.from_generator(generate, output_signature=spec)
