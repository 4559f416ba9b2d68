"""Composition: Compose (with kernel fusion), RandomApply and OneOf."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from delira.augment import _arrays, _cuda, _engine
from delira.augment import _validate as v
from delira.augment._program import Program
from delira.augment.transforms.base import Transform, as_generator, as_input
from delira.augment.transforms.intensity import IntensityTransform, run_intensity
from delira.augment.transforms.spatial import Mirror, SpatialTransform


def _flip_affine(affine: np.ndarray, flags: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """Compose per-sample mirroring of the output grid into ``affine`` ``(N, ndim, ndim + 1)``."""
    out = affine.copy()
    nd = len(patch)
    for d in range(nd):
        sel = flags[:, d]
        out[sel, :, nd] += out[sel, :, d] * (patch[d] - 1)
        out[sel, :, d] *= -1.0
    return out


def _flip_field(field, flags: np.ndarray, patch: tuple[int, ...]):
    """The elastic field evaluated at mirrored output indices: control points reversed along flipped axes.

    A cubic B-spline is symmetric, so ``e(P - 1 - o)`` is the field with the control array reversed and
    its origin moved to ``P - 1 - origin - (K - 1) * spacing``; the displacement vectors are unchanged
    (mirroring follows the spatial transform, as when run unfused).
    """
    from delira.augment.functional.elastic import ElasticField

    values, origin = field.values.copy(), field.origin.copy()
    k = np.asarray(values.shape[2:])
    for i, f in enumerate(flags):
        for d in np.flatnonzero(f):
            values[i] = np.flip(values[i], axis=1 + d)
            origin[i, d] = patch[d] - 1 - field.origin[i, d] - (k[d] - 1) * field.spacing[i, d]
    return ElasticField(values, origin, field.spacing)


class Compose(Transform):
    """Apply transforms in order, fusing what can share one kernel pass.

    A :class:`SpatialTransform` followed by fusable intensity transforms (noise, brightness, contrast,
    gamma, z-score, clipping) and :class:`Mirror` runs as a single pass: each output voxel is sampled
    once, passes through the intensity operations and is written once. Consecutive intensity
    transforms without a spatial transform are fused the same way. Random parameters are drawn in
    the order of the transforms, so the result does not depend on whether fusion happened, except for
    which voxel receives which noise value. Intensity transforms with per-channel draws
    (``per_channel`` / ``p_per_channel``) join a fused pass only when the data has one channel
    (decided per call); otherwise they end the fused group and run after it, in order, consecutive
    ones as one program on the batch viewed as ``(N * C, 1, *spatial)``.

    Args:
        transforms: the transforms, applied in order.
        fuse: set False to run every transform on its own (for debugging and comparisons).
        seed, backend, data_key, seg_key: as for :class:`Transform`; ``backend`` given here overrides
            the members' backends inside this Compose only (the member objects are not modified).
    """

    def __init__(
        self, transforms: Sequence[Transform], *, fuse: bool = True, backend: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(1.0, backend=backend or "auto", **kwargs)
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not a transform")
        self.fuse = bool(fuse)
        self.override_backend = backend

    def members(self) -> list[Any]:
        """The transforms as this Compose runs them: with ``backend`` given, shallow copies carrying it.

        The transforms passed in are never modified, so one transform object can sit in several
        Composes (with different backends) and still behave as before when used on its own.
        """
        if self.override_backend is None:
            return list(self.transforms)
        out = []
        for t in self.transforms:
            if isinstance(t, Transform) and t.backend != self.override_backend:
                t = copy.copy(t)
                t.backend = self.override_backend
            out.append(t)
        return out

    def apply(self, batch, rng):
        i = 0
        ts = self.members()
        while i < len(ts):
            t = ts[i]
            if self.fuse and isinstance(t, IntensityTransform) and not self._fusable_head(t, batch):
                j = i + 1  # per-channel transforms on C > 1: consecutive ones share one (N * C) program
                while (
                    j < len(ts)
                    and isinstance(ts[j], IntensityTransform)
                    and ts[j].channelwise()
                    and ts[j].data_key == t.data_key
                ):
                    j += 1
                batch = run_intensity(batch, ts[i:j], rng, t.backend)
                i = j
                continue
            if not (self.fuse and self._fusable_head(t, batch)):
                batch = t.apply(batch, rng) if isinstance(t, Transform) else t(rng=rng, **batch)
                i += 1
                continue
            j = i + 1
            while j < len(ts) and self._fusable_after(t, ts[j], _channels(batch, t.data_key)):
                j += 1
            batch = self._run_group(ts[i:j], batch, rng)
            i = j
        return batch

    @staticmethod
    def _fusable_head(t: Any, batch: dict[str, Any]) -> bool:
        if isinstance(t, IntensityTransform):
            return t.fuses_with(_channels(batch, t.data_key))
        return isinstance(t, SpatialTransform)

    @staticmethod
    def _fusable_after(head: Transform, t: Any, channels: int) -> bool:
        same_keys = isinstance(t, Transform) and t.data_key == head.data_key
        if isinstance(t, IntensityTransform):
            return same_keys and t.fuses_with(channels)
        return (
            isinstance(head, SpatialTransform)
            and isinstance(t, Mirror)
            and same_keys
            and t.seg_key == head.seg_key
        )

    def _run_group(self, group: list[Transform], batch, rng):
        head = group[0]
        n, shape = head.batch_size(batch), head.spatial_shape(batch)
        if isinstance(head, SpatialTransform):
            affine, linear, field, patch = head.draw(rng, n, shape, None)
            rest = group[1:]
        else:
            rest = group
        program = Program(n)
        flags = np.zeros((n, len(shape)), dtype=bool)
        for t in rest:
            if isinstance(t, Mirror):
                flags ^= t.draw_flags(rng, n, len(shape))
            else:
                program.extend(t.program(rng, n))
        if not isinstance(head, SpatialTransform):
            host, wrap = as_input(batch[head.data_key], head.data_key)  # CUDA arrays stay on the GPU
            v.image_dtype(host, head.data_key)
            _cuda.check_percentile_input(host, program)
            batch[head.data_key] = wrap(_engine.run_program(host, program, head.backend))
            return batch
        if field is not None and flags.any():
            field = _flip_field(field, flags, patch)
        return head.resample(batch, _flip_affine(affine, flags, patch), linear, field, patch, program)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"


def _channels(batch: dict[str, Any], key: str) -> int:
    """The channel count of ``batch[key]`` (1 when absent: intensity transforms then do nothing)."""
    x = batch.get(key)
    return int(x.shape[1]) if x is not None and len(x.shape) > 1 else 1


def _subset(batch: dict[str, Any], idx: np.ndarray, keys: list[str]) -> dict[str, Any]:
    sub = dict(batch)
    for k in keys:
        sub[k] = _arrays.take(batch[k], idx)
    return sub


def _array_keys(batch: dict[str, Any], n: int) -> list[str]:
    return [k for k, x in batch.items() if hasattr(x, "shape") and len(x.shape) > 0 and int(x.shape[0]) == n]


def _merge(batch: dict[str, Any], parts: list[tuple[np.ndarray, dict[str, Any]]], keys: list[str], n: int):
    out = dict(batch)
    for k in keys:
        pieces: list[Any] = [None] * n
        for idx, sub in parts:
            x = sub[k]
            for pos, i in enumerate(idx):
                pieces[i] = x[pos : pos + 1]
        shapes = {tuple(p.shape[1:]) for p in pieces}
        if len(shapes) > 1:
            raise ValueError(
                f"the chosen transforms gave {k!r} different shapes {sorted(shapes)}; "
                "RandomApply and OneOf need transforms that keep the shape"
            )
        out[k] = _arrays.concat(pieces, batch[k])
    return out


class RandomApply(Transform):
    """Apply ``transform`` to each sample with probability ``p`` (the others pass unchanged)."""

    def __init__(self, transform: Transform, p: float = 0.5, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.transform = transform

    def apply(self, batch, rng):
        n = self.batch_size(batch)
        active = self.draw_active(rng, n)
        keys = _array_keys(batch, n)
        parts = [(np.flatnonzero(~active), _subset(batch, np.flatnonzero(~active), keys))]
        idx = np.flatnonzero(active)
        if idx.size:
            sub = _subset(batch, idx, keys)
            parts.append(
                (
                    idx,
                    self.transform.apply(sub, rng)
                    if isinstance(self.transform, Transform)
                    else self.transform(rng=rng, **sub),
                )
            )
        return _merge(batch, parts, keys, n)


class OneOf(Transform):
    """Apply one of ``transforms`` to each sample, chosen per sample with ``weights`` (uniform by default)."""

    def __init__(
        self, transforms: Sequence[Transform], weights: Sequence[float] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(1.0, **kwargs)
        self.transforms = list(transforms)
        if not self.transforms:
            raise ValueError("OneOf needs at least one transform")
        w = np.ones(len(self.transforms)) if weights is None else v.finite_array(weights, "weights")
        if w.shape != (len(self.transforms),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"weights={weights!r} must be {len(self.transforms)} non-negative numbers with a positive sum"
            )
        self.weights = w / w.sum()

    def apply(self, batch, rng):
        n = self.batch_size(batch)
        choice = rng.choice(len(self.transforms), size=n, p=self.weights)
        keys = _array_keys(batch, n)
        parts = []
        for k, t in enumerate(self.transforms):
            idx = np.flatnonzero(choice == k)
            if idx.size:
                sub = _subset(batch, idx, keys)
                parts.append((idx, t.apply(sub, rng) if isinstance(t, Transform) else t(rng=rng, **sub)))
        return _merge(batch, parts, keys, n)


__all__ = ["Compose", "OneOf", "RandomApply", "as_generator"]
