"""Synthetic 2D/3D phantoms: a deterministic, file-free, learnable dataset for demos and tests.

Each case is drawn from ``numpy.random.default_rng([seed, index])`` only, so case ``i`` is the same
on every machine, in every process, in any order of access. A case is a "body" (a large ellipsoid of
soft tissue) holding several objects; object class ``k`` (``1 .. num_classes - 1``) has its own
brightness and shape (odd classes are spheres, even classes are elongated, rotated ellipsoids). A
smooth multiplicative bias field and Gaussian noise are added on top.

The intensities are chosen so that a voxel's class can be told from its neighbourhood: the gap
between two class brightnesses is larger than the bias and several noise standard deviations, which
is what makes the data learnable by a small UNet within minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from delira.data.datasets import _check_index

__all__ = ["SyntheticPhantomDataset", "class_intensity"]

_BODY_INTENSITY = 0.2


def class_intensity(label: int, num_classes: int) -> float:
    """Mean brightness of class ``label`` before bias and noise (0 outside the body).

    Class 0 inside the body is 0.2; object classes ``k >= 1`` are evenly spaced from 0.2 up to 1.0:
    ``0.2 + 0.8 * k / (num_classes - 1)``.
    """
    if label == 0:
        return _BODY_INTENSITY
    return _BODY_INTENSITY + (1.0 - _BODY_INTENSITY) * label / (num_classes - 1)


def _rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A uniformly random rotation matrix, ``(ndim, ndim)`` float64 with det +1."""
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _paint_ellipsoid(
    image: np.ndarray,
    seg: np.ndarray | None,
    center: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray,
    value: float,
    label: int,
) -> None:
    """Set the voxels inside the ellipsoid to ``value`` (image) and ``label`` (seg), in place."""
    extent = float(np.max(radii)) + 1.0
    lo = np.maximum(np.floor(center - extent).astype(int), 0)
    hi = np.minimum(np.ceil(center + extent).astype(int) + 1, np.asarray(image.shape))
    if np.any(hi <= lo):
        return
    axes = [np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(lo, hi, center)]
    grids = np.meshgrid(*axes, indexing="ij")
    # Coordinates in the ellipsoid's frame: p' = R^T p, inside when sum((p'/r)^2) <= 1.
    inside = np.zeros(grids[0].shape, dtype=np.float64)
    for k in range(len(radii)):
        local = sum(rotation[d, k] * grids[d] for d in range(len(grids)))
        inside += (local / radii[k]) ** 2
    mask = inside <= 1.0
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    image[window][mask] = value
    if seg is not None:
        seg[window][mask] = label


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...], strength: float) -> np.ndarray:
    """A smooth multiplicative field ``1 + strength * f`` with ``f`` in ``[-1, 1]``, float32."""
    field = np.zeros(shape, dtype=np.float64)
    terms = 0.0
    for d, n in enumerate(shape):
        coords = np.linspace(-1.0, 1.0, n)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.cos(np.pi * rng.uniform(0.3, 0.8) * coords + phase)
        field += wave.reshape([n if e == d else 1 for e in range(len(shape))])
        terms += 1.0
    field /= terms
    return (1.0 + strength * field).astype(np.float32)


class SyntheticPhantomDataset:
    """Deterministic phantoms with a segmentation (or a per-case class label), no files needed.

    Args:
        num_cases: number of cases (``len(dataset)``), >= 1.
        shape: spatial shape, 2 axes (2D) or 3 axes (3D), each >= 8.
        num_classes: segmentation: number of labels including background 0 (>= 2); every case
            holds at least one object of every class ``1 .. num_classes - 1``. Classification:
            number of case labels (>= 2); case ``i`` has label ``i % num_classes`` and holds only
            objects of that class's appearance.
        task: ``"segmentation"`` (samples have ``seg``) or ``"classification"`` (``label``).
        seed: the dataset seed; case ``i`` depends on ``(seed, i)`` only.
        noise_std: standard deviation of the additive Gaussian noise.
        bias_strength: amplitude of the smooth multiplicative bias field (0: none).
        max_objects: at most this many objects per case (at least ``num_classes - 1``).

    Sample (segmentation)::

        {"data": float32 (1, *shape), "seg": int16 (1, *shape) in [0, num_classes),
         "case_id": "phantom_0003", "spacing": (1.0, 1.0, 1.0)}

    Classification samples have ``"label": int`` instead of ``"seg"``.
    """

    def __init__(
        self,
        num_cases: int = 16,
        shape: Sequence[int] = (32, 32, 32),
        num_classes: int = 3,
        task: str = "segmentation",
        seed: int = 0,
        noise_std: float = 0.05,
        bias_strength: float = 0.1,
        max_objects: int = 4,
    ) -> None:
        if num_cases < 1:
            raise ValueError(f"num_cases must be >= 1, got {num_cases}; an empty dataset cannot be loaded")
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (2, 3) or min(self.shape) < 8:
            raise ValueError(f"shape must have 2 or 3 axes of at least 8 voxels, got {tuple(shape)}")
        if task not in ("segmentation", "classification"):
            raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_cases = int(num_cases)
        self.num_classes = int(num_classes)
        self.task = task
        self.seed = int(seed)
        self.noise_std = float(noise_std)
        self.bias_strength = float(bias_strength)
        self.max_objects = max(int(max_objects), self.num_classes - 1)

    def __len__(self) -> int:
        return self.num_cases

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.shape)

    @property
    def case_ids(self) -> list[str]:
        """``["phantom_0000", "phantom_0001", ...]``."""
        return [f"phantom_{i:04d}" for i in range(self.num_cases)]

    @property
    def labels(self) -> list[int]:
        """Per-case labels (classification: ``i % num_classes``; segmentation: all 0)."""
        if self.task == "classification":
            return [i % self.num_classes for i in range(self.num_cases)]
        return [0] * self.num_cases

    def _object_classes(self, rng: np.random.Generator, index: int) -> list[int]:
        if self.task == "classification":
            # Appearance classes 1..num_classes: label c looks like object class c + 1.
            count = int(rng.integers(1, self.max_objects + 1))
            return [index % self.num_classes + 1] * count
        required = list(range(1, self.num_classes))
        extra = int(rng.integers(0, self.max_objects - len(required) + 1))
        return required + [int(c) for c in rng.integers(1, self.num_classes, size=extra)]

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = _check_index(index, self.num_cases, type(self).__name__)
        rng = np.random.default_rng([self.seed, i])
        shape = np.asarray(self.shape, dtype=np.float64)
        levels = self.num_classes + (1 if self.task == "classification" else 0)

        image = np.zeros(self.shape, dtype=np.float32)
        seg = np.zeros(self.shape, dtype=np.int16) if self.task == "segmentation" else None
        # The body: a large ellipsoid around the centre.
        body_radii = shape * rng.uniform(0.38, 0.46, size=self.ndim)
        body_center = shape / 2 - 0.5 + rng.uniform(-0.03, 0.03, size=self.ndim) * shape
        _paint_ellipsoid(image, None, body_center, body_radii, np.eye(self.ndim), _BODY_INTENSITY, 0)

        for label in self._object_classes(rng, i):
            size = float(np.min(shape))
            radius = rng.uniform(0.08, 0.14) * size
            if label % 2 == 1:  # spheres
                radii = np.full(self.ndim, radius)
                rotation = np.eye(self.ndim)
            else:  # elongated, rotated ellipsoids
                radii = radius * np.array([1.6] + [0.7] * (self.ndim - 1))
                rotation = _rotation(rng, self.ndim)
            # Keep the object inside the body: a random point within the inner part of the body.
            direction = rng.normal(size=self.ndim)
            direction /= np.linalg.norm(direction)
            reach = rng.uniform(0.0, 1.0) ** (1.0 / self.ndim)
            center = body_center + direction * reach * np.maximum(body_radii - radii.max() - 1.0, 0.0)
            _paint_ellipsoid(image, seg, center, radii, rotation, class_intensity(label, levels), label)

        if self.bias_strength:
            image *= _bias_field(rng, self.shape, self.bias_strength)
        if self.noise_std:
            image += rng.normal(0.0, self.noise_std, size=self.shape).astype(np.float32)

        sample: dict[str, Any] = {"data": image[None]}
        if seg is not None:
            sample["seg"] = seg[None]
        else:
            sample["label"] = i % self.num_classes
        sample["case_id"] = f"phantom_{i:04d}"
        sample["spacing"] = (1.0,) * self.ndim
        return sample

    def __repr__(self) -> str:
        return (
            f"SyntheticPhantomDataset(num_cases={self.num_cases}, shape={self.shape}, "
            f"num_classes={self.num_classes}, task={self.task!r}, seed={self.seed})"
        )
