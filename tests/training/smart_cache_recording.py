"""A dataset wrapper for the SmartCache training tests that logs every read of a case, from any process.

It lives in its own module (put on ``sys.path`` by ``test_smart_cache_training.py``) because loader
workers started by the fork server unpickle it: they must import it by name, which a test module
imported by pytest's importlib mode cannot be.
"""

from __future__ import annotations

import os
from typing import Any


class RecordingSource:
    """``source`` itself (same length, case ids and samples) whose ``__getitem__`` appends
    ``"<pid> <index>"`` to the file ``log`` (one ``O_APPEND`` write per read: atomic between processes).

    Args:
        source: the dataset read.
        log: the path of the log file (created on the first read).
    """

    def __init__(self, source: Any, log: str) -> None:
        self.source = source
        self.log = str(log)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def case_ids(self) -> Any:
        return getattr(self.source, "case_ids", None)

    def __getitem__(self, index: int) -> dict[str, Any]:
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {int(index)}\n".encode())
        finally:
            os.close(fd)
        return self.source[index]


def reads(log: str) -> list[tuple[int, int]]:
    """The ``(pid, index)`` reads logged in ``log`` so far, in order (none when it does not exist)."""
    if not os.path.exists(log):
        return []
    with open(log) as fh:
        return [(int(p), int(i)) for p, i in (line.split() for line in fh if line.strip())]
