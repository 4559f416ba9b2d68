"""Loaders where people work: unguarded scripts, standard input, ``python -c``, notebooks.

Every case runs a fresh interpreter: the same scenario code (a Dataset class and a transform
defined in its ``__main__``, a loader with two workers) as a script file, piped to ``python -``,
given with ``python -c`` and exec'd in a fresh ``__main__`` module without ``__file__`` (what a
notebook kernel does). Each variant either works -- its batches equal the single-process loader's
and a numpy reference built from the samples and the documented seed protocol -- or fails before
any worker process starts, with a message naming what to change. The interpreter runs under a
timeout (a hang fails the test) and nothing it started (workers, fork server, resource tracker)
or any of its ``/dev/shm`` segments may outlive it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import delira_data_testing as h
import numpy as np
import pytest

from delira.data import DataLoader
from delira.data.loader import default_start_method, fork_blockers

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 90  # seconds: backstop for a run that loads batches (a few seconds normally)
AT_ONCE = 30  # seconds: backstop for a run whose variants all fail before starting workers
LINUX = sys.platform.startswith("linux")
pytestmark = pytest.mark.skipif(not LINUX, reason="fork-based 'auto', /proc and /dev/shm are Linux's")

SCENARIO = r'''
import json, os, sys, threading
import numpy as np
import delira_data_testing as h
from delira.data import DataLoader


class LocalDataset:
    """Lives in __main__: sample i has data arange(64) + 100 i, seg i % 3."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = int(i)
        data = (np.arange(64, dtype=np.float32) + 100 * i).reshape(1, 4, 4, 4)
        return {"data": data, "seg": np.full((1, 4, 4, 4), i % 3, np.int16), "case_id": f"case{i:02d}"}


def add_noise(data, rng, **batch):
    """Lives in __main__ too: data + standard normal noise from the loader's generator."""
    return {"data": data + rng.standard_normal(data.shape).astype(np.float32), **batch}


DATASETS = {"local": (LocalDataset, add_noise), "module": (h.ArangeDataset, h.add_rng_noise)}
SEED, BATCH = 5, 3


def owned(batch):
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def same(a, b):
    return len(a) == len(b) and all(
        list(x) == list(y)
        and all(np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k] for k in x)
        for x, y in zip(a, b)
    )


def numpy_reference(dataset):
    """Batches built by hand: keys 0..n in order, stacked, noise from SeedSequence([seed, 0, i])."""
    out = []
    for i, start in enumerate(range(0, len(dataset), BATCH)):
        samples = [dataset[k] for k in range(start, min(start + BATCH, len(dataset)))]
        data = np.stack([s["data"] for s in samples])
        rng = np.random.default_rng(np.random.SeedSequence([SEED, 0, i]))
        out.append({
            "data": data + rng.standard_normal(data.shape).astype(np.float32),
            "seg": np.stack([s["seg"] for s in samples]),
            "case_id": [s["case_id"] for s in samples],
        })
    return out


def run(variant):
    dataset_class, transform = DATASETS[variant.get("dataset", "local")]
    dataset = dataset_class(7)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy-thread", daemon=True)
    if variant.get("thread"):
        thread.start()  # another thread runs while the workers start
    result = {"variant": variant, "error": None, "pids": [], "descendants_at_error": None}
    kwargs = {"batch_size": BATCH, "transforms": transform, "seed": SEED}
    loader = DataLoader(dataset, num_workers=2, start_method=variant["method"], timeout=60, **kwargs)
    got = []
    try:
        for batch in loader:
            result["pids"] += loader.worker_pids
            got.append(owned(batch))
    except Exception as exc:
        result["error"] = {"type": type(exc).__name__, "message": str(exc)}
        result["descendants_at_error"] = sorted(h.descendants())
    finally:
        loader.close()
        stop.set()
    result["method"] = loader.worker_start_method
    if result["error"] is None:
        result["same_as_single_process"] = same(got, [owned(b) for b in DataLoader(dataset, **kwargs)])
        reference = numpy_reference(dataset)
        result["same_as_numpy"] = same([{k: b[k] for k in ("data", "seg", "case_id")} for b in got], reference)
        result["batches"] = len(got)
    result["segments"] = sorted(h.our_segments())
    print("RESULT " + json.dumps(result), flush=True)


def main():
    for variant in json.loads(os.environ["DELIRA_TEST_VARIANTS"]):
        run(variant)
'''

# What a notebook kernel does: user code runs in a fresh module registered as __main__, no __file__.
NOTEBOOK_KERNEL = """
import sys, types
source = open(sys.argv[1]).read()
namespace = types.ModuleType("__main__")
sys.modules["__main__"] = namespace
exec(compile(source, "<notebook cell>", "exec"), namespace.__dict__)
"""

UNGUARDED = "\nmain()\n"  # the parent sees the top-level call and refuses forkserver/spawn at once
CONDITIONAL = "\nif True:\n    main()\n"  # the parent cannot tell: the worker detects its re-entry
GUARDED = "\nif __name__ == '__main__':\n    main()\n"
FAILS_IN_WORKERS = """
if __name__ == '__mp_main__':  # what a worker runs while it starts
    raise RuntimeError('this script cannot run in a worker')
if __name__ == '__main__':
    main()
"""
GUARD_CLASS = """
if __name__ == '__main__':
    class GuardedDataset(LocalDataset):
        pass

    DATASETS["guarded"] = (GuardedDataset, add_noise)
    main()
"""


def _segments_of(pid: int) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"delira_{pid}_"))


def run_python(
    tmp_path: Path, mode: str, variants: list[dict[str, Any]], ending: str, timeout: float
) -> list[dict]:
    """Run SCENARIO + ``ending`` as ``mode``; wait (a hang fails), check nothing outlived it, return RESULTs."""
    code = SCENARIO + ending
    stdin = None
    if mode == "script":
        (tmp_path / "train.py").write_text(code)
        argv = [sys.executable, str(tmp_path / "train.py")]
    elif mode == "stdin":
        argv, stdin = [sys.executable, "-"], code
    elif mode == "c":
        argv = [sys.executable, "-c", code]
    elif mode == "notebook":
        (tmp_path / "cell.py").write_text(code)
        (tmp_path / "kernel.py").write_text(NOTEBOOK_KERNEL)
        argv = [sys.executable, str(tmp_path / "kernel.py"), str(tmp_path / "cell.py")]
    else:  # pragma: no cover
        raise ValueError(mode)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([HERE, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "DELIRA_TEST_VARIANTS": json.dumps(variants),
        "OMP_NUM_THREADS": "1",
    }
    out, err = tmp_path / f"{mode}.stdout", tmp_path / f"{mode}.stderr"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            text=True,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            seen |= h.descendants(proc.pid)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(f"{mode} run hung for {timeout} s: {err.read_text()[-3000:]}")
            time.sleep(0.02)
    stderr = err.read_text()
    assert proc.returncode == 0, (proc.returncode, stderr[-3000:])
    deadline = time.monotonic() + 20  # a fork server and the resource tracker exit after their parent
    while time.monotonic() < deadline:
        alive = [p for p in seen if h.pid_alive(p)]
        segments = _segments_of(proc.pid)
        if not alive and not segments:
            break
        time.sleep(0.05)
    assert not alive, f"processes outlived the {mode} run: {alive}"
    assert not segments, f"shared-memory segments outlived the {mode} run: {segments}"
    results = [
        json.loads(line[len("RESULT ") :])
        for line in out.read_text().splitlines()
        if line.startswith("RESULT ")
    ]
    assert len(results) == len(variants), (out.read_text(), stderr[-3000:])
    for r in results:
        assert r["segments"] == [], r
    return results


def assert_worked(result: dict, method: str) -> None:
    assert result["error"] is None, result
    assert result["method"] == method, result
    assert len(set(result["pids"])) == 2, result  # both workers loaded batches
    assert result["batches"] == 3 and result["same_as_single_process"] and result["same_as_numpy"], result


def assert_failed_at_once(result: dict, kind: str, *phrases: str) -> str:
    error = result["error"]
    assert error is not None and error["type"] == kind, result
    assert result["pids"] == [] and result["descendants_at_error"] == [], result  # no worker ever started
    message = error["message"]
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert "exited with code" not in message
    return message


FIXES_FOR_MAIN_CLASSES = ("class LocalDataset", "function add_noise", "module", "start_method='fork'")


# -- the four places ---------------------------------------------------------------------------------------
def test_script_without_main_guard(tmp_path):
    works = run_python(tmp_path, "script", [{"method": "auto"}], UNGUARDED, WAIT)
    assert_worked(works[0], "fork")
    spawn, busy = run_python(
        tmp_path, "script", [{"method": "spawn"}, {"method": "auto", "thread": True}], UNGUARDED, AT_ONCE
    )
    for r, method in ((spawn, "'spawn'"), (busy, "'forkserver'")):
        assert_failed_at_once(
            r,
            "RuntimeError",
            method,
            str(tmp_path / "train.py"),
            'if __name__ == "__main__":',
            "start_method='fork'",
        )
    assert "'busy-thread'" in busy["error"]["message"]  # why 'auto' did not fork


def test_script_that_re_enters_its_loader_in_a_starting_worker(tmp_path):
    """A guard the main process cannot rule out (``if True:``): the worker detects its re-entry."""
    results = run_python(
        tmp_path, "script", [{"method": "spawn"}, {"method": "forkserver"}], CONDITIONAL, AT_ONCE
    )
    for r in results:
        error = r["error"]
        assert error is not None and error["type"] == "WorkerError", r
        message = error["message"]
        assert "while starting" in message and 'if __name__ == "__main__":' in message, message
        assert "start_method='fork'" in message and str(tmp_path / "train.py") in message, message
        assert "exited with code" not in message


def test_worker_failing_while_it_starts_is_reported_as_a_failed_start(tmp_path):
    (r,) = run_python(tmp_path, "script", [{"method": "spawn"}], FAILS_IN_WORKERS, AT_ONCE)
    error = r["error"]
    assert error is not None and error["type"] == "WorkerError", r
    message = error["message"]
    assert "failed while starting (exit status 1), before it loaded a batch" in message, message
    assert "re-runs the main module" in message and "start_method='fork'" in message, message
    assert "exited with code" not in message
    assert "this script cannot run in a worker" in (tmp_path / "script.stderr").read_text()  # its traceback


def test_guarded_script_works_with_every_start_method(tmp_path):
    variants = [{"method": "spawn"}, {"method": "forkserver"}, {"method": "auto"}]
    for r, method in zip(
        run_python(tmp_path, "script", variants, GUARDED, WAIT), ("spawn", "forkserver", "fork")
    ):
        assert_worked(r, method)


def test_class_defined_under_the_main_guard(tmp_path):
    spawn, auto = run_python(
        tmp_path,
        "script",
        [{"method": "spawn", "dataset": "guarded"}, {"method": "auto", "dataset": "guarded"}],
        GUARD_CLASS,
        WAIT,
    )
    line = (SCENARIO + GUARD_CLASS).splitlines().index("    class GuardedDataset(LocalDataset):") + 1
    assert_failed_at_once(
        spawn, "TypeError", "class GuardedDataset", f"(line {line})", "module level", "start_method='fork'"
    )
    assert_worked(auto, "fork")


def test_dataset_defined_in_code_read_from_stdin(tmp_path):
    works = run_python(tmp_path, "stdin", [{"method": "auto"}], UNGUARDED, WAIT)
    assert_worked(works[0], "fork")
    failures = run_python(
        tmp_path,
        "stdin",
        [{"method": "spawn"}, {"method": "forkserver"}, {"method": "auto", "thread": True}],
        UNGUARDED,
        AT_ONCE,
    )
    for r in failures:
        assert_failed_at_once(
            r, "RuntimeError", "standard input", "Save the code to a file", "start_method='fork'"
        )


def test_dataset_defined_in_python_c_code(tmp_path):
    works = run_python(
        tmp_path, "c", [{"method": "auto"}, {"method": "spawn", "dataset": "module"}], UNGUARDED, WAIT
    )
    assert_worked(works[0], "fork")
    assert_worked(works[1], "spawn")  # a dataset from an importable module needs nothing of __main__
    failures = run_python(
        tmp_path,
        "c",
        [{"method": "spawn"}, {"method": "forkserver"}, {"method": "auto", "thread": True}],
        UNGUARDED,
        AT_ONCE,
    )
    for r in failures:
        assert_failed_at_once(r, "TypeError", "python -c", *FIXES_FOR_MAIN_CLASSES)
    assert "'busy-thread'" in failures[2]["error"]["message"]


def test_dataset_defined_in_a_notebook(tmp_path):
    variants = [
        {"method": "auto"},
        {"method": "fork", "thread": True},
        {"method": "forkserver", "dataset": "module"},
    ]
    auto, forced, module = run_python(tmp_path, "notebook", variants, UNGUARDED, WAIT)
    assert_worked(auto, "fork")
    assert_worked(forced, "fork")  # the fix the message offers
    assert_worked(module, "forkserver")
    failures = run_python(
        tmp_path,
        "notebook",
        [{"method": "forkserver"}, {"method": "spawn"}, {"method": "auto", "thread": True}],
        UNGUARDED,
        AT_ONCE,
    )
    for r in failures:
        assert_failed_at_once(r, "TypeError", "notebook", *FIXES_FOR_MAIN_CLASSES)


# -- the 'auto' policy, in this process -------------------------------------------------------------------
def _running_thread(
    name: str, cls: type[threading.Thread] = threading.Thread
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = cls(target=stop.wait, name=name, daemon=True)
    thread.start()
    return thread, stop


def test_auto_does_not_fork_while_another_thread_runs():
    before = fork_blockers()
    thread, stop = _running_thread("another-thread")
    try:
        reasons = fork_blockers()
        assert any("'another-thread'" in r for r in reasons), reasons
        assert default_start_method() == "forkserver"
    finally:
        stop.set()
        thread.join()
    assert fork_blockers() == before
    if not before:
        assert default_start_method() == "fork"


class KernelHeartbeat(threading.Thread):
    """Stands in for ipykernel's heartbeat thread (only its module matters)."""


KernelHeartbeat.__module__ = "ipykernel.heartbeat"


def test_a_notebook_kernels_own_threads_do_not_prevent_fork():
    before = fork_blockers()
    thread, stop = _running_thread("Heartbeat", KernelHeartbeat)
    try:
        assert fork_blockers() == before
    finally:
        stop.set()
        thread.join()


def test_auto_does_not_fork_after_jax_is_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))
    assert any("JAX" in r for r in fork_blockers())
    assert default_start_method() != "fork"


def test_auto_does_not_fork_on_macos(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert any("macOS" in r for r in fork_blockers())


def test_bad_start_method_says_what_is_accepted():
    with pytest.raises(
        ValueError, match=r"start_method must be one of 'auto', 'fork', 'forkserver', 'spawn'"
    ):
        DataLoader(h.ArangeDataset(2), 1, num_workers=1, start_method="thread")
    with pytest.raises(TypeError, match=r"start_method must be a string.*got 1 \(int\)"):
        DataLoader(h.ArangeDataset(2), 1, num_workers=1, start_method=1)
    assert DataLoader(h.ArangeDataset(2), 1, start_method=None).start_method == "auto"


def _torch_threads_after_a_matmul(data: np.ndarray, **batch: Any) -> dict[str, Any]:
    import torch

    a = torch.ones(256, 256)
    (a @ a).sum()  # a parallel torch operation in the worker
    return {"data": data, "torch_threads": np.full(data.shape[0], torch.get_num_threads()), **batch}


def test_forked_workers_use_one_torch_thread_after_the_parent_used_torch(no_leaks):
    """GNU OpenMP (torch's pool) hangs a forked child that uses more than one thread."""
    torch = pytest.importorskip("torch")
    a = torch.ones(512, 512)
    (a @ a).sum()  # starts torch's thread pool in this process
    loader = DataLoader(
        h.ArangeDataset(4),
        2,
        transforms=_torch_threads_after_a_matmul,
        num_workers=2,
        start_method="fork",
        timeout=60,
    )
    got = []
    for batch in loader:
        no_leaks.extend(loader.worker_pids)
        got.append(batch["torch_threads"].tolist())
    assert got == [[1, 1], [1, 1]]
