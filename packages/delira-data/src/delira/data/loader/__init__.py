"""The multi-process loader: :class:`DataLoader`, its collation, seed protocol and errors."""

from __future__ import annotations

from delira.data.loader.collate import collate
from delira.data.loader.dataloader import DataLoader
from delira.data.loader.pool import RemoteTraceback, WorkerError
from delira.data.loader.seeding import accepts_rng, apply_transforms, batch_seed_sequence
from delira.data.loader.start_method import default_start_method, fork_blockers
from delira.data.loader.tf_adapter import to_tf_dataset
from delira.data.loader.torch_adapter import TorchLoader, to_torch

__all__ = [
    "DataLoader",
    "RemoteTraceback",
    "TorchLoader",
    "WorkerError",
    "accepts_rng",
    "apply_transforms",
    "batch_seed_sequence",
    "collate",
    "default_start_method",
    "fork_blockers",
    "to_tf_dataset",
    "to_torch",
]
