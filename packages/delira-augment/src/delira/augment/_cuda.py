"""Checks that a CUDA input can run: the extension has CUDA and a GPU is visible."""

from __future__ import annotations

from types import ModuleType

from delira.augment import _extension


def require_cuda(operation: str) -> ModuleType:
    """Return the compiled module if it can run ``operation`` on a GPU, else raise RuntimeError.

    The message says which of the two is missing (CUDA in the build, or a GPU on the machine) and
    how to fix it.
    """
    module = _extension._C
    if module is None or not hasattr(module, "flip_cuda"):
        why = (
            "the compiled extension is missing"
            if module is None
            else "delira-augment was built without CUDA (build_info()['cuda_compiled'] is False)"
        )
        raise RuntimeError(
            f"{operation}: got a CUDA array, but {why}. Reinstall with the CUDA toolkit present, e.g. "
            "DELIRA_AUGMENT_CUDA=ON pip install --no-build-isolation ./packages/delira-augment, "
            "or move the array to the CPU first (x.cpu() / cupy.asnumpy(x))."
        )
    count, error = module.cuda_device_count()
    if count <= 0:
        raise RuntimeError(
            f"{operation}: got a CUDA array, but no GPU is visible to delira-augment's CUDA runtime "
            f"({error}). Check the driver with nvidia-smi and CUDA_VISIBLE_DEVICES, or move the "
            "array to the CPU first."
        )
    return module
