"""Local intensity operations: an operation blended into the image by a smooth Gaussian weight map.

As batchgeneratorsv2's ``transforms/local`` (``LocalTransform`` and its subclasses): a Gaussian of a
given centre and width per axis is integrated over every voxel, rescaled to [0, 1] (0 at its smallest
voxel, 1 at its largest), and the image is ``image * (1 - w) + op(image) * w``.

The weight map is separable: one 1-D profile per axis (the Gaussian's integral over each voxel, ``erfc``
differences taken on the tail side, so profiles far from the centre keep their precision). A
:class:`WeightMap` keeps only the profiles; the operations build the map a slab of rows at a time
(a few hundred kilobytes, in cache) and compute in the same slab, so a call reads and writes each voxel
about once instead of a dozen full-size passes; its sum, mean, min and max come from the profiles.

Every function here works on one channel: ``image`` is ``(*spatial)`` float32/float64 numpy, ``weights``
a :class:`WeightMap` (:func:`gaussian_weight_map`) or a dense array of the image's shape in [0, 1]
(:func:`gaussian_weights`). The transforms in :mod:`delira.augment.transforms.local` draw the
parameters and loop over samples and channels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SLAB = 1 << 16  # voxels per slab (256 KiB of float32)


def _voxel_integrals(size: int, center: float, sigma: float) -> np.ndarray:
    """``Phi((i + 0.5 - c) / s) - Phi((i - 0.5 - c) / s)`` for ``i = 0 .. size - 1``, float64."""
    out = np.empty(size, dtype=np.float64)
    for i in range(size):
        a, b = (i - 0.5 - center) / sigma, (i + 0.5 - center) / sigma
        if a >= 0:  # both edges above the centre: upper tails
            out[i] = 0.5 * (math.erfc(a * _SQRT1_2) - math.erfc(b * _SQRT1_2))
        elif b <= 0:  # both below: lower tails
            out[i] = 0.5 * (math.erfc(-b * _SQRT1_2) - math.erfc(-a * _SQRT1_2))
        else:  # the voxel holds the centre
            out[i] = 1.0 - 0.5 * (math.erfc(-a * _SQRT1_2) + math.erfc(b * _SQRT1_2))
    return out


class WeightMap:
    """A separable weight map ``w = clip(p_0[i_0] p_1[i_1] ... - offset, 0, 1)`` kept as its profiles.

    Built by :func:`gaussian_weight_map`; :meth:`dense` gives the array, :meth:`rows` a slab of it.
    """

    def __init__(self, shape: tuple[int, ...], profiles: list[np.ndarray] | None, offset: float) -> None:
        self.shape = shape
        self.profiles = profiles  # None: the map is all 0
        self.offset = offset

    @property
    def is_zero(self) -> bool:
        return self.profiles is None

    def rows(self, start: int, stop: int, dtype: Any) -> np.ndarray:
        """``w[start:stop]`` (along axis 0) as a new ``dtype`` array."""
        dtype = np.dtype(dtype)
        if self.profiles is None:
            return np.zeros((stop - start, *self.shape[1:]), dtype=dtype)
        w = self.profiles[0][start:stop].astype(dtype)
        for p in self.profiles[1:]:
            w = np.multiply.outer(w, p.astype(dtype))
        w -= dtype.type(self.offset)
        np.clip(w, 0.0, 1.0, out=w)
        return w

    def dense(self, dtype: Any = np.float64) -> np.ndarray:
        """The whole map ``(*shape)`` as a ``dtype`` array."""
        return self.rows(0, self.shape[0], dtype)

    def sum(self) -> float:
        """``sum(w)`` from the profiles (the clipping changes it by rounding only)."""
        if self.profiles is None:
            return 0.0
        return max(
            math.prod(float(p.sum()) for p in self.profiles) - math.prod(self.shape) * self.offset, 0.0
        )

    def mean(self) -> float:
        return self.sum() / math.prod(self.shape)

    def min(self) -> float:
        return 0.0  # at the voxel farthest from the centre (exactly 0 after the clipping)

    def max(self) -> float:
        return 0.0 if self.profiles is None else 1.0  # at the voxel nearest the centre


def gaussian_weight_map(shape: Any, center: Any, sigma: Any) -> WeightMap:
    """The weight map of a local operation: a Gaussian integrated per voxel, rescaled to [0, 1].

    batchgeneratorsv2's ``LocalTransform._generate_kernel`` with its random draws made explicit: there
    ``center = loc * shape`` (``loc`` a fraction of the image size) and ``sigma = scale``. The product of
    the per-axis voxel integrals ``k`` is mapped to ``(k - min k) / (max k - min k)``; a map that is
    constant (no voxel differs from another, e.g. every axis of size 1) is all 0.

    Args:
        shape: spatial shape, 1 to 3 axes.
        center: per axis ``(ndim,)`` or one number, in voxel coordinates (voxel ``i`` spans
            ``[i - 0.5, i + 0.5]``); may lie outside the image.
        sigma: per axis ``(ndim,)`` or one number, > 0, in voxels.

    Returns:
        A :class:`WeightMap`: 1 at the voxel holding the centre (at the voxel nearest to it when it lies
        outside), 0 at the voxel farthest from it.

    Note: along an axis whose centre lies more than about 37 sigma outside the image every voxel
    integral underflows; the map is then all 0 (batchgeneratorsv2 loses its precision much earlier).
    """
    shape = v.int_tuple(tuple(shape), len(tuple(shape)), "shape")
    nd = len(shape)
    if not 1 <= nd <= 3:
        raise ValueError(f"shape={shape} must have 1 to 3 axes")
    c = v.finite_array(center, "center", (nd,))
    s = v.finite_array(sigma, "sigma", (nd,))
    if np.any(s <= 0):
        raise ValueError(f"sigma={sigma!r} must be > 0 on every axis (voxels)")
    ratios, low = [], 1.0
    for d in range(nd):
        k = _voxel_integrals(shape[d], float(c[d]), float(s[d]))
        top = k.max()
        if top <= 0:  # underflow: no usable profile along this axis
            return WeightMap(shape, None, 0.0)
        r = k / top  # in [0, 1] with max 1: the product keeps its precision
        low *= float(r.min())
        ratios.append(r)
    span = 1.0 - low
    if span <= 1e-12:
        return WeightMap(shape, None, 0.0)
    ratios[0] = ratios[0] / span  # (prod r_d - low) / span: 1 / span folded into the first profile
    return WeightMap(shape, ratios, low / span)


def gaussian_weights(shape: Any, center: Any, sigma: Any, dtype: Any = np.float64) -> np.ndarray:
    """:func:`gaussian_weight_map` as a dense ``(*shape)`` array of ``dtype`` (float32 or float64)."""
    dtype = np.dtype(dtype)
    if dtype.name not in ("float32", "float64"):
        raise TypeError(f"dtype={dtype} must be float32 or float64")
    return gaussian_weight_map(shape, center, sigma).dense(dtype)


class _Dense:
    """A dense weight array with :class:`WeightMap`'s interface."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.is_zero = False

    def rows(self, start: int, stop: int, dtype: Any) -> np.ndarray:
        return self.w[start:stop].astype(dtype, copy=False)

    def sum(self) -> float:
        return float(np.sum(self.w))

    def mean(self) -> float:
        return float(np.mean(self.w))

    def min(self) -> float:
        return float(self.w.min())

    def max(self) -> float:
        return float(self.w.max())


def _check(image: Any, weights: Any, out: Any) -> tuple[np.ndarray, Any, np.ndarray]:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    v.image_dtype(image, "image")
    if image.ndim < 1 or image.size == 0:
        raise ValueError(f"image has shape {image.shape}; expected a non-empty (*spatial) array")
    if isinstance(weights, WeightMap):
        if weights.shape != image.shape:
            raise ValueError(
                f"weights has shape {weights.shape} but image has shape {image.shape}; "
                "build it with gaussian_weight_map(image.shape, ...)"
            )
        w: Any = weights
    else:
        arr = np.asarray(weights)
        if arr.shape != image.shape:
            raise ValueError(
                f"weights has shape {arr.shape} but image has shape {image.shape}; "
                "build it with gaussian_weights(image.shape, ...)"
            )
        w = _Dense(arr)
    if out is None:
        out = np.empty_like(image)
    elif not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != image.dtype:
        raise ValueError(f"out must be a numpy array of shape {image.shape} and dtype {image.dtype}")
    return image, w, out


def on_device(image: Any) -> bool:
    """Whether ``image`` is a torch CUDA tensor or a cupy array: the ops then run in its framework."""
    return _arrays.namespace(image) in ("torch", "cupy") and _arrays.is_cuda_array(image)


def _device_array(a: np.ndarray, like: Any) -> Any:
    """The host array ``a`` in ``like``'s framework, dtype and device."""
    if _arrays.namespace(like) == "torch":
        import torch

        return torch.as_tensor(a, device=like.device).to(like.dtype)
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.asarray(a.astype(like.dtype))


def clip_(x: Any, lo: float, hi: float) -> Any:
    """Clip ``x`` in place (numpy, cupy or torch) and return it."""
    if _arrays.namespace(x) == "torch":
        return x.clamp_(lo, hi)
    return x.clip(lo, hi, out=x)


def _device_run(image: Any, weights: Any, out: Any, fn) -> Any:
    """``fn(image, w)`` with the weight map on ``image``'s device, in its framework, written to ``out``."""
    name = _arrays.np_dtype(image).name
    if name not in ("float32", "float64"):
        raise TypeError(f"image has dtype {name}; images must be float32 or float64")
    shape = tuple(int(s) for s in image.shape)
    if isinstance(weights, WeightMap):
        if weights.shape != shape:
            raise ValueError(f"weights has shape {weights.shape} but image has shape {shape}")
        if weights.profiles is None:
            w = image * 0
        else:
            nd = len(shape)
            w = None
            for d, prof in enumerate(weights.profiles):  # the separable product, broadcast on the device
                axis = [1] * nd
                axis[d] = shape[d]
                p = _device_array(prof.reshape(axis), image)
                w = p if w is None else w * p
            w = clip_(w - weights.offset, 0.0, 1.0)
    else:
        w = weights if on_device(weights) else _device_array(np.asarray(weights), image)
        if tuple(int(s) for s in w.shape) != shape:
            raise ValueError(f"weights has shape {tuple(w.shape)} but image has shape {shape}")
    y = fn(image, w)
    if out is None:
        return y
    out[...] = y
    return out


def _slabs(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    rows = max(1, _SLAB // max(1, math.prod(shape[1:])))
    for start in range(0, shape[0], rows):
        yield start, min(start + rows, shape[0])


def local_gamma(
    image: np.ndarray, weights: Any, gamma: float, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gamma correction blended in by ``weights`` (batchgeneratorsv2's ``LocalGammaTransform``).

    With ``lo, hi`` the channel's min and max and ``r = max(hi - lo, 1e-8)``:
    ``n = (image - lo) / r``, ``y = (n * (1 - w) + n ** gamma * w) * r + lo``, computed as
    ``image + (n ** gamma - n) * w * r``; the value range is kept.

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: a :class:`WeightMap` or a ``(*spatial)`` array in [0, 1].
        gamma: > 0.
        out: where to write the result (default a new array).
    """
    if on_device(image):
        g = v.finite(gamma, "gamma")
        if g <= 0:
            raise ValueError(f"gamma={gamma!r} must be > 0")

        def gamma_fn(x, w):
            lo = float(x.min())
            r = max(float(x.max()) - lo, 1e-8)
            norm = (x - lo) * (1.0 / r)
            return x + (norm**g - norm) * w * r

        return _device_run(image, weights, out, gamma_fn)
    image, w, out = _check(image, weights, out)
    g = v.finite(gamma, "gamma")
    if g <= 0:
        raise ValueError(f"gamma={gamma!r} must be > 0")
    t = image.dtype.type
    lo = image.min()
    r = max(image.max() - lo, t(1e-8))
    for a, b in _slabs(image.shape):
        x = image[a:b]
        norm = x - lo
        norm *= t(1) / r
        y = np.power(norm, t(g))
        y -= norm
        y *= w.rows(a, b, image.dtype)
        y *= r
        np.add(y, x, out=out[a:b])
    return out


def local_contrast(
    image: np.ndarray, weights: Any, factor: float, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Contrast scaled about the weighted mean, blended in by ``weights`` (``LocalContrastTransform``).

    ``m = sum(image * w) / (sum(w) + 1e-8)``, ``y = image * (1 - w) + ((image - m) * factor + m) * w``,
    computed as ``image + (image - m) * (factor - 1) * w``. The value range is not kept (as in
    batchgeneratorsv2).

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: a :class:`WeightMap` or a ``(*spatial)`` array in [0, 1].
        factor: contrast factor (1 = unchanged).
        out: where to write the result (default a new array).
    """
    if on_device(image):
        f = v.finite(factor, "factor")

        def contrast_fn(x, w):
            m = float((x * w).sum()) / (float(w.sum()) + 1e-8)
            return x + (x - m) * w * (f - 1.0)

        return _device_run(image, weights, out, contrast_fn)
    image, w, out = _check(image, weights, out)
    f = v.finite(factor, "factor")
    t = image.dtype.type
    total = 0.0
    for a, b in _slabs(image.shape):
        total += float(np.sum(image[a:b] * w.rows(a, b, image.dtype)))  # pairwise per slab
    m = t(total / (w.sum() + 1e-8))
    for a, b in _slabs(image.shape):
        x = image[a:b]
        y = x - m
        y *= w.rows(a, b, image.dtype)
        y *= t(f - 1.0)
        np.add(y, x, out=out[a:b])
    return out


def local_smoothing(
    image: np.ndarray,
    weights: Any,
    sigma: float,
    strength: float,
    *,
    out: np.ndarray | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """A Gaussian blur blended in by ``strength * weights`` (``LocalSmoothingTransform``).

    ``y = image + (blur(image) - image) * strength * w``. The blur is
    :func:`delira.augment.functional.gaussian_blur` (``scipy.ndimage.gaussian_filter``'s semantics,
    mode 'reflect', truncate 4) with ``sigma`` on every axis.

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: a :class:`WeightMap` or a ``(*spatial)`` array in [0, 1].
        sigma: blur sigma in voxels, >= 0.
        strength: largest weight of the blurred image, in [0, 1].
        out: where to write the result (default a new array).
    """
    from delira.augment.functional.intensity import gaussian_blur

    if on_device(image):
        s = v.finite(sigma, "sigma")
        if s < 0:
            raise ValueError(f"sigma={sigma!r} must be >= 0 (voxels)")
        k = v.probability(strength, "strength")

        def smoothing_fn(x, w):  # the blur on the CUDA executor
            blurred = gaussian_blur(x[None, None], s, backend=backend)[0, 0]
            return x + (blurred - x) * w * k

        return _device_run(image, weights, out, smoothing_fn)
    image, w, out = _check(image, weights, out)
    s = v.finite(sigma, "sigma")
    if s < 0:
        raise ValueError(f"sigma={sigma!r} must be >= 0 (voxels)")
    k = image.dtype.type(v.probability(strength, "strength"))
    blurred = gaussian_blur(image[None, None], s, backend=backend)[0, 0]
    for a, b in _slabs(image.shape):
        x = image[a:b]
        y = blurred[a:b]
        y -= x
        y *= w.rows(a, b, image.dtype)
        y *= k
        np.add(y, x, out=out[a:b])
    return out


def brightness_gradient(
    image: np.ndarray,
    weights: Any,
    strength: float,
    mean_centered: bool = True,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``image + strength * g / max|g|`` with ``g = weights`` (minus its mean when ``mean_centered``).

    batchgeneratorsv2's ``BrightnessGradientAdditiveTransform`` for one channel, without the clipping
    (which takes the range of the whole sample; the transform does it). When ``max|g| < 1e-8`` or
    ``strength == 0`` the image is returned unchanged (copied to ``out``).

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: a :class:`WeightMap` or a ``(*spatial)`` array in [0, 1].
        strength: the largest absolute value added.
        out: where to write the result (default a new array).
    """
    if on_device(image):
        a = v.finite(strength, "strength")

        def gradient_fn(x, w):
            mean = float(w.mean()) if mean_centered else 0.0
            top = max(float(w.max()) - mean, mean - float(w.min()))
            return x + 0 if top < 1e-8 or a == 0.0 else x + (w - mean) * (a / top)

        return _device_run(image, weights, out, gradient_fn)
    image, w, out = _check(image, weights, out)
    a = v.finite(strength, "strength")
    t = image.dtype.type
    mean = w.mean() if mean_centered else 0.0
    top = max(w.max() - mean, mean - w.min())  # max |w - mean|
    if top < 1e-8 or a == 0.0:
        np.copyto(out, image)
        return out
    for lo, hi in _slabs(image.shape):
        y = np.subtract(w.rows(lo, hi, image.dtype), t(mean))
        y *= t(a / top)
        np.add(y, image[lo:hi], out=out[lo:hi])
    return out
