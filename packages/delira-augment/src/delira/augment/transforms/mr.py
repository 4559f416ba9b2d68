"""MR artefact transforms (TorchIO's RandomBiasField, RandomMotion, RandomGhosting, RandomSpike).

Each class draws its parameters per sample from the generator and calls
:mod:`delira.augment.functional.mr`. Differences from TorchIO that hold for all four: delira works on
batches ``(N, C, *spatial)`` and draws one set of parameters per sample (TorchIO: per image), the same
for every channel of the sample; arrays have no affine, so everything is in voxels and array axes; the
draws come from the numpy generator (same seed, same output), not from torch's global generator.

Ranges follow TorchIO's rule: ``(a, b)`` draws uniformly from ``[a, b]`` (integers: inclusive); a single
number ``d`` means ``(-d, d)``, or ``(0, d)`` for parameters that cannot be negative. Only ``data`` is
changed; a segmentation passes through. Inputs: see :mod:`delira.augment.functional.mr` (numpy and
CPU tensors on the host, torch CUDA tensors and cupy arrays on their GPU, tensorflow/jax GPU arrays
through a host round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment.functional import mr as F
from delira.augment.transforms.base import Transform


def torchio_range(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
) -> tuple[float, float]:
    """TorchIO's range rule: ``(a, b)`` as given; ``d`` means ``(-d, d)``, or ``(minimum, d)``.

    Raises:
        TypeError: not a number or a pair (or not ints where ``integer``).
        ValueError: a negative single number, ``a > b``, or a bound outside ``[minimum, maximum]``.
    """
    kind = "an int" if integer else "a number"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        d = v.finite(value, name)
        if d < 0:
            raise ValueError(
                f"{name}={value!r}: a single number d means the range (-d, d) or (0, d), so it must be "
                f">= 0; pass a (min, max) pair for other ranges"
            )
        lo, hi = (-d if minimum is None else float(minimum)), d
        pair: tuple[Any, Any] = (value, value)
    else:
        if (
            isinstance(value, (str, bytes))
            or not isinstance(value, (Sequence, np.ndarray))
            or len(value) != 2
        ):
            raise TypeError(f"{name} must be {kind} or a (min, max) pair, got {value!r}")
        lo, hi = v.value_range(tuple(value), name)
        pair = tuple(value)
    if integer and any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in pair):
        raise TypeError(f"{name}={value!r} must be an int or a pair of ints")
    if minimum is not None and lo < minimum:
        raise ValueError(f"{name}={value!r}: the range must lie in [{minimum}, ...]; got min {lo}")
    if maximum is not None and hi > maximum:
        raise ValueError(f"{name}={value!r}: the range must lie in [..., {maximum}]; got max {hi}")
    return (int(lo), int(hi)) if integer else (lo, hi)


def _draw(rng: np.random.Generator, bounds: tuple[float, float], size: Any) -> np.ndarray:
    lo, hi = bounds
    return rng.uniform(lo, hi, size) if hi > lo else np.full(size, lo, dtype=np.float64)


class _MRTransform(Transform):
    """Draws ``params`` for every sample (:meth:`draw`), applies ``artefact(x[idx], params, idx)`` to the
    samples drawn active (``idx``) and leaves the others unchanged."""

    def draw(self, rng: np.random.Generator, n: int, spatial: tuple[int, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def artefact(self, x: Any, params: dict[str, Any], idx: np.ndarray) -> Any:
        raise NotImplementedError

    def apply(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if batch.get(self.data_key) is None:
            return batch
        arr, ns, wrap = F._as_array(batch[self.data_key], self.data_key)
        n, spatial = int(arr.shape[0]), tuple(int(s) for s in arr.shape[2:])
        active = self.draw_active(rng, n)
        params = self.draw(rng, n, spatial)
        idx = np.flatnonzero(active)
        if idx.size == n:
            batch[self.data_key] = wrap(self.artefact(arr, params, idx))
        elif idx.size:
            out = F._copy(arr, ns)
            done = self.artefact(_arrays.take(arr, idx), params, idx)
            for j, i in enumerate(idx):
                out[int(i)] = done[j]
            batch[self.data_key] = wrap(out)
        return batch


class BiasField(_MRTransform):
    """Smooth multiplicative MR bias field: ``x * exp(polynomial)`` (TorchIO's ``RandomBiasField``).

    Per sample, every coefficient of the polynomial of degree ``order`` in the voxel coordinates (scaled
    to [-1, 1] per axis) is drawn from ``coefficients``; see :func:`~delira.augment.functional.mr.bias_field`.

    Args:
        coefficients: range of the coefficients; a single ``c`` means ``(-c, c)`` (TorchIO's default 0.5).
        order: degree of the polynomial (int >= 0); 3D has ``(order+1)(order+2)(order+3)/6`` terms, 2D
            ``(order+1)(order+2)/2`` (TorchIO's 2D images have a third axis of size 1, which gives the
            same terms).
        p: probability per sample.
    """

    def __init__(self, coefficients: Any = 0.5, order: int = 3, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.coefficients = torchio_range(coefficients, "coefficients")
        F.bias_field_exponents(order, 3)  # checks order
        self.order = int(order)

    def draw(self, rng, n, spatial):
        k = len(F.bias_field_exponents(self.order, len(spatial)))
        return {"coefficients": _draw(rng, self.coefficients, (n, k))}

    def artefact(self, x, params, idx):
        return F.bias_field(x, params["coefficients"][idx], self.order)


class Motion(_MRTransform):
    """MR motion artefact: k-space assembled from the image in several positions (TorchIO's ``RandomMotion``).

    Per sample, ``num_transforms`` rigid movements are drawn: rotation angles (degrees) from ``degrees``
    (3D: three angles; 2D: one, in the image plane, as TorchIO rotates 2D images about their normal only)
    and translations (voxels; TorchIO: mm) from ``translation`` for every axis; movement ``k`` happens at
    time ``(k + 1) / (T + 1)`` plus uniform noise of +-30 % of that step, as in TorchIO. See
    :func:`~delira.augment.functional.mr.motion` for how the k-spaces are combined (split along the last
    spatial axis) and :func:`~delira.augment.functional.mr.motion_matrices` for the rotation convention
    (delira's: about the array centre ``(shape - 1) / 2``; TorchIO rotates about ``shape / 2`` in LPS).
    In 2D TorchIO splits k-space along its dummy third axis of size 1, so its 2D motion is one moved
    copy; delira splits 2D images along their last axis, as in 3D.

    Args:
        degrees: range of the angles; a single ``d`` means ``(-d, d)``.
        translation: range of the translations in voxels; a single ``t`` means ``(-t, t)``.
        num_transforms: number of movements (int >= 1).
        order: interpolation of the moved copies: 0, 1 (linear, TorchIO's default) or 3.
        p: probability per sample.

    CUDA inputs (torch, cupy) are resampled by the CUDA executor and transformed with torch.fft/cupy.fft.
    """

    def __init__(
        self,
        degrees: Any = 10,
        translation: Any = 10,
        num_transforms: int = 2,
        order: int = 1,
        p: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.degrees = torchio_range(degrees, "degrees")
        self.translation = torchio_range(translation, "translation")
        if (
            isinstance(num_transforms, bool)
            or not isinstance(num_transforms, (int, np.integer))
            or num_transforms < 1
        ):
            raise ValueError(
                f"num_transforms={num_transforms!r} must be an int >= 1 (the number of movements)"
            )
        self.num_transforms = int(num_transforms)
        if order not in (0, 1, 3):
            raise ValueError(f"order={order!r}; use 0 (nearest), 1 (linear) or 3 (cubic B-spline)")
        self.order = order

    def draw(self, rng, n, spatial):
        nd, t = len(spatial), self.num_transforms
        angles = _draw(rng, self.degrees, (n, t, 1 if nd == 2 else 3))
        shifts = _draw(rng, self.translation, (n, t, nd))
        step = 1.0 / (t + 1)
        times = np.arange(1, t + 1) * step + rng.uniform(-0.3 * step, 0.3 * step, (n, t))
        mats = np.stack([F.motion_matrices(angles[i], shifts[i], spatial) for i in range(n)])
        return {"matrices": mats, "times": np.clip(times, 0.0, 1.0)}

    def artefact(self, x, params, idx):
        return F.motion(x, params["matrices"][idx], params["times"][idx], self.order, backend=self.backend)


class Ghosting(_MRTransform):
    """MR ghosting: periodic k-space planes scaled down along one axis (TorchIO's ``RandomGhosting``).

    Per sample: the number of ghosts from ``num_ghosts`` (ints, inclusive), the axis from ``axes`` (axes
    beyond a 2D image's two are dropped, as TorchIO drops axis 2), the strength from ``intensity`` and
    the restored centre fraction from ``restore``; see :func:`~delira.augment.functional.mr.ghosting`.

    Args:
        num_ghosts: range of ints >= 0; a single ``g`` means ``(0, g)``.
        axes: spatial axes to choose from (0, 1, 2; TorchIO's anatomical names are not taken).
        intensity: range >= 0; a single ``s`` means ``(0, s)``.
        restore: None (restore the centre plane only, TorchIO's default) or a range in [0, 1]; a single
            ``r`` means ``(0, r)``.
        p: probability per sample.
    """

    def __init__(
        self,
        num_ghosts: Any = (4, 10),
        axes: Any = (0, 1, 2),
        intensity: Any = (0.5, 1),
        restore: Any = 0.02,
        p: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.num_ghosts = torchio_range(num_ghosts, "num_ghosts", minimum=0, integer=True)
        axes = (axes,) if isinstance(axes, (int, np.integer)) else axes
        if (
            not isinstance(axes, (Sequence, np.ndarray))
            or len(axes) == 0
            or any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes)
        ):
            raise ValueError(f"axes={axes!r} must be spatial axes from (0, 1, 2), e.g. (0, 1, 2) or 1")
        self.axes = tuple(int(a) for a in axes)
        self.intensity = torchio_range(intensity, "intensity", minimum=0)
        self.restore = None if restore is None else torchio_range(restore, "restore", minimum=0, maximum=1)

    def draw(self, rng, n, spatial):
        axes = [a for a in self.axes if a < len(spatial)]
        if not axes:
            raise ValueError(
                f"Ghosting(axes={self.axes}) has no axis of this {len(spatial)}D batch; use axes 0 or 1 for 2D"
            )
        lo, hi = self.num_ghosts
        return {
            "num_ghosts": rng.integers(lo, hi + 1, n),
            "axis": np.asarray(axes)[rng.integers(0, len(axes), n)],
            "intensity": _draw(rng, self.intensity, n),
            "restore": np.full(n, np.nan) if self.restore is None else _draw(rng, self.restore, n),
        }

    def artefact(self, x, params, idx):
        return F.ghosting(
            x,
            params["num_ghosts"][idx],
            params["axis"][idx],
            params["intensity"][idx],
            params["restore"][idx],
        )


class Spike(_MRTransform):
    """MR spike (herringbone) artefact: bright points in k-space (TorchIO's ``RandomSpike``).

    Per sample: the number of spikes from ``num_spikes`` (ints, inclusive), their positions uniformly in
    k-space and the ratio to the spectrum's maximum from ``intensity``; see
    :func:`~delira.augment.functional.mr.spike`.

    Args:
        num_spikes: range of ints >= 0; a single ``k`` means ``(0, k)``; default ``(1, 1)``: one spike,
            TorchIO's default.
        intensity: range; a single ``r`` means ``(-r, r)``.
        p: probability per sample.
    """

    def __init__(
        self, num_spikes: Any = (1, 1), intensity: Any = (1, 3), p: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        self.num_spikes = torchio_range(num_spikes, "num_spikes", minimum=0, integer=True)
        self.intensity = torchio_range(intensity, "intensity")

    def draw(self, rng, n, spatial):
        lo, hi = self.num_spikes
        counts = rng.integers(lo, hi + 1, n)
        return {
            "positions": [rng.random((int(k), len(spatial))) for k in counts],
            "intensity": _draw(rng, self.intensity, n),
        }

    def artefact(self, x, params, idx):
        return F.spike(x, [params["positions"][i] for i in idx], params["intensity"][idx])
