"""Checks that a CUDA input can run: the extension has CUDA and a GPU is visible; and the NaN check of
PercentileClip on the GPU."""

from __future__ import annotations

from types import ModuleType
from typing import Any

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


def check_percentile_input(x: Any, program: Any) -> None:
    """Raise the CPU path's ValueError when a CUDA input of a program with PercentileClip holds NaN.

    Percentiles of data with NaN are undefined (the CPU executor refuses them the same way). The check
    runs on the GPU before any other work of the call and synchronises the caller's stream once (its
    answer must reach the host); programs without PercentileClip and host arrays are not checked here.
    """
    from delira.augment import _arrays
    from delira.augment._program import OpKind

    if not isinstance(x, _arrays.CudaArray) or program is None:
        return
    if not any(op.kind == OpKind.PERCENTILE_CLIP for op in program.ops):
        return
    module = require_cuda("percentile_clip")
    stream, device = _arrays.cuda_stream_and_device(x.obj)
    with device:
        has_nan = module.any_nan_cuda(x.ptr, x.dtype.name, list(x.shape), list(x.strides), stream)
    if has_nan:
        raise ValueError(
            "percentile_clip got data that contains NaN, whose percentiles are undefined; replace the NaN "
            "first (torch.nan_to_num(data), cupy.nan_to_num(data), ...), or leave PercentileClip out"
        )
