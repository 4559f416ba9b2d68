"""Local intensity operations: an operation blended into the image by a smooth Gaussian weight map.

As batchgeneratorsv2's ``transforms/local`` (``LocalTransform`` and its subclasses): a Gaussian of a
given centre and width per axis is integrated over every voxel, rescaled to [0, 1] (0 at its smallest
voxel, 1 at its largest), and the image is ``image * (1 - w) + op(image) * w``. The weight map is
separable: it is built from one 1-D profile per axis (the Gaussian's integral over each voxel, ``erfc``
differences taken on the tail side, so profiles far from the centre keep their precision), multiplied
out once, O(voxels).

Every function here works on one channel: ``image`` is ``(*spatial)`` float32/float64 numpy, ``weights``
the same shape (from :func:`gaussian_weights`). The transforms in :mod:`delira.augment.transforms.local`
draw the parameters and loop over samples and channels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from delira.augment import _validate as v

_SQRT1_2 = 1.0 / math.sqrt(2.0)


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


def gaussian_weights(shape: Any, center: Any, sigma: Any, dtype: Any = np.float64) -> np.ndarray:
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
        dtype: float32 or float64 of the result.

    Returns:
        ``(*shape)`` array of ``dtype`` in [0, 1]: 1 at the voxel holding the centre (at the voxel
        nearest to it when it lies outside), 0 at the voxel farthest from it.

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
    dtype = np.dtype(dtype)
    if dtype.name not in ("float32", "float64"):
        raise TypeError(f"dtype={dtype} must be float32 or float64")
    ratios, low = [], 1.0
    for d in range(nd):
        k = _voxel_integrals(shape[d], float(c[d]), float(s[d]))
        top = k.max()
        if top <= 0:  # underflow: no usable profile along this axis
            return np.zeros(shape, dtype=dtype)
        r = k / top  # in [0, 1] with max 1: the product keeps its precision
        low *= float(r.min())
        ratios.append(r)
    span = 1.0 - low
    if span <= 1e-12:
        return np.zeros(shape, dtype=dtype)
    w = ratios[0].astype(dtype)
    for d in range(1, nd):
        w = np.multiply.outer(w, ratios[d].astype(dtype))
    w -= dtype.type(low)
    w *= dtype.type(1.0 / span)
    np.clip(w, 0.0, 1.0, out=w)
    return w


def _check(image: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    v.image_dtype(image, "image")
    w = np.asarray(weights)
    if w.shape != image.shape:
        raise ValueError(
            f"weights has shape {w.shape} but image has shape {image.shape}; "
            "build it with gaussian_weights(image.shape, ...)"
        )
    return image, w.astype(image.dtype, copy=False)


def blend(image: np.ndarray, modified: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``image * (1 - weights) + modified * weights`` (a new array of ``image``'s dtype)."""
    out = np.subtract(1.0, weights, dtype=image.dtype)
    out *= image
    out += modified * weights
    return out


def local_gamma(image: np.ndarray, weights: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma correction blended in by ``weights`` (batchgeneratorsv2's ``LocalGammaTransform``).

    With ``lo, hi`` the channel's min and max and ``r = max(hi - lo, 1e-8)``:
    ``n = (image - lo) / r``, ``y = (n * (1 - w) + n ** gamma * w) * r + lo``; the value range is kept.

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: ``(*spatial)`` in [0, 1] (:func:`gaussian_weights`).
        gamma: > 0.
    """
    image, w = _check(image, weights)
    g = v.finite(gamma, "gamma")
    if g <= 0:
        raise ValueError(f"gamma={gamma!r} must be > 0")
    lo = image.min()
    r = max(image.max() - lo, image.dtype.type(1e-8))
    norm = (image - lo) / r
    out = blend(norm, np.power(norm, image.dtype.type(g)), w)
    out *= r
    out += lo
    return out


def local_contrast(image: np.ndarray, weights: np.ndarray, factor: float) -> np.ndarray:
    """Contrast scaled about the weighted mean, blended in by ``weights`` (``LocalContrastTransform``).

    ``m = sum(image * w) / (sum(w) + 1e-8)``, ``y = image * (1 - w) + ((image - m) * factor + m) * w``.
    The value range is not kept (as in batchgeneratorsv2).

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: ``(*spatial)`` in [0, 1] (:func:`gaussian_weights`).
        factor: contrast factor (1 = unchanged).
    """
    image, w = _check(image, weights)
    f = v.finite(factor, "factor")
    m = float(np.sum(image * w, dtype=np.float64) / (np.sum(w, dtype=np.float64) + 1e-8))
    m = image.dtype.type(m)
    modified = image - m
    modified *= image.dtype.type(f)
    modified += m
    return blend(image, modified, w)


def local_smoothing(
    image: np.ndarray, weights: np.ndarray, sigma: float, strength: float, *, backend: str = "auto"
) -> np.ndarray:
    """A Gaussian blur blended in by ``strength * weights`` (``LocalSmoothingTransform``).

    The blur is :func:`delira.augment.functional.gaussian_blur` (``scipy.ndimage.gaussian_filter``'s
    semantics, mode 'reflect', truncate 4) with ``sigma`` on every axis.

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: ``(*spatial)`` in [0, 1] (:func:`gaussian_weights`).
        sigma: blur sigma in voxels, >= 0.
        strength: largest weight of the blurred image, in [0, 1].
    """
    from delira.augment.functional.intensity import gaussian_blur

    image, w = _check(image, weights)
    s = v.finite(sigma, "sigma")
    if s < 0:
        raise ValueError(f"sigma={sigma!r} must be >= 0 (voxels)")
    a = v.probability(strength, "strength")
    blurred = gaussian_blur(image[None, None], s, backend=backend)[0, 0]
    return blend(image, blurred, w * image.dtype.type(a))


def brightness_gradient(
    image: np.ndarray, weights: np.ndarray, strength: float, mean_centered: bool = True
) -> np.ndarray:
    """``image + strength * g / max|g|`` with ``g = weights`` (minus its mean when ``mean_centered``).

    batchgeneratorsv2's ``BrightnessGradientAdditiveTransform`` for one channel, without the clipping
    (which takes the range of the whole sample; the transform does it). When ``max|g| < 1e-8`` or
    ``strength == 0`` the image is returned unchanged (a copy).

    Args:
        image: ``(*spatial)`` float32/float64, one channel.
        weights: ``(*spatial)`` in [0, 1] (:func:`gaussian_weights`).
        strength: the largest absolute value added.
    """
    image, w = _check(image, weights)
    a = v.finite(strength, "strength")
    g = np.array(w, dtype=image.dtype, copy=True)
    if mean_centered:
        g -= image.dtype.type(np.mean(g, dtype=np.float64))
    top = float(np.abs(g).max())
    if top < 1e-8 or a == 0.0:
        return image.copy()
    g *= image.dtype.type(a / top)
    g += image
    return g
