"""Base class of the transforms: random parameters per sample, batchgenerators-style calls."""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment._engine import BACKENDS


def as_generator(rng: Any) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed or a SeedSequence."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


class Transform:
    """A batch transform: ``transform(**batch) -> batch``.

    The batch is a dict with an image array under ``data_key`` ``(N, C, H, W)`` or ``(N, C, D, H, W)``
    float32/float64 and optionally a segmentation under ``seg_key`` ``(N, Cs, *spatial)`` uint8/int16/
    int32/int64 with the same ``N`` and spatial shape; other entries pass through unchanged. Arrays may
    be numpy arrays, torch/tensorflow CPU tensors or jax CPU arrays, or CUDA arrays (torch CUDA tensors,
    cupy arrays, tensorflow GPU tensors, jax GPU arrays), which run on the CUDA executor (every
    transform); outputs keep the type and device. Checked when called (see the package README,
    "Inputs"): float16 data is computed as float32
    and returned as float32; a bool seg is computed as uint8 and returned as bool; any strides
    (transposed, sliced, negative) are read as they are; torch tensors that require grad are read
    detached (outputs carry no autograd history); integer data, another rank, an empty axis or a seg
    that does not match data raise a TypeError/ValueError naming the key.

    Random parameters are drawn per sample from ``rng``: a ``numpy.random.Generator`` or seed passed to
    the call (``transform(rng=7, **batch)``, as delira.data's loader does), or else the transform's own
    generator created from ``seed``. The same seed gives the same output.

    Args:
        p: probability that a sample is transformed (drawn per sample).
        data_key, seg_key: batch keys of the image and the segmentation.
        seed: seed of the transform's own generator.
        backend: 'auto', 'cpu', 'cuda' or 'batchgenerators' ('auto' runs CUDA inputs on the GPU).
    """

    fusable = False  # intensity transforms that the fused kernel can apply in its pass

    def __init__(
        self,
        p: float = 1.0,
        *,
        data_key: str = "data",
        seg_key: str | None = "seg",
        seed: Any = None,
        backend: str = "auto",
    ) -> None:
        self.p = v.probability(p, "p")
        self.data_key = data_key
        self.seg_key = seg_key
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; use one of {', '.join(map(repr, BACKENDS))}")
        self.backend = backend
        self._rng = np.random.default_rng(seed)

    def __call__(self, rng: Any = None, **batch: Any) -> dict[str, Any]:
        gen = self._rng if rng is None else as_generator(rng)
        if self.data_key not in batch and (self.seg_key is None or self.seg_key not in batch):
            raise KeyError(
                f"{type(self).__name__}: the batch has neither {self.data_key!r} nor {self.seg_key!r}; "
                f"it has {sorted(batch)}. Set data_key/seg_key to the names your batch uses"
            )
        checked, seg_was_bool = v.transform_inputs(batch, self.data_key, self.seg_key, type(self).__name__)
        out = self.apply(checked, gen)
        if seg_was_bool and out.get(self.seg_key) is not None:
            out[self.seg_key] = _arrays.cast(out[self.seg_key], "bool")
        return out

    def apply(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    # Helpers for subclasses.
    def batch_size(self, batch: dict[str, Any]) -> int:
        x = batch.get(self.data_key)
        if x is None:
            x = batch[self.seg_key]
        return int(x.shape[0])

    def spatial_shape(self, batch: dict[str, Any]) -> tuple[int, ...]:
        x = batch.get(self.data_key)
        if x is None:
            x = batch[self.seg_key]
        return tuple(int(s) for s in x.shape[2:])

    def draw_active(self, rng: np.random.Generator, n: int, p: float | None = None) -> np.ndarray:
        return rng.random(n) < (self.p if p is None else p)

    def has_seg(self, batch: dict[str, Any]) -> bool:
        return self.seg_key is not None and batch.get(self.seg_key) is not None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={val!r}" for k, val in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def uniform(rng: np.random.Generator, bounds: tuple[float, float], size: Any) -> np.ndarray:
    lo, hi = bounds
    return rng.uniform(lo, hi, size) if hi > lo else np.full(size, lo, dtype=np.float64)


SAMPLINGS = ("uniform", "bg")


def draw_factor(
    rng: np.random.Generator, bounds: tuple[float, float], size: Any, sampling: str = "uniform"
) -> np.ndarray:
    """Factors of shape ``size`` drawn from ``bounds = (lo, hi)``.

    ``sampling="uniform"``: uniform in ``(lo, hi)``. ``sampling="bg"``: batchgeneratorsv2's
    ``BGContrast`` (nnU-Net v2's brightness, contrast and gamma ranges): when ``lo < 1``, each value
    comes with probability 1/2 from ``(lo, 1)`` and otherwise from ``(max(lo, 1), hi)``, so shrinking
    and growing are equally likely; with ``lo >= 1`` or ``lo == hi`` it is uniform.
    """
    lo, hi = bounds
    if sampling == "uniform" or lo >= 1 or lo == hi:
        return uniform(rng, (lo, hi), size)
    below = rng.random(size) < 0.5
    return np.where(below, uniform(rng, (lo, 1.0), size), uniform(rng, (max(lo, 1.0), hi), size))


def sampling_name(sampling: Any) -> str:
    """``sampling`` checked: one of :data:`SAMPLINGS`."""
    if sampling not in SAMPLINGS:
        raise ValueError(
            f"sampling={sampling!r} is unknown; use 'uniform' (uniform in the range) or 'bg' "
            "(batchgeneratorsv2's BGContrast: half the draws below 1, half above)"
        )
    return str(sampling)


def to_numpy(x: Any, name: str) -> tuple[np.ndarray, Any]:
    return _arrays.to_host(x, name)


def as_input(x: Any, name: str) -> tuple[Any, Any]:
    """What the engine takes for ``x``, and the wrapper of its result.

    Host arrays: a numpy view and the wrapper back to ``x``'s type (:func:`to_numpy`). CUDA arrays
    (torch CUDA tensors, cupy arrays, tensorflow GPU tensors, jax GPU arrays): their
    :class:`~delira.augment._arrays.CudaArray` description, so the operation runs on the CUDA executor,
    and :func:`~delira.augment._arrays.cuda_wrapper`, which hands the result to ``x``'s framework.
    """
    if _arrays.is_cuda_array(x):
        return _arrays.CudaArray.from_array(x, name), _arrays.cuda_wrapper(x)
    return _arrays.to_host(x, name)
