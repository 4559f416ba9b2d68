"""Intensity transforms: each draws per-sample parameters and builds an intensity program.

The fusable ones (noise, brightness, contrast, gamma, clipping, normalisation) run inside the
spatial transform's kernel pass when they follow it in a :class:`~delira.augment.Compose`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays, _cuda, _engine
from delira.augment import _validate as v
from delira.augment._program import Program
from delira.augment.functional import intensity as F
from delira.augment.transforms.base import (
    Transform,
    as_input,
    draw_factor,
    sampling_name,
    to_numpy,
    uniform,
)


class IntensityTransform(Transform):
    """Base of the fusable intensity transforms: subclasses implement :meth:`program`.

    Transforms with ``per_channel`` / ``p_per_channel`` (brightness, contrast, gamma, gaussian noise)
    draw their parameters per (sample, channel) when either is set (:meth:`channelwise`); the
    compiled program has per-sample parameters only, so the batch then runs as ``(N * C, 1,
    *spatial)`` (a free reshape of contiguous arrays, a copy otherwise) with one program row per
    (sample, channel). Such a transform fuses into a :class:`~delira.augment.Compose` pass only on
    single-channel data (:meth:`fuses_with`), and otherwise runs on its own, in order.
    """

    fusable = True
    per_channel = False
    p_per_channel = 1.0

    def program(self, rng: np.random.Generator, n: int, c: int = 1) -> Program:
        """The program for ``n`` samples of ``c`` channels: ``n`` rows, or ``n * c`` when channelwise."""
        raise NotImplementedError

    def channelwise(self) -> bool:
        """Whether the parameters are drawn (or applied) per (sample, channel) rather than per sample."""
        return self.per_channel or self.p_per_channel < 1.0

    def fuses_with(self, channels: int) -> bool:
        """Whether this transform can join a fused pass (per-sample program) on ``channels`` channels."""
        return not self.channelwise() or channels == 1

    def apply(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return run_intensity(batch, [self], rng, self.backend)

    def _with_active(self, prog: Program, active: np.ndarray) -> Program:
        for op in prog.ops:
            op.active &= active
        return prog

    def _set_channels(self, per_channel: bool, p_per_channel: float) -> None:
        self.per_channel = bool(per_channel)
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")

    def _draw_rows(
        self, rng: np.random.Generator, n: int, c: int, draw: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values and active flags per program row: ``draw(rng, size)`` gives the values.

        Per sample (not :meth:`channelwise`): ``n`` rows, drawn as before per_channel existed. Channelwise:
        ``n * c`` rows (sample-major); the sample's probability ``p`` first, then one value per channel
        (``per_channel``) or per sample, then ``p_per_channel`` per channel, as batchgeneratorsv2's
        ``synchronize_channels=not per_channel``. On one channel both give the same draws.
        """
        active = self.draw_active(rng, n)
        if not self.channelwise():
            return draw(rng, n), active
        values = np.broadcast_to(draw(rng, (n, c if self.per_channel else 1)), (n, c))
        keep = np.repeat(active[:, None], c, axis=1)
        if self.p_per_channel < 1.0:
            keep &= rng.random((n, c)) < self.p_per_channel
        return np.ascontiguousarray(values).reshape(n * c), keep.reshape(n * c)


def run_intensity(
    batch: dict[str, Any], group: list[IntensityTransform], rng: np.random.Generator, backend: str
) -> dict[str, Any]:
    """Run ``group`` (same ``data_key``) as one program on ``batch``; parameters drawn in order.

    Either every member is :meth:`~IntensityTransform.channelwise` (on data with ``C > 1`` the batch
    is then viewed as ``(N * C, 1, *spatial)``, one program row per (sample, channel), and viewed
    back) or the program has one row per sample. Host arrays run as numpy views, CUDA arrays stay
    on the GPU.
    """
    key = group[0].data_key
    x = batch.get(key)
    if x is None:
        return batch
    n, c, spatial = int(x.shape[0]), int(x.shape[1]), tuple(int(s) for s in x.shape[2:])
    rows = c > 1 and all(t.channelwise() for t in group)
    if not rows and c > 1 and any(t.channelwise() for t in group):
        raise ValueError("run_intensity: a group mixes per-channel and per-sample transforms on C > 1")
    if rows:  # one program row per (sample, channel): the channels become samples
        x = _arrays.reshape(x, (n * c, 1, *spatial))
    host, wrap = as_input(x, key)  # CUDA arrays stay on the GPU
    v.image_dtype(host, key)
    prog = Program(n * c if rows else n)
    for t in group:
        prog.extend(t.program(rng, n, c))
    _cuda.check_percentile_input(host, prog)
    out = wrap(_engine.run_program(host, prog, backend))
    batch[key] = _arrays.reshape(out, (n, c, *spatial)) if rows else out
    return batch


class GaussianNoise(IntensityTransform):
    """Additive gaussian noise with a standard deviation drawn per sample from ``std``.

    batchgenerators' ``GaussianNoiseTransform(noise_variance=(a, b))`` draws its value in (a, b) and uses
    it as the standard deviation: ``GaussianNoise(std=(a, b))`` reproduces it. ``per_channel=True``
    draws a std per channel and ``p_per_channel`` noises each channel of a transformed sample with
    that probability (batchgeneratorsv2's ``synchronize_channels=not per_channel``, ``p_per_channel``;
    see :class:`IntensityTransform` for how these run).
    """

    def __init__(
        self,
        std: Any = (0.0, 0.1),
        p: float = 1.0,
        *,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.std = v.value_range(std, "std", low=0.0)
        self._set_channels(per_channel, p_per_channel)

    def program(self, rng, n, c=1):
        std, active = self._draw_rows(rng, n, c, lambda r, size: uniform(r, self.std, size))
        rows = int(std.shape[0])
        prog = F.program_ops("noise", rows, std=std)
        prog.seeds = rng.integers(0, 2**63, size=rows, dtype=np.uint64)
        return self._with_active(prog, active)


class RicianNoise(IntensityTransform):
    """Rician noise with a standard deviation drawn per sample from ``std`` (batchgeneratorsv2's).

    ``sqrt((x + std z0)^2 + (std z1)^2)`` with independent standard normal ``z0, z1`` per voxel (the
    magnitude of an MR signal whose real and imaginary channels get gaussian noise). With
    ``retain_stats=True`` (default) it follows batchgeneratorsv2's ``RicianNoiseTransform``: computed on
    ``x - min`` and rescaled to the input's mean and std per sample and channel (the minimum and the
    statistics start new passes of the program). With ``retain_stats=False`` it is a single pointwise op
    (meant for magnitude images, ``x >= 0``). Either way it fuses into a preceding
    :class:`SpatialTransform`'s kernel pass inside :class:`~delira.augment.Compose`, on CPU and CUDA.

    ``RicianNoiseTransform(noise_variance=(a, b))`` uses its drawn value as the standard deviation:
    ``RicianNoise(std=(a, b))`` reproduces its distribution (the random numbers differ).
    """

    def __init__(
        self, std: Any = (0.0, 0.1), retain_stats: bool = True, p: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        self.std = v.value_range(std, "std", low=0.0)
        self.retain_stats = bool(retain_stats)

    def program(self, rng, n, c=1):
        active = self.draw_active(rng, n)
        prog = F.program_ops("rician", n, std=uniform(rng, self.std, n), retain_stats=self.retain_stats)
        prog.seeds = rng.integers(0, 2**63, size=n, dtype=np.uint64)
        return self._with_active(prog, active)


class BrightnessMultiplicative(IntensityTransform):
    """Multiply by a factor drawn per sample from ``factor`` (batchgenerators' multiplier_range).

    batchgeneratorsv2's ``MultiplicativeBrightnessTransform(multiplier_range=BGContrast(factor),
    synchronize_channels=not per_channel, p_per_channel=p_per_channel)`` is
    ``BrightnessMultiplicative(factor, sampling="bg", per_channel=..., p_per_channel=...)``.

    Args:
        factor: (min, max) of the factor, or one value.
        sampling: 'uniform' in ``factor``, or 'bg': half the draws below 1 and half above
            (:func:`~delira.augment.transforms.base.draw_factor`).
        per_channel: one factor per channel instead of one per sample.
        p_per_channel: probability that a channel of a transformed sample is changed.
    """

    def __init__(
        self,
        factor: Any = (0.75, 1.25),
        p: float = 1.0,
        *,
        sampling: str = "uniform",
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.factor = v.value_range(factor, "factor")
        self.sampling = sampling_name(sampling)
        self._set_channels(per_channel, p_per_channel)

    def program(self, rng, n, c=1):
        factor, active = self._draw_rows(
            rng, n, c, lambda r, size: draw_factor(r, self.factor, size, self.sampling)
        )
        return self._with_active(F.program_ops("multiply", factor.shape[0], factor=factor), active)


class BrightnessAdditive(IntensityTransform):
    """Add a value drawn per sample from N(mu, sigma) (batchgenerators' BrightnessTransform).

    ``per_channel=True`` draws a value per channel, ``p_per_channel`` changes each channel of a
    transformed sample with that probability.
    """

    def __init__(
        self,
        mu: float = 0.0,
        sigma: float = 0.1,
        p: float = 1.0,
        *,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.mu = v.finite(mu, "mu")
        self.sigma = v.finite(sigma, "sigma")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self._set_channels(per_channel, p_per_channel)

    def program(self, rng, n, c=1):
        value, active = self._draw_rows(rng, n, c, lambda r, size: r.normal(self.mu, self.sigma, size))
        return self._with_active(F.program_ops("add", value.shape[0], value=value), active)


class Contrast(IntensityTransform):
    """Scale deviations from the mean by a factor drawn per sample; optionally keep the value range.

    The mean (and the range kept) are per sample and channel. batchgeneratorsv2's
    ``ContrastTransform(contrast_range=BGContrast(factor), preserve_range=...,
    synchronize_channels=not per_channel, p_per_channel=...)`` is
    ``Contrast(factor, preserve_range, sampling="bg", per_channel=..., p_per_channel=...)``.

    Args:
        factor: (min, max) of the factor, or one value.
        preserve_range: clip the result to the channel's input range.
        sampling: 'uniform' in ``factor``, or 'bg': half the draws below 1 and half above.
        per_channel: one factor per channel instead of one per sample.
        p_per_channel: probability that a channel of a transformed sample is changed.
    """

    def __init__(
        self,
        factor: Any = (0.75, 1.25),
        preserve_range: bool = True,
        p: float = 1.0,
        *,
        sampling: str = "uniform",
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.factor = v.value_range(factor, "factor")
        self.preserve_range = bool(preserve_range)
        self.sampling = sampling_name(sampling)
        self._set_channels(per_channel, p_per_channel)

    def program(self, rng, n, c=1):
        factor, active = self._draw_rows(
            rng, n, c, lambda r, size: draw_factor(r, self.factor, size, self.sampling)
        )
        prog = F.program_ops("contrast", factor.shape[0], factor=factor, preserve_range=self.preserve_range)
        return self._with_active(prog, active)


class Gamma(IntensityTransform):
    """Gamma correction with gamma drawn per sample as batchgenerators does.

    When ``gamma[0] < 1``, half the samples draw from ``(gamma[0], 1)`` and half from
    ``(max(gamma[0], 1), gamma[1])``, so darkening and brightening are equally likely
    (``sampling="bg"``, the default; ``sampling="uniform"`` draws uniformly in ``gamma``). A fixed
    value ``gamma=(g, g)`` (or ``g``) is used as it is. ``per_channel=True`` draws a gamma per channel
    and ``p_per_channel`` changes each channel of a transformed sample with that probability; the
    retained statistics and the range are per sample and channel. batchgeneratorsv2's
    ``GammaTransform(gamma=BGContrast(gamma), p_invert_image=0 or 1, synchronize_channels=not
    per_channel, p_per_channel=..., p_retain_stats=0 or 1)``.
    """

    def __init__(
        self,
        gamma: Any = (0.7, 1.5),
        invert: bool = False,
        retain_stats: bool = True,
        p: float = 1.0,
        *,
        sampling: str = "bg",
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.gamma = v.value_range(gamma, "gamma")
        if self.gamma[0] <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.invert = bool(invert)
        self.retain_stats = bool(retain_stats)
        self.sampling = sampling_name(sampling)
        self._set_channels(per_channel, p_per_channel)

    def draw_gamma(self, rng: np.random.Generator, n: Any) -> np.ndarray:
        """Gammas of shape ``n`` (an int or a shape), drawn with ``sampling``."""
        return draw_factor(rng, self.gamma, n, self.sampling)

    def program(self, rng, n, c=1):
        gamma, active = self._draw_rows(rng, n, c, self.draw_gamma)
        prog = F.program_ops(
            "gamma", gamma.shape[0], gamma=gamma, invert=self.invert, retain_stats=self.retain_stats
        )
        return self._with_active(prog, active)


class ZScoreNormalize(IntensityTransform):
    """``(x - mean) / max(std, eps)`` per sample and channel."""

    def __init__(self, eps: float = 1e-8, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.eps = v.finite(eps, "eps")

    def program(self, rng, n, c=1):
        return self._with_active(F.program_ops("zscore", n, eps=self.eps), self.draw_active(rng, n))


class PercentileClip(IntensityTransform):
    """Clip each sample and channel to its ``lower`` and ``upper`` percentiles.

    Exact percentiles (numpy's linear definition on the values rounded to float32) on either executor;
    on CUDA inputs one selection pass per stage, and a NaN check that synchronises the stream once.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.lower, self.upper = v.value_range((lower, upper), "percentiles", low=0.0, high=100.0)

    def program(self, rng, n, c=1):
        prog = F.program_ops("percentile_clip", n, lower=self.lower, upper=self.upper)
        return self._with_active(prog, self.draw_active(rng, n))


class GaussianBlur(Transform):
    """Gaussian blur with sigma drawn per sample (and per axis when ``per_axis``) from ``sigma``.

    ``per_channel=True`` draws a sigma per channel, ``p_per_channel`` blurs each channel of a transformed
    sample with that probability: batchgeneratorsv2's ``GaussianBlurTransform(blur_sigma=sigma,
    synchronize_channels=not per_channel, synchronize_axes=not per_axis, p_per_channel=p_per_channel)``.
    The defaults (one sigma for all channels, every channel) are batchgenerators v1's.
    """

    def __init__(
        self,
        sigma: Any = (0.5, 1.0),
        per_axis: bool = False,
        p: float = 1.0,
        *,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.sigma = v.value_range(sigma, "sigma", low=0.0)
        self.per_axis = bool(per_axis)
        self.per_channel = bool(per_channel)
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        n, c, nd = int(x.shape[0]), int(x.shape[1]), len(x.shape) - 2
        active = self.draw_active(rng, n)
        if not self.per_channel and self.p_per_channel == 1.0:
            sigma = uniform(rng, self.sigma, (n, nd if self.per_axis else 1)) * np.ones((1, nd))
            sigma[~active] = 0.0
            batch[self.data_key] = F.gaussian_blur(x, sigma, backend=self.backend)
            return batch
        # A sigma per (sample, channel): the channels become samples of a (N * C, 1, *spatial) batch.
        draws = (n, c if self.per_channel else 1, nd if self.per_axis else 1)
        sigma = np.array(np.broadcast_to(uniform(rng, self.sigma, draws), (n, c, nd)))
        keep = active[:, None] & (rng.random((n, c)) < self.p_per_channel)
        sigma[~keep] = 0.0
        spatial = tuple(int(s) for s in x.shape[2:])
        flat = _arrays.reshape(x, (n * c, 1, *spatial))
        out = F.gaussian_blur(flat, sigma.reshape(n * c, nd), backend=self.backend)
        batch[self.data_key] = _arrays.reshape(out, (n, c, *spatial))
        return batch


class Sharpen(Transform):
    """Laplacian sharpening ``x + strength * L(x)`` as batchgeneratorsv2's ``SharpeningTransform``.

    ``L`` is the 4-neighbour (2D) or 6-neighbour (3D) discrete Laplacian with the sign that sharpens
    and the border replicated (:func:`delira.augment.functional.sharpen`). ``strength`` is drawn per
    channel (``per_channel=True``, batchgeneratorsv2's ``p_same_for_each_channel=0``) or once per
    sample; each channel of a transformed sample is sharpened with probability ``p_per_channel`` and
    clipped to its input range with probability ``p_clamp`` (``p_clamp_intensities``).

    Host inputs with numpy; torch CUDA tensors and cupy arrays stay on their device (their own
    library), tensorflow/jax GPU arrays are copied to the host and back.
    """

    def __init__(
        self,
        strength: Any = (0.1, 0.3),
        p: float = 1.0,
        *,
        per_channel: bool = True,
        p_per_channel: float = 1.0,
        p_clamp: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.strength = v.value_range(strength, "strength")
        self.per_channel = bool(per_channel)
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")
        self.p_clamp = v.probability(p_clamp, "p_clamp")

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        n, c = int(x.shape[0]), int(x.shape[1])
        active = self.draw_active(rng, n)
        cols = c if self.per_channel else 1
        strength = np.array(np.broadcast_to(uniform(rng, self.strength, (n, cols)), (n, c)))
        clamp = np.broadcast_to(rng.random((n, cols)) < self.p_clamp, (n, c)) if self.p_clamp > 0 else False
        keep = active[:, None] & (rng.random((n, c)) < self.p_per_channel)
        strength[~keep] = 0.0
        batch[self.data_key] = F.sharpen(x, strength, clamp, backend=self.backend)
        return batch


class MedianFilter(Transform):
    """Median filter with a cube size drawn per channel from ``size`` (both ends included).

    As batchgeneratorsv2's ``MedianFilterTransform`` (``scipy.ndimage.median_filter`` per channel), with
    one difference: ``size=(a, b)`` draws integers in ``[a, b]``; batchgeneratorsv2's
    ``filter_size=(a, b)`` draws ``numpy.random.randint(a, b)``, i.e. ``[a, b - 1]``, so
    ``MedianFilter(size=(a, b - 1))`` reproduces it. ``per_channel=False`` draws one size per sample
    (``p_same_for_each_channel=1``); each channel is filtered with probability ``p_per_channel``.

    Runs on the host (scipy); CUDA inputs are copied to the host and back.
    """

    def __init__(
        self,
        size: Any = (3, 5),
        p: float = 1.0,
        *,
        per_channel: bool = True,
        p_per_channel: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        lo, hi = v.value_range(size, "size", low=1)
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"size={size!r} must be an int or a (min, max) pair of ints >= 1")
        self.size = (int(lo), int(hi))
        self.per_channel = bool(per_channel)
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        n, c = int(x.shape[0]), int(x.shape[1])
        active = self.draw_active(rng, n)
        cols = c if self.per_channel else 1
        size = np.array(np.broadcast_to(rng.integers(self.size[0], self.size[1] + 1, (n, cols)), (n, c)))
        keep = active[:, None] & (rng.random((n, c)) < self.p_per_channel)
        size[~keep] = 0
        batch[self.data_key] = F.median_filter(x, size, backend=self.backend)
        return batch


class SimulateLowResolution(Transform):
    """Downsample by a zoom drawn per sample from ``zoom`` and upsample back (nearest down, cubic up).

    As batchgeneratorsv2's ``SimulateLowResolutionTransform`` (``scale=zoom``,
    ``synchronize_axes=not per_axis``, ``synchronize_channels=not per_channel``, ``ignore_axes``,
    ``allowed_channels``, ``p_per_channel``); nnU-Net v2 trains with ``zoom=(0.5, 1), per_channel=True,
    p_per_channel=0.5, p=0.25`` (and ``ignore_axes=(0,)`` for its dummy-2D setting). batchgeneratorsv2
    upsamples (bi/tri)linearly: ``order_up=1`` reproduces it; the default ``order_up=3`` (cubic
    B-spline) is batchgenerators v1's.

    Args:
        zoom: (min, max) in (0, 1] of the zoom factor (1 = unchanged).
        order_down, order_up: interpolation orders of the two resizes (0 nearest, 1 linear, 3 cubic).
        per_axis: draw one zoom per spatial axis instead of one for all axes.
        per_channel: draw the zoom independently per channel instead of one for all channels.
        p_per_channel: probability that a channel (of a transformed sample) is resized.
        ignore_axes: spatial axes (0-based, after N and C) kept at full resolution (zoom 1).
        allowed_channels: the only channels that may be resized (default: all).

    The resizing runs on the compiled resampler (:func:`delira.augment.functional.simulate_low_resolution`);
    CUDA inputs stay on the GPU.
    """

    def __init__(
        self,
        zoom: Any = (0.5, 1.0),
        order_down: int = 0,
        order_up: int = 3,
        p: float = 1.0,
        *,
        per_axis: bool = False,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        ignore_axes: Any = None,
        allowed_channels: Any = None,
        **kwargs: Any,
    ):
        super().__init__(p, **kwargs)
        self.zoom = v.value_range(zoom, "zoom", low=1e-6, high=1.0)
        for name, order in (("order_down", order_down), ("order_up", order_up)):
            if order not in (0, 1, 3) or isinstance(order, bool):
                raise ValueError(f"{name}={order!r}; use 0 (nearest), 1 (linear) or 3 (cubic B-spline)")
        self.order_down, self.order_up = order_down, order_up
        self.per_axis, self.per_channel = bool(per_axis), bool(per_channel)
        self.p_per_channel = v.probability(p_per_channel, "p_per_channel")
        self.ignore_axes = _index_tuple(ignore_axes, "ignore_axes", high=3)
        self.allowed_channels = _index_tuple(allowed_channels, "allowed_channels")

    def draw_zoom(self, rng: np.random.Generator, n: int, c: int, nd: int) -> np.ndarray:
        """Zooms ``(n, c, nd)``: 1 on the ignored axes and on the channels left out."""
        zoom = uniform(rng, self.zoom, (n, c if self.per_channel else 1, nd if self.per_axis else 1))
        zoom = np.array(np.broadcast_to(zoom, (n, c, nd)))
        if self.ignore_axes is not None:
            bad = [a for a in self.ignore_axes if a >= nd]
            if bad:
                raise ValueError(
                    f"ignore_axes={self.ignore_axes} names axis {bad[0]}, but the data has {nd} spatial axes"
                )
            zoom[:, :, list(self.ignore_axes)] = 1.0
        keep = np.ones((n, c), dtype=bool)
        if self.allowed_channels is not None:
            bad = [k for k in self.allowed_channels if k >= c]
            if bad:
                raise ValueError(
                    f"allowed_channels={self.allowed_channels} names channel {bad[0]}, but the data has {c} channels"
                )
            keep[:] = False
            keep[:, list(self.allowed_channels)] = True
        if self.p_per_channel < 1.0:
            keep &= rng.random((n, c)) < self.p_per_channel
        zoom[~keep] = 1.0
        return zoom

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        n, c, nd = int(x.shape[0]), int(x.shape[1]), len(x.shape) - 2
        if _arrays.is_cuda_array(x):  # on the GPU: the active samples resized there, the others copied
            x = _arrays.detach(x)
            active = self.draw_active(rng, n)
            zoom = self.draw_zoom(rng, n, c, nd)
            parts = [
                F.simulate_low_resolution(
                    x[i : i + 1], zoom[i : i + 1], self.order_down, self.order_up, backend=self.backend
                )
                if active[i]
                else x[i : i + 1]
                for i in range(n)
            ]
            batch[self.data_key] = _arrays.concat(parts, x)
            return batch
        host, wrap = to_numpy(x, self.data_key)
        active = self.draw_active(rng, n)
        zoom = self.draw_zoom(rng, n, c, nd)
        out = np.array(host, copy=True)
        idx = np.flatnonzero(active)
        if idx.size:
            out[idx] = F.simulate_low_resolution(
                host[idx], zoom[idx], self.order_down, self.order_up, backend=self.backend
            )
        batch[self.data_key] = wrap(out)
        return batch


def _index_tuple(value: Any, name: str, high: int | None = None) -> tuple[int, ...] | None:
    """None, or a tuple of distinct non-negative ints (below ``high`` when given)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name}={value!r} must be None, an int or a sequence of ints") from None
    for k in items:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{name}={value!r} must contain ints (axis or channel indices)")
        if k < 0 or (high is not None and k >= high):
            raise ValueError(f"{name}={value!r}: every index must be in [0, {high if high else 'C'})")
    if len(set(items)) != len(items):
        raise ValueError(f"{name}={value!r} names an index twice; list each once")
    return tuple(int(k) for k in items)
