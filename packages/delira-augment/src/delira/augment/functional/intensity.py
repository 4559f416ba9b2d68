"""Intensity operations with explicit per-sample parameters.

Each function takes an image batch ``(N, C, *spatial)`` float32/float64 (numpy, torch or tensorflow)
and returns a new one of the same type. Parameters are scalars (one value for the batch) or
length-N sequences (one per sample). Statistics (mean, std, min, max, percentiles) are taken per
sample and channel. Formulas follow batchgenerators' definitions.

Inputs: float32/float64 only (float16 and integers raise a TypeError naming ``x``); any strides,
read in place; torch tensors are read detached. CUDA arrays (torch CUDA tensors and cupy arrays on the
caller's current stream; tensorflow GPU tensors and jax GPU arrays through DLPack) run on the CUDA
executor and come back on their device, in their framework. NaN propagates as numpy does: a NaN voxel
stays NaN in voxel-wise ops, and ops that use the channel's mean, std, min or max make that whole
channel NaN; :func:`percentile_clip` raises a ValueError on NaN (its percentiles are undefined). See
the package README, "Inputs" and "CUDA".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays, _cuda, _engine
from delira.augment import _validate as v
from delira.augment._program import OpKind, Program


def _image(x: Any) -> tuple[np.ndarray, Any]:
    if _arrays.is_cuda_array(x):
        host = _arrays.CudaArray.from_array(x)
        if host.ndim < 3 or host.ndim > 5:
            raise ValueError(f"x has shape {host.shape}; expected (N, C, *spatial) with 1 to 3 spatial axes")
        v.image_dtype(host, "x")
        if host.size == 0:
            raise ValueError(f"x has shape {host.shape}, which is empty")
        return host, _arrays.cuda_wrapper(x)
    host, wrap = _arrays.to_host(x)
    if host.ndim < 3 or host.ndim > 5:
        raise ValueError(f"x has shape {host.shape}; expected (N, C, *spatial) with 1 to 3 spatial axes")
    v.image_dtype(host, "x")
    if host.size == 0:
        raise ValueError(f"x has shape {host.shape}, which is empty")
    return host, wrap


def _per_sample(value: Any, n: int, name: str) -> np.ndarray:
    return v.finite_array(value, name, (n,))


def _run(x: Any, build, seed: Any = None, backend: str = "auto") -> Any:
    host, wrap = _image(x)
    prog = Program(host.shape[0])
    build(prog, host.shape[0])
    if seed is not None:
        prog.seeds = np.random.default_rng(seed).integers(0, 2**63, size=host.shape[0], dtype=np.uint64)
    _cuda.check_percentile_input(host, prog)
    return wrap(_engine.run_program(host, prog, backend))


def program_ops(kind: str, n: int, **params: Any) -> Program:
    """A one-operation (two for retained gamma) program; the transforms and Compose build on this."""
    prog = Program(n)
    if kind == "noise":
        std = _per_sample(params["std"], n, "std")
        if np.any(std < 0):
            raise ValueError(f"noise std must be >= 0, got {params['std']}")
        prog.add(OpKind.NOISE, std)
    elif kind == "multiply":
        prog.add(OpKind.MULTIPLY, _per_sample(params["factor"], n, "factor"))
    elif kind == "add":
        prog.add(OpKind.ADD, _per_sample(params["value"], n, "value"))
    elif kind == "clip":
        lo, hi = _per_sample(params["low"], n, "low"), _per_sample(params["high"], n, "high")
        if np.any(lo > hi):
            raise ValueError("clip: low must not exceed high")
        prog.add(OpKind.CLIP, lo, hi)
    elif kind == "contrast":
        factor = _per_sample(params["factor"], n, "factor")
        prog.add(OpKind.CONTRAST, factor, float(bool(params.get("preserve_range", True))))
    elif kind == "gamma":
        gamma = _per_sample(params["gamma"], n, "gamma")
        if np.any(gamma <= 0):
            raise ValueError(f"gamma must be > 0, got {params['gamma']}")
        invert = float(bool(params.get("invert", False)))
        retain = bool(params.get("retain_stats", True))
        j = prog.add(OpKind.GAMMA, gamma, invert, float(retain))
        if retain:
            prog.add(OpKind.RESTORE_STATS, invert, ref=j)
    elif kind == "zscore":
        prog.add(OpKind.ZSCORE, v.finite(params.get("eps", 1e-8), "eps"))
    elif kind == "percentile_clip":
        lo, hi = v.value_range((params["lower"], params["upper"]), "percentiles", low=0.0, high=100.0)
        prog.add(OpKind.PERCENTILE_CLIP, lo, hi)
    else:
        raise ValueError(f"unknown intensity op {kind!r}")
    return prog


def _op(kind: str, x: Any, seed: Any = None, backend: str = "auto", **params: Any) -> Any:
    return _run(x, lambda prog, n: prog.extend(program_ops(kind, n, **params)), seed, backend)


def gaussian_noise(x: Any, std: Any, seed: Any = None, *, backend: str = "auto") -> Any:
    """``x + std * N(0, 1)``, independent per voxel; the same ``seed`` gives the same noise.

    Note: batchgenerators' ``GaussianNoiseTransform(noise_variance=...)`` uses its drawn value as the
    standard deviation; pass the same numbers here as ``std`` to reproduce it.
    """
    return _op("noise", x, seed, backend, std=std)


def brightness_multiplicative(x: Any, factor: Any, *, backend: str = "auto") -> Any:
    """``x * factor``."""
    return _op("multiply", x, backend=backend, factor=factor)


def brightness_additive(x: Any, value: Any, *, backend: str = "auto") -> Any:
    """``x + value``."""
    return _op("add", x, backend=backend, value=value)


def clip(x: Any, low: Any, high: Any, *, backend: str = "auto") -> Any:
    """``min(max(x, low), high)``."""
    return _op("clip", x, backend=backend, low=low, high=high)


def contrast(x: Any, factor: Any, preserve_range: bool = True, *, backend: str = "auto") -> Any:
    """``(x - mean) * factor + mean``, clipped to the input's [min, max] when ``preserve_range``."""
    return _op("contrast", x, backend=backend, factor=factor, preserve_range=preserve_range)


def gamma(
    x: Any, gamma: Any, invert: bool = False, retain_stats: bool = True, *, backend: str = "auto"
) -> Any:
    """Gamma correction on the range-normalised image (batchgenerators' ``augment_gamma``).

    ``y = ((x - min) / (range + 1e-7)) ** gamma * (range + 1e-7) + min``; with ``invert`` applied to
    ``-x`` and negated back; with ``retain_stats`` rescaled to the input's mean and std afterwards.
    """
    return _op("gamma", x, backend=backend, gamma=gamma, invert=invert, retain_stats=retain_stats)


def zscore_normalize(x: Any, eps: float = 1e-8, *, backend: str = "auto") -> Any:
    """``(x - mean) / max(std, eps)`` per sample and channel."""
    return _op("zscore", x, backend=backend, eps=eps)


def percentile_clip(x: Any, lower: float = 0.5, upper: float = 99.5, *, backend: str = "auto") -> Any:
    """Clip to the ``lower`` and ``upper`` percentiles (numpy's linear definition) per sample and channel.

    The percentiles are those of the values rounded to float32, exact on either executor (the CUDA
    executor selects the order statistics by radix selection, the CPU one with ``nth_element``), so both
    give the same result. On CUDA inputs the NaN check synchronises the caller's stream once.

    Raises:
        ValueError: when ``x`` contains NaN (replace it first, e.g. with ``numpy.nan_to_num``).
    """
    return _op("percentile_clip", x, backend=backend, lower=lower, upper=upper)


def gaussian_blur(x: Any, sigma: Any, truncate: float = 4.0, *, backend: str = "auto") -> Any:
    """Separable gaussian filter of the spatial axes (mode 'reflect'), as ``scipy.ndimage.gaussian_filter``.

    Args:
        sigma: voxels; scalar, per axis ``(ndim,)``, per sample ``(N,)`` or ``(N, ndim)``.
    """
    host, wrap = _image(x)
    n, nd = host.shape[0], host.ndim - 2
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 1 and s.shape[0] == n and n != nd:
        s = s[:, None]
    s = v.finite_array(s, "sigma", (n, nd))
    if np.any(s < 0):
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return wrap(_engine.gaussian_blur(host, s, v.finite(truncate, "truncate"), backend))


def simulate_low_resolution(
    x: Any, zoom: Any, order_down: int = 0, order_up: int = 3, *, backend: str = "auto"
) -> Any:
    """Downsample by ``zoom`` (< 1) and upsample back to the original shape, as batchgenerators.

    The spatial axes are resized to ``round(shape * zoom)`` with ``order_down`` and back with
    ``order_up``, pixel centres aligned (mode 'nearest').

    Args:
        zoom: in (0, 1]; scalar or per sample ``(N,)``.

    CUDA inputs (torch CUDA tensors, cupy arrays, tensorflow GPU tensors, jax GPU arrays) are resized
    on the GPU (two ``affine_resample`` calls per sample on the CUDA executor) and returned on their
    device, in their framework.
    """
    from delira.augment.functional.spatial import affine_resample

    host, wrap = _image(x)
    n, nd = host.shape[0], host.ndim - 2
    zooms = _per_sample(zoom, n, "zoom")
    if np.any((zooms <= 0) | (zooms > 1)):
        raise ValueError(f"zoom must be in (0, 1], got {zoom}")
    spatial = tuple(int(s) for s in host.shape[2:])
    shape = np.asarray(spatial, dtype=np.float64)

    def matrix(src, dst):
        scale = np.asarray(src, np.float64) / np.asarray(dst, np.float64)
        m = np.eye(nd + 1)
        m[:nd, :nd] = np.diag(scale)
        m[:nd, nd] = 0.5 * scale - 0.5
        return m

    def resize(sample: Any, i: int) -> Any:
        small = tuple(int(s) for s in np.maximum(np.round(shape * zooms[i]), 1))
        low = affine_resample(sample, matrix(spatial, small), small, order_down, "nearest", backend=backend)
        return affine_resample(low, matrix(small, spatial), spatial, order_up, "nearest", backend=backend)

    if isinstance(host, _arrays.CudaArray):
        device = host.obj  # the framework array (torch: detached)
        return _arrays.concat([resize(device[i], i)[None] for i in range(n)], device)
    out = np.empty_like(host)
    for i in range(n):
        out[i] = resize(host[i], i)
    return wrap(out)
