"""``delira-augment-bench --profile``: every stage of the canonical workload is timed and named, on 1
thread and on the requested threads (the figures themselves are measured, never asserted)."""

from __future__ import annotations

import math
import subprocess
import sys

STAGES = [
    "parameter drawing",
    "spec building",
    "resample data (affine)",
    "elastic field",
    "resample seg",
    "noise",
    "brightness (multiply)",
    "statistics for gamma",
    "gamma",
    "statistics for restore stats",
    "restore stats",
]


def test_profile_names_every_stage_per_thread_count():
    from delira.augment.bench import profile

    result = profile(size=24, patch=16, batch=1, repeats=1, threads=2)
    assert result["workload"] == {"input": [1, 24, 24, 24], "patch": [16, 16, 16], "batch": 1, "repeats": 1}
    assert set(result["stages_ms_per_sample"]) == {"1 thread", "2 threads"}
    for column in result["stages_ms_per_sample"].values():
        assert [k for k in column if k in STAGES] == STAGES
        assert all(math.isfinite(v) for v in column.values())
        assert column["sum of stages"] == sum(column[s] for s in STAGES)


def test_the_command_prints_the_profile_table():
    out = subprocess.run(
        [sys.executable, "-m", "delira.augment.bench", "--profile", "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "profile of the canonical workload" in out.stdout
    for stage in STAGES:
        assert stage in out.stdout
