"""Throughput benchmark of delira.augment (``delira-augment-bench`` / ``python -m delira.augment.bench``).

Times each workload single-threaded and with all threads, as the median of several repeats, and
prints ms/sample and output voxels/s; ``--json PATH`` writes the same figures to a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import delira.augment as da


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def flip_workload(quick: bool) -> dict[str, Callable[[], Any]]:
    """Mirroring of a ``(2, 1, 160, 160, 160)`` float32 batch (``96^3`` with --quick) on all spatial axes."""
    size = 96 if quick else 160
    x = np.random.default_rng(0).standard_normal((2, 1, size, size, size), dtype=np.float32)
    return (
        {
            "delira": lambda: da.flip(x, (2, 3, 4)),
            "numpy": lambda: np.ascontiguousarray(np.flip(x, (2, 3, 4))),
        },
        x.shape[0],
        int(np.prod(x.shape[1:])),
    )


def run(quick: bool, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {"build_info": da.build_info(), "workloads": {}}
    runners, batch, voxels = flip_workload(quick)
    saved = da.get_num_threads()
    rows = {}
    try:
        for threads in sorted({1, saved}):
            da.set_num_threads(threads)
            for name, fn in runners.items():
                if name != "delira" and threads != 1:
                    continue
                ms = _median_ms(fn, repeats)
                rows[f"{name} ({threads} thread{'s' if threads > 1 else ''})"] = {
                    "ms_per_sample": ms / batch,
                    "voxels_per_s": voxels * batch / (ms / 1000.0),
                }
    finally:
        da.set_num_threads(saved)
    results["workloads"]["flip"] = rows
    return results


def _print(results: dict[str, Any]) -> None:
    for workload, rows in results["workloads"].items():
        print(f"\n{workload}")
        print(f"  {'engine':<28}{'ms/sample':>12}{'Mvox/s':>12}")
        for name, r in rows.items():
            print(f"  {name:<28}{r['ms_per_sample']:>12.2f}{r['voxels_per_s'] / 1e6:>12.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delira-augment-bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller volumes and fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per engine (median)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    info = da.build_info()
    print(
        f"delira-augment {info['version']}: compiled={info['compiled']} cuda={info['cuda_compiled']} "
        f"openmp={info['openmp']} threads={info['num_threads']}"
    )
    results = run(args.quick, repeats)
    _print(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
