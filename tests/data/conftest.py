"""Fixtures for the delira.data tests.

Worker processes are forked where that is safe (``start_method="auto"``) and otherwise start with
``forkserver``/``spawn``, unpickling the datasets and transforms of a test by importing their
module; so those live in ``delira_data_testing.py`` beside this file, which is put on ``sys.path``
here (workers inherit ``sys.path``).
"""

from __future__ import annotations

import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import delira_data_testing as helpers  # noqa: E402


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves a shared-memory segment or a process behind.

    Yields a list; append worker pids to it and they are checked to be gone too.
    """
    helpers.warm_up_start_method()  # the fork server and resource tracker are long-lived helpers
    before_procs = helpers.descendants()
    before_segments = helpers.our_segments()
    pids: list[int] = []
    yield pids
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [p for p in pids if helpers.pid_alive(p)]
        new_procs = helpers.descendants() - before_procs
        new_segments = helpers.our_segments() - before_segments
        if not alive and not new_procs and not new_segments:
            break
        time.sleep(0.05)
    assert not alive, f"worker processes still alive: {alive}"
    assert not new_procs, f"processes left behind: {new_procs}"
    assert not new_segments, f"shared-memory segments left behind: {new_segments}"
