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
    """A one-operation program (two for retained gamma, three for retained Rician noise); the
    transforms and Compose build on this."""
    prog = Program(n)
    if kind == "noise":
        std = _per_sample(params["std"], n, "std")
        if np.any(std < 0):
            raise ValueError(f"noise std must be >= 0, got {params['std']}")
        prog.add(OpKind.NOISE, std)
    elif kind == "rician":
        std = _per_sample(params["std"], n, "std")
        if np.any(std < 0):
            raise ValueError(f"Rician noise std must be >= 0, got {params['std']}")
        if params.get("retain_stats", True):
            j = prog.add(OpKind.SHIFT_MIN)
            prog.add(OpKind.RICIAN, std)
            prog.add(OpKind.RESTORE_STATS, 0.0, ref=j)
        else:
            prog.add(OpKind.RICIAN, std)
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


def rician_noise(
    x: Any, std: Any, retain_stats: bool = True, seed: Any = None, *, backend: str = "auto"
) -> Any:
    """Rician noise: the magnitude of ``x`` with gaussian noise on a real and an imaginary part.

    With ``retain_stats=False``: ``sqrt((x + std z0)^2 + (std z1)^2)``, ``z0, z1`` independent standard
    normal values per voxel; pointwise, so it fuses into the pass that produces ``x`` (for ``x >= 0``, a
    magnitude image, the textbook Rician distribution). With ``retain_stats=True`` (default) as
    batchgeneratorsv2's ``RicianNoiseTransform``: computed on ``x - min`` and rescaled to the input's
    mean and std per sample and channel (so the output keeps the input's mean and std); the minimum and
    the statistics start new passes. batchgeneratorsv2 calls its value ``noise_variance`` but uses it as
    the standard deviation; pass the same numbers as ``std``.

    Args:
        std: standard deviation, >= 0; scalar or per sample ``(N,)``.
        seed: seed of the noise; the same seed gives the same noise on the same executor.
    """
    return _op("rician", x, seed, backend, std=std, retain_stats=retain_stats)


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


def _to_device_of(out: np.ndarray, like: Any) -> Any:
    """The host array ``out`` copied onto the device and into the framework of the CUDA array ``like``."""
    fw = _arrays.namespace(like)
    if fw == "torch":
        import torch

        return torch.from_numpy(out).to(like.device)
    if fw == "cupy":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.asarray(out)
    if fw == "tensorflow":
        import tensorflow as tf

        with tf.device(like.device):
            return tf.identity(tf.constant(out))
    import jax

    return jax.device_put(out, next(iter(like.devices())))


def _on_host(x: Any, fn) -> Any:
    """``fn`` (a numpy ``(N, C, *spatial)`` -> same function) on ``x``; CUDA arrays round-trip the host."""
    host, wrap = _image(x)
    if isinstance(host, _arrays.CudaArray):
        return _to_device_of(np.ascontiguousarray(fn(_arrays.cuda_to_host(host.obj))), x)
    return wrap(fn(host))


def _per_channel(value: Any, n: int, c: int, name: str) -> np.ndarray:
    """A scalar, per-sample ``(N,)`` or per-(sample, channel) ``(N, C)`` value as ``(N, C)``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == n:
        arr = arr[:, None]
    return v.finite_array(arr, name, (n, c))


def sharpen(x: Any, strength: Any, clamp: Any = False, *, backend: str = "auto") -> Any:
    """Laplacian sharpening as batchgeneratorsv2's ``SharpeningTransform``: ``x + strength * L(x)``.

    ``L(x) = 2 d x - (sum of the 2 d face neighbours)`` over the ``d`` spatial axes (2D: the kernel
    ``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]``, 3D: its 6-neighbour analogue with centre 6), with the
    border replicated; computed in the input's dtype.

    Args:
        x: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` float32/float64.
        strength: scalar, per sample ``(N,)`` or per (sample, channel) ``(N, C)``; 0 leaves it unchanged.
        clamp: clip the result to the input's [min, max] of that sample and channel; bool, ``(N,)`` or
            ``(N, C)``.

    Host arrays with numpy; torch CUDA tensors and cupy arrays with their own library on their device
    (the same operations in the same order); tensorflow/jax GPU arrays through a host round trip.
    """
    del backend  # one implementation for every backend

    def check(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        n, c, nd = shape[0], shape[1], len(shape) - 2
        if nd not in (2, 3):
            raise ValueError(f"sharpen needs 2 or 3 spatial axes; x has shape {tuple(shape)}")
        k = _per_channel(strength, n, c, "strength").reshape((n, c) + (1,) * nd)
        return k, _per_channel(clamp, n, c, "clamp") != 0

    host, _ = _image(x)
    if isinstance(host, _arrays.CudaArray) and _arrays.namespace(host.obj) in ("torch", "cupy"):
        k, clip = check(tuple(host.shape))
        return _sharpen_arrays(host.obj, k, clip, _arrays.namespace(host.obj))
    return _on_host(x, lambda h: _sharpen_arrays(h, *check(h.shape), "numpy"))


def _sharpen_arrays(h: Any, k: np.ndarray, clip: np.ndarray, library: str) -> Any:
    """``h + k * L(h)`` for a numpy array, torch tensor or cupy array ``h`` (N, C, *spatial), on its device."""
    nd = h.ndim - 2
    if library == "torch":
        import torch
        import torch.nn.functional as tnf

        padded = tnf.pad(h, (1, 1) * nd, mode="replicate")
        k = torch.as_tensor(k, dtype=h.dtype, device=h.device)
    elif library == "cupy":
        import cupy

        padded = cupy.pad(h, [(0, 0), (0, 0)] + [(1, 1)] * nd, mode="edge")
        k = cupy.asarray(k, dtype=h.dtype)
    else:
        padded = np.pad(h, [(0, 0), (0, 0)] + [(1, 1)] * nd, mode="edge")
        k = k.astype(h.dtype)
    inner = (slice(None), slice(None)) + (slice(1, -1),) * nd
    lap = h * (2 * nd)
    for a in range(nd):
        for lo in (0, 2):
            sl = list(inner)
            sl[2 + a] = slice(lo, lo + h.shape[2 + a])
            lap = lap - padded[tuple(sl)]
    out = h + k * lap
    for i, ch in zip(*np.nonzero(clip)):
        out[i, ch] = out[i, ch].clip(h[i, ch].min(), h[i, ch].max())
    return out


def median_filter(x: Any, size: Any, *, backend: str = "auto") -> Any:
    """Median filter of every sample and channel, ``scipy.ndimage.median_filter(x[i, c], size)``.

    As batchgeneratorsv2's ``MedianFilterTransform`` (a cube of edge ``size`` over the spatial axes,
    scipy's default border mode 'reflect').

    Args:
        x: ``(N, C, *spatial)`` float32/float64.
        size: int >= 1; scalar, per sample ``(N,)`` or per (sample, channel) ``(N, C)``; 0 or 1 leaves
            that sample and channel unchanged.

    Runs on the host (scipy); CUDA arrays are copied to the host and the result back to their device.
    """
    from scipy.ndimage import median_filter as _median

    del backend  # one host implementation for every backend

    def run(h: np.ndarray) -> np.ndarray:
        n, c = h.shape[:2]
        sizes = _per_channel(size, n, c, "size")
        if np.any(sizes < 0) or np.any(sizes != np.round(sizes)):
            raise ValueError(f"median filter size must be a non-negative integer, got {size!r}")
        out = np.array(h, copy=True)
        for i in range(n):
            for ch in range(c):
                if sizes[i, ch] > 1:
                    out[i, ch] = _median(h[i, ch], size=int(sizes[i, ch]))
        return out

    return _on_host(x, run)


def simulate_low_resolution(
    x: Any, zoom: Any, order_down: int = 0, order_up: int = 3, *, backend: str = "auto"
) -> Any:
    """Downsample by ``zoom`` (< 1) and upsample back to the original shape, as batchgenerators.

    The spatial axes are resized to ``round(shape * zoom)`` (at least 1) with ``order_down`` and back
    with ``order_up``, pixel centres aligned (mode 'nearest'). Nearest down (``order_down=0``) and
    linear up (``order_up=1``) are torch's ``interpolate(mode='nearest-exact')`` and
    ``mode='(bi/tri)linear', align_corners=False``, which batchgeneratorsv2's
    ``SimulateLowResolutionTransform`` uses; ``order_up=3`` is a cubic B-spline (batchgenerators v1's
    ``order_upsample=3``). A channel whose zoom is 1 on every axis is returned unchanged.

    Args:
        x: ``(N, C, *spatial)`` float32/float64.
        zoom: in (0, 1]; a scalar, per sample ``(N,)``, per sample and axis ``(N, ndim)`` or per sample,
            channel and axis ``(N, C, ndim)`` (a 1-D array is always per sample).

    CUDA inputs (torch CUDA tensors, cupy arrays, tensorflow GPU tensors, jax GPU arrays) are resized
    on the GPU (two ``affine_resample`` calls per sample, or per channel where the channels' zooms
    differ, on the CUDA executor) and returned on their device, in their framework.
    """
    from delira.augment.functional.spatial import affine_resample

    host, wrap = _image(x)
    n, c, nd = host.shape[0], host.shape[1], host.ndim - 2
    z = np.asarray(zoom, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None, None]  # per sample
    elif z.ndim == 2:
        z = z[:, None, :]  # per sample and axis
    if z.ndim not in (0, 3):
        raise ValueError(
            f"zoom has shape {np.shape(zoom)}; expected a scalar, (N,), (N, ndim) or (N, C, ndim) "
            f"with N={n}, C={c}, ndim={nd}"
        )
    zooms = v.finite_array(z, "zoom", (n, c, nd))
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

    def resize(part: Any, z: np.ndarray) -> Any:  # part: (C', *spatial), z: (ndim,)
        if np.all(z == 1.0):
            return part
        small = tuple(int(s) for s in np.maximum(np.round(shape * z), 1))
        low = affine_resample(part, matrix(spatial, small), small, order_down, "nearest", backend=backend)
        return affine_resample(low, matrix(small, spatial), spatial, order_up, "nearest", backend=backend)

    def channel_groups(i: int) -> list[tuple[slice, np.ndarray]]:
        if np.all(zooms[i] == zooms[i, :1]):
            return [(slice(0, c), zooms[i, 0])]  # one call for every channel of the sample
        return [(slice(k, k + 1), zooms[i, k]) for k in range(c)]

    if isinstance(host, _arrays.CudaArray):
        device = host.obj  # the framework array (torch: detached)
        samples = []
        for i in range(n):
            parts = [resize(device[i][sl], z) for sl, z in channel_groups(i)]
            samples.append((parts[0] if len(parts) == 1 else _arrays.concat(parts, device))[None])
        return _arrays.concat(samples, device)
    out = np.empty_like(host)
    for i in range(n):
        for sl, z in channel_groups(i):
            out[i, sl] = resize(host[i, sl], z)
    return wrap(out)
