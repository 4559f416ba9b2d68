"""The :class:`DataLoader`: deterministic batches from worker processes through shared memory."""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from delira.data.loader.collate import collate
from delira.data.loader.pool import WorkerPool
from delira.data.loader.seeding import as_transform_list
from delira.data.loader.start_method import (
    check_workers_can_start,
    exit_if_bootstrapping,
    resolve_start_method,
    validate_start_method,
)
from delira.data.loader.worker import load_batch
from delira.data.samplers import RandomSampler, SequentialSampler

__all__ = ["DataLoader"]


class DataLoader:
    """Batches of a dataset, loaded in worker processes, identical for any number of workers.

    Iterating the loader yields one epoch: ``len(loader)`` batch dicts of stacked numpy arrays
    (``{"data": (N, C, *spatial), "seg": (N, 1, *spatial), "case_id": [...], ...}``, see
    :func:`~delira.data.loader.collate.collate`). ``loader.set_epoch(e)`` selects the epoch that the
    next iteration yields (the loader never advances it by itself).

    Determinism: the keys of batch ``i`` are keys ``i * batch_size ...`` of the sampler's epoch
    ``e`` and its content, augmentation included, depends only on ``(seed, e, i)`` (see
    :mod:`delira.data.loader.seeding` for the seed protocol): the same for ``num_workers`` 0, 1 or
    8 and whatever the timing.

    Workers: ``num_workers`` processes, started when an epoch starts and stopped when it ends
    (``persistent_workers=True`` keeps them until :meth:`close`). Batch ``i`` is loaded by worker
    ``i % num_workers``, which writes it into a shared-memory slot; the arrays the main process
    yields are views of that slot (no copy, no pickling of arrays) and the slot is reused once they
    are garbage collected. A worker that raises makes the main process re-raise that exception
    (its traceback as ``__cause__``); a worker that dies raises :class:`WorkerError`. Ending the
    iteration, :meth:`close`, garbage collection of the iterator and KeyboardInterrupt stop the
    workers and unlink every shared-memory segment.

    Start method (see :mod:`delira.data.loader.start_method`): ``"auto"`` forks the workers when
    that is safe -- no other thread runs in this process (a Jupyter kernel's own threads aside),
    JAX is not imported, the platform is neither macOS nor Windows -- so a dataset or transform
    defined in a notebook, in ``python -c`` code or in code read from standard input, and a script
    without an ``if __name__ == "__main__":`` guard work as in a single process. Otherwise it uses
    the fork server (``spawn`` where there is none): the workers then re-run the main script and
    unpickle the dataset, and whatever they could not import, or would run again, is reported
    before any worker starts, with the fix. ``"auto"`` is decided each time workers start (each
    epoch unless ``persistent_workers``); :attr:`worker_start_method` tells what was used.

    Args:
        dataset: a :class:`~delira.data.Dataset`; must be picklable for workers started with
            ``"forkserver"`` or ``"spawn"`` (not for ``"fork"``).
        batch_size: samples per batch, >= 1.
        sampler: the keys of each epoch (default: sequential, or random with ``shuffle=True``).
        transforms: a callable ``transform(**batch) -> dict`` or a sequence of them, applied to the
            whole batch in the worker; a transform with an ``rng`` parameter gets a seeded
            ``numpy.random.Generator``.
        num_workers: worker processes (0: load in this process, for debugging).
        seed: the loader seed (>= 0); also seeds the default random sampler.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        prefetch: batches in flight per worker, >= 1.
        shuffle: with ``sampler=None``, visit the samples in a random order per epoch.
        collate_fn: ``collate_fn(samples, keys) -> batch`` (default :func:`collate`).
        start_method: ``"auto"`` (default; ``None`` means the same), ``"fork"`` (fast, shares an
            in-memory dataset without pickling; forcing it while other threads run risks a deadlock
            in a worker), ``"forkserver"`` or ``"spawn"`` (fresh interpreters: safe with threads,
            need picklable, importable objects and a guarded main script).
        persistent_workers: keep the workers between epochs.
        timeout: seconds to wait for one batch before raising :class:`WorkerError` (None: wait as
            long as the worker lives).

    Raises:
        ValueError: the dataset or the sampler is empty, ``drop_last`` leaves no batch, or
            ``start_method`` is unknown or unavailable here.
        TypeError: ``start_method`` is not a string. (Iterating raises TypeError or RuntimeError
            when workers started with forkserver/spawn could not import what they need, see above.)
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        sampler: Any = None,
        transforms: Callable[..., Mapping[str, Any]]
        | Sequence[Callable[..., Mapping[str, Any]]]
        | None = None,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
        *,
        shuffle: bool = False,
        collate_fn: Callable[..., dict[str, Any]] = collate,
        start_method: str | None = "auto",
        persistent_workers: bool = False,
        timeout: float | None = None,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError(
                f"the dataset ({type(dataset).__name__}) is empty; check its path, its file pattern or the "
                "split that produced it"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1 (batches in flight per worker), got {prefetch}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if sampler is not None and shuffle:
            raise ValueError("pass either a sampler or shuffle=True, not both")
        start_method = validate_start_method(start_method)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        if sampler is None:
            sampler = RandomSampler(dataset, seed=seed) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        self.transforms = as_transform_list(transforms)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.collate_fn = collate_fn
        self.start_method = start_method  # as requested; "auto" is resolved when workers start
        self.persistent_workers = bool(persistent_workers)
        self.timeout = timeout
        self.epoch = 0
        self._pool: WorkerPool | None = None  # the persistent pool
        self._worker_start_method: str | None = None
        self._active: weakref.ref[_WorkerIterator] | None = None
        if len(self) == 0:
            raise ValueError(
                f"the sampler yields {len(sampler)} keys, fewer than batch_size={batch_size} with "
                "drop_last=True: the loader would produce no batch; lower batch_size or set drop_last=False"
            )

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields (sampler order and augmentation depend on it)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def batch_keys(self, epoch: int | None = None) -> list[list[Any]]:
        """The sampler keys of every batch of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        keys = list(self.sampler)
        batches = [keys[i : i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if not batches:
            raise ValueError(
                f"epoch {epoch} has no batch: the sampler yielded {len(keys)} keys (batch_size="
                f"{self.batch_size}, drop_last={self.drop_last}); check the dataset or split is not empty"
            )
        return batches

    def load(self, index: int, epoch: int | None = None) -> dict[str, Any]:
        """Batch ``index`` of ``epoch`` (default: current), loaded in this process; owns its arrays."""
        batches = self.batch_keys(epoch)
        epoch = self.epoch if epoch is None else epoch
        return _load_in_process(self, batches[index], epoch, index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._stop_active()
        batches = self.batch_keys()
        if self.num_workers == 0:
            return _InProcessIterator(self, batches, self.epoch)
        iterator = _WorkerIterator(self, batches, self.epoch)
        self._active = weakref.ref(iterator)
        return iterator

    # -- workers ------------------------------------------------------------------------------------
    def _new_pool(self) -> WorkerPool:
        exit_if_bootstrapping()  # in a starting worker that re-ran an unguarded script: explain, exit
        method, reasons = resolve_start_method(self.start_method)
        check_workers_can_start(
            method,
            self.dataset,
            self.transforms,
            self.collate_fn,
            requested=self.start_method,
            reasons=reasons,
        )
        self._worker_start_method = method
        return WorkerPool(
            self.num_workers,
            self.dataset,
            self.transforms,
            self.collate_fn,
            self.seed,
            method,
            self.prefetch,
            self.timeout,
        )

    @property
    def worker_start_method(self) -> str | None:
        """The start method of the workers started last (``"auto"`` resolved); None before any."""
        return self._worker_start_method

    def _stop_active(self, abort: bool = False) -> None:
        """End the running epoch: drain a persistent pool for reuse, or (``abort``) stop its workers."""
        iterator = self._active() if self._active is not None else None
        self._active = None
        if iterator is not None:
            if abort:
                iterator._abort()
            else:
                iterator.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (empty when none run)."""
        iterator = self._active() if self._active is not None else None
        if iterator is not None and iterator.pool is not None and not iterator.pool.closed:
            return iterator.pool.pids
        if self._pool is not None and not self._pool.closed:
            return self._pool.pids
        return []

    def close(self) -> None:
        """Stop the workers of the running epoch and the persistent ones; unlink their memory."""
        self._stop_active(abort=True)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers}, seed={self.seed}, epoch={self.epoch})"
        )


def _load_in_process(loader: DataLoader, keys: list[Any], epoch: int, index: int) -> dict[str, Any]:
    """:func:`load_batch` in this process, restoring the global random states afterwards."""
    np_state = np.random.get_state()  # noqa: NPY002 - saved and restored around the batch
    py_state = random.getstate()
    try:
        return load_batch(
            loader.dataset, keys, loader.transforms, loader.collate_fn, loader.seed, epoch, index
        )
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


class _InProcessIterator:
    """One epoch loaded in the main process (``num_workers=0``)."""

    pool = None

    def __init__(self, loader: DataLoader, batches: list[list[Any]], epoch: int) -> None:
        self.loader = loader
        self.batches = batches
        self.epoch = epoch
        self.position = 0

    def __iter__(self) -> _InProcessIterator:
        return self

    def __len__(self) -> int:
        return len(self.batches) - self.position

    def __next__(self) -> dict[str, Any]:
        if self.position >= len(self.batches):
            raise StopIteration
        i = self.position
        self.position += 1
        return _load_in_process(self.loader, self.batches[i], self.epoch, i)

    def close(self) -> None:
        """End the epoch early."""
        self.position = len(self.batches)


class _WorkerIterator:
    """One epoch loaded by worker processes."""

    def __init__(self, loader: DataLoader, batches: list[list[Any]], epoch: int) -> None:
        self.loader = loader
        self.batches = batches
        self.epoch = epoch
        self.position = 0
        self.persistent = loader.persistent_workers
        if self.persistent:
            if loader._pool is None or loader._pool.closed:
                loader._pool = loader._new_pool()
            self.pool: WorkerPool | None = loader._pool
        else:
            self.pool = loader._new_pool()
        pool = self.pool
        self.submitted = 0
        try:
            while self.submitted < min(len(batches), pool.num_workers * pool.prefetch):
                self._submit_next()
        except BaseException:
            self._abort()
            raise

    def _submit_next(self) -> None:
        i = self.submitted
        assert self.pool is not None
        self.pool.submit(i % self.pool.num_workers, self.epoch, i, self.batches[i])
        self.submitted += 1

    def __iter__(self) -> _WorkerIterator:
        return self

    def __len__(self) -> int:
        return len(self.batches) - self.position

    def __next__(self) -> dict[str, Any]:
        if self.pool is None or self.position >= len(self.batches):
            self.close()
            raise StopIteration
        i = self.position
        try:
            batch = self.pool.receive(i % self.pool.num_workers, self.epoch)
            self.position += 1
            if self.submitted < len(self.batches):
                self._submit_next()
            if self.position == len(self.batches):
                self.close()  # the last batch: stop the workers now, not at the next call
        except BaseException:
            self._abort()
            raise
        return batch

    def _abort(self) -> None:
        """Stop the workers after an error or an interrupt (also a persistent pool: its state is unknown)."""
        pool, self.pool = self.pool, None
        self.position = len(self.batches)
        if pool is not None:
            pool.shutdown(graceful=False)
        if self.persistent and self.loader._pool is pool:
            self.loader._pool = None

    def close(self) -> None:
        """End the epoch: stop non-persistent workers; drain a persistent pool for the next epoch."""
        pool, self.pool = self.pool, None
        self.position = len(self.batches)
        if pool is None or pool.closed:
            return
        if not self.persistent:
            pool.shutdown()
            return
        try:
            pool.drain(self.epoch)
        except BaseException:
            pool.shutdown(graceful=False)
            if self.loader._pool is pool:
                self.loader._pool = None
            raise
