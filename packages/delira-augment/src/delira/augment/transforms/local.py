"""Local intensity transforms: gamma, contrast, smoothing or a brightness gradient under a Gaussian.

batchgeneratorsv2's ``transforms/local`` with delira's conventions (per-sample ``p``, a seeded
``numpy.random.Generator``). Per transformed sample and channel a Gaussian weight map is drawn
(:func:`delira.augment.functional.local.gaussian_weights`: centre ``loc * shape`` and width
``scale`` voxels, drawn per axis) and the operation is blended in by it.

Host inputs: numpy, a slab of the weight map at a time (the blur of :class:`LocalSmoothing` on the
compiled engine). torch CUDA tensors and cupy arrays: the same formulas in their own framework on
their device (the weight map's 1-D profiles copied there and multiplied out; the blur on the CUDA
executor). tensorflow GPU tensors and jax GPU arrays are copied to the host, transformed there and
copied back to their device, in their framework (a host round trip per call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment.functional import local as L
from delira.augment.transforms.base import Transform, to_numpy


def _to_device_like(out: np.ndarray, like: Any) -> Any:
    """The host result ``out`` as an array of ``like``'s framework on ``like``'s CUDA device."""
    ns = _arrays.namespace(like)
    if ns == "torch":
        import torch

        return torch.from_numpy(out).to(like.device)
    if ns == "cupy":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.asarray(out)
    if ns == "tensorflow":
        import tensorflow as tf

        with tf.device(like.device):
            return tf.identity(tf.convert_to_tensor(out))
    if ns == "jax":
        import jax

        return jax.device_put(out, next(iter(like.devices())))
    raise TypeError(f"cannot return a result to a {type(like).__name__} on the GPU")


class LocalTransform(Transform):
    """Base of the local transforms: draws the weight maps; subclasses implement :meth:`channel`.

    Args:
        scale: (min, max) width (sigma) of the Gaussian in voxels, drawn per axis; a number is fixed.
        loc: (min, max) centre as a fraction of the image size, drawn per axis (batchgeneratorsv2's
            default (-1, 2) lets the centre lie outside, so often only a tail reaches the image).
        same_for_all_channels: one weight map and one operation parameter for every channel of a
            sample; else one per channel.
        p_per_channel: probability that a channel of a transformed sample is changed.
        p: probability that a sample is transformed.
    """

    def __init__(
        self,
        scale: Any = (10.0, 30.0),
        loc: Any = (-1.0, 2.0),
        same_for_all_channels: bool = True,
        p_per_channel: float = 1.0,
        p: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.scale = v.value_range(scale, "scale", low=1e-6)
        self.loc = v.value_range(loc, "loc")
        self.same_for_all_channels = bool(same_for_all_channels)
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")

    def draw_map(self, rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Centre (``loc * shape``, voxels) and sigma of one weight map, each drawn per axis."""
        nd = len(shape)
        loc = rng.uniform(*self.loc, nd) if self.loc[1] > self.loc[0] else np.full(nd, self.loc[0])
        sigma = rng.uniform(*self.scale, nd) if self.scale[1] > self.scale[0] else np.full(nd, self.scale[0])
        return loc * np.asarray(shape, dtype=np.float64), sigma

    def draw_params(self, rng: np.random.Generator) -> dict[str, float]:
        """The operation's parameters for one weight map (subclasses)."""
        return {}

    def draw_sample(self, rng: np.random.Generator) -> dict[str, float]:
        """Parameters shared by every channel of one sample (subclasses)."""
        return {}

    def channel(self, image: np.ndarray, weights: L.WeightMap, out: np.ndarray, **params: Any) -> np.ndarray:
        """The operation on one channel ``(*spatial)``, written to ``out`` (subclasses)."""
        raise NotImplementedError

    def finish(self, sample: Any, original: Any) -> Any:
        """Post-processing of one whole sample ``(C, *spatial)`` in place (subclasses)."""
        return sample

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        if L.on_device(x):  # torch CUDA tensors, cupy arrays: computed there, in their framework
            host = _arrays.detach(x)
            out = host.clone() if _arrays.namespace(host) == "torch" else host.copy()
            wrap = lambda result: result  # noqa: E731
        elif _arrays.is_cuda_array(x):  # tensorflow / jax on the GPU: a host round trip
            host, wrap = _arrays.cuda_to_host(_arrays.detach(x)), (lambda result: _to_device_like(result, x))
            out = np.empty_like(host)
        else:
            host, wrap = to_numpy(x, self.data_key)
            out = np.empty_like(host)
        n, c, spatial = int(host.shape[0]), int(host.shape[1]), tuple(int(s) for s in host.shape[2:])
        active = self.draw_active(rng, n)
        for i in range(n):  # every sample draws its parameters, so p does not change the others'
            channels = rng.random(c) < self.p_per_channel
            shared = self.draw_sample(rng)
            if self.same_for_all_channels:
                draws = [(self.draw_map(rng, spatial), self.draw_params(rng))] * c
            else:
                draws = [(self.draw_map(rng, spatial), self.draw_params(rng)) for _ in range(c)]
            maps: dict[int, L.WeightMap] = {}  # the weight maps built, only where used
            for k in range(c):
                if not (active[i] and channels[k]):
                    out[i, k] = host[i, k]
                    continue
                (center, sigma), params = draws[k]
                j = 0 if self.same_for_all_channels else k
                if j not in maps:
                    maps[j] = L.gaussian_weight_map(spatial, center, sigma)
                self.channel(host[i, k], maps[j], out=out[i, k], **shared, **params)
            if active[i] and channels.any():
                self.finish(out[i], host[i])
        batch[self.data_key] = wrap(out)
        return batch


class LocalGamma(LocalTransform):
    """Gamma correction under a Gaussian weight map (batchgeneratorsv2's ``LocalGammaTransform``).

    Per channel ``n = (x - min) / range``, ``y = (n (1 - w) + n ** gamma w) range + min``
    (:func:`delira.augment.functional.local.local_gamma`); the value range is kept.

    Args:
        gamma: (min, max) of the gamma drawn per weight map, > 0 (batchgeneratorsv2's default (0.5, 1)).
        scale, loc, same_for_all_channels, p_per_channel, p: see :class:`LocalTransform`.
    """

    def __init__(
        self, scale: Any = (10.0, 30.0), loc: Any = (-1.0, 2.0), gamma: Any = (0.5, 1.0), **kwargs: Any
    ):
        super().__init__(scale, loc, **kwargs)
        self.gamma = v.value_range(gamma, "gamma")
        if self.gamma[0] <= 0:
            raise ValueError(f"gamma={gamma!r} must be > 0")

    def draw_params(self, rng):
        lo, hi = self.gamma
        return {"gamma": float(rng.uniform(lo, hi)) if hi > lo else lo}

    def channel(self, image, weights, gamma, out):
        return L.local_gamma(image, weights, gamma, out=out)


class LocalContrast(LocalTransform):
    """Contrast about the weighted mean under a Gaussian weight map (``LocalContrastTransform``).

    Per channel ``m = sum(x w) / sum(w)``, ``y = x (1 - w) + ((x - m) factor + m) w``
    (:func:`delira.augment.functional.local.local_contrast`); the value range is not kept.

    Args:
        factor: (min, max) of the contrast factor drawn per weight map (batchgeneratorsv2's
            ``new_contrast``, default (0.5, 1.5)).
        scale, loc, same_for_all_channels, p_per_channel, p: see :class:`LocalTransform`.
    """

    def __init__(
        self, scale: Any = (10.0, 30.0), loc: Any = (-1.0, 2.0), factor: Any = (0.5, 1.5), **kwargs: Any
    ):
        super().__init__(scale, loc, **kwargs)
        self.factor = v.value_range(factor, "factor")

    def draw_params(self, rng):
        lo, hi = self.factor
        return {"factor": float(rng.uniform(lo, hi)) if hi > lo else lo}

    def channel(self, image, weights, factor, out):
        return L.local_contrast(image, weights, factor, out=out)


class LocalSmoothing(LocalTransform):
    """A Gaussian blur blended in under a Gaussian weight map (``LocalSmoothingTransform``).

    Per channel ``y = x (1 - s w) + blur(x, sigma) s w`` with ``s`` the strength
    (:func:`delira.augment.functional.local.local_smoothing`); the blur (``scipy.ndimage.gaussian_filter``
    semantics) runs on the compiled engine.

    Args:
        sigma: (min, max) of the blur's sigma in voxels, drawn once per sample for all its channels
            (batchgeneratorsv2's ``kernel_size``, default (0.5, 1.5)).
        strength: (min, max) in [0, 1] of the blurred image's largest weight, drawn per weight map
            (batchgeneratorsv2's ``smoothing_strength``, default (0.5, 1)).
        scale, loc, same_for_all_channels, p_per_channel, p: see :class:`LocalTransform`.
    """

    def __init__(
        self,
        scale: Any = (10.0, 30.0),
        loc: Any = (-1.0, 2.0),
        sigma: Any = (0.5, 1.5),
        strength: Any = (0.5, 1.0),
        **kwargs: Any,
    ):
        super().__init__(scale, loc, **kwargs)
        self.sigma = v.value_range(sigma, "sigma", low=0.0)
        self.strength = v.value_range(strength, "strength", low=0.0, high=1.0)

    def draw_sample(self, rng):
        lo, hi = self.sigma
        return {"sigma": float(rng.uniform(lo, hi)) if hi > lo else lo}

    def draw_params(self, rng):
        lo, hi = self.strength
        return {"strength": float(rng.uniform(lo, hi)) if hi > lo else lo}

    def channel(self, image, weights, sigma, strength, out):
        return L.local_smoothing(image, weights, sigma, strength, out=out, backend=self.backend)


class BrightnessGradient(LocalTransform):
    """Add a smooth Gaussian brightness gradient (``BrightnessGradientAdditiveTransform``).

    Per channel ``y = x + strength * g / max|g|`` with ``g`` the weight map, minus its mean when
    ``mean_centered`` (:func:`delira.augment.functional.local.brightness_gradient`).

    Args:
        max_strength: (min, max) of the largest absolute value added, drawn per weight map
            (batchgeneratorsv2's default 1.0).
        mean_centered: subtract the map's mean first (the sample's mean then stays the same).
        clip_intensities: clip the result to the sample's value range before the transform (its
            min and max over all channels, as batchgeneratorsv2).
        scale, loc, same_for_all_channels, p_per_channel, p: see :class:`LocalTransform`.
    """

    def __init__(
        self,
        scale: Any = (10.0, 30.0),
        loc: Any = (-1.0, 2.0),
        max_strength: Any = 1.0,
        mean_centered: bool = True,
        clip_intensities: bool = False,
        **kwargs: Any,
    ):
        super().__init__(scale, loc, **kwargs)
        self.max_strength = v.value_range(max_strength, "max_strength")
        self.mean_centered = bool(mean_centered)
        self.clip_intensities = bool(clip_intensities)

    def draw_params(self, rng):
        lo, hi = self.max_strength
        return {"strength": float(rng.uniform(lo, hi)) if hi > lo else lo}

    def channel(self, image, weights, strength, out):
        return L.brightness_gradient(image, weights, strength, self.mean_centered, out=out)

    def finish(self, sample, original):
        if self.clip_intensities:
            L.clip_(sample, float(original.min()), float(original.max()))
        return sample
