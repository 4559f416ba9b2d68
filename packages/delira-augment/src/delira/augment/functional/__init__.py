"""Stateless augmentation operations with explicit parameters (no randomness).

Every function takes arrays shaped ``(N, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)`` as
documented on it and returns a new array of the input's type (numpy in, numpy out; torch in,
torch out).
"""

from __future__ import annotations

from delira.augment.functional.elastic import ElasticField, elastic_from_batchgenerators
from delira.augment.functional.flip import flip
from delira.augment.functional.intensity import (
    brightness_additive,
    brightness_multiplicative,
    clip,
    contrast,
    gamma,
    gaussian_blur,
    gaussian_noise,
    median_filter,
    percentile_clip,
    rician_noise,
    sharpen,
    simulate_low_resolution,
    zscore_normalize,
)
from delira.augment.functional.local import (
    WeightMap,
    brightness_gradient,
    gaussian_weight_map,
    gaussian_weights,
    local_contrast,
    local_gamma,
    local_smoothing,
)
from delira.augment.functional.mr import (
    bias_field,
    bias_field_exponents,
    ghosting,
    motion,
    motion_matrices,
    spike,
)
from delira.augment.functional.spatial import (
    affine_resample,
    crop,
    mirror,
    rotation_matrix,
    spatial_transform,
    transform_matrix,
)

__all__ = [
    "ElasticField",
    "WeightMap",
    "affine_resample",
    "bias_field",
    "bias_field_exponents",
    "brightness_additive",
    "brightness_gradient",
    "brightness_multiplicative",
    "clip",
    "contrast",
    "crop",
    "elastic_from_batchgenerators",
    "flip",
    "gamma",
    "gaussian_blur",
    "gaussian_noise",
    "gaussian_weight_map",
    "gaussian_weights",
    "ghosting",
    "local_contrast",
    "local_gamma",
    "local_smoothing",
    "median_filter",
    "mirror",
    "motion",
    "motion_matrices",
    "percentile_clip",
    "rician_noise",
    "rotation_matrix",
    "sharpen",
    "simulate_low_resolution",
    "spatial_transform",
    "spike",
    "transform_matrix",
    "zscore_normalize",
]
