"""Datasets: the :class:`Dataset` protocol and the generic containers built on it.

A dataset is anything with ``__len__`` and ``__getitem__`` that returns one *sample*: a dict

``{"data": float32 (C, *spatial), "seg": int16 or uint8 (1, *spatial), "label": int,
"case_id": str, ...metadata}``

(``seg`` for segmentation data, ``label`` for classification data; both may be present). The
:class:`~delira.data.DataLoader` stacks the arrays of a batch to ``(N, C, *spatial)`` and collects
everything else into lists. Datasets that know their cases expose ``case_ids`` (one ``str`` per
index), which :mod:`delira.data.splits` and :meth:`Subset.from_case_ids` use.
"""

from __future__ import annotations

import bisect
import collections
import errno
import functools
import math
import mmap
import numbers
import os
import pickle
import struct
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np

from delira.data.samplers import RandomSampler, Sampler

__all__ = [
    "CacheDataset",
    "ConcatDataset",
    "Dataset",
    "LazyDataset",
    "SmartCacheDataset",
    "SmartCacheSampler",
    "Subset",
    "case_ids_of",
]


@runtime_checkable
class Dataset(Protocol):
    """What the loader needs from a dataset: a length and samples by index.

    ``__getitem__(index)`` returns a dict of arrays plus metadata (see the module docstring). The
    index is usually an ``int`` in ``[0, len)``; samplers may hand richer keys (for example the
    :class:`~delira.data.samplers.PatchKey` of a patch sampler) to datasets that understand them.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> dict[str, Any]: ...


def _check_index(index: Any, length: int, owner: str) -> int:
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner} indices must be integers, got {index!r} ({type(index).__name__}); "
            "wrap the dataset in a PatchDataset to use patch keys"
        ) from None
    if i != index:
        raise TypeError(f"{owner} indices must be integers, got {index!r}")
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} is out of range for {owner} with {length} samples")
    return i


def _check_sample(sample: Any, index: Any, owner: str) -> dict[str, Any]:
    if not isinstance(sample, Mapping):
        raise TypeError(
            f"{owner}: sample {index!r} is a {type(sample).__name__}, expected a dict like "
            "{'data': array, 'seg': array, 'case_id': str}; return a dict from the loading function"
        )
    return dict(sample)


def case_ids_of(dataset: Any) -> list[str]:
    """The case ids of ``dataset``: its ``case_ids`` attribute, else ``"0", "1", ...``.

    Args:
        dataset: any dataset.

    Returns:
        ``len(dataset)`` strings, one per index.
    """
    ids = getattr(dataset, "case_ids", None)
    if ids is None:
        return [str(i) for i in range(len(dataset))]
    ids = [str(i) for i in ids]
    if len(ids) != len(dataset):
        raise ValueError(
            f"{type(dataset).__name__}.case_ids has {len(ids)} entries but the dataset has "
            f"{len(dataset)} samples; give one case id per sample"
        )
    return ids


class LazyDataset:
    """Samples loaded on access: ``dataset[i] == load(items[i])``, nothing kept in memory.

    Args:
        items: one entry per case, whatever ``load`` understands (file paths, records, ...).
            Must be picklable when the loader uses worker processes.
        load: ``load(item) -> dict`` returning the sample dict (``"data"`` float32
            ``(C, *spatial)``, ...). Must be picklable (a module-level function or a class).
        case_ids: optional ids, one per item (default: the item's ``"case_id"`` if items are
            dicts that have one, else the index as a string).
    """

    def __init__(
        self,
        items: Sequence[Any],
        load: Callable[[Any], Mapping[str, Any]],
        case_ids: Sequence[str] | None = None,
    ) -> None:
        self.items = list(items)
        if not callable(load):
            raise TypeError(f"load must be callable (item -> sample dict), got {type(load).__name__}")
        self.load = load
        if case_ids is None:
            case_ids = [
                str(it["case_id"]) if isinstance(it, Mapping) and "case_id" in it else str(i)
                for i, it in enumerate(self.items)
            ]
        if len(case_ids) != len(self.items):
            raise ValueError(f"got {len(case_ids)} case_ids for {len(self.items)} items; give one per item")
        self.case_ids = [str(c) for c in case_ids]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = _check_index(index, len(self), type(self).__name__)
        return _check_sample(self.load(self.items[i]), i, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, load={getattr(self.load, '__name__', self.load)!r})"


class CacheDataset:
    """Every sample of ``source`` loaded once, up front, and served from memory.

    Args:
        source: the dataset to cache (typically a file-based, lazy dataset).
        num_workers: threads used to load the samples (0: load in this thread). Reading and
            decompressing medical images releases the GIL, so threads speed up the load without
            copying the arrays between processes.
        check: check every case while loading it (:func:`delira.data.check_dataset`'s checks:
            missing or unreadable files, image/label shapes, non-integer labels, NaN or infinite
            values) and raise one :class:`~delira.data.DatasetError` listing every problem.

    The samples are shallow-copied dicts of the cached arrays on access: replacing a key in the
    returned dict does not alter the cache, but modifying an array in place does.
    """

    def __init__(self, source: Dataset, num_workers: int = 0, *, check: bool = False) -> None:
        n = len(source)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")

        def load(i: int) -> dict[str, Any]:
            return _check_sample(source[i], i, type(source).__name__)

        if check:
            from delira.data.checks import scan_cases

            name = type(source).__name__
            self.samples = scan_cases(source, lambda i, s: _check_sample(s, i, name), num_workers=num_workers)
        elif num_workers == 0 or n <= 1:
            self.samples = [load(i) for i in range(n)]
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as pool:
                self.samples = list(pool.map(load, range(n)))
        self.case_ids = case_ids_of(source)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        return dict(self.samples[_check_index(index, len(self), type(self).__name__)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"


class ConcatDataset:
    """Several datasets one after the other: indices ``[0, len(a))`` go to ``a``, then ``b``, ...

    Args:
        datasets: the datasets, at least one.
    """

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset; got none")
        self.cumulative_sizes: list[int] = []
        total = 0
        for d in self.datasets:
            total += len(d)
            self.cumulative_sizes.append(total)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset number, index inside that dataset)`` of a global index."""
        i = _check_index(index, len(self), type(self).__name__)
        d = bisect.bisect_right(self.cumulative_sizes, i)
        start = self.cumulative_sizes[d - 1] if d > 0 else 0
        return d, i - start

    def __getitem__(self, index: Any) -> dict[str, Any]:
        d, i = self.locate(index)
        return self.datasets[d][i]

    @property
    def case_ids(self) -> list[str]:
        """The case ids of all datasets, in order."""
        return [c for d in self.datasets for c in case_ids_of(d)]


class Subset:
    """A view of some samples of a dataset: ``subset[j] == dataset[indices[j]]``.

    Args:
        dataset: the full dataset.
        indices: indices into ``dataset`` (ints in ``[-len, len)``), repeats allowed.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        n = len(dataset)
        self.indices = [_check_index(i, n, type(dataset).__name__) for i in indices]

    @classmethod
    def from_case_ids(cls, dataset: Dataset, case_ids: Iterable[str]) -> Subset:
        """The samples of ``dataset`` whose case id is in ``case_ids``, in the order given.

        Raises:
            KeyError: a case id that ``dataset`` does not have (all of them are listed).
        """
        position = {c: i for i, c in enumerate(case_ids_of(dataset))}
        wanted = [str(c) for c in case_ids]
        missing = [c for c in wanted if c not in position]
        if missing:
            raise KeyError(
                f"{len(missing)} case ids are not in the dataset ({type(dataset).__name__} with "
                f"{len(position)} cases): {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
                "check that the splits file belongs to this dataset"
            )
        return cls(dataset, [position[c] for c in wanted])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        return self.dataset[self.indices[_check_index(index, len(self), type(self).__name__)]]

    @property
    def case_ids(self) -> list[str]:
        """The case ids of the selected samples."""
        ids = case_ids_of(self.dataset)
        return [ids[i] for i in self.indices]

    @property
    def labels(self) -> list[Any]:
        """The per-case labels of the selected samples (when the dataset has ``labels``)."""
        labels = getattr(self.dataset, "labels", None)
        if labels is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no per-case labels")
        return [labels[i] for i in self.indices]


# -- SmartCacheDataset: a partial cache that rotates through the source --------------------------------
_HEADER = struct.Struct("<QQ")  # pickled-header length (0 until the segment is complete), data offset
_ALIGN = 64  # byte alignment of the arrays inside a segment

# Creating and unlinking a segment talks to the resource tracker under its (process-wide) lock. A
# process forked while a background thread holds that lock inherits it locked, and its first segment
# (a loader worker's batch slot) would wait for it forever. So those calls hold _TRACKER_LOCK, which
# every fork of this process takes first: no fork happens in the middle of one.
_TRACKER_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_TRACKER_LOCK.acquire,
        after_in_parent=_TRACKER_LOCK.release,
        after_in_child=_TRACKER_LOCK.release,
    )


def _aligned(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


def _load_sample(source: Dataset, index: int) -> dict[str, Any]:
    return _check_sample(source[index], index, type(source).__name__)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class _Entry:
    """One cached sample: its top-level arrays (read-only), the other values, the key order."""

    __slots__ = ("arrays", "meta", "name", "order")

    def __init__(
        self, arrays: dict[str, np.ndarray], meta: dict[str, Any], order: list[str], name: str | None
    ) -> None:
        self.arrays, self.meta, self.order, self.name = arrays, meta, order, name

    def sample(self) -> dict[str, Any]:
        return {k: self.arrays[k] if k in self.arrays else self.meta[k] for k in self.order}


def _split(sample: Mapping[str, Any]) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any], list[str]]:
    arrays = [(k, v) for k, v in sample.items() if isinstance(v, np.ndarray) and not v.dtype.hasobject]
    keys = {k for k, _ in arrays}
    return arrays, {k: v for k, v in sample.items() if k not in keys}, list(sample)


def _map_shared(path: str) -> tuple[_Entry, int] | None:
    """The sample in segment file ``path`` (arrays: read-only views of it) and the file's inode.

    None when the segment is absent, still being written, or holds no usable metadata.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        stat = os.fstat(fd)
        if stat.st_size < _HEADER.size:
            return None
        buffer = mmap.mmap(fd, stat.st_size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    length, start = _HEADER.unpack_from(buffer, 0)
    if length == 0:  # still being written
        return None
    try:
        layout, meta, order = pickle.loads(buffer[_HEADER.size : _HEADER.size + length])
    except Exception:
        return None
    if meta is None:  # the metadata could not be pickled: the caller loads the sample itself
        return None
    arrays = {
        key: np.ndarray(shape, dtype=dtype, buffer=buffer, offset=start + offset)
        if math.prod(shape)
        else np.empty(shape, dtype=dtype)
        for key, offset, shape, dtype in layout
    }
    return _Entry(arrays, meta, order, os.path.basename(path)), stat.st_ino


class _CacheState:
    """What the loading threads and the finalizer share (never the dataset, so that it can be collected).

    Every segment this cache created and has not unlinked yet is in ``segments``, so that
    :meth:`shutdown` removes them all.
    """

    def __init__(self, prefix: str, folder: str | None) -> None:
        self.prefix = prefix
        self.folder = folder  # where segments appear as files; None: samples kept in private memory
        self.lock = threading.Lock()
        self.segments: dict[str, Any] = {}
        self.rotation: _Rotation | None = None
        self.closed = False
        self.warned = False

    def name(self, index: int) -> str:
        return f"{self.prefix}_c{index}"

    def store(self, index: int, sample: Mapping[str, Any]) -> _Entry:
        """``sample`` as a cache entry: in a shared-memory segment where possible, else in private memory."""
        arrays, meta, order = _split(sample)
        if self.folder is not None:
            try:
                return self._store_shared(index, arrays, meta, order)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise
                if not self.warned:
                    self.warned = True
                    warnings.warn(
                        f"SmartCacheDataset: {self.folder} is full ({exc.strerror}); samples that do not fit "
                        "are kept in this process's memory, and DataLoader workers load those from the "
                        "source. Enlarge it (docker run --shm-size=...) or lower cache_rate",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        with self.lock:
            if self.closed:
                raise RuntimeError("the SmartCacheDataset was closed")
        return _Entry({k: _read_only(v) for k, v in arrays}, meta, order, None)

    def _store_shared(
        self, index: int, arrays: list[tuple[str, np.ndarray]], meta: dict[str, Any], order: list[str]
    ) -> _Entry:
        from multiprocessing import shared_memory

        layout, offset = [], 0
        for key, a in arrays:
            offset = _aligned(offset)
            layout.append((key, offset, tuple(a.shape), a.dtype))
            offset += a.nbytes
        try:
            header = pickle.dumps((layout, meta, order), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # unpicklable metadata: only this process serves the sample from memory
            header = pickle.dumps((layout, None, order), protocol=pickle.HIGHEST_PROTOCOL)
        start = _aligned(_HEADER.size + len(header))
        size = start + offset
        name = self.name(index)
        with self.lock:
            if self.closed:
                raise RuntimeError("the SmartCacheDataset was closed")
            # Created through shared_memory so that the resource tracker removes it if we are killed.
            with _TRACKER_LOCK:
                segment = shared_memory.SharedMemory(name=name, create=True, size=size)
            segment.close()  # its own mapping; this process maps the file below
            self.segments[name] = segment
        try:
            fd = os.open(os.path.join(self.folder, name), os.O_RDWR)  # type: ignore[arg-type]
            try:
                os.posix_fallocate(fd, 0, size)  # a full /dev/shm fails here, not with SIGBUS on write
                buffer = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            buffer[_HEADER.size : _HEADER.size + len(header)] = header
            views = {}
            for (key, off, shape, dtype), (_, a) in zip(layout, arrays):
                if a.nbytes:
                    view = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=start + off)
                    np.copyto(view, a, casting="no")
                else:
                    view = np.empty(shape, dtype=dtype)
                view.flags.writeable = False
                views[key] = view
            _HEADER.pack_into(buffer, 0, len(header), start)  # last: readers see a complete segment
        except BaseException:
            self.unlink(name)
            raise
        return _Entry(views, meta, order, name)

    def unlink(self, name: str | None) -> None:
        if name is None:
            return
        with self.lock:
            segment = self.segments.pop(name, None)
        if segment is not None:
            try:
                with _TRACKER_LOCK:
                    segment.unlink()
            except FileNotFoundError:
                pass

    def shutdown(self) -> None:
        """Stop the loading threads (each finishes the sample it is loading) and unlink every segment."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            rotation, self.rotation = self.rotation, None
        if rotation is not None:
            rotation.stop()
            rotation.join()
            rotation.take()
        for name in list(self.segments):
            self.unlink(name)


class _Rotation:
    """The replacements for epoch ``target``, loaded by background threads."""

    def __init__(self, target: int, todo: Sequence[int]) -> None:
        self.target = target
        self.todo = collections.deque(todo)
        self.results: dict[int, _Entry] = {}
        self.lock = threading.Lock()
        self.stopped = False
        self.threads: list[threading.Thread] = []

    def start(self, state: _CacheState, load: Callable[[int], dict[str, Any]], num_threads: int) -> None:
        for k in range(num_threads):
            thread = threading.Thread(
                target=self._run, args=(state, load), name=f"delira-smartcache-{k}", daemon=True
            )
            self.threads.append(thread)
            thread.start()

    def _run(self, state: _CacheState, load: Callable[[int], dict[str, Any]]) -> None:
        while True:
            with self.lock:
                if self.stopped or not self.todo:
                    return
                index = self.todo.popleft()
            try:
                entry = state.store(index, load(index))
            except Exception:  # retried (and raised) in the main thread when the epoch starts
                continue
            with self.lock:
                keep = not self.stopped
                if keep:
                    self.results[index] = entry
            if not keep:
                state.unlink(entry.name)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True

    def join(self) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join()

    def take(self) -> dict[int, _Entry]:
        with self.lock:
            results, self.results = self.results, {}
        return results


def _check_rate(value: Any, name: str, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {'[0' if allow_zero else '(0'}, 1], got {value!r}")
    rate = float(value)
    if not (0.0 <= rate <= 1.0) or (rate == 0.0 and not allow_zero):
        raise ValueError(
            f"{name} must be in {'[0' if allow_zero else '(0'}, 1] (a fraction of the "
            f"{'cache' if name == 'replace_rate' else 'dataset'}), got {value!r}"
        )
    return rate


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class SmartCacheDataset:
    """Part of a dataset in memory, rotating through all of it epoch by epoch (MONAI's SmartCache idea).

    For datasets that do not fit in memory: ``cache_num`` samples of ``source`` are cached, and each
    epoch the ``replace_num`` samples cached longest make way for the next ones of a seeded rotation,
    loaded by background threads while the previous epoch runs.

    Rotation: the source indices in the order ``numpy.random.default_rng(seed).permutation(n)``
    (``shuffle=True``) or ``0 .. n - 1``, read as a ring; epoch ``e`` caches the ``cache_num``
    consecutive indices starting at position ``e * replace_num`` (:meth:`indices_for_epoch`). So the
    cache of an epoch depends on ``(seed, e)`` only (resuming at epoch 17 caches what epoch 17 cached
    before), consecutive epochs share ``cache_num - replace_num`` samples, and every case is cached
    within ``ceil((n - cache_num) / replace_num) + 1`` consecutive epochs.

    Keys are *source* indices: ``dataset[i]`` is ``source[i]`` for every ``i`` in ``[0, n)``, from
    memory when ``i`` is cached this epoch, else loaded from ``source`` (a miss, not stored). Draw the
    keys with :meth:`sampler` (a :class:`SmartCacheSampler`): it yields only indices of the current
    cache, and its ``set_epoch`` -- which the :class:`~delira.data.DataLoader` calls before each epoch
    -- moves the cache to that epoch. ``set_epoch(e)`` waits for the background loads of epoch ``e``
    if they are not done yet (the only time anything waits on them); reading a cached sample never
    waits. Other epochs (a jump) are loaded there and then, by ``num_init_workers`` threads.

    Loader workers: the cache lives in POSIX shared memory, one segment per sample
    (``/dev/shm/delira_<pid>_<token>_c<index>``). A worker -- forked, or started by the fork server
    or spawn (the dataset pickles small: the source and the rotation, never a sample) -- finds the
    segment of the sample it is asked for by name and maps it read-only; it reuses that mapping and
    releases it once the sample has left the cache. So every worker sees the current epoch's cache,
    persistent workers included, and the memory is shared, never copied per worker. A sample that
    is not (or no longer) cached, or whose metadata cannot be pickled, the worker loads from
    ``source``: correct, only slower. With ``shared=False``, and where there is no ``/dev/shm``
    (macOS, Windows), the cache is in this process's memory and workers always load from the source.
    While the background threads run, ``start_method="auto"`` starts workers with the fork server
    rather than fork (:func:`~delira.data.loader.fork_blockers` names the threads), which costs about
    a second per start: pass ``persistent_workers=True`` to start them once. The cache's own threads
    hold no lock across a fork, so ``start_method="fork"`` is as safe as the code of ``source``
    that they run.

    Memory: the samples of the current epoch (at most ``cache_num``) plus the replacements loaded so
    far for the next one (at most ``replace_num``): never more than ``cache_num + replace_num``
    samples. A jump to another epoch drops the samples it does not need before loading the others.
    If ``/dev/shm`` fills up, samples that do not fit stay in private memory (a ``RuntimeWarning``).

    Args:
        source: the dataset (typically file-based and lazy); read from several threads at once.
        cache_num: samples cached per epoch (clipped to ``len(source)``).
        cache_rate: the fraction of ``source`` cached, in ``(0, 1]``: ``floor(cache_rate * n)``
            samples, at least 1. With ``cache_num`` too, the smaller of the two.
        replace_rate: the fraction of the cache replaced each epoch, in ``[0, 1]``: ``replace_num =
            min(ceil(replace_rate * cache_num), n - cache_num)`` (0: a fixed partial cache; the
            other cases are never cached).
        seed: seeds the rotation order.
        shuffle: rotate through a seeded permutation of the source (False: in index order).
        num_init_workers: threads loading the first epoch's cache and after a jump (0: this thread).
        num_replace_workers: background threads loading the replacements, >= 1.
        shared: keep the cache in shared memory, readable by loader workers (see above).

    Samples are dicts whose top-level arrays are read-only views of the cache (copy them to modify).
    Call :meth:`close` (or use ``with``) to stop the threads and free the memory; garbage collection
    and interpreter exit do it too.

    Raises:
        ValueError, TypeError: an empty source, a rate outside its range, a count below 1, a
            non-numeric argument.
    """

    def __init__(
        self,
        source: Dataset,
        cache_num: int | None = None,
        cache_rate: float = 1.0,
        replace_rate: float = 0.1,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_init_workers: int = 0,
        num_replace_workers: int = 1,
        shared: bool = True,
    ) -> None:
        n = len(source)
        if n == 0:
            raise ValueError(
                f"the source dataset ({type(source).__name__}) is empty; check its path or the split that "
                "produced it"
            )
        rate = _check_rate(cache_rate, "cache_rate", allow_zero=False)
        count = max(1, math.floor(rate * n + 1e-9))
        if cache_num is not None:
            count = min(count, _check_count(cache_num, "cache_num", 1))
        self.cache_num = min(count, n)
        replace = _check_rate(replace_rate, "replace_rate", allow_zero=True)
        self.replace_num = min(math.ceil(replace * self.cache_num - 1e-9), n - self.cache_num)
        self.seed = _check_count(seed, "seed", 0)
        self.shuffle = bool(shuffle)
        self.num_init_workers = _check_count(num_init_workers, "num_init_workers", 0)
        self.num_replace_workers = _check_count(num_replace_workers, "num_replace_workers", 1)
        self.source = source
        self.order: list[int] = (
            np.random.default_rng(self.seed).permutation(n).tolist() if self.shuffle else list(range(n))
        )
        self.case_ids = case_ids_of(source)
        labels = getattr(source, "labels", None)
        if labels is not None:
            self.labels = list(labels)
        self.epoch = 0
        self._n = n
        self._load = functools.partial(_load_sample, source)
        from delira.data.loader import shm

        self._folder = shm.segment_dir() if shared else None
        self._prefix = shm.new_prefix()
        self._pid = os.getpid()
        self._client = False  # a copy in another process (a loader worker): reads segments only
        self._current: dict[int, _Entry] = {}
        self._held: dict[int, tuple[_Entry, int]] = {}  # a worker's mapped segments and their inodes
        self._complete = False
        self._switch_lock = threading.RLock()
        self._state: _CacheState | None = _CacheState(self._prefix, self._folder)
        self._finalizer: weakref.finalize | None = weakref.finalize(self, self._state.shutdown)
        try:
            self._switch(0)
        except BaseException:
            self.close()
            raise

    # -- the rotation -------------------------------------------------------------------------------
    def indices_for_epoch(self, epoch: int) -> list[int]:
        """The source indices cached in ``epoch``, in rotation order (a pure function of seed and epoch)."""
        epoch = _check_count(epoch, "epoch", 0)
        first = epoch * self.replace_num
        return [self.order[(first + k) % self._n] for k in range(self.cache_num)]

    @property
    def shared(self) -> bool:
        """True when the cache is in shared memory (loader workers read it)."""
        return self._folder is not None

    @property
    def cached_indices(self) -> list[int]:
        """The source indices held in memory for the current epoch, in rotation order.

        In a loader worker's copy: the indices of the epoch it was created in (it reads whatever the
        main process holds when asked).
        """
        if self._client or os.getpid() != self._pid:
            return self.indices_for_epoch(self.epoch)
        return list(self._current)

    @property
    def pending_indices(self) -> list[int]:
        """The replacements for the next epoch that the background threads have loaded so far (sorted)."""
        state = self._state
        if self._client or state is None or os.getpid() != self._pid:
            return []
        rotation = state.rotation
        if rotation is None:
            return []
        with rotation.lock:
            return sorted(rotation.results)

    def set_epoch(self, epoch: int) -> None:
        """Make the cache that of ``epoch`` (waiting for its background loads if they are not done).

        Raises:
            the source's exception for a sample that could not be loaded (the cache then holds the
            others; a later ``set_epoch`` tries again).
        """
        epoch = _check_count(epoch, "epoch", 0)
        if self._client or os.getpid() != self._pid:
            self._become_client()
            self.epoch = epoch
            return
        with self._switch_lock:
            self._check_open()
            if epoch == self.epoch and self._complete:
                return
            self._switch(epoch)

    def _switch(self, epoch: int) -> None:
        state = self._state
        assert state is not None
        window = self.indices_for_epoch(epoch)
        wanted = set(window)
        with state.lock:
            rotation, state.rotation = state.rotation, None
        ready: dict[int, _Entry] = {}
        if rotation is not None:
            if rotation.target != epoch:
                rotation.stop()  # a jump: its replacements are not wanted
            rotation.join()
            ready = rotation.take()
        current: dict[int, _Entry] = {}
        for held in (self._current, ready):
            for i, entry in held.items():
                if i in wanted and i not in current:
                    current[i] = entry
                else:
                    state.unlink(entry.name)
        self._current = current
        self.epoch = epoch
        self._complete = False
        try:
            self._load_into(current, [i for i in window if i not in current])
        finally:
            self._current = {i: current[i] for i in window if i in current}
        self._complete = True
        todo = [i for i in self.indices_for_epoch(epoch + 1) if i not in wanted]
        if todo:
            rotation = _Rotation(epoch + 1, todo)
            with state.lock:
                if state.closed:
                    return
                state.rotation = rotation
            rotation.start(state, self._load, min(self.num_replace_workers, len(todo)))

    def _load_into(self, current: dict[int, _Entry], missing: list[int]) -> None:
        state = self._state
        assert state is not None
        if self.num_init_workers == 0 or len(missing) <= 1:
            for i in missing:
                current[i] = state.store(i, self._load(i))
            return

        def load(i: int) -> tuple[int, _Entry]:
            return i, state.store(i, self._load(i))

        error: BaseException | None = None
        workers = min(self.num_init_workers, len(missing))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delira-smartcache-init") as pool:
            futures = [pool.submit(load, i) for i in missing]
            for future in futures:
                if future.cancelled():
                    continue
                try:
                    i, entry = future.result()
                    current[i] = entry
                except Exception as exc:
                    if error is None:
                        error = exc
                        for f in futures:
                            f.cancel()
                except BaseException:  # KeyboardInterrupt while waiting: stop queuing, then re-raise
                    for f in futures:
                        f.cancel()
                    raise
        if error is not None:
            raise error

    # -- samples ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = _check_index(index, self._n, type(self).__name__)
        if self._client or os.getpid() != self._pid:
            self._become_client()
            return self._client_sample(i)
        entry = self._current.get(i)
        if entry is not None:
            return entry.sample()
        self._check_open()
        return self._load(i)

    def _client_sample(self, i: int) -> dict[str, Any]:
        """A loader worker's read: the main process's segment of ``i`` (mapped once), else the source.

        A mapping stays valid after the main process unlinks the segment (the sample of an index never
        changes), so the ones held are reused without a check; when ``cache_num`` are held, those whose
        segment is gone or was re-created are released before another is mapped, so that a worker
        does not keep evicted samples alive.
        """
        held = self._held.get(i)
        if held is None:
            if self._folder is None:
                return self._load(i)
            if len(self._held) >= self.cache_num:
                for j, (_, inode) in list(self._held.items()):
                    try:
                        current = os.stat(self._segment_path(j)).st_ino == inode
                    except OSError:
                        current = False
                    if not current:
                        del self._held[j]
            held = _map_shared(self._segment_path(i))
            if held is None:
                return self._load(i)
            self._held[i] = held
        return held[0].sample()

    def _segment_path(self, i: int) -> str:
        return os.path.join(self._folder or "", f"{self._prefix}_c{i}")

    def sampler(
        self, shuffle: bool = True, replacement: bool = False, num_samples: int | None = None, seed: int = 0
    ) -> SmartCacheSampler:
        """A :class:`SmartCacheSampler` of this dataset (see there for the arguments)."""
        return SmartCacheSampler(
            self, shuffle=shuffle, replacement=replacement, num_samples=num_samples, seed=seed
        )

    # -- processes and shutdown ---------------------------------------------------------------------
    def _become_client(self) -> None:
        """In a forked child: forget the parent's threads, entries and cleanup (they are the parent's)."""
        if self._client:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        self._client = True
        self._pid = os.getpid()
        self._current = {}
        self._held = {}
        self._state = None
        self._switch_lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        skip = {"_current", "_held", "_state", "_finalizer", "_switch_lock", "_client", "_complete", "_pid"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = True
        self._pid = os.getpid()
        self._current = {}
        self._held = {}
        self._complete = False
        self._state = None
        self._switch_lock = threading.RLock()
        self._finalizer = None

    def _check_open(self) -> None:
        state = self._state
        if state is None or state.closed:
            raise RuntimeError(
                "this SmartCacheDataset was closed (its threads stopped, its memory freed); create a new one"
            )

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (always False in a loader worker's copy)."""
        return not self._client and (self._state is None or self._state.closed)

    def close(self) -> None:
        """Stop the background threads (each finishes its current sample) and free the cache.

        Idempotent. Samples already returned stay valid. A no-op in a loader worker's copy.
        """
        if self._client or os.getpid() != self._pid:
            return
        with self._switch_lock:
            if self._finalizer is not None:
                self._finalizer()
            self._current = {}
            self._complete = False

    def __enter__(self) -> SmartCacheDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.cache_num} of {self._n} samples, replace_num={self.replace_num}, "
            f"epoch={self.epoch}, shared={self.shared})"
        )


class SmartCacheSampler(Sampler):
    """The keys of a :class:`SmartCacheDataset`'s cache, epoch by epoch; moves the cache along.

    ``set_epoch(e)`` (called by the :class:`~delira.data.DataLoader` before each epoch) calls
    ``dataset.set_epoch(e)``; iterating yields source indices of ``dataset.indices_for_epoch(e)``
    only, so every key of the epoch is a cache hit, in the main process and in the workers.

    Args:
        dataset: the :class:`SmartCacheDataset`.
        shuffle: a random order per epoch (``numpy.random.default_rng([seed, epoch])``, as
            :class:`~delira.data.samplers.RandomSampler` over the cache); False: rotation order.
        replacement: with ``shuffle``, draw with replacement (e.g. as the base of a
            :class:`~delira.data.samplers.ForegroundOversamplingSampler`).
        num_samples: keys per epoch (default ``cache_num``); without replacement, more than
            ``cache_num`` repeats the cache (fresh permutations).
        seed: the sampler seed.
    """

    def __init__(
        self,
        dataset: SmartCacheDataset,
        shuffle: bool = True,
        replacement: bool = False,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(dataset, SmartCacheDataset):
            raise TypeError(
                f"SmartCacheSampler needs a SmartCacheDataset, got {type(dataset).__name__}; wrap the dataset "
                "with SmartCacheDataset(source, cache_rate=...) first"
            )
        if replacement and not shuffle:
            raise ValueError("replacement=True draws at random: it needs shuffle=True")
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.num_samples = (
            dataset.cache_num if num_samples is None else _check_count(num_samples, "num_samples", 1)
        )
        self.seed = _check_count(seed, "seed", 0)
        self._positions = (
            RandomSampler(dataset.cache_num, replacement=replacement, num_samples=self.num_samples, seed=seed)
            if self.shuffle
            else None
        )

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch`` and move the dataset's cache to it."""
        super().set_epoch(epoch)
        self.dataset.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[int]:
        self.dataset.set_epoch(self.epoch)
        window = self.dataset.indices_for_epoch(self.epoch)
        if self._positions is None:
            positions: Iterable[int] = (k % len(window) for k in range(self.num_samples))
        else:
            self._positions.set_epoch(self.epoch)
            positions = self._positions
        return iter([window[k] for k in positions])

    def __len__(self) -> int:
        return self.num_samples
