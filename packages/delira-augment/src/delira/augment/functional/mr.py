"""MR artefacts with explicit parameters: bias field, motion, ghosting and spike (TorchIO's semantics).

Every function takes an image batch ``x`` ``(N, C, H, W)`` or ``(N, C, D, H, W)`` float32/float64 and
per-sample parameters, and returns a new array of x's shape, dtype and type. The k-space of a channel
is its centred n-dimensional Fourier transform over the spatial axes (``fftshift(fftn(x))``, computed
in x's precision: complex64 for float32); images come back as the real part of the inverse.

Where the arrays live: numpy arrays and CPU tensors (torch, tensorflow, jax) are computed with
``numpy.fft`` on the host. torch CUDA tensors and cupy arrays stay on their device: the FFTs run in
``torch.fft`` / ``cupy.fft`` and :func:`motion` resamples with delira's CUDA executor. tensorflow and
jax GPU arrays make a host round trip (copied to the host, computed there, put back on their device).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment.functional.spatial import rotation_matrix, spatial_transform


# --- arrays: numpy on the host, torch / cupy on the GPU ----------------------------------------------
def _back_to_device(x: Any) -> Callable[[np.ndarray], Any]:
    """The function that puts a host result back on the GPU of the tensorflow/jax array ``x``."""
    ns = _arrays.namespace(x)
    if ns == "tensorflow":
        import tensorflow as tf

        def wrap_tf(out: np.ndarray) -> Any:
            with tf.device(x.device):
                return tf.identity(tf.convert_to_tensor(out))

        return wrap_tf
    import jax

    device = next(iter(x.devices()))
    return lambda out: jax.device_put(out, device)


def _as_array(x: Any, name: str = "x") -> tuple[Any, str, Callable[[Any], Any]]:
    """``(array, namespace, wrap)``: what the MR ops compute on, checked as an image batch.

    numpy arrays and CPU tensors: a numpy view (``"numpy"``) and the wrapper back to x's type. torch CUDA
    tensors and cupy arrays: the array itself, detached (``"torch"`` / ``"cupy"``). tensorflow and jax
    GPU arrays: a host copy (``"numpy"``) and a wrapper that puts the result back on their device.
    """
    if _arrays.is_cuda_array(x):
        ns = _arrays.namespace(x)
        if ns not in ("torch", "cupy", "tensorflow", "jax"):
            raise TypeError(
                f"{name} is a CUDA array of type {type(x).__name__}; pass a torch CUDA tensor or a cupy array"
            )
        desc = _arrays.CudaArray.from_array(x, name)
        v.batch_array(desc, name)
        v.image_dtype(desc, name)
        if ns in ("torch", "cupy"):
            return _arrays.detach(x), ns, lambda out: out
        return _arrays.cuda_to_host(x), "numpy", _back_to_device(x)
    host, wrap = _arrays.to_host(x, name)
    v.batch_array(host, name)
    v.image_dtype(host, name)
    return host, "numpy", wrap


def _copy(a: Any, ns: str) -> Any:
    return a.clone() if ns == "torch" else a.copy()


def _from_host(a: np.ndarray, like: Any, ns: str) -> Any:
    """The small host array ``a`` on ``like``'s device."""
    if ns == "torch":
        import torch

        return torch.as_tensor(a, device=like.device)
    if ns == "cupy":
        import cupy

        with like.device:
            return cupy.asarray(a)
    return a


def _kspace(a: Any, ns: str, axes: tuple[int, ...]) -> Any:
    """Centred spectrum of ``a`` over ``axes`` (complex, a's precision)."""
    if ns == "torch":
        import torch

        return torch.fft.fftshift(torch.fft.fftn(a, dim=axes), dim=axes)
    fft = np.fft if ns == "numpy" else __import__("cupy").fft
    return fft.fftshift(fft.fftn(a, axes=axes), axes=axes)


def _image(spectrum: Any, ns: str, axes: tuple[int, ...]) -> Any:
    """Real part of the inverse of :func:`_kspace`."""
    if ns == "torch":
        import torch

        return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=axes), dim=axes).real
    fft = np.fft if ns == "numpy" else __import__("cupy").fft
    return fft.ifftn(fft.ifftshift(spectrum, axes=axes), axes=axes).real


def _rfft_axis(a: Any, ns: str, axis: int) -> Any:
    """``rfft`` of the real array ``a`` along ``axis`` (complex, a's precision)."""
    if ns == "torch":
        import torch

        return torch.fft.rfft(a, dim=axis)
    return (np.fft if ns == "numpy" else __import__("cupy").fft).rfft(a, axis=axis)


def _irfft_axis(s: Any, ns: str, axis: int, n: int) -> Any:
    if ns == "torch":
        import torch

        return torch.fft.irfft(s, n=n, dim=axis)
    return (np.fft if ns == "numpy" else __import__("cupy").fft).irfft(s, n=n, axis=axis)


def _real_part_weights(mask: np.ndarray) -> np.ndarray:
    """The half-spectrum weights ``w`` with ``irfft(w * rfft(a)) == real(ifft(ifftshift(mask) * fft(a)))``.

    ``mask`` is a real multiplier of the centred (fftshifted) spectrum along one axis of length ``L``.
    For real ``a`` the real part of the inverse keeps the Hermitian part of the product, which is the
    spectrum times the symmetrised mask ``(m[f] + m[-f]) / 2`` (unshifted frequencies ``f``); its first
    ``L // 2 + 1`` entries are what ``irfft`` reads.
    """
    m = np.fft.ifftshift(np.asarray(mask, dtype=np.float64))
    sym = 0.5 * (m + np.roll(m[::-1], 1))  # m[-f mod L]
    return sym[: m.shape[0] // 2 + 1]


def _along(w: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``w`` shaped to broadcast along ``axis`` of an ``ndim``-dimensional array."""
    shape = [1] * ndim
    shape[axis] = w.shape[0]
    return w.reshape(shape)


def _channel_max_abs(spectrum: Any, ns: str) -> Any:
    """``max |spectrum|`` of every channel of a ``(C, *spatial)`` spectrum, shape ``(C,)``."""
    flat = abs(spectrum).reshape(spectrum.shape[0], -1)
    return flat.amax(dim=1) if ns == "torch" else flat.max(axis=1)


def _per_sample(value: Any, n: int, name: str) -> np.ndarray:
    return v.finite_array(value, name, (n,))


def _per_sample_int(value: Any, n: int, name: str, minimum: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value), (n,)) if np.ndim(value) <= 1 else np.asarray(value)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(f"{name}={value!r} must be an int or one int per sample ({n})")
    if np.any(arr < minimum):
        raise ValueError(f"{name}={value!r}: every entry must be >= {minimum}")
    return arr.astype(np.int64)


# --- bias field --------------------------------------------------------------------------------------
def bias_field_exponents(order: int, ndim: int) -> list[tuple[int, ...]]:
    """The monomials of the bias field polynomial, in the order of its coefficients.

    3D: ``(a, b, c)`` for ``a`` in ``0..order``, ``b`` in ``0..order - a``, ``c`` in ``0..order - a - b``
    (TorchIO's order, ``(order + 1)(order + 2)(order + 3) / 6`` terms). 2D: ``(a, b)`` for ``a`` in
    ``0..order``, ``b`` in ``0..order - a`` (TorchIO's 3D terms with no power of the third axis).
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order={order!r} must be an int >= 0 (the degree of the bias field polynomial)")
    if ndim not in (2, 3):
        raise ValueError(f"ndim={ndim!r}: the bias field is defined for 2 or 3 spatial axes")
    if ndim == 2:
        return [(a, b) for a in range(order + 1) for b in range(order + 1 - a)]
    return [
        (a, b, c) for a in range(order + 1) for b in range(order + 1 - a) for c in range(order + 1 - a - b)
    ]


def bias_field_coordinates(size: int) -> np.ndarray:
    """Voxel coordinates of one axis for the bias field: ``i - (size - 1) / 2`` scaled to ``[-1, 1]``."""
    c = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    return c / c.max() if size > 1 else c


def bias_field(x: Any, coefficients: Any, order: int = 3) -> Any:
    """Multiply every channel of sample ``i`` by ``exp(sum_k coefficients[i, k] * monomial_k)``.

    The monomials (:func:`bias_field_exponents`) are products of powers of the voxel coordinates,
    centred and scaled to ``[-1, 1]`` on every axis (:func:`bias_field_coordinates`), as TorchIO's
    ``BiasField`` computes them; the field is one for all channels of a sample.

    Args:
        x: ``(N, C, *spatial)`` float32/float64 image batch, 2 or 3 spatial axes.
        coefficients: ``(N, K)`` or ``(K,)`` (the same for every sample), ``K`` the number of monomials
            of ``order`` (20 for order 3 in 3D, 10 in 2D).
        order: degree of the polynomial (>= 0).

    Returns:
        The biased batch, x's shape, dtype and type (the field is computed in float64, then cast).
    """
    arr, ns, wrap = _as_array(x)
    n, nd = arr.shape[0], arr.ndim - 2
    exps = bias_field_exponents(order, nd)
    coef = np.asarray(coefficients, dtype=np.float64)
    if coef.ndim == 1:
        coef = coef[None]
    if coef.ndim != 2 or coef.shape[1] != len(exps) or coef.shape[0] not in (1, n):
        raise ValueError(
            f"coefficients has shape {np.shape(coefficients)}; order {order} in {nd}D has {len(exps)} "
            f"terms: pass ({n}, {len(exps)}) or ({len(exps)},)"
        )
    coef = v.finite_array(np.broadcast_to(coef, (n, len(exps))), "coefficients")
    dense = np.zeros((n,) + (order + 1,) * nd)
    for k, e in enumerate(exps):
        dense[(slice(None), *e)] = coef[:, k]
    powers = [
        bias_field_coordinates(s)[None, :] ** np.arange(order + 1)[:, None] for s in arr.shape[2:]
    ]  # per axis (order + 1, size)
    spec = "nab,ai,bj->nij" if nd == 2 else "nabc,ai,bj,ck->nijk"
    if ns == "numpy":
        field = np.exp(np.einsum(spec, dense, *powers, optimize=True))
        return wrap(arr * field.astype(arr.dtype)[:, None])
    terms = [_from_host(a, arr, ns) for a in (dense, *powers)]
    if ns == "torch":
        import torch

        field = torch.einsum(spec, *terms).exp().to(arr.dtype)
    else:
        import cupy

        field = cupy.exp(cupy.einsum(spec, *terms)).astype(arr.dtype)
    return wrap(arr * field[:, None])


# --- ghosting ----------------------------------------------------------------------------------------
def ghosting(x: Any, num_ghosts: Any, axis: Any, intensity: Any, restore: Any = None) -> Any:
    """TorchIO's ghosting: scale every ``num_ghosts``-th k-space plane along ``axis`` by ``1 - intensity``.

    Per sample and channel: the planes ``0, g, 2g, ...`` of the centred k-space along ``axis`` are
    multiplied by ``1 - intensity``, then the central planes are put back as they were: with
    ``restore`` None the centre plane ``size // 2``, else the planes ``mid - r // 2 .. mid + r // 2 - 1``
    with ``r = round(restore * size)`` (none when ``r < 2``, as in TorchIO). ``num_ghosts == 0`` or
    ``intensity == 0`` leaves the sample unchanged.

    Args:
        x: ``(N, C, *spatial)`` float32/float64 image batch, 2 or 3 spatial axes.
        num_ghosts: int >= 0, one or one per sample.
        axis: spatial axis (0 .. ndim - 1), one or one per sample.
        intensity: artefact strength relative to the k-space, one or one per sample.
        restore: None, or the fraction in [0, 1] of k-space around the centre restored; one or one per
            sample (a NaN entry means None for that sample).

    Returns:
        x's shape, dtype and type.
    """
    arr, ns, wrap = _as_array(x)
    n, nd = arr.shape[0], arr.ndim - 2
    num_ghosts = _per_sample_int(num_ghosts, n, "num_ghosts", 0)
    axis = _per_sample_int(axis, n, "axis", 0)
    if np.any(axis >= nd):
        raise ValueError(f"axis={axis.tolist()}: the batch has {nd} spatial axes; use axes 0 .. {nd - 1}")
    intensity = _per_sample(intensity, n, "intensity")
    if restore is None:
        restore = np.full(n, np.nan)
    restore = np.broadcast_to(np.asarray(restore, dtype=np.float64), (n,))
    if np.any(np.isinf(restore)) or np.any((restore < 0) | (restore > 1)):
        raise ValueError(f"restore={restore.tolist()} must be None or fractions in [0, 1]")
    # The multiplier depends on the frequency along ``axis`` only, so the transforms along the other
    # axes cancel: the real part of the inverse is one real FFT pair along ``axis`` with the
    # multiplier's symmetrised half (:func:`_real_part_weights`), equal to TorchIO's n-D FFT pair.
    out = _copy(arr, ns)
    for i in range(n):
        if num_ghosts[i] == 0 or intensity[i] == 0:
            continue
        ax = 1 + int(axis[i])  # in the sample (C, *spatial)
        size = arr.shape[1 + ax]
        mid = size // 2
        if np.isnan(restore[i]):
            lo, hi = mid, mid + 1
        else:
            half = int(np.round(restore[i] * size)) // 2
            lo, hi = mid - half, mid + half
        mask = np.ones(size)
        mask[:: int(num_ghosts[i])] = 1.0 - float(intensity[i])
        mask[lo:hi] = 1.0  # the centre as it was
        w = _along(_real_part_weights(mask), nd + 1, ax).astype(
            np.float32 if arr.dtype.itemsize == 4 else np.float64
        )
        spec = _rfft_axis(arr[i], ns, ax) * _from_host(w, arr, ns)
        out[i] = _irfft_axis(spec, ns, ax, size)
    return wrap(out)


# --- spike -------------------------------------------------------------------------------------------
def spike(x: Any, positions: Any, intensity: Any) -> Any:
    """TorchIO's spike: add ``intensity * max|k|`` at given points of every channel's centred k-space.

    For each position ``p`` (fractions in ``[0, 1)`` of the k-space extent per axis; 0.5 is the centre,
    the zero frequency) the coefficient at ``floor(p * shape)`` gets ``intensity`` times the largest
    magnitude of the channel's spectrum added; the spikes are added one after the other and each one
    measures the maximum anew (so a second spike sees the first), as TorchIO does.

    Args:
        x: ``(N, C, *spatial)`` float32/float64 image batch, 2 or 3 spatial axes.
        positions: per sample a ``(K, ndim)`` array (K may differ, 0 for none): a list of N arrays or
            one ``(N, K, ndim)`` array.
        intensity: ratio of the spike to the spectrum's maximum, one or one per sample.

    Returns:
        x's shape, dtype and type.
    """
    arr, ns, wrap = _as_array(x)
    n, nd = arr.shape[0], arr.ndim - 2
    shape = np.asarray(arr.shape[2:])
    if isinstance(positions, np.ndarray) and positions.ndim == 3:
        positions = list(positions)
    if not isinstance(positions, (list, tuple)) or len(positions) != n:
        raise ValueError(
            f"positions must hold one (K, {nd}) array of k-space fractions per sample ({n}), got {positions!r}"
        )
    pos = []
    for i, p in enumerate(positions):
        p = v.finite_array(p, f"positions[{i}]").reshape(-1, nd) if np.size(p) else np.zeros((0, nd))
        if np.any((p < 0) | (p >= 1)):
            raise ValueError(
                f"positions[{i}]={p.tolist()} must be fractions in [0, 1) of the k-space (0.5 is the centre)"
            )
        pos.append(np.floor(p * shape).astype(np.int64))
    intensity = _per_sample(intensity, n, "intensity")
    axes = tuple(range(1, nd + 1))
    out = _copy(arr, ns)
    for i in range(n):
        if intensity[i] == 0 or len(pos[i]) == 0:
            continue
        if ns == "numpy":
            out[i] = _spike_host(arr[i], pos[i], float(intensity[i]))
            continue
        spec = _kspace(arr[i], ns, axes)
        for index in pos[i]:
            at = (slice(None), *(int(j) for j in index))
            spec[at] += _channel_max_abs(spec, ns) * float(intensity[i])
        out[i] = _image(spec, ns, axes)
    return wrap(out)


def _spike_host(a: np.ndarray, indices: np.ndarray, factor: float) -> np.ndarray:
    """:func:`spike` of one sample ``(C, *spatial)`` on the host, without an inverse FFT.

    A spike of value ``d`` at the (unshifted) frequency ``f`` adds the plane wave
    ``d / size * cos(2 pi f . n / shape)`` to the image; only the spectrum's maximum needs the forward
    transform, and a real FFT holds every magnitude (``|X[-f]| = |X[f]|``). The values at the spikes and
    the maximum are tracked as the spikes are added, as TorchIO's sequence of additions does.
    """
    nd = a.ndim - 1
    shape = np.asarray(a.shape[1:])
    half = np.fft.rfftn(a, axes=tuple(range(1, nd + 1)))  # (C, *shape[:-1], L // 2 + 1)
    half_shape = half.shape[1:]
    last, n_vox = int(shape[-1]), float(np.prod(shape))
    out = a.copy()
    grids = [np.arange(s) / s for s in shape]

    def value(h: np.ndarray, f: tuple[int, ...]) -> complex:
        if f[-1] <= last // 2:
            return complex(h[f])
        return complex(np.conj(h[tuple(int(j) for j in (-np.asarray(f)) % shape)]))

    def untouched_max(mag: np.ndarray, current: dict) -> float:
        """The largest magnitude of an entry no spike has touched (``mag`` is changed: spent entries -inf)."""
        while True:
            h = int(np.argmax(mag))
            hi = tuple(int(j) for j in np.unravel_index(h, half_shape))
            mirror = tuple(int(j) for j in (-np.asarray(hi)) % shape)
            preimages = [hi] if mirror[-1] <= last // 2 else [hi, mirror]
            if not all(q in current for q in preimages) or not np.isfinite(mag[h]):
                return float(mag[h])
            mag[h] = -np.inf  # every full-spectrum entry of this half entry has a spike: look further

    for c in range(a.shape[0]):
        mag = np.abs(half[c]).ravel()
        original: dict[tuple[int, ...], complex] = {}
        current: dict[tuple[int, ...], complex] = {}
        for index in indices:
            f = tuple(int(j) for j in (np.asarray(index) - shape // 2) % shape)  # unshifted frequency
            if f not in current:
                original[f] = current[f] = value(half[c], f)
            peak = max(max(abs(z) for z in current.values()), untouched_max(mag, current))
            current[f] += peak * factor
        for f, z in current.items():
            # Re(d exp(i (t_0 + ... + t_last))): the phase of all axes but the last as a complex
            # (d-1)-D array, then one real outer step with the last axis' cos and sin.
            plane = (z - original[f]) / n_vox * np.exp(2j * np.pi * f[0] * grids[0])
            for d in range(1, nd - 1):
                plane = np.multiply.outer(plane, np.exp(2j * np.pi * f[d] * grids[d]))
            theta = 2 * np.pi * f[-1] * grids[-1]
            pr, pi = plane.real.astype(a.dtype)[..., None], plane.imag.astype(a.dtype)[..., None]
            out[c] += pr * np.cos(theta).astype(a.dtype) - pi * np.sin(theta).astype(a.dtype)
    return out


# --- motion ------------------------------------------------------------------------------------------
def motion_matrices(degrees: Any, translation: Any, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Rigid maps of ``T`` movements about the centre of the array, in voxels.

    The map of movement ``t`` takes an output voxel ``o`` to the input coordinate
    ``R_t (o - c) + c + translation[t]`` with ``c = (shape - 1) / 2`` and ``R_t`` delira's
    :func:`~delira.augment.functional.rotation_matrix` of ``degrees[t]`` (2D: one angle; 3D: three,
    the rotation of the plane of the other two axes, applied for axis 0, then 1, then 2).

    Args:
        degrees: ``(T,)`` (2D) or ``(T, 3)`` (3D) angles in degrees.
        translation: ``(T, ndim)`` voxels.
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(T, ndim, ndim + 1)`` float64, as :func:`motion` takes them.
    """
    nd = len(spatial_shape)
    if nd not in (2, 3):
        raise ValueError(f"spatial_shape={spatial_shape!r} must have 2 or 3 axes")
    deg = v.finite_array(degrees, "degrees")
    deg = deg.reshape(-1, 1) if nd == 2 else deg
    if deg.ndim != 2 or deg.shape[1] != (1 if nd == 2 else 3):
        raise ValueError(f"degrees has shape {np.shape(degrees)}; expected (T,) in 2D or (T, 3) in 3D")
    t = v.finite_array(translation, "translation", (deg.shape[0], nd))
    c = (np.asarray(spatial_shape, dtype=np.float64) - 1.0) / 2.0
    out = np.empty((deg.shape[0], nd, nd + 1))
    for k in range(deg.shape[0]):
        r = rotation_matrix(np.radians(deg[k]), nd)
        out[k, :, :nd] = r
        out[k, :, nd] = c + t[k] - r @ c
    return out


def motion(x: Any, matrices: Any, times: Any, order: int = 1, *, backend: str = "auto") -> Any:
    """TorchIO's motion: k-space assembled from the image seen in ``T + 1`` positions over time.

    For each sample the image is resampled under each of its ``T`` rigid maps (delira's resampler,
    constant border with the channel's minimum outside, as TorchIO's default pixel value). The
    centred k-spaces of the unmoved image and the ``T`` moved ones are cut along the last spatial axis
    at ``floor(L * times)`` (``L`` its length): segment ``k`` (from ``floor(L * times[k - 1])`` to
    ``floor(L * times[k])``, the last one to ``L``) is taken from position ``k``, except that the unmoved
    image and the position of the segment that holds the centre (the first ``k`` with
    ``times[k - 1] > 0.5``, else the last) are swapped, so the centre of k-space is unmoved. The
    output is the real part of the inverse transform.

    Args:
        x: ``(N, C, *spatial)`` float32/float64 image batch, 2 or 3 spatial axes.
        matrices: ``(N, T, ndim, ndim + 1)`` or ``(T, ndim, ndim + 1)`` maps from output voxel index to
            input coordinate (:func:`motion_matrices`), ``T >= 1``.
        times: ``(N, T)`` or ``(T,)`` increasing times in ``[0, 1]`` of the movements.
        order: interpolation: 0 nearest, 1 linear (TorchIO's default 'linear'), 3 cubic B-spline.
        backend: the resampler's backend ('auto', 'cpu', 'cuda', 'batchgenerators').

    Returns:
        x's shape, dtype and type.
    """
    arr, ns, wrap = _as_array(x)
    n, nd = arr.shape[0], arr.ndim - 2
    spatial = tuple(int(s) for s in arr.shape[2:])
    m = v.finite_array(matrices, "matrices")
    if m.ndim == 3:
        m = np.broadcast_to(m, (n, *m.shape))
    if m.ndim != 4 or m.shape[0] != n or m.shape[2:] != (nd, nd + 1) or m.shape[1] < 1:
        raise ValueError(
            f"matrices has shape {np.shape(matrices)}; expected (N, T, ndim, ndim + 1) = "
            f"({n}, T, {nd}, {nd + 1}) or (T, {nd}, {nd + 1}) with T >= 1"
        )
    n_moves = m.shape[1]
    t = v.finite_array(times, "times")
    t = np.broadcast_to(t, (n, n_moves)) if t.ndim == 1 and t.shape == (n_moves,) else t
    if t.shape != (n, n_moves):
        raise ValueError(f"times has shape {np.shape(times)}; expected (N, T) = {(n, n_moves)} or (T,)")
    if np.any((t < 0) | (t > 1)) or np.any(np.diff(t, axis=1) < 0):
        raise ValueError(f"times={t.tolist()} must increase and lie in [0, 1]")
    if order not in (0, 1, 3):
        raise ValueError(f"order={order!r}; use 0 (nearest), 1 (linear) or 3 (cubic B-spline)")
    # Outside the image every moved copy takes the channel's minimum (TorchIO's default pixel value):
    # resample x - min with 0 outside, and add min back at the end (the interpolation weights sum to 1,
    # and a constant only touches the zero frequency, which comes from one image).
    lo = arr.reshape(n, arr.shape[1], -1)
    lo = (lo.amin(dim=2) if ns == "torch" else lo.min(axis=2)).reshape(n, arr.shape[1], *(1,) * nd)
    shifted = arr - lo
    moved = [shifted]
    for k in range(n_moves):
        out_k, _ = spatial_transform(
            shifted,
            affine=np.ascontiguousarray(m[:, k]),
            patch_size=spatial,
            order_data=order,
            mode_data="constant",
            cval_data=0.0,
            backend=backend,
        )
        moved.append(out_k)
    # Each position contributes a band of frequencies along the last axis only, so the transforms
    # along the other axes cancel: per position one real FFT along the last axis, weighted with the
    # symmetrised band (:func:`_real_part_weights`), summed, one inverse; equal to TorchIO's n-D FFTs.
    length = spatial[-1]
    real = np.float32 if arr.dtype.itemsize == 4 else np.float64
    out = _copy(arr, ns)
    for i in range(n):
        later = np.flatnonzero(t[i] > 0.5)
        centre = int(later[0]) if later.size else n_moves
        source = list(range(n_moves + 1))
        source[0], source[centre] = source[centre], source[0]
        cuts = [0, *(int(c) for c in np.floor(length * t[i])), length]
        spec = None
        for k in range(n_moves + 1):
            if cuts[k + 1] <= cuts[k]:
                continue  # an empty band
            band = np.zeros(length)
            band[cuts[k] : cuts[k + 1]] = 1.0
            w = _from_host(_along(_real_part_weights(band), nd + 1, nd).astype(real), arr, ns)
            part = _rfft_axis(moved[source[k]][i], ns, nd) * w
            spec = part if spec is None else spec + part
        out[i] = _irfft_axis(spec, ns, nd, length) + lo[i]
    return wrap(out)
