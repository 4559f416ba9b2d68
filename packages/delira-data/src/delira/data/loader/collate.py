"""Collation: a list of sample dicts into one batch dict."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np

__all__ = ["Allocator", "collate"]

Allocator = Callable[[Sequence[tuple[str, tuple[int, ...], np.dtype]]], Optional[Mapping[str, np.ndarray]]]
"""``allocate([(key, shape, dtype), ...]) -> {key: empty array}`` or None (then numpy allocates)."""


def _describe(keys: Sequence[Any] | None, position: int) -> str:
    if keys is None:
        return f"the sample at batch position {position}"
    return f"sample {keys[position]!r} (batch position {position})"


def collate(
    samples: Sequence[Mapping[str, Any]],
    keys: Sequence[Any] | None = None,
    allocate: Allocator | None = None,
) -> dict[str, Any]:
    """Stack the samples of one batch.

    Args:
        samples: ``N >= 1`` sample dicts with the same keys.
        keys: the dataset keys (indices) the samples came from, used in error messages.
        allocate: where the stacked arrays go (the loader's workers pass one that hands out
            shared memory, so the batch is stacked straight into it); default: new numpy arrays.

    Returns:
        A dict with the samples' keys, in the first sample's order:

        - numpy arrays are stacked along a new first axis: ``(C, *spatial)`` -> ``(N, C, *spatial)``,
          same dtype (all samples must agree on shape and dtype);
        - numbers (``int``, ``float``, ``bool``, numpy scalars) become a ``(N,)`` array, so an ``int``
          ``"label"`` becomes ``(N,)`` int64;
        - everything else (``str`` case ids, spacing tuples, dicts, ``None``) becomes a list of ``N``.

    Raises:
        ValueError: a sample lacks a key of the first one, or an array's shape or dtype differs
            from the first sample's; the message names the sample.
    """
    if len(samples) == 0:
        raise ValueError("cannot collate an empty batch; the sampler produced no keys for it")
    first = samples[0]
    names = list(first)
    for position, sample in enumerate(samples[1:], start=1):
        if set(sample) != set(names):
            missing = sorted(set(names) - set(sample))
            extra = sorted(set(sample) - set(names))
            raise ValueError(
                f"{_describe(keys, position)} has different keys from {_describe(keys, 0)}: missing "
                f"{missing}, extra {extra}; every sample of a batch needs the same keys"
            )
    batch: dict[str, Any] = {}
    stacked: list[str] = []
    for name in names:
        values = [s[name] for s in samples]
        head = values[0]
        if isinstance(head, np.ndarray):
            for position, value in enumerate(values):
                if not isinstance(value, np.ndarray):
                    raise ValueError(
                        f"{_describe(keys, position)} has {name!r} of type {type(value).__name__} but "
                        f"{_describe(keys, 0)} has a numpy array; use arrays for {name!r} in every sample"
                    )
                if value.shape != head.shape:
                    raise ValueError(
                        f"{_describe(keys, position)} has {name!r} of shape {value.shape} but "
                        f"{_describe(keys, 0)} has shape {head.shape}; samples of a batch must have the "
                        "same shape: crop or pad them to one size (e.g. a PatchDataset) or use batch_size=1"
                    )
                if value.dtype != head.dtype:
                    raise ValueError(
                        f"{_describe(keys, position)} has {name!r} of dtype {value.dtype} but "
                        f"{_describe(keys, 0)} has dtype {head.dtype}; return one dtype from the dataset"
                    )
            batch[name] = values
            stacked.append(name)
        elif all(isinstance(v, (numbers.Number, np.bool_)) for v in values):
            batch[name] = np.asarray(values)
        else:
            batch[name] = list(values)
    specs = [(name, (len(samples), *batch[name][0].shape), batch[name][0].dtype) for name in stacked]
    out = allocate(specs) if allocate is not None and specs else None
    for name in stacked:
        batch[name] = np.stack(batch[name]) if out is None else np.stack(batch[name], out=out[name])
    return batch
