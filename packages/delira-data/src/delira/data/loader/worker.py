"""What loads a batch, and the loop a worker process runs.

:func:`load_batch` is the single function that turns ``(seed, epoch, index, keys)`` into a batch;
the main process (``num_workers=0``) and every worker call it, which is what makes batches
identical for any number of workers.
"""

from __future__ import annotations

import ctypes
import faulthandler
import inspect
import io
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from delira.data.loader.collate import Allocator, collate
from delira.data.loader.seeding import apply_transforms, batch_seed_sequence, seed_global_rngs
from delira.data.loader.shm import SegmentWriter

__all__ = ["load_batch", "split_batch", "worker_loop"]

Collate = Callable[[Sequence[Mapping[str, Any]], Sequence[Any]], dict[str, Any]]


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse in this process; True if it agreed.

    A worker allocates and frees the same large temporaries batch after batch (stacking,
    augmentation). By default glibc returns such blocks to the system (``mmap`` blocks above
    ``M_MMAP_THRESHOLD``, heap tops above ``M_TRIM_THRESHOLD``), so every batch page-faults its
    memory in again: thousands of faults per 128^3 batch. Raising both thresholds lets the next
    batch reuse the memory; the worker's footprint stays at its peak batch size. No effect (False)
    on other C libraries, or when ``DELIRA_DATA_MALLOC_TUNING=0``.
    """
    if os.environ.get("DELIRA_DATA_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no glibc (macOS, Windows, musl without it)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's upper limit for the threshold
    return bool(ok and mallopt(m_trim_threshold, 1024 * 1024 * 1024))


def limit_augment_threads() -> None:
    """One delira.augment thread per worker process, unless DELIRA_AUGMENT_NUM_THREADS says otherwise.

    The workers already run in parallel; each also starting one augmentation thread per core would
    oversubscribe the machine (as torch's DataLoader limits torch to one thread per worker). Only
    acts when the transforms brought delira.augment into this process; imports nothing itself.
    """
    if "DELIRA_AUGMENT_NUM_THREADS" in os.environ:
        return
    augment = sys.modules.get("delira.augment")
    if augment is not None and hasattr(augment, "set_num_threads"):
        augment.set_num_threads(1)


def limit_torch_threads() -> None:
    """One torch thread per worker process, as torch's DataLoader does, when torch is loaded here.

    Besides oversubscription this avoids a hang: a worker forked from a process that already ran
    torch's OpenMP thread pool (GNU libgomp is not fork-safe) hangs in its first parallel torch
    operation unless torch uses one thread. Imports nothing itself.
    """
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        try:
            torch.set_num_threads(1)
        except Exception:  # pragma: no cover - a partially imported or unusual torch
            pass


def enable_faulthandler() -> None:
    """Print this process's Python stack on a crash in native code, to stderr if it has a file.

    A worker forked from a notebook inherits the kernel's ``sys.stderr``, which may not be backed by
    a file descriptor; the process's original stderr is used then, or nothing.
    """
    for stream in (sys.stderr, sys.__stderr__):
        try:
            faulthandler.enable(file=stream)
            return
        except (AttributeError, ValueError, OSError, RuntimeError, io.UnsupportedOperation):
            continue


def _accepts_allocate(collate_fn: Callable[..., Any]) -> bool:
    if collate_fn is collate:
        return True
    try:
        return "allocate" in inspect.signature(collate_fn).parameters
    except (TypeError, ValueError):
        return False


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)


def load_batch(
    dataset: Any,
    keys: Sequence[Any],
    transforms: Sequence[Callable[..., Mapping[str, Any]]],
    collate_fn: Collate,
    seed: int,
    epoch: int,
    index: int,
    allocate: Allocator | None = None,
) -> dict[str, Any]:
    """Batch ``index`` of ``epoch``: load ``dataset[key]`` for ``keys``, collate, transform.

    Follows the seed protocol of :mod:`delira.data.loader.seeding` (global generators seeded from
    ``SeedSequence([seed, epoch, index])`` before loading; ``rng=`` passed to transforms that take
    it). ``allocate`` is handed to a ``collate_fn`` that takes it (the default one does), so that
    the stacked arrays are written where the caller wants them (a worker's shared memory).

    Returns:
        The batch dict, ``{"data": (N, C, *spatial), ...}``.
    """
    ss = batch_seed_sequence(seed, epoch, index)
    seed_global_rngs(ss)
    samples = []
    for key in keys:
        try:
            samples.append(dataset[key])
        except Exception as exc:
            _add_note(exc, f"raised by {type(dataset).__name__}[{key!r}] for batch {index} of epoch {epoch}")
            raise
    if allocate is not None and _accepts_allocate(collate_fn):
        batch = collate_fn(samples, keys, allocate=allocate)
    else:
        batch = collate_fn(samples, keys)
    return apply_transforms(batch, transforms, ss)


def split_batch(batch: Mapping[str, Any]) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any], list[str]]:
    """Separate the arrays that travel through shared memory from the metadata that is pickled.

    Returns:
        ``(arrays, metadata, key order)``; arrays of ``object`` dtype count as metadata.
    """
    arrays, meta = [], {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            arrays.append((key, value))
        else:
            meta[key] = value
    return arrays, meta, list(batch)


def _error_reply(index: int, slot: int, exc: BaseException) -> tuple[Any, ...]:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        payload: bytes | None = pickle.dumps(exc)
        pickle.loads(payload)
    except Exception:
        payload = None
    return ("error", index, slot, payload, text, f"{type(exc).__name__}: {exc}")


def worker_loop(
    worker_id: int,
    conn: Connection,
    dataset: Any,
    transforms: Sequence[Callable[..., Mapping[str, Any]]],
    collate_fn: Collate,
    seed: int,
    prefix: str,
) -> None:
    """Serve batch requests from the main process until told to stop or the main process dies.

    Messages in: ``(epoch, index, keys, slot)`` per batch, ``None`` to stop. Messages out: first
    ``("ready", pid)`` (this worker started: ``__main__`` re-created, its arguments unpickled), then
    ``("ok", index, slot, segment name, layout, metadata, key order)`` or
    ``("error", index, slot, pickled exception or None, traceback text, summary)`` per batch.
    """
    # Ctrl-C goes to the whole process group: the main process handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    enable_faulthandler()  # a crash in native code prints this worker's Python stack to stderr
    keep_freed_memory()
    limit_augment_threads()
    limit_torch_threads()
    try:
        conn.send(("ready", os.getpid()))
    except (BrokenPipeError, ConnectionResetError, OSError):
        return  # the main process is gone already
    writer = SegmentWriter(prefix, worker_id)
    parent = multiprocessing.parent_process()
    waitables: list[Any] = [conn] + ([parent.sentinel] if parent is not None else [])
    try:
        while True:
            if conn not in wait(waitables):
                break  # the main process is gone
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            epoch, index, keys, slot = message
            try:
                batch = load_batch(
                    dataset, keys, transforms, collate_fn, seed, epoch, index, allocate=writer.allocator(slot)
                )
                arrays, meta, order = split_batch(batch)
                name, layout = writer.write(slot, arrays)
                del batch, arrays
                reply: tuple[Any, ...] = ("ok", index, slot, name, layout, meta, order)
                try:
                    conn.send(reply)
                    continue
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    reply = _error_reply(index, slot, exc)
            except Exception as exc:
                writer.discard(slot)
                reply = _error_reply(index, slot, exc)
            conn.send(reply)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the main process closed the connection
    finally:
        writer.close()
