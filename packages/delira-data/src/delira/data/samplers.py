"""Samplers: which sample keys an epoch visits, in which order.

A sampler is an iterable of dataset keys with a length and ``set_epoch(epoch)``. Every random
sampler draws from ``numpy.random.default_rng([seed, epoch])`` only, so an epoch's order is a pure
function of ``(seed, epoch)``, whatever process or machine computes it. The
:class:`~delira.data.DataLoader` calls ``set_epoch`` before each epoch and cuts the keys into
batches of ``batch_size`` consecutive keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ClassBalancedSampler",
    "ForegroundOversamplingSampler",
    "PatchKey",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "ShardedSampler",
    "WeightedRandomSampler",
]


def _check_length(n: int, what: str) -> int:
    n = int(n)
    if n <= 0:
        raise ValueError(
            f"{what} must be >= 1, got {n}; an empty dataset cannot be sampled (check the dataset path "
            "or the split that produced it)"
        )
    return n


def _length_of(data_source: Any) -> int:
    return int(data_source) if isinstance(data_source, (int, np.integer)) else len(data_source)


class Sampler:
    """Base class: ``iter(sampler)`` yields the keys of one epoch, ``len(sampler)`` counts them.

    Subclasses implement ``__iter__`` and ``__len__``; ``set_epoch`` stores the epoch that the next
    ``__iter__`` uses.
    """

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that the next iteration draws (its order depends on ``(seed, epoch)``)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def _rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), self.epoch])

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class SequentialSampler(Sampler):
    """``0, 1, ..., n - 1`` in order, every epoch.

    Args:
        data_source: the dataset, or its length.
    """

    def __init__(self, data_source: Any) -> None:
        self.n = _check_length(_length_of(data_source), "the dataset length")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class RandomSampler(Sampler):
    """Random indices in ``[0, n)``: a permutation (without replacement) or independent draws.

    Args:
        data_source: the dataset, or its length.
        replacement: draw with replacement (independent uniform draws) instead of a permutation.
        num_samples: keys per epoch (default ``n``). Without replacement and ``num_samples > n``
            the epoch concatenates fresh permutations.
        seed: the sampler seed; the order of epoch ``e`` depends on ``(seed, e)`` only.
    """

    def __init__(
        self,
        data_source: Any,
        replacement: bool = False,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        self.n = _check_length(_length_of(data_source), "the dataset length")
        self.replacement = bool(replacement)
        self.num_samples = self.n if num_samples is None else _check_length(num_samples, "num_samples")
        self.seed = int(seed)

    def __iter__(self) -> Iterator[int]:
        rng = self._rng(self.seed)
        if self.replacement:
            keys = rng.integers(0, self.n, size=self.num_samples)
        else:
            rounds = math.ceil(self.num_samples / self.n)
            keys = np.concatenate([rng.permutation(self.n) for _ in range(rounds)])[: self.num_samples]
        return iter(keys.tolist())

    def __len__(self) -> int:
        return self.num_samples


class WeightedRandomSampler(Sampler):
    """Indices drawn with probability proportional to ``weights``.

    Args:
        weights: one non-negative weight per sample, not all zero.
        num_samples: keys per epoch (default: the number of weights).
        replacement: draw with replacement (default). Without replacement ``num_samples`` must not
            exceed the number of non-zero weights.
        seed: the sampler seed.
    """

    def __init__(
        self,
        weights: Sequence[float],
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int = 0,
    ) -> None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        _check_length(w.size, "the number of weights")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be finite, >= 0 and not all 0; give every sample a weight")
        self.probabilities = w / w.sum()
        self.num_samples = w.size if num_samples is None else _check_length(num_samples, "num_samples")
        self.replacement = bool(replacement)
        if not self.replacement and self.num_samples > np.count_nonzero(w):
            raise ValueError(
                f"cannot draw {self.num_samples} samples without replacement from "
                f"{np.count_nonzero(w)} non-zero weights; lower num_samples or set replacement=True"
            )
        self.seed = int(seed)

    def __iter__(self) -> Iterator[int]:
        rng = self._rng(self.seed)
        keys = rng.choice(
            self.probabilities.size, size=self.num_samples, replace=self.replacement, p=self.probabilities
        )
        return iter(keys.tolist())

    def __len__(self) -> int:
        return self.num_samples


class ClassBalancedSampler(WeightedRandomSampler):
    """Every class drawn equally often on average: sample weight ``1 / count(its class)``.

    Args:
        labels: one class label per sample (any hashable values, e.g. ``dataset.labels``).
        num_samples: keys per epoch (default: the number of samples).
        seed: the sampler seed.

    Draws with replacement, so rare classes are repeated within an epoch.
    """

    def __init__(self, labels: Sequence[Any], num_samples: int | None = None, seed: int = 0) -> None:
        labels = list(labels)
        _check_length(len(labels), "the number of labels")
        counts: dict[Any, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        weights = [1.0 / counts[label] for label in labels]
        self.classes = sorted(counts, key=repr)
        super().__init__(weights, num_samples=num_samples, replacement=True, seed=seed)


class PatchKey(NamedTuple):
    """A sample key that asks a :class:`~delira.data.patches.PatchDataset` for one patch.

    Attributes:
        index: the case index in the wrapped dataset.
        foreground: True to centre the patch on a foreground voxel (of a random class present).
        seed: seeds the patch position, ``numpy.random.default_rng(seed)``.
    """

    index: int
    foreground: bool
    seed: int


class ForegroundOversamplingSampler(Sampler):
    """Patch keys with a fixed share of every batch forced onto foreground (nnU-Net's scheme).

    Within each batch of ``batch_size`` consecutive keys, position ``j`` is forced onto the
    foreground when ``j >= round(batch_size * (1 - foreground_fraction))``, exactly as nnU-Net's
    ``oversample_foreground_percent`` (0.33 with batch size 2: the second sample of each batch).
    The other keys ask for a uniformly random patch.

    Args:
        base: the sampler that picks the cases (e.g. ``RandomSampler(dataset)``), or a dataset / length
            (then cases are drawn uniformly with replacement, like nnU-Net).
        batch_size: the loader's batch size (must match it for the share to hold per batch).
        foreground_fraction: share of each batch forced onto foreground, in ``[0, 1]``.
        num_samples: keys per epoch when ``base`` is a dataset or a length (default: its length).
        seed: the sampler seed (also seeds each key's patch position).

    Yields:
        :class:`PatchKey` ``(index, foreground, seed)``.
    """

    def __init__(
        self,
        base: Any,
        batch_size: int,
        foreground_fraction: float = 0.33,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.batch_size = _check_length(batch_size, "batch_size")
        self.foreground_fraction = float(foreground_fraction)
        if isinstance(base, Sampler):
            self.base = base
        else:
            self.base = RandomSampler(base, replacement=True, num_samples=num_samples, seed=seed)
        self.seed = int(seed)
        self.first_foreground = round(self.batch_size * (1.0 - self.foreground_fraction))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch for this sampler and its base sampler."""
        super().set_epoch(epoch)
        self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[PatchKey]:
        self.base.set_epoch(self.epoch)
        indices = list(self.base)
        seeds = self._rng(self.seed).integers(0, 2**63 - 1, size=len(indices), dtype=np.int64)
        for position, (index, seed) in enumerate(zip(indices, seeds.tolist())):
            foreground = position % self.batch_size >= self.first_foreground
            yield PatchKey(int(index), bool(foreground), int(seed))

    def __len__(self) -> int:
        return len(self.base)


class ShardedSampler(Sampler):
    """This rank's share of another sampler, for distributed training.

    The keys of the wrapped sampler are padded (repeating from the start) to a multiple of
    ``world_size`` and rank ``r`` takes every ``world_size``-th key starting at ``r``. All ranks get
    the same number of keys and, together, every key of the epoch (padding repeats a few).

    Args:
        sampler: the sampler to shard; it must give the same order on every rank (same seed).
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of processes.
        drop_last: drop the tail instead of padding (ranks then skip up to ``world_size - 1`` keys).
    """

    def __init__(self, sampler: Sampler, rank: int, world_size: int, drop_last: bool = False) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}; pass the "
                "process's rank and the number of processes (e.g. from torch.distributed)"
            )
        self.sampler = sampler
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        if len(self) == 0:
            raise ValueError(
                f"{len(sampler)} keys cannot be sharded over {world_size} ranks with drop_last=True; "
                "every rank would get nothing"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch for this sampler and the wrapped one."""
        super().set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.epoch)
        keys = list(self.sampler)
        if self.drop_last:
            keys = keys[: len(keys) - len(keys) % self.world_size]
        else:
            total = math.ceil(len(keys) / self.world_size) * self.world_size
            while len(keys) < total:
                keys += keys[: total - len(keys)]
        return iter(keys[self.rank :: self.world_size])

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.world_size if self.drop_last else math.ceil(n / self.world_size)
