"""delira.augment: fast 2D/3D data augmentation for medical images.

Compiled C++ (and, where built, CUDA) kernels with a pure-Python fallback. Works on numpy arrays
and on torch tensors without any other part of Delira installed.
"""

from __future__ import annotations

from delira.augment._build_info import build_info, package_version
from delira.augment._threads import _check_env, get_num_threads, set_num_threads
from delira.augment.functional import flip

__version__ = package_version()

_check_env()

__all__ = ["__version__", "build_info", "flip", "get_num_threads", "set_num_threads"]
