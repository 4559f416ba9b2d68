"""An Experiment killed (SIGKILL) or interrupted (Ctrl-C) mid-fold, then resumed, and two processes
running different folds into one folder: the finished figures equal those of one uninterrupted run
(same seeds, CPU), and no file in the run folder is ever read half-written."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the Experiment fault tests train PyTorch networks")
yaml = pytest.importorskip("yaml")

from delira.training.experiment import aggregate  # noqa: E402

EPOCHS = 3
TINY = {
    "name": "tiny-faults",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {
        "phantom": {"num_cases": 6, "shape": [16, 16, 16], "num_classes": 3, "seed": 1},
        "transforms": "mirror",
    },
    "training": {"epochs": EPOCHS, "batch_size": 2, "lr": 0.01, "workers": 0},
    "experiment": {"folds": 2, "seed": 0},
    "prediction": {"mirror": False},
}
WAIT = 240  # seconds: a backstop against a hang, far above what a tiny run needs

RUN = """
import sys
from delira.training.experiment import Experiment
folds = None if sys.argv[3] == "all" else [int(k) for k in sys.argv[3].split(",")]
Experiment(sys.argv[1], run_dir=sys.argv[2], overrides=sys.argv[4:], verbose=False).kfold(folds=folds)
"""


# -- helpers -------------------------------------------------------------------------------------------------
def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _start(config: Path, run_dir: Path, folds: str = "all", *overrides: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", RUN, str(config), str(run_dir), folds, *overrides],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a shell job: Ctrl-C reaches all of it
        )


def _finish(proc: subprocess.Popen, log: Path) -> None:
    try:
        code = proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"the run hung for {WAIT} s:\n{log.read_text()[-4000:]}") from None
    assert code == 0, log.read_text()[-4000:]


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_for(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


class PartialFileWatcher:
    """Reads every JSON file and checkpoint of a run folder, over and over, from a thread.

    A file either does not exist or reads back complete: a JSON that does not parse or a checkpoint
    that :func:`delira.io.read_checkpoint_info` refuses is recorded in ``bad``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.reads = 0
        self.bad: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PartialFileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        from delira.io import read_checkpoint_info

        while not self._stop.is_set():
            if not self.run_dir.exists():
                time.sleep(0.005)
                continue
            for path in [*self.run_dir.rglob("*.json"), *self.run_dir.rglob("*.safetensors")]:
                try:
                    if path.suffix == ".json":
                        json.loads(path.read_text())
                    else:
                        read_checkpoint_info(path)
                except FileNotFoundError:
                    continue
                except Exception as exc:  # a partial file read as complete
                    self.bad.append((str(path), f"{type(exc).__name__}: {exc}"))
                self.reads += 1


def _children(pid: int) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.add(int(name))
    return found


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = set().union(*(_children(p) for p in frontier)) - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _same(a: Any, b: Any) -> bool:
    """Equal JSON trees, floats to 1e-6 (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= 1e-6
    return a == b


def _results(run_dir: Path) -> dict[str, Any]:
    out = {"summary": json.loads((run_dir / "summary.json").read_text())}
    for k in range(TINY["experiment"]["folds"]):
        out[f"fold_{k}"] = json.loads((run_dir / f"fold_{k}" / "result.json").read_text())
    return out


def _assert_same_results(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in want:
        assert _same(got[key], want[key]), f"{key} differs:\n{got[key]}\n!=\n{want[key]}"


def _epochs_logged(fold_dir: Path) -> list[int]:
    with (fold_dir / "metrics.csv").open(newline="") as fh:
        return [int(float(row["epoch"])) for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The figures of one uninterrupted run (``summary.json`` and every ``result.json``)."""
    tmp = tmp_path_factory.mktemp("reference")
    run_dir, log = tmp / "run", tmp / "run.log"
    proc = _start(_config_file(tmp), run_dir, log=log)
    try:
        _finish(proc, log)
    finally:
        _kill_group(proc)
    results = _results(run_dir)
    # a meaningful comparison: every fold trained and was evaluated on its own cases
    assert all(results[f"fold_{k}"]["epochs"] == EPOCHS for k in range(2))
    assert results["summary"]["missing"] == []
    return results


# -- SIGKILL, then resume ---------------------------------------------------------------------------------
@pytest.mark.parametrize("killed_fold", [0, 1])
def test_sigkill_mid_fold_then_resume_equals_an_uninterrupted_run(tmp_path, reference, killed_fold):
    config, run_dir = _config_file(tmp_path), tmp_path / "run"
    fold_dir = run_dir / f"fold_{killed_fold}"
    with PartialFileWatcher(run_dir) as watcher:
        log = tmp_path / "killed.log"
        proc = _start(config, run_dir, log=log)
        try:
            _wait_for(fold_dir / "checkpoints" / "last.safetensors", proc, log)  # its first epoch is done
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert not (fold_dir / "result.json").exists(), "the fold finished before the kill"
        log = tmp_path / "resumed.log"
        proc = _start(config, run_dir, log=log)
        try:
            _finish(proc, log)
        finally:
            _kill_group(proc)
    assert watcher.reads > 0 and watcher.bad == [], watcher.bad
    _assert_same_results(_results(run_dir), reference)
    for k in range(2):  # every epoch trained and logged exactly once
        assert _epochs_logged(run_dir / f"fold_{k}") == list(range(EPOCHS))


# -- two processes, one folder ------------------------------------------------------------------------------
def _assert_every_file_reads(run_dir: Path) -> None:
    from delira.io import read_checkpoint_info

    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    counts = {".json": 0, ".csv": 0, ".safetensors": 0, ".yaml": 0, ".npz": 0, ".png": 0}
    for path in run_dir.rglob("*"):
        if path.suffix not in counts:
            continue
        counts[path.suffix] += 1
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
        elif path.suffix == ".csv":
            with path.open(newline="") as fh:
                rows = list(csv.reader(fh))
            assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows), path
        elif path.suffix == ".safetensors":
            read_checkpoint_info(path)
        elif path.suffix == ".npz":
            with np.load(path) as z:
                assert z.files, path
        else:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert counts[".json"] >= 4 and counts[".safetensors"] == 4 and counts[".yaml"] == 1, counts


def test_two_processes_run_different_folds_into_one_folder(tmp_path, reference):
    config, run_dir = _config_file(tmp_path), tmp_path / "run"
    logs = [tmp_path / "fold0.log", tmp_path / "fold1.log"]
    with PartialFileWatcher(run_dir) as watcher:
        procs = [_start(config, run_dir, str(k), log=logs[k]) for k in (0, 1)]
        try:
            for proc, log in zip(procs, logs):
                _finish(proc, log)
        finally:
            for proc in procs:
                _kill_group(proc)
    assert watcher.reads > 0 and watcher.bad == [], watcher.bad
    _assert_every_file_reads(run_dir)
    summary = aggregate(run_dir, quiet=True)
    assert _same(json.loads(json.dumps(summary)), reference["summary"])
    _assert_same_results(_results(run_dir), reference)


# -- Ctrl-C with loader workers, then resume --------------------------------------------------------------
def test_ctrl_c_during_kfold_with_workers_stops_cleanly_and_resumes(tmp_path, reference):
    config, run_dir = _config_file(tmp_path), tmp_path / "run"
    log = tmp_path / "interrupted.log"
    proc = _start(config, run_dir, "all", "training.workers=2", log=log)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + WAIT
        while True:  # until two loader workers run: a training epoch is under way
            assert proc.poll() is None, f"the run ended before it was interrupted:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "the loader workers never started"
            seen |= _descendants(proc.pid)
            # the workers: forked from the run (same command line), or children of a fork server
            forked = [p for p in _children(proc.pid) if _cmdline(p) == _cmdline(proc.pid)]
            servers = [p for p in _children(proc.pid) if "forkserver" in _cmdline(p)]
            if len(forked) >= 2 or (servers and len(_children(servers[0])) >= 2):
                break
            time.sleep(0.005)
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        while proc.poll() is None and time.monotonic() - start < 60:
            seen |= _descendants(proc.pid)
            time.sleep(0.01)
        took = time.monotonic() - start
    finally:
        _kill_group(proc)
    output = log.read_text()
    assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" in output, (
        proc.returncode,
        output[-4000:],
    )
    assert took < 45, took  # a stop, not a hang (generous: the machine may be loaded)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        any(map(_alive, seen)) or any(n.startswith(f"delira_{proc.pid}_") for n in os.listdir("/dev/shm"))
    ):
        time.sleep(0.05)
    assert not [p for p in seen if _alive(p)], "processes of the interrupted run outlived it"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"delira_{proc.pid}_")]
    assert not (run_dir / "summary.json").exists()

    log = tmp_path / "resumed.log"
    proc = _start(config, run_dir, "all", "training.workers=2", log=log)
    try:
        _finish(proc, log)
    finally:
        _kill_group(proc)
    # the loader's batches do not depend on the worker count: the same figures as the reference
    _assert_same_results(_results(run_dir), reference)
    for k in range(2):
        assert _epochs_logged(run_dir / f"fold_{k}") == list(range(EPOCHS))
