"""Batches as torch tensors (torch is imported on first use, never by ``import delira.data``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["TorchLoader", "to_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError("to_torch needs PyTorch: pip install torch") from exc
    return torch


def to_torch(batch: Mapping[str, Any], pin_memory: bool = False, device: Any = None) -> dict[str, Any]:
    """Convert the numpy arrays of a batch to torch tensors; other values pass through.

    Args:
        batch: a loader batch (``{"data": (N, C, *spatial) ndarray, ...}``).
        pin_memory: copy each array once into page-locked memory (for fast, asynchronous
            host-to-GPU copies; needs a CUDA build of torch). Without it the tensors share the
            arrays' memory (no copy; for a worker-loaded batch, the shared-memory slot stays in use
            while a tensor references it).
        device: move the tensors to this device (``non_blocking`` when pinned).

    Returns:
        ``{key: torch.Tensor or the original value}``.
    """
    torch = _torch()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            if pin_memory:
                tensor = torch.empty(
                    value.shape, dtype=torch.from_numpy(value[:0].copy()).dtype, pin_memory=True
                )
                tensor.numpy()[...] = value
            else:
                if not value.flags.writeable:
                    value = value.copy()  # torch cannot wrap read-only memory
                tensor = torch.from_numpy(value)
            if device is not None:
                tensor = tensor.to(device, non_blocking=pin_memory)
            out[key] = tensor
        else:
            out[key] = value
    return out


class TorchLoader:
    """Iterate a :class:`~delira.data.DataLoader` as dicts of torch tensors.

    Args:
        loader: the loader (its epoch, determinism and workers are unchanged).
        pin_memory: see :func:`to_torch`.
        device: see :func:`to_torch`.

    ``len`` and ``set_epoch`` forward to the loader.
    """

    def __init__(self, loader: Any, pin_memory: bool = False, device: Any = None) -> None:
        self.loader = loader
        self.pin_memory = pin_memory
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Forward to :meth:`DataLoader.set_epoch`."""
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield to_torch(batch, self.pin_memory, self.device)
