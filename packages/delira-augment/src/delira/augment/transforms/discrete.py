"""Discrete spatial transforms: 90-degree rotations, axis transposes and blank rectangles.

Nothing is resampled: voxels are copied, permuted or overwritten, so the results are exact for every
dtype. Data and segmentation get the same rotation or permutation per sample; blank rectangles touch
the data only.

Where the arrays are computed: host inputs (numpy arrays, torch/tensorflow CPU tensors) with numpy on
a view, returned in their type; CUDA inputs stay on their device, in their own framework: torch CUDA
tensors through ``torch.rot90`` / ``permute`` / slice assignment, cupy arrays through ``cupy.rot90`` /
``cupy.transpose`` / slice assignment, jax GPU arrays through ``jax.numpy``, tensorflow GPU tensors
through ``tf.reverse`` / ``tf.transpose`` (blank rectangles on tensorflow GPU tensors: one host round
trip per batch, as tensorflow tensors cannot be assigned to).

The functions :func:`rot90`, :func:`permute_axes` and :func:`blank_rectangles` apply explicit
parameters to a whole batch ``(N, C, *spatial)``; the transform classes draw the parameters per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment.transforms.base import Transform, to_numpy


# --- functional: explicit parameters, any array framework -------------------------------------------
def rot90(x: Any, k: int, axes: tuple[int, int]) -> Any:
    """Rotate ``x`` ``(N, C, *spatial)`` by ``k`` quarter turns in the plane of spatial ``axes``.

    The same rotation as ``numpy.rot90(x, k, axes=(2 + axes[0], 2 + axes[1]))`` (from the first axis
    towards the second), in ``x``'s framework and on its device (numpy, torch, cupy, jax, tensorflow).
    Returns a new array or view; its spatial shape swaps the two axes' sizes when ``k`` is odd.
    """
    a, b = 2 + int(axes[0]), 2 + int(axes[1])
    k = int(k) % 4
    ns = _arrays.namespace(x)
    if ns == "torch":
        import torch

        return torch.rot90(x, k, dims=(a, b))
    if ns == "cupy":
        import cupy

        return cupy.rot90(x, k, axes=(a, b))
    if ns == "jax":
        import jax.numpy as jnp

        return jnp.rot90(x, k, axes=(a, b))
    if ns == "tensorflow":
        import tensorflow as tf

        if k == 0:
            return x
        if k == 2:
            return tf.reverse(x, [a, b])
        perm = list(range(len(x.shape)))
        perm[a], perm[b] = perm[b], perm[a]
        if k == 1:
            return tf.transpose(tf.reverse(x, [b]), perm)
        return tf.reverse(tf.transpose(x, perm), [b])
    return np.rot90(x, k, axes=(a, b))


def permute_axes(x: Any, order: Sequence[int]) -> Any:
    """Permute the spatial axes of ``x`` ``(N, C, *spatial)``: output spatial axis ``d`` is input axis ``order[d]``.

    ``order`` is a permutation of ``range(ndim)`` (spatial axes from 0); the same as
    ``numpy.transpose(x, (0, 1, *(2 + o for o in order)))`` in ``x``'s framework and on its device.
    """
    perm = [0, 1, *(2 + int(o) for o in order)]
    ns = _arrays.namespace(x)
    if ns == "torch":
        return x.permute(perm)
    if ns == "cupy":
        import cupy

        return cupy.transpose(x, perm)
    if ns == "jax":
        import jax.numpy as jnp

        return jnp.transpose(x, perm)
    if ns == "tensorflow":
        import tensorflow as tf

        return tf.transpose(x, perm)
    return np.transpose(x, perm)


def blank_rectangles(x: Any, rectangles: Sequence[tuple[int, int, Sequence[int], Sequence[int], Any]]) -> Any:
    """Overwrite boxes of ``x`` ``(N, C, *spatial)`` float32/float64, in order; returns a new array.

    Args:
        x: the image batch (numpy, torch, cupy, jax; tensorflow through a host copy).
        rectangles: ``(sample, channel, lower, upper, fill)`` each: the box ``lower <= index < upper``
            per spatial axis of channel ``channel`` of sample ``sample`` is set to ``fill``, a number or
            ``"mean"`` (the mean of the box's current values, after the boxes before it, as
            batchgeneratorsv2's ``rectangle_value=np.mean``).
    """
    ns = _arrays.namespace(x)
    if ns == "tensorflow" and _arrays.is_cuda_array(x):
        import tensorflow as tf

        out = blank_rectangles(_arrays.cuda_to_host(x), rectangles)  # host round trip: no item assignment
        with tf.device(x.device):
            return tf.identity(tf.convert_to_tensor(out))
    if ns == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(blank_rectangles(x.numpy(), rectangles))
    if ns == "torch":
        y = x.detach().clone()
    elif ns in ("numpy", "cupy", "jax"):
        y = x.copy()
    else:
        y = np.array(x)
    for i, c, lower, upper, fill in rectangles:
        box = (int(i), int(c), *(slice(int(lo), int(hi)) for lo, hi in zip(lower, upper)))
        value = y[box].mean() if isinstance(fill, str) else fill
        if ns == "jax":
            y = y.at[box].set(value)
        else:
            y[box] = value
    return y


# --- helpers of the transform classes ----------------------------------------------------------------
def _axes(axes: Any, name: str, minimum: int, what: str = "spatial axis") -> tuple[int, ...]:
    """Distinct indices >= 0 (spatial axes from 0, or channels), at least ``minimum`` of them."""
    example = "(0, 1, 2)" if what == "spatial axis" else "(0,)"
    if isinstance(axes, (int, np.integer)) or not isinstance(axes, (Sequence, np.ndarray)):
        raise TypeError(f"{name}={axes!r} must be a sequence of {what} indices such as {example}")
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 0:
            where = " (0 is the first after N, C)" if what == "spatial axis" else ""
            raise ValueError(f"{name}={axes!r} must contain {what} indices >= 0{where}")
        out.append(int(a))
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axes!r} repeats an index; give each {what} once")
    if len(out) < minimum:
        raise ValueError(f"{name}={axes!r} needs at least {minimum} distinct {what} indices")
    return tuple(out)


def _check_axes_fit(owner: str, axes: tuple[int, ...], shape: tuple[int, ...]) -> None:
    if max(axes) >= len(shape):
        fit = tuple(range(len(shape)))
        raise ValueError(
            f"{owner}: axes={axes} do not fit data with {len(shape)} spatial axes {shape}; "
            f"pass spatial axes below {len(shape)}, e.g. axes={fit}"
        )


def _check_equal_sizes(owner: str, axes: tuple[int, ...], shape: tuple[int, ...], why: str, fix: str) -> None:
    sizes = tuple(shape[a] for a in axes)
    if len(set(sizes)) > 1:
        raise ValueError(
            f"{owner}: axes={axes} have sizes {sizes} in the spatial shape {shape}; {why}. {fix}, or crop to "
            "a patch with equal sizes along those axes first"
        )


def _int_range(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An int ``n`` (always n) or a pair ``(lo, hi)`` drawn as ``rng.integers(lo, hi)`` (hi excluded)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < minimum:
            raise ValueError(f"{name}={value!r} must be >= {minimum}")
        return int(value), int(value) + 1
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a (low, high) pair of ints, got {value!r}") from None
    if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) for t in (lo, hi)):
        raise TypeError(f"{name}={value!r} must contain ints")
    if lo < minimum or hi <= lo:
        raise ValueError(
            f"{name}={value!r}: need {minimum} <= low < high (high is excluded, as numpy's integers(low, high) "
            f"and batchgeneratorsv2); for exactly n pass the int n"
        )
    return int(lo), int(hi)


def _check_same_place(owner: str, batch: dict[str, Any], keys: list[str]) -> bool:
    """True when the arrays under ``keys`` are CUDA arrays; a mix of host and CUDA arrays raises."""
    on_gpu = {key: _arrays.is_cuda_array(batch[key]) for key in keys}
    if len(set(on_gpu.values())) > 1:
        gpu = next(k for k, g in on_gpu.items() if g)
        cpu = next(k for k, g in on_gpu.items() if not g)
        raise ValueError(
            f"{owner}: {gpu} is a CUDA array but {cpu} is a host array; pass both on the GPU "
            f"({cpu}.cuda() / cupy.asarray({cpu})) or both on the CPU"
        )
    return bool(on_gpu) and all(on_gpu.values())


def _map_samples(transform: Transform, batch: dict[str, Any], fn: Any, params: list[Any]) -> dict[str, Any]:
    """``batch[key][i] = fn(batch[key][i:i+1], params[i])`` for data and seg (``params[i]`` None: unchanged)."""
    keys = [k for k in (transform.data_key, transform.seg_key) if k is not None and batch.get(k) is not None]
    _check_same_place(type(transform).__name__, batch, keys)
    for key in keys:
        x = batch[key]
        if _arrays.is_cuda_array(x):
            x, wrap = _arrays.detach(x), None  # stays on the GPU, in its own framework
        else:
            x, wrap = to_numpy(x, key)
        parts = [x[i : i + 1] if p is None else fn(x[i : i + 1], p) for i, p in enumerate(params)]
        out = _arrays.concat(parts, x)  # a new array: never a view of the input
        batch[key] = out if wrap is None else wrap(out)
    return batch


# --- transforms ---------------------------------------------------------------------------------------
class Rot90(Transform):
    """Random 90-degree rotations of data and seg in random planes of ``axes`` (batchgeneratorsv2's Rot90Transform).

    For each transformed sample, ``num_combinations`` times: a plane (two distinct axes of ``axes``,
    drawn uniformly) and a number of quarter turns from ``num_rot`` (uniformly) are drawn, and the
    sample is rotated by ``numpy.rot90`` in that plane (from the lower axis towards the higher one, as
    bgv2's sorted axis pair). Data and seg get the same rotations.

    Odd rotations swap the sizes of the plane's axes, so the samples of a batch would differ in shape:
    when ``num_rot`` has an odd entry, every axis of ``axes`` must have the same size (isotropic patches),
    else a ValueError names the shape. (bgv2 does not check: its samples then come out with different
    shapes.) With only even entries (``num_rot=(2,)``) any shape works.

    Args:
        num_rot: quarter turns to choose from, e.g. ``(1, 2, 3)``.
        axes: spatial axes (from 0) whose planes may be rotated; at least 2. Default ``(0, 1, 2)``
            (3D); pass ``(0, 1)`` for 2D data.
        num_combinations: how many successive rotations per sample: an int, or ``(low, high)`` drawn as
            bgv2's ``num_axis_combinations``: ``round(uniform(low, high))``.
        p: per-sample probability; other kwargs as :class:`Transform`.

    Input ``(N, C, *spatial)`` data float32/float64 and/or seg, any of the frameworks in the module
    docstring; outputs keep the type, dtype and device.
    """

    def __init__(
        self,
        num_rot: Any = (1, 2, 3),
        axes: Any = (0, 1, 2),
        p: float = 1.0,
        *,
        num_combinations: Any = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        rots = np.atleast_1d(np.asarray(num_rot))
        if rots.ndim != 1 or rots.size == 0 or rots.dtype.kind not in "iu":
            raise ValueError(
                f"num_rot={num_rot!r} must be a non-empty sequence of ints (quarter turns), e.g. (1, 2, 3)"
            )
        self.num_rot = tuple(int(r) for r in rots)
        self.axes = _axes(axes, "axes", 2)
        if isinstance(num_combinations, (int, np.integer)) and not isinstance(num_combinations, bool):
            if num_combinations < 0:
                raise ValueError(f"num_combinations={num_combinations!r} must be >= 0")
            self.num_combinations: Any = int(num_combinations)
        else:
            self.num_combinations = v.value_range(num_combinations, "num_combinations", low=0.0)

    def _count(self, rng: np.random.Generator) -> int:
        if isinstance(self.num_combinations, int):
            return self.num_combinations
        lo, hi = self.num_combinations
        return round(float(rng.uniform(lo, hi))) if hi > lo else round(lo)

    def draw(self, rng: np.random.Generator, n: int) -> list[list[tuple[int, tuple[int, int]]] | None]:
        """Per sample: None (unchanged) or the list of ``(k, (axis_a, axis_b))`` rotations, in order."""
        active = self.draw_active(rng, n)
        params: list[list[tuple[int, tuple[int, int]]] | None] = []
        for i in range(n):
            if not active[i]:
                params.append(None)
                continue
            rots = []
            for _ in range(self._count(rng)):
                k = self.num_rot[int(rng.integers(len(self.num_rot)))]
                a, b = sorted(int(self.axes[j]) for j in rng.choice(len(self.axes), 2, replace=False))
                rots.append((k, (a, b)))
            params.append(rots)
        return params

    def apply(self, batch, rng):
        shape = self.spatial_shape(batch)
        _check_axes_fit("Rot90", self.axes, shape)
        if any(k % 2 for k in self.num_rot):
            _check_equal_sizes(
                "Rot90",
                self.axes,
                shape,
                "90-degree rotations of a non-square plane change the sample's shape",
                "Pass only axes of equal size, or num_rot=(2,) (180 degrees keeps the shape)",
            )
        params = self.draw(rng, self.batch_size(batch))

        def rotate(x, rots):
            for k, axes in rots:
                x = rot90(x, k, axes)
            return x

        return _map_samples(self, batch, rotate, params)


class TransposeAxes(Transform):
    """A random permutation of the spatial ``axes`` of data and seg per sample (bgv2's TransposeAxesTransform).

    Each transformed sample draws a permutation of ``axes`` uniformly (the identity included, as bgv2);
    the other spatial axes stay. Every axis of ``axes`` must have the same size, else a ValueError names
    the shape (as bgv2, which raises too).

    Args:
        axes: spatial axes (from 0) to permute; at least 2. Default ``(0, 1, 2)`` (3D); ``(0, 1)`` for 2D.
        p: per-sample probability; other kwargs as :class:`Transform`.

    Input ``(N, C, *spatial)`` data float32/float64 and/or seg, any of the frameworks in the module
    docstring; outputs keep the type, dtype and device.
    """

    def __init__(self, axes: Any = (0, 1, 2), p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.axes = _axes(axes, "axes", 2)

    def draw(self, rng: np.random.Generator, n: int, nd: int) -> list[tuple[int, ...] | None]:
        """Per sample: None (unchanged) or the order of the spatial axes (see :func:`permute_axes`)."""
        active = self.draw_active(rng, n)
        params: list[tuple[int, ...] | None] = []
        for i in range(n):
            perm = rng.permutation(len(self.axes))
            if not active[i]:
                params.append(None)
                continue
            order = list(range(nd))
            for slot, j in zip(self.axes, perm):
                order[slot] = self.axes[int(j)]
            params.append(tuple(order))
        return params

    def apply(self, batch, rng):
        shape = self.spatial_shape(batch)
        _check_axes_fit("TransposeAxes", self.axes, shape)
        _check_equal_sizes(
            "TransposeAxes",
            self.axes,
            shape,
            "permuting axes of different sizes changes the sample's shape",
            "Pass only axes of equal size",
        )
        params = self.draw(rng, self.batch_size(batch), len(shape))
        return _map_samples(self, batch, permute_axes, params)


class BlankRectangles(Transform):
    """Overwrite random boxes of the data with a fill value (bgv2's BlankRectangleTransform); seg untouched.

    Per transformed sample and per channel (with probability ``p_per_channel``, among
    ``apply_to_channels``): a number of boxes is drawn from ``num_rectangles``; each box gets a size per
    axis from ``size`` (clipped to the axis' length), a uniformly random position that keeps it inside,
    and is filled, in order, with ``fill``.

    Args:
        num_rectangles: an int, or ``(low, high)``: ``rng.integers(low, high)``, high excluded (as bgv2).
        size: box edge per spatial axis: an int (a cube), a tuple of ints per axis, or per-axis
            ``(low, high)`` ranges drawn with high excluded (as bgv2). None (default): nnU-Net's choice
            for its DA5 trainer, ``(max(1, s // 10), max(2, s // 3))`` for an axis of length ``s``.
        force_square: one edge drawn from the first range for every axis (bgv2's force_square).
        fill: ``"mean"`` (the mean of the box's current values, bgv2 with ``rectangle_value=np.mean``),
            a number, or a ``(low, high)`` range drawn uniformly per box.
        p_per_channel: probability that a channel of a transformed sample gets boxes.
        apply_to_channels: channel indices that may get boxes; None: all.
        p: per-sample probability; other kwargs as :class:`Transform`.

    Input ``(N, C, *spatial)`` float32/float64 data in any of the frameworks in the module docstring;
    output of the same type, dtype and device (a new array).
    """

    def __init__(
        self,
        num_rectangles: Any = (1, 5),
        size: Any = None,
        fill: Any = "mean",
        p: float = 1.0,
        *,
        force_square: bool = False,
        p_per_channel: float = 1.0,
        apply_to_channels: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.num_rectangles = _int_range(num_rectangles, "num_rectangles", 0)
        self.size = self._check_size(size)
        self.force_square = bool(force_square)
        if isinstance(fill, str):
            if fill != "mean":
                raise ValueError(f"fill={fill!r} is unknown; use 'mean', a number or a (low, high) range")
            self.fill: Any = fill
        else:
            if callable(fill):
                raise TypeError(
                    "fill must be 'mean', a number or a (low, high) range; for np.mean pass fill='mean'"
                )
            self.fill = v.value_range(fill, "fill")
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")
        self.apply_to_channels = (
            None if apply_to_channels is None else _axes(apply_to_channels, "apply_to_channels", 1, "channel")
        )

    @staticmethod
    def _check_size(size: Any) -> Any:
        if size is None:
            return None
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"size={size!r} must be >= 1")
            return int(size)
        if not isinstance(size, Sequence) or len(size) not in (2, 3):
            raise TypeError(
                f"size={size!r} must be an int, one int per spatial axis, or one (low, high) per axis"
            )
        if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
            if min(size) < 1:
                raise ValueError(f"size={size!r}: every edge must be >= 1")
            return tuple(int(s) for s in size)
        return tuple(_int_range(tuple(s) if isinstance(s, Sequence) else s, "size", 1) for s in size)

    def _sizes(self, rng: np.random.Generator, shape: tuple[int, ...]) -> list[int]:
        nd = len(shape)
        size = self.size
        if size is None:
            size = tuple((max(1, s // 10), max(2, s // 3)) for s in shape)
        if isinstance(size, int):
            edges = [size] * nd
        elif isinstance(size[0], int):
            edges = list(size)
        elif self.force_square:
            edges = [int(rng.integers(*size[0]))] * nd
        else:
            edges = [int(rng.integers(*size[d])) for d in range(nd)]
        return [min(e, s) for e, s in zip(edges, shape)]

    def draw(self, rng: np.random.Generator, n: int, c: int, shape: tuple[int, ...]) -> list[tuple]:
        """The boxes ``(sample, channel, lower, upper, fill)`` for :func:`blank_rectangles`."""
        if self.size is not None and not isinstance(self.size, int) and len(self.size) != len(shape):
            raise ValueError(
                f"BlankRectangles: size={self.size!r} has {len(self.size)} entries but the data has "
                f"{len(shape)} spatial axes {shape}; give one entry per axis or an int"
            )
        allowed = np.ones(c, dtype=bool)
        if self.apply_to_channels is not None:
            if max(self.apply_to_channels) >= c:
                raise ValueError(
                    f"BlankRectangles: apply_to_channels={self.apply_to_channels} but the data has {c} channels; "
                    f"pass channel indices below {c}"
                )
            allowed[:] = False
            allowed[list(self.apply_to_channels)] = True
        active = self.draw_active(rng, n)
        boxes = []
        for i in np.flatnonzero(active):
            chosen = (rng.random(c) < self.p_per_channel) & allowed
            for ch in np.flatnonzero(chosen):
                for _ in range(int(rng.integers(*self.num_rectangles))):
                    edges = self._sizes(rng, shape)
                    lower = [int(rng.integers(0, s - e + 1)) for s, e in zip(shape, edges)]
                    upper = [lo + e for lo, e in zip(lower, edges)]
                    fill = self.fill
                    if not isinstance(fill, str):
                        fill = float(rng.uniform(*fill)) if fill[1] > fill[0] else fill[0]
                    boxes.append((int(i), int(ch), lower, upper, fill))
        return boxes

    def apply(self, batch, rng):
        x = batch.get(self.data_key)
        if x is None:
            return batch
        shape = tuple(int(s) for s in x.shape[2:])
        boxes = self.draw(rng, int(x.shape[0]), int(x.shape[1]), shape)
        if _arrays.is_cuda_array(x):
            v.image_dtype(np.empty(0, _arrays.np_dtype(x)), self.data_key)
            batch[self.data_key] = blank_rectangles(_arrays.detach(x), boxes)
            return batch
        host, wrap = to_numpy(x, self.data_key)
        v.image_dtype(host, self.data_key)
        batch[self.data_key] = wrap(blank_rectangles(host, boxes))
        return batch


__all__ = ["BlankRectangles", "Rot90", "TransposeAxes", "blank_rectangles", "permute_axes", "rot90"]
