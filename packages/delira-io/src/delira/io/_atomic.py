"""Atomic file replacement: write a temporary sibling, flush it to disk, rename it over the target.

The one atomic writer of the project: every delira package that writes a file a reader may open
while it is written (checkpoints, configs, splits, summaries, caches) goes through :func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Callable


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def temp_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path``: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then atomically replace ``path`` by it.

    The file is fsynced before the rename and the folder after it, so at every moment ``path`` is
    either the complete old file or the complete new one, also across a crash or a SIGKILL. A
    process killed before the rename leaves a ``.<name>.<random>.tmp`` file behind, which is safe
    to delete. On an exception the temporary file is removed and the exception re-raised.
    """
    tmp = temp_sibling(path)
    try:
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_path(path.parent, directory=True)
