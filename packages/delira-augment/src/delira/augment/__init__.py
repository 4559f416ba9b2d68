"""delira.augment: fast 2D/3D data augmentation for medical images.

Compiled C++ (and, where built, CUDA) kernels with a batchgenerators fallback. Works on numpy arrays
and on torch / tensorflow tensors without any other part of Delira installed.

- :mod:`delira.augment.functional`: stateless operations with explicit parameters.
- Transform classes (``SpatialTransform``, ``Mirror``, ``GaussianNoise``, ... , ``Compose``): draw
  per-sample random parameters and call the functional layer; called as ``transform(**batch)``.
"""

from __future__ import annotations

from delira.augment._build_info import build_info, package_version
from delira.augment._threads import _check_env, get_num_threads, set_num_threads
from delira.augment.functional import flip
from delira.augment.transforms import (
    BiasField,
    BlankRectangles,
    BrightnessAdditive,
    BrightnessGradient,
    BrightnessMultiplicative,
    CenterCrop,
    Compose,
    Contrast,
    ForegroundCrop,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    Ghosting,
    LocalContrast,
    LocalGamma,
    LocalSmoothing,
    MedianFilter,
    Mirror,
    Motion,
    OneOf,
    PercentileClip,
    RandomApply,
    RandomCrop,
    RicianNoise,
    Rot90,
    Sharpen,
    SimulateLowResolution,
    SpatialTransform,
    Spike,
    Transform,
    TransposeAxes,
    ZScoreNormalize,
)

__version__ = package_version()

_check_env()


def preview(batch, transform, path, *, rng=0, data_key="data", seg_key="seg", title=None):
    """Write a PNG of central slices before and after ``transform``, titled ``title`` when given (see
    :func:`delira.augment._preview.preview`)."""
    from delira.augment._preview import preview as _preview

    return _preview(batch, transform, path, rng=rng, data_key=data_key, seg_key=seg_key, title=title)


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
    "__version__",
    "build_info",
    "flip",
    "get_num_threads",
    "preview",
    "set_num_threads",
]
