"""Transform classes: draw per-sample random parameters and call :mod:`delira.augment.functional`."""

from __future__ import annotations

from delira.augment.transforms.base import Transform
from delira.augment.transforms.compose import Compose, OneOf, RandomApply
from delira.augment.transforms.crop import CenterCrop, ForegroundCrop, RandomCrop
from delira.augment.transforms.discrete import BlankRectangles, Rot90, TransposeAxes
from delira.augment.transforms.intensity import (
    BrightnessAdditive,
    BrightnessMultiplicative,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    IntensityTransform,
    MedianFilter,
    PercentileClip,
    RicianNoise,
    Sharpen,
    SimulateLowResolution,
    ZScoreNormalize,
)
from delira.augment.transforms.local import BrightnessGradient, LocalContrast, LocalGamma, LocalSmoothing
from delira.augment.transforms.mr import BiasField, Ghosting, Motion, Spike
from delira.augment.transforms.spatial import Mirror, SpatialTransform

__all__ = [
    "BiasField",
    "BlankRectangles",
    "BrightnessAdditive",
    "BrightnessGradient",
    "BrightnessMultiplicative",
    "CenterCrop",
    "Compose",
    "Contrast",
    "ForegroundCrop",
    "Gamma",
    "GaussianBlur",
    "GaussianNoise",
    "Ghosting",
    "IntensityTransform",
    "LocalContrast",
    "LocalGamma",
    "LocalSmoothing",
    "MedianFilter",
    "Mirror",
    "Motion",
    "OneOf",
    "PercentileClip",
    "RandomApply",
    "RandomCrop",
    "RicianNoise",
    "Rot90",
    "Sharpen",
    "SimulateLowResolution",
    "SpatialTransform",
    "Spike",
    "Transform",
    "TransposeAxes",
    "ZScoreNormalize",
]
