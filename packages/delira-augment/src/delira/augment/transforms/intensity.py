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
from delira.augment.transforms.base import Transform, as_input, to_numpy, uniform


class IntensityTransform(Transform):
    """Base of the fusable intensity transforms: subclasses implement :meth:`program`."""

    fusable = True

    def program(self, rng: np.random.Generator, n: int) -> Program:
        raise NotImplementedError

    def apply(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if batch.get(self.data_key) is None:
            return batch
        host, wrap = as_input(batch[self.data_key], self.data_key)  # CUDA arrays stay on the GPU
        v.image_dtype(host, self.data_key)
        prog = self.program(rng, host.shape[0])
        _cuda.check_percentile_input(host, prog)
        batch[self.data_key] = wrap(_engine.run_program(host, prog, self.backend))
        return batch

    def _with_active(self, prog: Program, active: np.ndarray) -> Program:
        for op in prog.ops:
            op.active &= active
        return prog


class GaussianNoise(IntensityTransform):
    """Additive gaussian noise with a standard deviation drawn per sample from ``std``.

    batchgenerators' ``GaussianNoiseTransform(noise_variance=(a, b))`` draws its value in (a, b) and uses
    it as the standard deviation: ``GaussianNoise(std=(a, b))`` reproduces it.
    """

    def __init__(self, std: Any = (0.0, 0.1), p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.std = v.value_range(std, "std", low=0.0)

    def program(self, rng, n):
        active = self.draw_active(rng, n)
        prog = F.program_ops("noise", n, std=uniform(rng, self.std, n))
        prog.seeds = rng.integers(0, 2**63, size=n, dtype=np.uint64)
        return self._with_active(prog, active)


class BrightnessMultiplicative(IntensityTransform):
    """Multiply by a factor drawn per sample from ``factor`` (batchgenerators' multiplier_range)."""

    def __init__(self, factor: Any = (0.75, 1.25), p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.factor = v.value_range(factor, "factor")

    def program(self, rng, n):
        active = self.draw_active(rng, n)
        return self._with_active(F.program_ops("multiply", n, factor=uniform(rng, self.factor, n)), active)


class BrightnessAdditive(IntensityTransform):
    """Add a value drawn per sample from N(mu, sigma) (batchgenerators' BrightnessTransform)."""

    def __init__(self, mu: float = 0.0, sigma: float = 0.1, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.mu = v.finite(mu, "mu")
        self.sigma = v.finite(sigma, "sigma")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")

    def program(self, rng, n):
        active = self.draw_active(rng, n)
        return self._with_active(F.program_ops("add", n, value=rng.normal(self.mu, self.sigma, n)), active)


class Contrast(IntensityTransform):
    """Scale deviations from the mean by a factor drawn per sample; optionally keep the value range."""

    def __init__(
        self, factor: Any = (0.75, 1.25), preserve_range: bool = True, p: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        self.factor = v.value_range(factor, "factor")
        self.preserve_range = bool(preserve_range)

    def program(self, rng, n):
        active = self.draw_active(rng, n)
        prog = F.program_ops(
            "contrast", n, factor=uniform(rng, self.factor, n), preserve_range=self.preserve_range
        )
        return self._with_active(prog, active)


class Gamma(IntensityTransform):
    """Gamma correction with gamma drawn per sample as batchgenerators does.

    When ``gamma[0] < 1``, half the samples draw from ``(gamma[0], 1)`` and half from
    ``(max(gamma[0], 1), gamma[1])``, so darkening and brightening are equally likely.
    """

    def __init__(
        self,
        gamma: Any = (0.7, 1.5),
        invert: bool = False,
        retain_stats: bool = True,
        p: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.gamma = v.value_range(gamma, "gamma")
        if self.gamma[0] <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.invert = bool(invert)
        self.retain_stats = bool(retain_stats)

    def draw_gamma(self, rng: np.random.Generator, n: int) -> np.ndarray:
        lo, hi = self.gamma
        if lo >= 1:
            return uniform(rng, (lo, hi), n)
        below = rng.random(n) < 0.5
        return np.where(below, uniform(rng, (lo, 1.0), n), uniform(rng, (max(lo, 1.0), hi), n))

    def program(self, rng, n):
        active = self.draw_active(rng, n)
        prog = F.program_ops(
            "gamma", n, gamma=self.draw_gamma(rng, n), invert=self.invert, retain_stats=self.retain_stats
        )
        return self._with_active(prog, active)


class ZScoreNormalize(IntensityTransform):
    """``(x - mean) / max(std, eps)`` per sample and channel."""

    def __init__(self, eps: float = 1e-8, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.eps = v.finite(eps, "eps")

    def program(self, rng, n):
        return self._with_active(F.program_ops("zscore", n, eps=self.eps), self.draw_active(rng, n))


class PercentileClip(IntensityTransform):
    """Clip each sample and channel to its ``lower`` and ``upper`` percentiles.

    Exact percentiles (numpy's linear definition on the values rounded to float32) on either executor;
    on CUDA inputs one selection pass per stage, and a NaN check that synchronises the stream once.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.lower, self.upper = v.value_range((lower, upper), "percentiles", low=0.0, high=100.0)

    def program(self, rng, n):
        prog = F.program_ops("percentile_clip", n, lower=self.lower, upper=self.upper)
        return self._with_active(prog, self.draw_active(rng, n))


class GaussianBlur(Transform):
    """Gaussian blur with sigma drawn per sample (and per axis when ``per_axis``) from ``sigma``."""

    def __init__(
        self, sigma: Any = (0.5, 1.0), per_axis: bool = False, p: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        self.sigma = v.value_range(sigma, "sigma", low=0.0)
        self.per_axis = bool(per_axis)

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        n, nd = int(x.shape[0]), len(x.shape) - 2
        active = self.draw_active(rng, n)
        sigma = uniform(rng, self.sigma, (n, nd if self.per_axis else 1)) * np.ones((1, nd))
        sigma[~active] = 0.0
        batch[self.data_key] = F.gaussian_blur(x, sigma, backend=self.backend)
        return batch


class SimulateLowResolution(Transform):
    """Downsample by a zoom drawn per sample from ``zoom`` and upsample back (nearest down, cubic up)."""

    def __init__(
        self, zoom: Any = (0.5, 1.0), order_down: int = 0, order_up: int = 3, p: float = 1.0, **kwargs: Any
    ):
        super().__init__(p, **kwargs)
        self.zoom = v.value_range(zoom, "zoom", low=1e-6, high=1.0)
        self.order_down, self.order_up = order_down, order_up

    def apply(self, batch, rng):
        if batch.get(self.data_key) is None:
            return batch
        x = batch[self.data_key]
        if _arrays.is_cuda_array(x):  # on the GPU: the active samples resized there, the others copied
            x = _arrays.detach(x)
            n = int(x.shape[0])
            active = self.draw_active(rng, n)
            zoom = uniform(rng, self.zoom, n)
            parts = [
                F.simulate_low_resolution(
                    x[i : i + 1], zoom[i], self.order_down, self.order_up, backend=self.backend
                )
                if active[i]
                else x[i : i + 1]
                for i in range(n)
            ]
            batch[self.data_key] = _arrays.concat(parts, x)
            return batch
        host, wrap = to_numpy(x, self.data_key)
        n = host.shape[0]
        active = self.draw_active(rng, n)
        zoom = uniform(rng, self.zoom, n)
        out = np.array(host, copy=True)
        idx = np.flatnonzero(active)
        if idx.size:
            out[idx] = F.simulate_low_resolution(
                host[idx], zoom[idx], self.order_down, self.order_up, backend=self.backend
            )
        batch[self.data_key] = wrap(out)
        return batch
