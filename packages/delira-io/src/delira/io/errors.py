"""The exceptions of :mod:`delira.io`: one base class, one subclass per kind of failure.

Every error :mod:`delira.io` raises on purpose derives from :class:`DeliraIOError`, so
``except DeliraIOError`` catches them all. Errors that have a natural builtin counterpart also
derive from it (a missing file is a :class:`FileNotFoundError`, a missing optional dependency an
:class:`ImportError`), so code written against the builtins keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "DeliraIOError",
    "ExportError",
    "ImageNotFoundError",
    "ImageReadError",
    "ImageWriteError",
    "MissingDependencyError",
]


class DeliraIOError(Exception):
    """Base class of every error raised by :mod:`delira.io`."""


class MissingDependencyError(DeliraIOError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class ImageReadError(DeliraIOError):
    """An image file or DICOM folder could not be read (corrupt, truncated or unsupported)."""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """The image file or folder to read does not exist."""


class ImageWriteError(DeliraIOError):
    """An image could not be written in the format its file name asks for."""


class CheckpointError(DeliraIOError):
    """A checkpoint could not be written or read."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file to load does not exist."""


class CheckpointFormatError(CheckpointError):
    """The file is not a delira checkpoint, or has a format version this delira-io cannot read."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model they are loaded into.

    Attributes:
        missing: keys the model has and the checkpoint lacks.
        unexpected: keys the checkpoint has and the model lacks.
        mismatched: ``{key: (shape in the checkpoint, shape in the model)}``.
    """

    def __init__(
        self,
        message: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


class ExportError(DeliraIOError):
    """A model could not be exported, or the exported model does not reproduce the original."""
