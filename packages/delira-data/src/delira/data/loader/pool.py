"""The main-process side of the worker processes: start, feed, receive, detect death, shut down.

Batch ``i`` goes to worker ``i % num_workers`` and each worker answers in the order it was asked,
so the main process always knows which worker to wait for. A worker's first message says that it
started (it re-created ``__main__`` and unpickled what it was given, see
:mod:`delira.data.loader.start_method`); a worker that dies before it is explained as a failed start,
not as a crash while loading. Waiting uses
``multiprocessing.connection.wait`` on the worker's pipe *and* every worker's process sentinel, so
a worker that dies (segfault, out-of-memory kill, ``os._exit``) wakes the main process at once
instead of leaving it blocked on a pipe.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import pickle
import signal
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from delira.data.loader import shm
from delira.data.loader.start_method import (
    EXIT_MAIN_REENTERED,
    default_start_method,
    exit_if_bootstrapping,
)
from delira.data.loader.worker import worker_loop

__all__ = ["RemoteTraceback", "WorkerError", "WorkerPool", "default_start_method"]


class WorkerError(RuntimeError):
    """A loader worker died, timed out, or raised an exception that could not be sent back."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (set as ``__cause__`` of the re-raise)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is not responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ""
        if name == "SIGKILL":
            hint = " (killed, often by the out-of-memory killer)"
        elif name == "SIGBUS":
            hint = " (often a full /dev/shm: enlarge it, e.g. docker --shm-size, or lower prefetch)"
        elif name == "SIGSEGV":
            hint = " (a crash in native code)"
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


class _Resources:
    """What must be released at shutdown; kept apart from :class:`WorkerPool` for its finalizer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.processes: list[Any] = []
        self.conns: list[Connection] = []
        self.names: set[str] = set()
        self.closed = False

    def shutdown(self, graceful: bool) -> None:
        """Stop the workers (asking first when ``graceful``), close the pipes, unlink the segments."""
        if self.closed:
            return
        self.closed = True
        if graceful:
            for conn in self.conns:
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + 5.0
            for p in self.processes:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(2.0)
            if p.is_alive():  # pragma: no cover - ignored SIGTERM
                p.kill()
                p.join()
        for conn in self.conns:
            conn.close()
        for p in self.processes:
            try:
                p.close()
            except ValueError:  # pragma: no cover
                pass
        shm.sweep_segments(self.prefix, self.names)


class WorkerPool:
    """``num_workers`` processes that load batches into shared-memory slots.

    Args:
        num_workers: number of processes, >= 1.
        dataset, transforms, collate_fn, seed: passed to every worker (pickled unless forked).
        start_method: ``"forkserver"``, ``"spawn"`` or ``"fork"`` (resolved, not ``"auto"``); checked
            beforehand with :func:`~delira.data.loader.start_method.check_workers_can_start`.
        prefetch: batches in flight per worker.
        timeout: seconds to wait for one batch before raising :class:`WorkerError` (None: no limit;
            a dead worker is detected either way).
    """

    def __init__(
        self,
        num_workers: int,
        dataset: Any,
        transforms: Sequence[Callable[..., Mapping[str, Any]]],
        collate_fn: Callable[..., dict[str, Any]],
        seed: int,
        start_method: str,
        prefetch: int,
        timeout: float | None,
    ) -> None:
        exit_if_bootstrapping()  # a starting worker that re-ran an unguarded script: explain, exit
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.timeout = timeout
        self.start_method = start_method
        self._started = [False] * num_workers  # the worker's "ready" message arrived
        self._res = _Resources(shm.new_prefix())
        self._finalizer = weakref.finalize(self, self._res.shutdown, False)
        self._free: list[list[int]] = [[] for _ in range(num_workers)]
        self._next_slot = [0] * num_workers
        self._released: collections.deque[tuple[int, int]] = collections.deque()
        self._maps: dict[tuple[int, int], tuple[str, Any]] = {}
        self.outstanding: list[collections.deque[tuple[int, int]]] = [
            collections.deque() for _ in range(num_workers)
        ]
        ctx = multiprocessing.get_context(start_method)
        if start_method == "fork" and hasattr(os, "fork"):
            # Forked workers must share this process's resource tracker: a tracker each would warn
            # about (and unlink) the segments they created when they exit.
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
        try:
            for w in range(num_workers):
                parent_conn, child_conn = ctx.Pipe(duplex=True)
                process = ctx.Process(
                    target=worker_loop,
                    args=(w, child_conn, dataset, transforms, collate_fn, seed, self._res.prefix),
                    name=f"delira-data-worker-{w}",
                    daemon=True,
                )
                self._res.conns.append(parent_conn)
                try:
                    process.start()
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    raise TypeError(
                        f"the dataset, transforms and collate_fn must be picklable to reach worker processes "
                        f"started with {start_method!r} ({exc}); define their classes and functions at "
                        "module level (no lambdas or local functions), or pass start_method='fork' (nothing "
                        "is pickled), or use num_workers=0"
                    ) from exc
                finally:
                    child_conn.close()
                self._res.processes.append(process)
        except BaseException:
            self.shutdown(graceful=False)
            raise

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (empty after shutdown)."""
        return [] if self._res.closed else [p.pid for p in self._res.processes]

    @property
    def closed(self) -> bool:
        """True after :meth:`shutdown`."""
        return self._res.closed

    def shutdown(self, graceful: bool = True) -> None:
        """Stop the workers (terminating busy ones) and unlink every segment of this pool."""
        if any(self.outstanding):
            graceful = False  # the workers would first finish batches nobody wants
        self._res.shutdown(graceful)
        self._finalizer.detach()
        self._maps.clear()

    # -- feeding ------------------------------------------------------------------------------------
    def _take_slot(self, worker: int) -> int:
        while self._released:
            w, slot = self._released.popleft()
            self._free[w].append(slot)
        if self._free[worker]:
            return self._free[worker].pop()
        slot = self._next_slot[worker]
        self._next_slot[worker] += 1
        return slot

    def submit(self, worker: int, epoch: int, index: int, keys: Sequence[Any]) -> None:
        """Ask ``worker`` for batch ``index`` of ``epoch`` made of ``keys``."""
        slot = self._take_slot(worker)
        self._res.conns[worker].send((epoch, index, list(keys), slot))
        self.outstanding[worker].append((index, slot))

    # -- receiving ----------------------------------------------------------------------------------
    def _check_started(self, worker: int) -> None:
        """Take a pending "ready" message of ``worker`` (always its first message) off its pipe."""
        conn = self._res.conns[worker]
        try:
            if not self._started[worker] and conn.poll():
                self._started[worker] = conn.recv()[0] == "ready"
        except (EOFError, OSError):
            pass

    def _start_failure(self, worker: int, pid: int | None, code: int) -> str:
        head = f"DataLoader worker {worker} (pid {pid})"
        if code == EXIT_MAIN_REENTERED:
            script = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
            return (
                f"{head} stopped while starting: a worker started with {self.start_method!r} re-runs {script} "
                "to import it, and the script started this loader's workers again because that code "
                'is not under an `if __name__ == "__main__":` guard. Put the code that runs the loader '
                'under the guard (def main(): ...  if __name__ == "__main__": main()), or pass '
                "start_method='fork'"
            )
        how = _describe_exit(code) if code < 0 else f"failed while starting (exit status {code})"
        if self.start_method == "fork":
            return f"{head} {how}, before it loaded a batch; its output on stderr says why"
        return (
            f"{head} {how}, before it loaded a batch: a worker started with {self.start_method!r} re-runs "
            "the main module and unpickles the dataset, transforms and collate_fn, and that failed (its "
            "traceback is on stderr, above). Usual causes: a class or function defined under `if __name__ "
            '== "__main__":` or only in a notebook or session, or a module that the workers cannot '
            "import (another working directory or sys.path). Define what the workers need in an "
            "importable module, or pass start_method='fork' (workers then import nothing)"
        )

    def _raise_dead(self, waiting_for: str) -> None:
        for w, p in enumerate(self._res.processes):
            if p.exitcode is not None:
                self._check_started(w)
                if not self._started[w]:
                    raise WorkerError(self._start_failure(w, p.pid, p.exitcode))
                raise WorkerError(
                    f"DataLoader worker {w} (pid {p.pid}) {_describe_exit(p.exitcode)} while the main "
                    f"process waited for {waiting_for}; run with num_workers=0 to see the failure in this "
                    "process"
                )

    def _receive(self, worker: int, waiting_for: str) -> tuple[Any, ...]:
        conn = self._res.conns[worker]
        sentinels = [p.sentinel for p in self._res.processes]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([conn, *sentinels], timeout=remaining)
            if conn in ready:
                try:
                    message = conn.recv()
                    if message[0] == "ready":
                        self._started[worker] = True
                        continue
                    return message
                except (EOFError, OSError):
                    self._res.processes[worker].join(1.0)
                    self._raise_dead(waiting_for)
                    raise WorkerError(
                        f"DataLoader worker {worker} closed its connection while the main process waited "
                        f"for {waiting_for}"
                    ) from None
            if ready:
                for p in self._res.processes:
                    if p.sentinel in ready:
                        p.join(1.0)
                self._raise_dead(waiting_for)
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkerError(
                    f"DataLoader worker {worker} did not deliver {waiting_for} within timeout={self.timeout} s; "
                    "raise the timeout or check the dataset for a hang"
                )

    def receive(self, worker: int, epoch: int) -> dict[str, Any]:
        """Wait for ``worker``'s oldest outstanding batch and return it (arrays view shared memory).

        Raises:
            the worker's exception (with its traceback as ``__cause__``), or :class:`WorkerError`
            when the worker died or timed out.
        """
        index, slot = self.outstanding[worker][0]
        reply = self._receive(worker, f"batch {index} of epoch {epoch}")
        self.outstanding[worker].popleft()
        kind, got_index = reply[0], reply[1]
        if got_index != index:  # pragma: no cover - protocol violation
            raise WorkerError(f"worker {worker} answered batch {got_index} instead of {index}")
        if kind == "error":
            self._free[worker].append(slot)
            self._raise_remote(worker, epoch, reply)
        _, _, _, name, layout, meta, order = reply
        self._res.names.add(name)
        arrays = self._arrays(worker, slot, name, layout)
        return {key: arrays[key] if key in arrays else meta[key] for key in order}

    def _arrays(self, worker: int, slot: int, name: str, layout: shm.Layout) -> dict[str, np.ndarray]:
        cached = self._maps.get((worker, slot))
        if cached is None or cached[0] != name:
            mapping = shm.map_segment(name)
            if mapping is None:  # no /dev/shm: copy out (the portable path) and free the slot
                self._free[worker].append(slot)
                return shm.copy_from_segment(name, layout)
            cached = (name, mapping)
            self._maps[(worker, slot)] = cached
        owner, arrays = shm.views(cached[1], layout)
        if owner is None:
            self._free[worker].append(slot)
        else:
            finalizer = weakref.finalize(owner, self._released.append, (worker, slot))
            finalizer.atexit = False
        return arrays

    def _raise_remote(self, worker: int, epoch: int, reply: tuple[Any, ...]) -> None:
        _, index, _, payload, text, summary = reply
        pid = self._res.processes[worker].pid
        where = (
            f"raised in DataLoader worker {worker} (pid {pid}) while loading batch {index} of epoch {epoch}"
        )
        exc: BaseException | None = None
        if payload is not None:
            try:
                exc = pickle.loads(payload)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            raise WorkerError(f"{summary}\n{where}; worker traceback:\n{text}")
        if hasattr(exc, "add_note"):
            exc.add_note(where)
        raise exc from RemoteTraceback(text)

    def drain(self, epoch: int) -> None:
        """Receive and discard every outstanding batch (errors included)."""
        for w in range(self.num_workers):
            while self.outstanding[w]:
                index, slot = self.outstanding[w][0]
                reply = self._receive(w, f"batch {index} of epoch {epoch}")
                self.outstanding[w].popleft()
                if reply[0] == "ok":
                    self._res.names.add(reply[3])
                self._free[w].append(slot)
