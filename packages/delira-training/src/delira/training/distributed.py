"""Distributed-training helpers: the process's rank and world size (as set by ``torchrun``),
sharding a loader's batches across processes, and starting torch's process group."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["get_rank", "get_world_size", "init_torch_distributed", "shard_batches"]


def get_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by ``torchrun``), 1 when unset."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def get_rank() -> int:
    """``RANK`` from the environment (set by ``torchrun``), 0 when unset."""
    return int(os.environ.get("RANK", "0"))


def shard_batches(
    loader: Iterable[Mapping[str, Any]], rank: int, world_size: int
) -> Iterator[Mapping[str, Any]]:
    """Batches ``rank, rank + world_size, rank + 2 * world_size, ...`` of ``loader``.

    Every process gets the same number of batches: with a sized loader the last
    ``len(loader) % world_size`` batches are dropped, so that no process waits for a gradient
    all-reduce that never comes. Loading is deterministic per batch index with
    ``delira.data.DataLoader``, so the processes together see each batch exactly once.
    """
    if world_size <= 1:
        yield from loader
        return
    limit = (len(loader) // world_size) * world_size if hasattr(loader, "__len__") else None
    if limit == 0:
        raise ValueError(
            f"the loader has {len(loader)} batches, fewer than the {world_size} processes; "
            "use a smaller batch size or more data"
        )
    for index, batch in enumerate(loader):
        if limit is not None and index >= limit:
            break
        if index % world_size == rank:
            yield batch


def init_torch_distributed(device: str = "cpu") -> tuple[int, int]:
    """Start torch's default process group from the ``torchrun`` environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) unless it is running: ``gloo`` on the CPU,
    ``nccl`` on CUDA. Returns ``(rank, world_size)``."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            "this torch build has no torch.distributed; install a build with distributed support"
        )
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()
