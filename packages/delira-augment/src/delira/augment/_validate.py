"""Argument checks shared by the functional layer and the transforms: clear errors naming the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MODES = {"constant": 0, "nearest": 1, "edge": 1, "reflect": 2, "mirror": 3}
LABEL_DTYPES = ("uint8", "int16", "int32", "int64")
IMAGE_DTYPES = ("float32", "float64")


def mode_code(mode: str, name: str = "mode") -> int:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(
            f"{name}={mode!r} is not a border mode; use one of 'constant', 'nearest', 'reflect', 'mirror'"
        )
    return MODES[mode]


def finite(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def finite_array(value: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if shape is not None:
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise ValueError(
                f"{name} has shape {np.shape(value)}; expected a scalar or shape {shape}"
            ) from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values: {value!r}")
    return arr


def value_range(
    value: Any, name: str, *, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """A (min, max) range; a single number means (v, v)."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        lo = hi = finite(value, name)
    else:
        try:
            lo_raw, hi_raw = value
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}") from None
        lo, hi = finite(lo_raw, name), finite(hi_raw, name)
    if lo > hi:
        raise ValueError(f"{name}={value!r}: min {lo} is larger than max {hi}")
    if low is not None and lo < low:
        raise ValueError(f"{name}={value!r} must be >= {low}")
    if high is not None and hi > high:
        raise ValueError(f"{name}={value!r} must be <= {high}")
    return lo, hi


def probability(p: Any, name: str = "p") -> float:
    v = finite(p, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}={p!r} must be a probability in [0, 1]")
    return v


def int_tuple(value: Any, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * n
    if not isinstance(value, (Sequence, np.ndarray)) or len(value) != n:
        raise ValueError(f"{name}={value!r} must be an int or {n} ints")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}={value!r} must contain ints")
        if int(v) < minimum:
            raise ValueError(f"{name}={value!r}: every entry must be >= {minimum}")
        out.append(int(v))
    return tuple(out)


def image_dtype(arr: np.ndarray, name: str) -> None:
    if arr.dtype.name not in IMAGE_DTYPES or not arr.dtype.isnative:
        raise TypeError(
            f"{name} has dtype {arr.dtype}; images must be float32 or float64 (convert with {name}.astype('float32'))"
        )


def label_dtype(arr: np.ndarray, name: str) -> None:
    if arr.dtype.name not in LABEL_DTYPES or not arr.dtype.isnative:
        raise TypeError(
            f"{name} has dtype {arr.dtype}; segmentations must be uint8, int16, int32 or int64 "
            f"(convert with {name}.astype('int16'))"
        )


def batch_array(arr: np.ndarray, name: str, spatial_ndim: int | None = None) -> None:
    """Checks an (N, C, *spatial) array with 2 or 3 spatial axes."""
    sd = arr.ndim - 2
    if spatial_ndim is None and sd not in (2, 3):
        raise ValueError(
            f"{name} has shape {arr.shape}; expected (N, C, H, W) or (N, C, D, H, W) "
            f"(add batch and channel axes with {name}[None, None])"
        )
    if spatial_ndim is not None and sd != spatial_ndim:
        raise ValueError(f"{name} has shape {arr.shape}; expected {spatial_ndim} spatial axes after (N, C)")
    if arr.size == 0:
        raise ValueError(
            f"{name} has shape {arr.shape}, which is empty; every axis needs at least one element"
        )


def transform_inputs(
    batch: dict[str, Any], data_key: str, seg_key: str | None, owner: str
) -> tuple[dict, bool]:
    """Check the arrays a transform is called with and convert the two lossless cases.

    ``batch[data_key]`` must be ``(N, C, H, W)`` or ``(N, C, D, H, W)`` and ``batch[seg_key]`` (when present)
    ``(N, Cs, *spatial)`` with data's ``N`` and spatial shape; no axis may be empty. float16 data becomes
    float32 and bool seg becomes uint8 (both exact); everything else is passed on unchanged for the
    operations' own dtype checks.

    Returns:
        ``(batch, seg_was_bool)``: a new dict (the caller's is not modified) and whether the
        segmentation must be turned back into bool afterwards.

    Raises:
        TypeError: an entry is not an array.
        ValueError: wrong rank, an empty axis, or seg not matching data; the message names the key.
    """
    from delira.augment import _arrays

    out = dict(batch)
    shapes: dict[str, tuple[int, ...]] = {}
    for key in (data_key, seg_key):
        if key is None or out.get(key) is None:
            continue
        x = out[key]
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(
                f"{owner}: {key} must be an array (numpy, torch, tensorflow, cupy or jax), got "
                f"{type(x).__name__}; wrap it with numpy.asarray(...)"
            )
        shape = tuple(int(s) for s in x.shape)
        if len(shape) not in (4, 5):
            raise ValueError(
                f"{owner}: {key} has shape {shape} ({len(shape)} axes); expected (N, C, H, W) or "
                f"(N, C, D, H, W). Add the batch and channel axes of a single volume with {key}[None, None], "
                "or fold extra leading axes into N with reshape"
            )
        if 0 in shape:
            raise ValueError(
                f"{owner}: {key} has shape {shape}, which is empty; every axis needs at least one element "
                "(skip empty batches before augmenting)"
            )
        shapes[key] = shape
    if data_key in shapes and seg_key in shapes:
        d, s = shapes[data_key], shapes[seg_key]
        if d[0] != s[0] or d[2:] != s[2:]:
            raise ValueError(
                f"{owner}: {seg_key} has shape {s} but {data_key} has shape {d}; pass {seg_key} with the same "
                "batch size and spatial shape, or leave it out"
            )
    if data_key in shapes and _arrays.np_dtype(out[data_key]) == np.float16:
        out[data_key] = _arrays.cast(out[data_key], "float32")  # exact; the kernels compute in float32
    seg_was_bool = seg_key in shapes and _arrays.np_dtype(out[seg_key]) == np.bool_
    if seg_was_bool:
        out[seg_key] = _arrays.cast(out[seg_key], "uint8")
    return out, seg_was_bool
