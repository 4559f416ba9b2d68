"""The fold launchers on the phantom default: the 3 folds sequentially in one process against
``--launcher local`` with 2 processes, and the launcher's own overhead per fold job.

Workload: the built-in default (`delira run`: 3-fold cross-validation of a small 3D UNet on
synthetic phantoms with the canonical augmentation), CPU. ``--epochs`` shortens it (default: the
config's own). Each repeat runs both contenders into fresh folders, interleaved; the table gives
the median wall time of each, the ratio sequential / local and whether the per-fold figures agree.

The launcher's overhead per job is measured apart: the time from starting a fold process to the
fold's first line of training, on a fold that is already finished (so the process only starts
Python, imports torch and delira, reads the run folder and exits), median of ``--repeats`` runs.

Run:  .venv/bin/python benchmarks/training/bench_launcher.py [--epochs 4] [--repeats 1] [--jobs 2]
      [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _delira(*args: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "delira.training.cli", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    return time.perf_counter() - start


def _figures(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "summary.json").read_text())["folds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="training.epochs (default: the config's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    overrides = [] if args.epochs is None else ["--set", f"training.epochs={args.epochs}"]
    seq, loc, agree = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            a, b = Path(tmp) / f"seq{r}", Path(tmp) / f"local{r}"
            seq.append(_delira("run", "--run-dir", str(a), *overrides))
            loc.append(
                _delira(
                    "run", "--run-dir", str(b), "--launcher", "local", "--jobs", str(args.jobs), *overrides
                )
            )
            agree.append(_figures(a) == _figures(b))
            print(f"repeat {r}: sequential {seq[-1]:.1f} s, local x{args.jobs} {loc[-1]:.1f} s", flush=True)
        # overhead per job: a fold process on a finished fold does everything but the training
        finished = Path(tmp) / "seq0"
        overhead = []
        for _ in range(max(3, args.repeats)):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "delira.training.launcher", str(finished), "0"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            overhead.append(time.perf_counter() - start)
    result = {
        "machine": f"{os.cpu_count()} cores",
        "epochs": args.epochs,
        "jobs": args.jobs,
        "sequential_s": statistics.median(seq),
        "local_s": statistics.median(loc),
        "speedup": statistics.median(seq) / statistics.median(loc),
        "same_fold_figures": all(agree),
        "overhead_per_job_s": statistics.median(overhead),
    }
    print(
        f"\nsequential {result['sequential_s']:.1f} s | local x{args.jobs} {result['local_s']:.1f} s | "
        f"speedup {result['speedup']:.2f}x | same per-fold figures: {result['same_fold_figures']} | "
        f"launcher overhead per job {result['overhead_per_job_s']:.2f} s (process start, imports, run folder)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
