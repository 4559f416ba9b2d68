"""DataLoader faults with two workers, each run in its own process so that a hang fails the test.

Every scenario below (``scenario_*``) runs in a fresh ``python -c`` process started by a test; it
prints ``PIDS ...`` once its workers run (so the test can act from outside) and ends with one
``RESULT <json>`` line: what it caught and what it found left behind *while it still lived*
(worker processes, its ``/dev/shm/delira_<pid>_*`` segments). The test then checks, from outside,
that the process ended in time and that none of its descendants or segments outlived it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import delira_data_testing as h
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHM = "/dev/shm"
WAIT = 120  # seconds: a backstop against a hang, far above the few seconds each scenario needs


# -- picklable dataset of the scenarios (workers import this module by name) -----------------------------
class FlagFailDataset(h.ArangeDataset):
    """Raises ``ValueError`` for index ``bad`` while the file ``flag`` exists (the epoch chooses)."""

    def __init__(self, n: int, bad: int, flag: str) -> None:
        super().__init__(n)
        self.bad, self.flag = bad, flag

    def __getitem__(self, i: int) -> dict[str, Any]:
        if int(i) == self.bad and os.path.exists(self.flag):
            raise ValueError(f"sample {i} is unreadable now")
        return super().__getitem__(i)


# -- the scenario side (runs in the child process) -------------------------------------------------------
def _owned(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(
        list(x) == list(y)
        and all(np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k] for k in x)
        for x, y in zip(a, b)
    )


def _left_behind(pids: list[int]) -> dict[str, list]:
    """Worker processes still alive and this process's segments, after up to 10 s of grace."""
    prefix = f"delira_{os.getpid()}_"
    deadline = time.monotonic() + 10
    while True:
        alive = [p for p in set(pids) if h.pid_alive(p)]
        segments = sorted(n for n in os.listdir(SHM) if n.startswith(prefix))
        if (not alive and not segments) or time.monotonic() > deadline:
            return {"alive": alive, "segments": segments}
        time.sleep(0.05)


def _caught(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "notes": list(getattr(exc, "__notes__", [])),
        "cause": type(exc.__cause__).__name__ if exc.__cause__ is not None else None,
        "cause_text": str(exc.__cause__ or ""),
    }


def _report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def _announce(pids: list[int]) -> None:
    print("PIDS " + " ".join(map(str, pids)), flush=True)


def scenario_bad_index() -> None:
    """Index 5 of 10 raises ValueError in a worker (batch 2 = keys 4, 5, loaded by worker 0)."""
    from delira.data import DataLoader

    loader = DataLoader(h.FailingDataset(10, bad=5), batch_size=2, num_workers=2, timeout=WAIT)
    pids: list[int] = []
    seen = []
    result: dict[str, Any] = {"error": None}
    try:
        for batch in loader:
            pids += loader.worker_pids
            seen.append(batch["case_id"])
    except Exception as exc:
        result["error"] = _caught(exc)
    result.update(seen=seen, pids=sorted(set(pids)), after=loader.worker_pids, **_left_behind(pids))
    _report(result)


def scenario_worker_killed() -> None:
    """Announce the workers after two batches and go on iterating until the test kills one."""
    from delira.data import DataLoader, WorkerError

    loader = DataLoader(h.SlowDataset(24, delay=0.2), batch_size=2, num_workers=2, timeout=WAIT)
    pids: list[int] = []
    result: dict[str, Any] = {"error": None, "batches": 0}
    try:
        for batch in loader:
            pids += loader.worker_pids
            result["batches"] += 1
            if result["batches"] == 2:
                _announce(loader.worker_pids)
            del batch
    except WorkerError as exc:
        result["error"] = _caught(exc)
    result.update(after=loader.worker_pids, **_left_behind(pids))
    _report(result)


def scenario_interrupted() -> None:
    """Iterate an epoch of ~20 s; the test sends SIGINT to the process group (a Ctrl-C)."""
    from delira.data import DataLoader

    loader = DataLoader(h.SlowDataset(40, delay=1.0), batch_size=2, num_workers=2, timeout=WAIT)
    pids: list[int] = []
    try:
        for i, _ in enumerate(loader):
            pids += loader.worker_pids
            if i == 0:
                _announce(loader.worker_pids)
    except KeyboardInterrupt:
        _report({"after": loader.worker_pids, **_left_behind(pids)})
        raise  # the interpreter ends as for any Ctrl-C: exit status -SIGINT
    _report({"finished": True})


def scenario_persistent_error_in_second_epoch(flag: str) -> None:
    """Persistent workers: epoch 0 fine, epoch 1 raises for one index, epoch 2 fine again."""
    from delira.data import DataLoader

    dataset = FlagFailDataset(8, bad=5, flag=flag)
    kwargs = {"batch_size": 2, "transforms": h.add_rng_noise, "shuffle": True, "seed": 3}
    reference = DataLoader(dataset, **kwargs)
    loader = DataLoader(dataset, num_workers=2, persistent_workers=True, timeout=WAIT, **kwargs)
    result: dict[str, Any] = {}
    epoch0 = [_owned(b) for b in loader]
    first_pids = loader.worker_pids
    result["epoch0_same"] = _same(epoch0, [_owned(b) for b in reference])
    result["epoch0_pids_kept"] = first_pids == loader.worker_pids and len(first_pids) == 2
    Path(flag).touch()
    loader.set_epoch(1)
    result["error"] = None
    try:
        for _ in loader:
            pass
    except ValueError as exc:
        result["error"] = _caught(exc)
    result["after_error"] = loader.worker_pids
    result["first"] = _left_behind(first_pids)
    os.unlink(flag)
    loader.set_epoch(2)
    reference.set_epoch(2)
    epoch2 = [_owned(b) for b in loader]
    second_pids = loader.worker_pids
    result["epoch2_same"] = _same(epoch2, [_owned(b) for b in reference])
    result["new_pids"] = len(second_pids) == 2 and not set(second_pids) & set(first_pids)
    loader.close()
    result["second"] = _left_behind(second_pids)
    _report(result)


# -- the test side -----------------------------------------------------------------------------------------
class Scenario:
    """A scenario running in a child process (its own session, as a shell job), read line by line."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        code = (
            f"import sys; sys.path[:0] = [{HERE!r}]; import test_loader_faults as t; t.{name}(*sys.argv[1:])"
        )
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.segments_before = _delira_segments()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        with self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, *args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                start_new_session=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.seen: set[int] = set()  # every descendant observed while it ran
        self.result: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, prefix: str) -> str:
        """The next stdout line starting with ``prefix`` (its rest); fails on end or after WAIT s."""
        deadline = time.monotonic() + WAIT
        while True:
            self.seen |= h.descendants(self.proc.pid)
            try:
                line = self.lines.get(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            except queue.Empty:
                assert time.monotonic() < deadline, f"no {prefix!r} line within {WAIT} s: {self.stderr()}"
                continue
            assert line is not None, f"ended before a {prefix!r} line: {self.stderr()}"
            if line.startswith(prefix):
                return line[len(prefix) :]

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the exit (a hang fails), read the RESULT line; returns the exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.seen |= h.descendants(self.proc.pid)
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the scenario hung for {timeout} s: {self.stderr()}")
            time.sleep(0.02)
        code = self.proc.returncode
        self.reader.join(10)
        rest = []
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                rest.append(line)
        found = [json.loads(x[len("RESULT ") :]) for x in rest if x.startswith("RESULT ")]
        self.result = found[-1] if found else None
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-4000:]

    def assert_nothing_outlived_it(self) -> None:
        """No descendant seen while it ran is alive; no segment of its pid and no new one is left."""
        prefix = f"delira_{self.proc.pid}_"
        deadline = time.monotonic() + 20  # the fork server and resource tracker exit after it
        while time.monotonic() < deadline:
            alive = [p for p in self.seen if h.pid_alive(p)]
            segments = [n for n in _delira_segments() - self.segments_before if n.startswith(prefix)]
            if not alive and not segments:
                break
            time.sleep(0.05)
        assert not alive, f"processes outlived the scenario: {alive}"
        assert not segments, f"shared-memory segments outlived the scenario: {segments}"


def _delira_segments() -> set[str]:
    return {n for n in os.listdir(SHM) if n.startswith("delira_")}


def run_scenario(tmp_path: Path, name: str, *args: str) -> tuple[Scenario, int]:
    scenario = Scenario(tmp_path, name, *args)
    try:
        code = scenario.finish()
    finally:
        scenario.kill()
    return scenario, code


def test_one_failing_index_names_the_index_and_the_original_exception(tmp_path):
    scenario, code = run_scenario(tmp_path, "scenario_bad_index")
    assert code == 0, scenario.stderr()
    r = scenario.result
    assert r is not None and r["error"] is not None, scenario.stderr()
    assert r["seen"] == [["case00", "case01"], ["case02", "case03"]]  # the batches before it arrived
    error = r["error"]
    assert error["type"] == "ValueError" and error["message"] == "bad sample 5: corrupt file"
    notes = "\n".join(error["notes"])
    assert "FailingDataset[5]" in notes and "batch 2 of epoch 0" in notes, notes
    assert "DataLoader worker 0" in notes, notes
    assert error["cause"] == "RemoteTraceback" and "__getitem__" in error["cause_text"]
    assert len(r["pids"]) == 2 and r["after"] == []
    assert r["alive"] == [] and r["segments"] == []  # stopped and unlinked before the process ended
    scenario.assert_nothing_outlived_it()


def test_a_worker_killed_mid_epoch_from_outside_raises_worker_error(tmp_path):
    scenario = Scenario(tmp_path, "scenario_worker_killed")
    try:
        pids = [int(p) for p in scenario.line("PIDS ").split()]
        assert len(pids) == 2
        os.kill(pids[1], signal.SIGKILL)
        code = scenario.finish()
    finally:
        scenario.kill()
    assert code == 0, scenario.stderr()
    r = scenario.result
    assert r is not None and r["error"] is not None, scenario.stderr()
    assert 2 <= r["batches"] < 12  # stopped mid-epoch
    message = r["error"]["message"]
    assert f"worker 1 (pid {pids[1]}) was killed by SIGKILL" in message, message
    assert "num_workers=0" in message  # how to see the failure
    assert r["after"] == [] and r["alive"] == [] and r["segments"] == []
    scenario.assert_nothing_outlived_it()


def test_ctrl_c_in_the_main_process_stops_cleanly_and_quickly(tmp_path):
    scenario = Scenario(tmp_path, "scenario_interrupted")
    try:
        pids = [int(p) for p in scenario.line("PIDS ").split()]
        scenario.seen |= h.descendants(scenario.proc.pid)
        assert set(pids) <= scenario.seen
        start = time.monotonic()
        os.killpg(scenario.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = scenario.finish()
        took = time.monotonic() - start
    finally:
        scenario.kill()
    assert code == -signal.SIGINT, (code, scenario.stderr())
    assert "KeyboardInterrupt" in scenario.stderr()
    # the epoch had ~18 s of batches left: the busy workers were stopped, not waited for
    assert took < 10, took
    r = scenario.result
    assert r is not None and "finished" not in r, scenario.stderr()
    assert r["after"] == [] and r["alive"] == [] and r["segments"] == []
    scenario.assert_nothing_outlived_it()


def test_persistent_workers_with_an_error_in_the_second_epoch(tmp_path):
    flag = tmp_path / "fail-now"
    scenario, code = run_scenario(tmp_path, "scenario_persistent_error_in_second_epoch", str(flag))
    assert code == 0, scenario.stderr()
    r = scenario.result
    assert r is not None, scenario.stderr()
    assert r["epoch0_same"] and r["epoch0_pids_kept"]
    error = r["error"]
    assert error is not None and error["type"] == "ValueError", r
    assert error["message"] == "sample 5 is unreadable now"
    notes = "\n".join(error["notes"])
    assert "FlagFailDataset[5]" in notes and "of epoch 1" in notes, notes
    # the persistent pool is stopped (its state is unknown after an error), its memory unlinked
    assert r["after_error"] == [] and r["first"] == {"alive": [], "segments": []}
    # the next epoch starts fresh workers and yields the same batches as loading in one process
    assert r["epoch2_same"] and r["new_pids"]
    assert r["second"] == {"alive": [], "segments": []}
    scenario.assert_nothing_outlived_it()
