"""Intensity programs: the list of intensity operations the engine applies to every voxel.

A program is built per batch: each op has a kind, per-sample parameters ``(N, 3)`` and a per-sample
``active`` flag (an inactive op leaves that sample unchanged). The compiled engine runs a program
either fused into the spatial resampling pass or on its own; the fallback backend runs the same
program with numpy (see ``_fallback.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class OpKind(IntEnum):
    """Operation codes shared with ``csrc/core/intensity.h``."""

    NOISE = 0  # p0 = std
    MULTIPLY = 1  # p0 = factor
    ADD = 2  # p0 = value
    CLIP = 3  # p0 = low, p1 = high
    CONTRAST = 4  # p0 = factor, p1 = preserve range
    GAMMA = 5  # p0 = gamma, p1 = invert, p2 = retain stats
    RESTORE_STATS = 6  # p0 = negate afterwards; ref = op whose input statistics are restored
    ZSCORE = 7  # p0 = epsilon
    PERCENTILE_CLIP = 8  # p0 = lower percentile, p1 = upper percentile
    RICIAN = 9  # p0 = std: sqrt((x + std z0)^2 + (std z1)^2), pointwise
    SHIFT_MIN = 10  # x - min (batchgeneratorsv2's Rician noise shifts by the minimum first)

    @property
    def needs_stats(self) -> bool:
        """Whether the op needs statistics of its input (it starts a new pass; ``needs_stats`` in C++)."""
        return self in _NEEDS_STATS


_NEEDS_STATS = frozenset(
    {
        OpKind.CONTRAST,
        OpKind.GAMMA,
        OpKind.RESTORE_STATS,
        OpKind.ZSCORE,
        OpKind.PERCENTILE_CLIP,
        OpKind.SHIFT_MIN,
    }
)


@dataclass
class Op:
    kind: OpKind
    params: np.ndarray  # (N, 3) float32
    active: np.ndarray  # (N,) bool
    ref: int = -1


@dataclass
class Program:
    """Intensity operations for a batch of ``n`` samples, applied in order."""

    n: int
    ops: list[Op] = field(default_factory=list)
    seeds: np.ndarray | None = None  # (N,) uint64: random stream of each sample (noise)

    def add(self, kind: OpKind, *params, active=True, ref: int = -1) -> int:
        """Append an op; each parameter is a scalar or a length-N sequence. Returns its index."""
        table = np.zeros((self.n, 3), dtype=np.float32)
        for i, p in enumerate(params):
            table[:, i] = np.broadcast_to(np.asarray(p, dtype=np.float32), (self.n,))
        act = np.broadcast_to(np.asarray(active, dtype=bool), (self.n,)).copy()
        self.ops.append(Op(OpKind(kind), table, act, ref))
        return len(self.ops) - 1

    def extend(self, other: Program) -> None:
        """Append the ops of ``other`` (same batch size), keeping its references valid."""
        if other.n != self.n:
            raise ValueError(f"cannot join programs for {self.n} and {other.n} samples")
        offset = len(self.ops)
        for op in other.ops:
            self.ops.append(Op(op.kind, op.params, op.active, op.ref + offset if op.ref >= 0 else -1))
        if self.seeds is None:
            self.seeds = other.seeds  # streams differ per op index, so one seed per sample suffices

    def kernel_args(self) -> dict:
        """Arguments of ``_C.resample`` / ``_C.apply_program`` describing this program."""
        n_ops = len(self.ops)
        params = np.zeros((self.n, n_ops, 3), dtype=np.float32)
        active = np.zeros((self.n, n_ops), dtype=bool)
        for j, op in enumerate(self.ops):
            params[:, j] = op.params
            active[:, j] = op.active
        seeds = self.seeds if self.seeds is not None else np.zeros(self.n, dtype=np.uint64)
        return {
            "op_kinds": [int(op.kind) for op in self.ops],
            "op_refs": [op.ref for op in self.ops],
            "op_params": params,
            "op_active": active,
            "seeds": np.ascontiguousarray(seeds, dtype=np.uint64),
        }

    def __bool__(self) -> bool:
        return bool(self.ops)
