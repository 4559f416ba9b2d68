"""delira.io: checkpoints, medical image files with geometry, and model export.

Importing this package imports numpy only; torch, TensorFlow and the image readers are imported
on first use, and a missing one raises :class:`MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._atomic import atomic_write
from ._image import Image
from .checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint_info, save_checkpoint
from .errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    DeliraIOError,
    ExportError,
    ImageNotFoundError,
    ImageReadError,
    ImageWriteError,
    MissingDependencyError,
)
from .export import export_onnx, export_saved_model, export_torchscript
from .images import read_image, supported_formats, write_image
from .orientation import OrientationTransform, orientation_codes, orientation_transform, reorient

try:
    __version__ = version("delira-io")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointInfo",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "DeliraIOError",
    "ExportError",
    "Image",
    "ImageNotFoundError",
    "ImageReadError",
    "ImageWriteError",
    "MissingDependencyError",
    "OrientationTransform",
    "__version__",
    "atomic_write",
    "export_onnx",
    "export_saved_model",
    "export_torchscript",
    "load_checkpoint",
    "orientation_codes",
    "orientation_transform",
    "read_checkpoint_info",
    "read_image",
    "reorient",
    "save_checkpoint",
    "supported_formats",
    "write_image",
]
