"""Shared pytest configuration: markers for optional backends.

Tests marked ``torch``, ``tf`` or ``cuda`` are skipped, with the reason, where that backend is
missing. CI installs torch and tensorflow, so only ``cuda`` tests are skipped there.
"""

from __future__ import annotations

import functools
import importlib.util

import pytest


@functools.cache
def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


@functools.cache
def tf_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """None when CUDA tests can run, else why not."""
    try:
        import delira.augment as da
    except ImportError as exc:
        return f"delira.augment does not import: {exc}"
    info = da.build_info()
    if not info["cuda_compiled"]:
        return "delira-augment was built without CUDA"
    from delira.augment import _extension

    count, error = _extension._C.cuda_device_count()
    if count <= 0:
        return f"no CUDA device ({error})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "torch": None if torch_available() else "PyTorch is not installed (pip install torch==2.13.0)",
        "tf": None if tf_available() else "TensorFlow is not installed (pip install tensorflow-cpu==2.21.0)",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
        if "cuda" in item.keywords:
            reason = cuda_unavailable_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
