"""Shared-memory slots that carry batches from the worker processes to the main process.

Each worker owns a few *slots*; a slot is one POSIX shared-memory segment that the worker creates
(``multiprocessing.shared_memory``, so the resource tracker knows it) and reuses for batch after
batch, growing it when a batch does not fit. Reuse means the pages are faulted in once, not per
batch. The main process maps a slot once and hands out numpy arrays that *view* it (no copy); the
slot goes back to its worker when the last of those arrays is garbage collected.

Segment names are ``<prefix>_w<worker>_s<slot>_<generation>`` with a per-pool prefix
``delira_<main pid>_<random>``, so the main process can remove every segment of a pool at shutdown,
including any that a crashed worker created but never reported.
"""

from __future__ import annotations

import mmap
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import shared_memory
from typing import Any

import numpy as np

__all__ = [
    "ALIGNMENT",
    "SegmentWriter",
    "map_segment",
    "new_prefix",
    "segment_dir",
    "sweep_segments",
    "unlink_segment",
    "views",
]

ALIGNMENT = 64
"""Byte alignment of every array inside a segment (a cache line; also what SIMD loads like)."""

Layout = list[tuple[str, int, tuple[int, ...], np.dtype]]
"""``[(key, byte offset, shape, dtype), ...]`` of the arrays packed into one segment."""


def segment_dir() -> str | None:
    """The folder where POSIX shared memory appears as files (``/dev/shm`` on Linux), else None."""
    return "/dev/shm" if sys.platform.startswith("linux") and os.path.isdir("/dev/shm") else None


def new_prefix() -> str:
    """A fresh segment-name prefix, ``delira_<pid>_<6 hex digits>``."""
    return f"delira_{os.getpid()}_{secrets.token_hex(3)}"


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_specs(specs: Sequence[tuple[str, tuple[int, ...], np.dtype]]) -> tuple[Layout, int]:
    """Offsets of arrays ``(key, shape, dtype)`` packed one after the other, each aligned.

    Returns:
        ``(layout, total bytes)``.
    """
    layout: Layout = []
    offset = 0
    for key, shape, dtype in specs:
        dtype = np.dtype(dtype)
        offset = _align(offset)
        layout.append((key, offset, tuple(shape), dtype))
        offset += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return layout, offset


def plan_layout(arrays: Sequence[tuple[str, np.ndarray]]) -> tuple[Layout, int]:
    """:func:`plan_specs` for ``(key, array)`` pairs."""
    return plan_specs([(key, array.shape, array.dtype) for key, array in arrays])


class SegmentWriter:
    """The worker side: owns this worker's slots and puts batches into them.

    A batch reaches its slot in one of two ways. :meth:`allocator` lets
    :func:`~delira.data.loader.collate.collate` stack the samples straight into the slot; arrays
    that the transforms then return unchanged (the same objects, e.g. modified in place) stay where
    they are. Every other array is copied into the slot by :meth:`write`. So a loader without
    transforms, or with in-place transforms, copies each voxel once (the stacking), like loading
    in a single process.

    Args:
        prefix: the pool's segment-name prefix.
        worker_id: this worker's number (part of the segment names).
    """

    def __init__(self, prefix: str, worker_id: int) -> None:
        self.prefix = prefix
        self.worker_id = worker_id
        self.segments: dict[int, shared_memory.SharedMemory] = {}
        self.generation = 0
        self._collated: dict[int, tuple[dict[str, np.ndarray], Layout]] = {}
        self._wanted: dict[int, int] = {}
        self._retired: list[shared_memory.SharedMemory] = []

    def allocator(self, slot: int) -> Callable[[Sequence[tuple[str, tuple[int, ...], np.dtype]]], Any]:
        """An ``allocate`` for :func:`collate` that hands out arrays inside ``slot`` (None if too small)."""

        def allocate(specs: Sequence[tuple[str, tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray] | None:
            layout, nbytes = plan_specs(specs)
            self._wanted[slot] = nbytes
            segment = self.segments.get(slot)
            if segment is None or segment.size < nbytes:
                return None
            out = {
                key: np.ndarray(shape, dtype=dtype, buffer=segment.buf, offset=offset)
                for key, offset, shape, dtype in layout
            }
            self._collated[slot] = (out, layout)
            return out

        return allocate

    def _create(self, slot: int, nbytes: int) -> shared_memory.SharedMemory:
        self.generation += 1
        name = f"{self.prefix}_w{self.worker_id}_s{slot}_{self.generation}"
        size = max(mmap.PAGESIZE, (nbytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
        self.segments[slot] = segment
        return segment

    def _close_retired(self) -> None:
        keep = []
        for segment in self._retired:
            try:
                segment.close()
            except BufferError:  # a view of it is still referenced; try again next batch
                keep.append(segment)
        self._retired = keep

    def write(self, slot: int, arrays: Sequence[tuple[str, np.ndarray]]) -> tuple[str, Layout]:
        """Put ``arrays`` into ``slot`` (creating or growing it); returns (segment name, layout)."""
        self._close_retired()
        collated, collated_layout = self._collated.pop(slot, ({}, []))
        offset_of = {id(collated[key]): offset for key, offset, _, _ in collated_layout}
        segment = self.segments.get(slot)
        # Arrays still in place in the slot keep their offset; the others are packed after them.
        placed: dict[int, int] = {}
        end = 0
        for i, (_, array) in enumerate(arrays):
            if id(array) in offset_of:
                placed[i] = offset_of[id(array)]
                end = max(end, placed[i] + array.nbytes)
        pending = [i for i in range(len(arrays)) if i not in placed]
        offset = end
        for i in pending:
            offset = _align(offset)
            placed[i] = offset
            offset += arrays[i][1].nbytes
        if segment is None or segment.size < offset:
            # First use or too small: a fresh segment, everything packed and copied into it.
            if segment is not None:
                try:
                    segment.unlink()
                except FileNotFoundError:
                    pass
                self._retired.append(segment)
            layout, nbytes = plan_layout(arrays)
            segment = self._create(slot, max(nbytes, offset, self._wanted.get(slot, 0)))
            for (_, off, shape, dtype), (_, array) in zip(layout, arrays):
                target = np.ndarray(shape, dtype=dtype, buffer=segment.buf, offset=off)
                np.copyto(target, array, casting="no")
                del target
            return segment.name, layout
        sources = [array for _, array in arrays]
        for n, i in enumerate(pending):
            array = arrays[i][1]
            target = np.ndarray(array.shape, dtype=array.dtype, buffer=segment.buf, offset=placed[i])
            # A later array may be a view of the bytes this copy overwrites: keep a copy of it first.
            for j in pending[n + 1 :]:
                if np.may_share_memory(target, sources[j]):
                    sources[j] = sources[j].copy()
            np.copyto(target, sources[i], casting="no")
            del target
        del collated
        layout = [(key, placed[i], tuple(array.shape), array.dtype) for i, (key, array) in enumerate(arrays)]
        return segment.name, layout

    def discard(self, slot: int) -> None:
        """Forget the arrays collated into ``slot`` for a batch that failed."""
        self._collated.pop(slot, None)

    def close(self) -> None:
        """Unmap every slot (the main process unlinks them)."""
        self._collated.clear()
        for segment in [*self.segments.values(), *self._retired]:
            try:
                segment.close()
            except BufferError:  # pragma: no cover - a view still alive; the OS unmaps at exit
                pass
        self.segments.clear()
        self._retired.clear()


def map_segment(name: str) -> mmap.mmap | None:
    """Map segment ``name`` read-write in this process; None where segments are not files.

    The mapping lives as long as some object references it (numpy arrays viewing it do), so no
    explicit close is needed, and an unlinked segment stays valid while mapped.
    """
    folder = segment_dir()
    if folder is None:
        return None
    fd = os.open(os.path.join(folder, name), os.O_RDWR)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def views(buffer: Any, layout: Layout) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Numpy arrays over ``buffer`` as described by ``layout``.

    Returns:
        ``(owner, arrays)``: ``owner`` is a ``uint8`` array over the used bytes that every array in
        ``arrays`` has as its ``.base`` (so a ``weakref.finalize`` on it fires when the last array
        dies), or None when the layout holds no bytes.
    """
    end = max(
        (off + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for _, off, shape, dtype in layout),
        default=0,
    )
    if end == 0:
        return None, {key: np.empty(shape, dtype=dtype) for key, _, shape, dtype in layout}
    owner = np.frombuffer(buffer, dtype=np.uint8, count=end)
    return owner, {
        key: np.ndarray(shape, dtype=dtype, buffer=owner, offset=offset)
        for key, offset, shape, dtype in layout
    }


def copy_from_segment(name: str, layout: Layout) -> dict[str, np.ndarray]:
    """Copies of the arrays in segment ``name`` (the portable path, where segments are not files)."""
    segment = shared_memory.SharedMemory(name=name)
    try:
        owner, arrays = views(segment.buf, layout)
        out = {key: np.array(a, copy=True) for key, a in arrays.items()}
        del owner, arrays
    finally:
        segment.close()
    return out


def unlink_segment(name: str) -> bool:
    """Remove segment ``name`` (and forget it in the resource tracker); False if it was gone."""
    try:
        segment = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return False
    segment.close()
    try:
        segment.unlink()
    except FileNotFoundError:
        return False
    return True


def sweep_segments(prefix: str, known: Iterable[str] = ()) -> int:
    """Unlink the ``known`` segments and, where segments are files, every one named ``prefix_*``.

    Returns:
        How many segments were removed.
    """
    names = set(known)
    folder = segment_dir()
    if folder is not None:
        try:
            names.update(n for n in os.listdir(folder) if n.startswith(prefix + "_"))
        except OSError:  # pragma: no cover - /dev/shm unreadable
            pass
    return sum(unlink_segment(n) for n in sorted(names))
