"""Loader throughput: delira's DataLoader against a single process, torch's DataLoader and
batchgenerators' MultiThreadedAugmenter, side by side in one run.

Every loader delivers the same batches to the main process: ``data`` ``(2, 1, 128, 128, 128)``
float32 and ``seg`` ``(2, 1, 128, 128, 128)`` int16, drawn at random from a few cases held in
memory (as after a ``CacheDataset`` or from page-cached memory-mapped preprocessed arrays), with a
light transform applied to the whole batch in the worker: a random mirror per sample and axis and a
random brightness scale and shift. Two versions of the transform are measured:

- ``inplace``: modifies the batch arrays in place and returns them (the cheapest way to write an
  augmentation; delira's workers stack the batch straight into shared memory, so nothing more is
  copied);
- ``copy``: returns new arrays (the batch then costs one more copy into shared memory).

The main process only receives each batch (and reads one voxel). A last row runs two
single-process loaders side by side in two processes and adds their rates: what the machine's
cores deliver with no communication at all, an upper bound for any two-worker loader at that
moment (on a machine shared with other work it shows how much of the ideal 2x was available). Rates are batches per second
after a warm-up (worker start-up excluded), over ``--repeats`` runs with the loaders interleaved;
the table gives the median and the best run, and the ratios of each to the same statistic of the
single-process rate of delira's loader (``num_workers=0``). On a machine shared with other work the
best run is the better estimate of what the loader can do, the median of what it did.

Run:  .venv/bin/python benchmarks/data/bench_loader.py [--batches 40] [--repeats 3] [--json]

The figures are only comparable within one run on one machine; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from delira.data import DataLoader, RandomSampler

SHAPE = (128, 128, 128)
BATCH_SIZE = 2
NUM_CASES = 6
WORKERS = 2


class InMemoryVolumes:
    """``NUM_CASES`` random 128^3 cases, generated in every process that unpickles the dataset."""

    def __init__(self, num_cases: int = NUM_CASES, shape: tuple[int, ...] = SHAPE) -> None:
        self.num_cases, self.shape = num_cases, shape
        self.cases = []
        for i in range(num_cases):
            data = np.random.default_rng(i).random((1, *shape), dtype=np.float32)
            self.cases.append((data, (data * 3).astype(np.int16)))

    def __getstate__(self) -> tuple[int, tuple[int, ...]]:
        return self.num_cases, self.shape  # regenerate instead of pickling 150 MB

    def __setstate__(self, state: tuple[int, tuple[int, ...]]) -> None:
        self.__init__(*state)

    def __len__(self) -> int:
        return self.num_cases

    def __getitem__(self, index: int) -> dict[str, Any]:
        data, seg = self.cases[int(index)]
        return {"data": data, "seg": seg, "case_id": f"case_{int(index)}"}


def mirror_brightness_inplace(
    data: np.ndarray, seg: np.ndarray, rng: np.random.Generator, **rest: Any
) -> dict:
    """The light transform, in place: per sample and spatial axis a mirror with p=0.5, then
    ``data * U(0.9, 1.1) + U(-0.1, 0.1)``. ``data``/``seg``: ``(N, C, X, Y, Z)``."""
    for j in range(data.shape[0]):
        for axis in range(1, data.ndim - 1):
            if rng.random() < 0.5:
                data[j] = np.flip(data[j], axis)
                seg[j] = np.flip(seg[j], axis)
    data *= np.float32(rng.uniform(0.9, 1.1))
    data += np.float32(rng.uniform(-0.1, 0.1))
    return {"data": data, "seg": seg, **rest}


def mirror_brightness_copy(data: np.ndarray, seg: np.ndarray, rng: np.random.Generator, **rest: Any) -> dict:
    """The same transform returning new arrays."""
    axes = [tuple(a for a in range(1, data.ndim - 1) if rng.random() < 0.5) for _ in range(data.shape[0])]
    data = np.stack([np.flip(d, ax) if ax else d for d, ax in zip(data, axes)])
    seg = np.stack([np.flip(s, ax) if ax else s for s, ax in zip(seg, axes)])
    data = data * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.1, 0.1))
    return {"data": data, "seg": seg, **rest}


TRANSFORMS = {"inplace": mirror_brightness_inplace, "copy": mirror_brightness_copy}


# -- the loaders under test: each returns an iterator of batches for `total` batches ---------------------
def delira_batches(transform: Callable, total: int, num_workers: int) -> Iterator[Any]:
    loader = DataLoader(
        InMemoryVolumes(),
        BATCH_SIZE,
        sampler=RandomSampler(NUM_CASES, replacement=True, num_samples=BATCH_SIZE * total),
        transforms=transform,
        num_workers=num_workers,
        prefetch=2,
    )
    with loader:
        yield from loader


class _TorchCollate:
    """Stack with torch's default_collate (in a worker it stacks into shared memory), then transform."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform
        self.rng: np.random.Generator | None = None

    def __call__(self, samples: list[dict]) -> dict:
        from torch.utils.data import default_collate

        if self.rng is None:
            self.rng = np.random.default_rng(os.getpid())
        batch = default_collate(samples)
        out = self.transform(data=batch["data"].numpy(), seg=batch["seg"].numpy(), rng=self.rng)
        import torch

        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in out.items()}


def torch_batches(transform: Callable, total: int) -> Iterator[Any]:
    import torch.utils.data as tud

    loader = tud.DataLoader(
        InMemoryVolumes(),
        batch_size=BATCH_SIZE,
        sampler=tud.RandomSampler(range(NUM_CASES), replacement=True, num_samples=BATCH_SIZE * total),
        num_workers=WORKERS,
        collate_fn=_TorchCollate(transform),
        prefetch_factor=2,
    )
    yield from loader


def batchgenerators_batches(transform: Callable, total: int) -> Iterator[Any]:
    from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
    from batchgenerators.transforms.abstract_transforms import AbstractTransform

    class Loader(SlimDataLoaderBase):
        def generate_train_batch(self) -> dict:
            picks = np.random.randint(0, NUM_CASES, size=BATCH_SIZE)  # noqa: NPY002 - bg seeds it
            cases = [self._data[int(i)] for i in picks]
            return {"data": np.stack([c["data"] for c in cases]), "seg": np.stack([c["seg"] for c in cases])}

    class Transform(AbstractTransform):
        def __call__(self, **batch: Any) -> dict:
            return transform(**batch, rng=np.random.default_rng(np.random.randint(2**31)))  # noqa: NPY002

    augmenter = MultiThreadedAugmenter(
        Loader(InMemoryVolumes(), BATCH_SIZE), Transform(), WORKERS, num_cached_per_queue=2, seeds=[1, 2]
    )
    try:
        for _ in range(total):
            yield next(augmenter)
    finally:
        augmenter._finish()


def measure(make: Callable[[int], Iterator[Any]], batches: int, warmup: int) -> float:
    """Batches per second over ``batches`` batches, after ``warmup`` batches (start-up excluded)."""
    iterator = make(warmup + batches)
    try:
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(iterator)
            data = batch["data"]
            assert tuple(data.shape) == (BATCH_SIZE, 1, *SHAPE), data.shape
            float(data[0, 0, 0, 0, 0])
            del batch, data
        return batches / (time.perf_counter() - start)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _independent_worker(kind: str, batches: int, warmup: int, barrier: Any, queue: Any) -> None:
    transform = TRANSFORMS[kind]
    barrier.wait()
    queue.put(measure(lambda n: delira_batches(transform, n, 0), batches, warmup))


def independent_processes(kind: str, batches: int, warmup: int) -> float:
    """Combined rate of ``WORKERS`` single-process loaders running side by side in separate
    processes: what ``WORKERS`` cores deliver with no communication at all (an upper bound)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    barrier, queue = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=_independent_worker, args=(kind, batches, warmup, barrier, queue))
        for _ in range(WORKERS)
    ]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=6, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per loader (median)")
    parser.add_argument("--transform", choices=["inplace", "copy", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    loaders: dict[str, Callable[[Callable, int], Iterator[Any]]] = {
        "delira, single process": lambda t, n: delira_batches(t, n, 0),
        f"delira, {WORKERS} workers": lambda t, n: delira_batches(t, n, WORKERS),
    }
    try:
        import torch  # noqa: F401

        loaders[f"torch DataLoader, {WORKERS} workers"] = torch_batches
    except ImportError:
        print("torch is not installed: skipping torch's DataLoader", file=sys.stderr)
    try:
        import batchgenerators  # noqa: F401

        loaders[f"batchgenerators MultiThreadedAugmenter, {WORKERS} processes"] = batchgenerators_batches
    except ImportError:
        print("batchgenerators is not installed: skipping MultiThreadedAugmenter", file=sys.stderr)

    kinds = ["inplace", "copy"] if args.transform == "both" else [args.transform]
    results: dict[str, Any] = {
        "batch": f"{BATCH_SIZE} x 1 x {'x'.join(map(str, SHAPE))} float32 data + int16 seg",
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
        "rates": {},
    }
    for kind in kinds:
        transform = TRANSFORMS[kind]
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        bound = f"{WORKERS} independent single-process loaders (bound)"
        rates[bound] = []
        for _ in range(args.repeats):  # interleave the loaders, so drifting load hits all alike
            for name, make in loaders.items():
                rates[name].append(
                    measure(lambda n, make=make, t=transform: make(t, n), args.batches, args.warmup)
                )
            rates[bound].append(independent_processes(kind, args.batches, args.warmup))
        base = statistics.median(rates["delira, single process"])
        best_base = max(rates["delira, single process"])
        results["rates"][kind] = {
            name: {
                "median": statistics.median(r),
                "best": max(r),
                "runs": r,
                "ratio": statistics.median(r) / base,
                "best_ratio": max(r) / best_base,
            }
            for name, r in rates.items()
        }
    results["load_average_after"] = os.getloadavg()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['batch']}, {results['cpus']} CPUs, load average {results['load_average']}")
    for kind, table in results["rates"].items():
        print(f"\ntransform: {kind}")
        print(f"{'loader':<52}{'median/s':>9}{'x single':>9}{'best/s':>8}{'x single':>9}   runs")
        for name, r in table.items():
            runs = ", ".join(f"{x:.1f}" for x in r["runs"])
            print(
                f"{name:<52}{r['median']:>9.1f}{r['ratio']:>9.2f}{r['best']:>8.1f}{r['best_ratio']:>9.2f}   {runs}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
