"""Thread count of the CPU executor."""

from __future__ import annotations

import os
import warnings

from delira.augment import _extension

_ENV = "DELIRA_AUGMENT_NUM_THREADS"


def _check_env() -> None:
    value = os.environ.get(_ENV)
    if value is None:
        return
    if not value.strip().isdigit() or int(value) < 1:
        warnings.warn(
            f"{_ENV}={value!r} is not a positive integer and is ignored; set it to the number "
            "of threads (for example 4) or unset it to use every available core",
            RuntimeWarning,
            stacklevel=2,
        )


def get_num_threads() -> int:
    """Number of threads the CPU executor uses (1 when the extension is missing)."""
    if _extension._C is None:
        return 1
    return int(_extension._C.get_num_threads())


def set_num_threads(n: int) -> None:
    """Set the number of threads of the CPU executor.

    The default is the environment variable ``DELIRA_AUGMENT_NUM_THREADS`` when set, otherwise
    the number of cores available to the process. Results do not depend on the thread count.

    Raises:
        ValueError: when ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    if _extension._C is not None:
        _extension._C.set_num_threads(n)
