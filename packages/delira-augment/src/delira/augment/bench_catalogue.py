"""Per-op benchmark of the augmentation catalogue (``delira-augment-bench --ops [NAME ...]``).

Every op of the catalogue beyond the canonical workload is timed on the same input as its peers'
implementation of the same operation (batchgeneratorsv2, batchgenerators, TorchIO, whichever is
installed), single-threaded, in one run. Input: ``batch`` samples of ``1 x size^3`` float32
(standard normal) and a segmentation with labels 0..2; the op is applied to every sample (p = 1)
with the parameters given in its case. Reported per op: median ms/sample of Delira and of each peer,
and the ratio peer / Delira (how many times faster Delira is).

A case is registered with :func:`case`: a name, the Delira factory and the peers' factories. A factory
takes the spatial shape and returns a callable ``fn(data, seg) -> None`` run on fresh copies of the
input (copying is not timed). A peer factory raises ``ImportError`` when the peer is not installed:
that peer is then reported as missing, not timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Factory = Callable[[tuple[int, ...]], Callable[[Any, Any], Any]]


@dataclass
class Case:
    name: str
    delira: Factory
    peers: dict[str, Factory] = field(default_factory=dict)
    note: str = ""


CASES: dict[str, Case] = {}


def case(name: str, delira: Factory, note: str = "", **peers: Factory) -> Case:
    """Register a benchmark case (``peers``: peer name -> factory)."""
    if name in CASES:
        raise ValueError(f"benchmark case {name!r} registered twice")
    CASES[name] = Case(name, delira, dict(peers), note)
    return CASES[name]


def _inputs(n: int, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 1, size, size, size), dtype=np.float32)
    seg = rng.integers(0, 3, (n, 1, size, size, size)).astype(np.int16)
    return data, seg


def _time(fn: Callable[[Any, Any], Any], data, seg, repeats: int) -> float:
    """Median ms of ``fn`` over ``repeats`` calls (after one warm-up) on fresh copies of the input."""
    times = []
    for i in range(repeats + 1):
        d, s = data.copy(), seg.copy()
        t0 = time.perf_counter()
        fn(d, s)
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_ops(
    names: list[str] | None, size: int, batch: int, repeats: int, peers: bool = True
) -> dict[str, Any]:
    """Time the named cases (all when ``names`` is empty or None); returns the results as a dict."""
    _load_cases()
    unknown = [n for n in names or [] if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(sorted(CASES))}")
    data, seg = _inputs(batch, size)
    shape = data.shape[2:]
    results: dict[str, Any] = {"size": size, "batch": batch, "repeats": repeats, "ops": {}}
    for name in names or sorted(CASES):
        c = CASES[name]
        row: dict[str, Any] = {"note": c.note}
        ms = _time(c.delira(shape), data, seg, repeats) / batch
        row["delira_ms_per_sample"] = ms
        row["peers"] = {}
        for peer, factory in c.peers.items() if peers else ():
            try:
                fn = factory(shape)
            except ImportError as exc:
                row["peers"][peer] = {"missing": str(exc)}
                continue
            pms = _time(fn, data, seg, repeats) / batch
            row["peers"][peer] = {"ms_per_sample": pms, "ratio": pms / ms if ms > 0 else float("inf")}
        results["ops"][name] = row
    return results


def print_ops(results: dict[str, Any]) -> None:
    print(
        f"catalogue ops on {results['batch']} x 1 x {results['size']}^3, one thread, "
        f"median of {results['repeats']} (ms/sample; ratio = peer / delira)"
    )
    for name, row in results["ops"].items():
        peers = []
        for peer, r in row["peers"].items():
            peers.append(
                f"{peer} missing"
                if "missing" in r
                else f"{peer} {r['ms_per_sample']:.1f} ({r['ratio']:.1f}x)"
            )
        print(f"  {name:<28} delira {row['delira_ms_per_sample']:8.1f}   " + "   ".join(peers))


def _load_cases() -> None:
    """Register the cases of every group (idempotent)."""
    if CASES:
        return
    _cases_intensity()
    _cases_filters()
    _cases_spatial()
    _cases_mr()


# Each group registers its cases in its own function below.


# --- group: intensity (Rician noise, contrast, inverted gamma, ...) ----------------------------------
def _cases_intensity() -> None:
    pass


# --- group: filters (blur per sample, sharpening, median, low resolution per axis, local ops) -------
def _cases_filters() -> None:
    pass


# --- group: spatial (90-degree rotations, transposes, blank rectangles, dummy 2D) -------------------
def _cases_spatial() -> None:
    pass


# --- group: mr (bias field, motion, ghosting, spike) -------------------------------------------------
def _cases_mr() -> None:
    pass
