"""Spatial transforms: the fused spatial transform and mirroring."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment._program import Program
from delira.augment._spec import check_sampling
from delira.augment.functional import elastic as E
from delira.augment.functional.spatial import mirror, spatial_transform, transform_matrix
from delira.augment.transforms.base import Transform, uniform


def _per_axis_ranges(value: Any, nd: int, name: str) -> list[tuple[float, float]]:
    if value is None:
        return [(0.0, 0.0)] * nd
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        if len(value) != nd:
            raise ValueError(f"{name} has {len(value)} ranges; expected one per axis ({nd})")
        return [v.value_range(r, name) for r in value]
    return [v.value_range(value, name)] * nd


class SpatialTransform(Transform):
    """Rotation, scaling, shear, translation, elastic deformation and cropping in one resampling pass.

    Every parameter is drawn per sample; each part is applied with its own probability (as
    batchgenerators' ``p_rot_per_sample`` etc.). The patch is cut around the centre of the input, or
    around a random centre with ``random_crop``; where the patch reaches outside the input it is padded
    according to the border modes.

    Args:
        patch_size: output spatial shape ``(D, H, W)`` or ``(H, W)``; None keeps the input's shape.
        rotation: degrees; a range for every axis or one range per rotation axis (3 in 3D, 1 in 2D).
        scale: range of the isotropic scale factor (> 1 zooms out); ``scale_per_axis`` draws one per axis.
        shear: range of the off-diagonal shear factors, or None.
        translation: range in input voxels, or None.
        elastic_magnitude: range of the RMS elastic displacement in voxels (see ``functional.elastic``).
        elastic_scale: range of the control point spacing in voxels (smoothness).
        elastic_alpha, elastic_sigma: batchgenerators' parameters instead of magnitude/scale; converted
            with ``elastic_from_batchgenerators`` at the range ends.
        p_rotation, p_scale, p_shear, p_translation, p_elastic: per-sample probabilities of each part.
        random_crop: patch centre uniform so that the patch stays inside (or ``crop_margin`` voxels of
            the centre from the border when given).
        order_data: 0, 1 or 3. order_seg: 0 (nearest) or 1 (per-label linear + argmax, as nnU-Net v2).
        mode_data, cval_data, mode_seg, cval_seg: border handling.
        dummy_2d_axis: None, or a spatial axis (0, 1 or 2) of 3D data along which nothing is
            transformed: nnU-Net's "dummy 2D" augmentation for anisotropic patches
            (``do_dummy_2d_data_aug``, used when the patch's first axis is much coarser than the
            others). Rotation, scaling, shear, translation and the elastic field are drawn as for 2D
            data of the in-plane shape (the same draws as a 2D SpatialTransform of that shape) and
            applied to every slice alike; along the axis the slices keep their positions (a centred
            or, with ``random_crop``, random integer crop to ``patch_size``; ``crop_margin`` acts
            in-plane). ``rotation`` is then one range (the in-plane angle).
            Unlike nnU-Net's Convert3DTo2DTransform (slices folded into channels) the volume stays
            3D, so the pass still fuses with the intensity transforms and Mirror of a Compose.
    """

    def __init__(
        self,
        patch_size: Any = None,
        *,
        rotation: Any = (-30.0, 30.0),
        scale: Any = (0.7, 1.4),
        scale_per_axis: bool = False,
        shear: Any = None,
        translation: Any = None,
        elastic_magnitude: Any = None,
        elastic_scale: Any = (15.0, 22.0),
        elastic_alpha: Any = None,
        elastic_sigma: Any = None,
        p_rotation: float = 1.0,
        p_scale: float = 1.0,
        p_shear: float = 1.0,
        p_translation: float = 1.0,
        p_elastic: float = 1.0,
        random_crop: bool = False,
        crop_margin: Any = None,
        order_data: int = 1,
        order_seg: int = 0,
        mode_data: str = "constant",
        cval_data: float = 0.0,
        mode_seg: str = "constant",
        cval_seg: float = 0.0,
        dummy_2d_axis: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(1.0, **kwargs)
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        if self.patch_size is not None and (len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1):
            raise ValueError(f"patch_size={patch_size!r} must have 2 or 3 positive entries")
        if dummy_2d_axis is not None:
            if isinstance(dummy_2d_axis, bool) or dummy_2d_axis not in (0, 1, 2):
                raise ValueError(
                    f"dummy_2d_axis={dummy_2d_axis!r} must be None or a spatial axis of 3D data: 0, 1 or 2 "
                    "(nnU-Net uses 0, the coarse axis of an anisotropic patch)"
                )
            if self.patch_size is not None and len(self.patch_size) != 3:
                raise ValueError(
                    f"dummy_2d_axis needs a 3D patch_size (D, H, W), got {patch_size!r}; include the size along "
                    f"axis {dummy_2d_axis} (the input's size there keeps every slice)"
                )
            _per_axis_ranges(rotation, 1, "rotation with dummy_2d_axis (one in-plane range)")
        self.dummy_2d_axis = None if dummy_2d_axis is None else int(dummy_2d_axis)
        self.rotation = rotation
        self.scale = v.value_range(scale, "scale", low=1e-6)
        self.scale_per_axis = bool(scale_per_axis)
        self.shear = None if shear is None else v.value_range(shear, "shear")
        self.translation = None if translation is None else v.value_range(translation, "translation")
        if elastic_alpha is not None or elastic_sigma is not None:
            if elastic_magnitude is not None:
                raise ValueError(
                    "give elastic_magnitude/elastic_scale or elastic_alpha/elastic_sigma, not both"
                )
            self.elastic_bg = (
                v.value_range(elastic_alpha, "elastic_alpha", low=0.0),
                v.value_range(elastic_sigma, "elastic_sigma", low=1e-6),
            )
            self.elastic_magnitude = None
        else:
            self.elastic_bg = None
            self.elastic_magnitude = (
                None
                if elastic_magnitude is None
                else v.value_range(elastic_magnitude, "elastic_magnitude", low=0.0)
            )
        self.elastic_scale = v.value_range(elastic_scale, "elastic_scale", low=1.0)
        self.p_rotation = v.probability(p_rotation, "p_rotation")
        self.p_scale = v.probability(p_scale, "p_scale")
        self.p_shear = v.probability(p_shear, "p_shear")
        self.p_translation = v.probability(p_translation, "p_translation")
        self.p_elastic = v.probability(p_elastic, "p_elastic")
        self.random_crop = bool(random_crop)
        self.crop_margin = crop_margin
        sampling = check_sampling(order_data, mode_data, cval_data, order_seg, mode_seg, cval_seg)
        self.order_data, self.order_seg = sampling["order_data"], sampling["order_seg"]
        self.mode_data, self.cval_data = mode_data, sampling["cval_data"]
        self.mode_seg, self.cval_seg = mode_seg, sampling["cval_seg"]

    @property
    def has_elastic(self) -> bool:
        return self.elastic_magnitude is not None or self.elastic_bg is not None

    def draw(self, rng: np.random.Generator, n: int, shape: tuple[int, ...], mirror_flags: np.ndarray | None):
        """Per-sample affine maps, linear parts and elastic field for input spatial ``shape``."""
        nd = len(shape)
        patch = self.patch_size or shape
        if len(patch) != nd:
            raise ValueError(
                f"patch_size {patch} has {len(patch)} axes but the data has {nd} spatial axes {shape}; "
                f"pass data as (N, C, *spatial) with {len(patch)} spatial axes, or a patch_size with {nd} entries"
            )
        if self.dummy_2d_axis is not None:
            affine, linear, field = self._draw_dummy_2d(rng, n, tuple(shape), tuple(patch), mirror_flags)
        else:
            affine, linear, field = self._draw_nd(rng, n, tuple(shape), tuple(patch), mirror_flags)
        return affine, linear, field, tuple(patch)

    def _draw_nd(self, rng, n, shape, patch, mirror_flags, margin: Any = None):
        """Affine maps, linear parts and elastic field of 2D or 3D transforms of ``shape`` to ``patch``."""
        nd = len(shape)
        n_angles = 3 if nd == 3 else 1
        ranges = _per_axis_ranges(self.rotation, n_angles, "rotation")
        angles = np.stack([uniform(rng, r, n) for r in ranges], axis=1) * (math.pi / 180.0)
        angles[rng.random(n) >= self.p_rotation] = 0.0
        scales = uniform(rng, self.scale, (n, nd if self.scale_per_axis else 1)) * np.ones((1, nd))
        scales[rng.random(n) >= self.p_scale] = 1.0
        shears = None
        if self.shear is not None:
            shears = uniform(rng, self.shear, (n, nd, nd))
            shears[rng.random(n) >= self.p_shear] = 0.0
        trans = np.zeros((n, nd))
        if self.translation is not None:
            trans = uniform(rng, self.translation, (n, nd))
            trans[rng.random(n) >= self.p_translation] = 0.0
        centers = self._centers(rng, n, shape, patch, margin)
        affine = np.empty((n, nd, nd + 1))
        linear = np.empty((n, nd, nd))
        for i in range(n):
            affine[i], linear[i] = transform_matrix(
                shape,
                patch,
                rotation=angles[i] if nd == 3 else angles[i, 0],
                scale=scales[i],
                shear=None if shears is None else shears[i],
                translation=trans[i],
                mirror=None if mirror_flags is None else mirror_flags[i],
                center=centers[i],
            )
        field = None
        if self.has_elastic:
            if self.elastic_bg is not None:
                (a_lo, a_hi), (s_lo, s_hi) = self.elastic_bg
                alpha, sigma = uniform(rng, (a_lo, a_hi), n), uniform(rng, (s_lo, s_hi), n)
                conv = [E.elastic_from_batchgenerators(a, s, nd) for a, s in zip(alpha, sigma)]
                magnitude = np.array([c[0] for c in conv])
                scale = np.array([c[1] for c in conv])
            else:
                magnitude = uniform(rng, self.elastic_magnitude, n)
                scale = uniform(rng, self.elastic_scale, n)
            magnitude[rng.random(n) >= self.p_elastic] = 0.0
            if np.any(magnitude > 0):
                field = E.random_field(rng, tuple(patch), magnitude, scale)
        return affine, linear, field

    def _draw_dummy_2d(self, rng, n, shape, patch, mirror_flags):
        """The 2D draws of the in-plane shape, embedded in 3D: identity (and an integer crop) along the axis."""
        ax = self.dummy_2d_axis
        if len(shape) != 3:
            raise ValueError(
                f"dummy_2d_axis={ax} needs 3D data (N, C, D, H, W) but the spatial shape is {shape}; "
                "for 2D data leave dummy_2d_axis=None"
            )
        plane = [d for d in range(3) if d != ax]
        margin = None
        if self.crop_margin is not None:
            margin = np.broadcast_to(np.asarray(self.crop_margin, dtype=np.float64), (3,))[plane]
        a2, l2, f2 = self._draw_nd(
            rng,
            n,
            tuple(shape[d] for d in plane),
            tuple(patch[d] for d in plane),
            None if mirror_flags is None else np.asarray(mirror_flags)[:, plane],
            margin,
        )
        size, length = int(shape[ax]), int(patch[ax])
        if self.random_crop and size > length:
            start = rng.integers(0, size - length + 1, size=n).astype(np.float64)
        else:
            start = np.full(n, float(size // 2 - length // 2))
        flip = np.zeros(n, bool) if mirror_flags is None else np.asarray(mirror_flags, bool)[:, ax]
        affine = np.zeros((n, 3, 4))
        linear = np.zeros((n, 3, 3))
        for r, dr in enumerate(plane):
            affine[:, dr, 3] = a2[:, r, 2]
            for c, dc in enumerate(plane):
                affine[:, dr, dc] = a2[:, r, c]
                linear[:, dr, dc] = l2[:, r, c]
        affine[:, ax, ax] = np.where(flip, -1.0, 1.0)
        affine[:, ax, 3] = start + np.where(flip, length - 1.0, 0.0)
        linear[:, ax, ax] = 1.0
        field = None
        if f2 is not None:
            # constant along the axis (B-spline weights sum to 1) and no displacement along it
            spacing_ax = float(max(length - 1, 1))
            count = E.grid_shape((length,), spacing_ax)[0]
            values = np.zeros((n, 3, *f2.values.shape[2:]), np.float32)
            values[:, plane] = f2.values
            values = np.repeat(np.expand_dims(values, 2 + ax), count, axis=2 + ax)
            origin = np.insert(f2.origin, ax, -spacing_ax, axis=1).astype(np.float32)
            spacing = np.insert(f2.spacing, ax, spacing_ax, axis=1).astype(np.float32)
            field = E.ElasticField(values, origin, spacing)
        return affine, linear, field

    def _centers(self, rng, n, shape, patch, margin: Any = None) -> np.ndarray:
        """Patch centres in input coordinates, chosen so that the patch lies on the voxel grid.

        Without rotation and scaling the patch is then an exact crop: its first voxel is
        ``shape // 2 - patch // 2`` (as CenterCrop) or a random integer start.
        """
        shape_a = np.asarray(shape, dtype=np.int64)
        patch_a = np.asarray(patch, dtype=np.int64)
        half = (patch_a - 1) / 2.0
        if not self.random_crop:
            start = shape_a // 2 - patch_a // 2
            return np.repeat((start + half)[None], n, axis=0)
        if self.crop_margin is not None:
            margin = np.broadcast_to(
                np.asarray(self.crop_margin if margin is None else margin, dtype=np.float64), (len(shape),)
            )
            lo = np.ceil(margin - half).astype(np.int64)
            hi = np.floor(shape_a - 1 - margin - half).astype(np.int64)
            if np.any(hi < lo):
                raise ValueError(
                    f"crop_margin={self.crop_margin!r} leaves no valid patch centre in a volume of shape {tuple(shape)}; "
                    "use a smaller margin"
                )
        else:
            lo, hi = np.zeros(len(shape), np.int64), shape_a - patch_a
            mid = shape_a // 2 - patch_a // 2
            lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)  # patch larger than the input: centred
        start = rng.integers(lo, hi + 1, size=(n, len(shape)))
        return start + half[None]

    def apply(self, batch, rng, program: Program | None = None, mirror_flags: np.ndarray | None = None):
        n, shape = self.batch_size(batch), self.spatial_shape(batch)
        affine, linear, field, patch = self.draw(rng, n, shape, mirror_flags)
        return self.resample(batch, affine, linear, field, patch, program)

    def resample(self, batch, affine, linear, field, patch, program: Program | None = None):
        """Run the fused pass on ``batch`` with drawn parameters (see :meth:`draw`); used by Compose too."""
        data = batch.get(self.data_key)
        seg = batch.get(self.seg_key) if self.seg_key is not None else None
        out_d, out_s = spatial_transform(
            data,
            seg,
            affine=affine,
            linear=linear,
            patch_size=patch,
            elastic=field,
            order_data=self.order_data,
            order_seg=self.order_seg,
            mode_data=self.mode_data,
            cval_data=self.cval_data,
            mode_seg=self.mode_seg,
            cval_seg=self.cval_seg,
            program=program,
            backend=self.backend,
        )
        if data is not None:
            batch[self.data_key] = out_d
        if seg is not None:
            batch[self.seg_key] = out_s
        return batch


class Mirror(Transform):
    """Reverse each of ``axes`` (spatial axes, from 0) with probability ``p_per_axis``, per sample."""

    def __init__(self, axes: Any = (0, 1, 2), p_per_axis: float = 0.5, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.axes = tuple(int(a) for a in axes)
        self.p_per_axis = v.probability(p_per_axis, "p_per_axis")

    def draw_flags(self, rng: np.random.Generator, n: int, nd: int) -> np.ndarray:
        if any(a < 0 or a >= nd for a in self.axes):
            raise ValueError(f"Mirror axes {self.axes} do not fit data with {nd} spatial axes")
        flags = np.zeros((n, nd), dtype=bool)
        draws = rng.random((n, len(self.axes))) < self.p_per_axis
        flags[:, list(self.axes)] = draws
        flags[~self.draw_active(rng, n)] = False
        return flags

    def apply(self, batch, rng):
        n, nd = self.batch_size(batch), len(self.spatial_shape(batch))
        flags = self.draw_flags(rng, n, nd)
        for key in (self.data_key, self.seg_key):
            if key is None or batch.get(key) is None:
                continue
            x = _arrays.detach(batch[key])  # the unflipped samples too: no autograd history
            parts = []
            for i in range(n):
                axes = tuple(np.flatnonzero(flags[i]))
                parts.append(mirror(x[i : i + 1], axes) if axes else x[i : i + 1])
            batch[key] = _arrays.concat(parts, x)
        return batch
