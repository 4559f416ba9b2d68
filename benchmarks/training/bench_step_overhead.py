"""Per-step overhead of the trainers: ``PyTorchNetworkTrainer`` against a hand-written torch loop
and ``TfNetworkTrainer`` against Keras ``model.fit``, on a tiny 3D UNet.

Workload: ``data`` ``(4, 1, 16, 16, 16)`` float32, ``seg`` ``(4, 1, 16, 16, 16)`` int16 (a learnable
threshold task), held in memory as a list of batches (no loader cost), a 3D UNet with features
``(8, 16)`` and instance norm, Adam, cross-entropy, one intra-op thread, on the CPU. Each run is one
epoch of ``--steps`` steps after a warm-up epoch; the per-step time of a run is its wall time
divided by the steps, and the table gives the median and the minimum over ``--repeats`` runs, the
contenders interleaved. Overhead = trainer / reference - 1.

The trainers run with ``verbose=False`` and no validation, checkpoints or loggers, i.e. what they
add to each step: batch conversion, the step bookkeeping (accumulation, NaN check, callbacks), and
reading the loss back as a Python float (which the references do not do for torch; Keras'
``fit`` reads its logs at the end of each epoch).

Run:  .venv/bin/python benchmarks/training/bench_step_overhead.py [--steps 50] [--repeats 7] [--only torch|tf]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np


def make_batches(steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        data = rng.normal(size=(4, 1, 16, 16, 16)).astype(np.float32)
        batches.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return batches


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(contenders: dict[str, Callable[[], None]], steps: int, repeats: int) -> dict[str, list[float]]:
    for fn in contenders.values():  # warm-up: tracing, allocator, first optimizer step
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn) / steps * 1e3)
    return times


def torch_contenders(batches: list[dict[str, np.ndarray]]) -> dict[str, Callable[[], None]]:
    import torch

    from delira.models.torch import UNet
    from delira.training import PyTorchNetworkTrainer

    torch.set_num_threads(1)

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return UNet(spatial_dims=3, num_classes=2, features=(8, 16))

    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def hand_loop() -> None:
        net.train()
        for batch in batches:
            x = torch.from_numpy(batch["data"])
            y = torch.from_numpy(batch["seg"][:, 0].astype(np.int64))
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()

    trainer = PyTorchNetworkTrainer(build(), {"ce": torch.nn.CrossEntropyLoss()}, lr=1e-3, verbose=False)

    def trainer_fit() -> None:
        trainer.fit(batches, epochs=1)

    return {"torch hand-written loop": hand_loop, "PyTorchNetworkTrainer": trainer_fit}


def tf_contenders(batches: list[dict[str, np.ndarray]]) -> dict[str, Callable[[], None]]:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from delira.models.tf import UNet, channels_first
    from delira.training import TfNetworkTrainer

    def build() -> keras.Model:
        keras.utils.set_random_seed(0)
        return UNet(spatial_dims=3, num_classes=2, features=(8, 16))

    def loss() -> Callable[..., object]:
        return channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss())
    x = np.concatenate([b["data"] for b in batches])
    y = np.concatenate([b["seg"][:, 0].astype(np.int64) for b in batches])

    def keras_fit() -> None:
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

    trainer = TfNetworkTrainer(build(), {"ce": loss()}, lr=1e-3, verbose=False)

    def trainer_fit() -> None:
        trainer.fit(batches, epochs=1)

    return {"Keras model.fit": keras_fit, "TfNetworkTrainer": trainer_fit}


def report(title: str, times: dict[str, list[float]]) -> None:
    names = list(times)
    ref_med, ref_min = statistics.median(times[names[0]]), min(times[names[0]])
    print(f"\n{title}")
    print(
        f"{'':28s} {'median ms/step':>15s} {'min ms/step':>12s} {'overhead (median)':>18s} {'overhead (min)':>15s}"
    )
    for name in names:
        med, low = statistics.median(times[name]), min(times[name])
        print(
            f"{name:28s} {med:15.2f} {low:12.2f} {100 * (med / ref_med - 1):17.1f}% {100 * (low / ref_min - 1):14.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=("torch", "tf"), default=None)
    args = parser.parse_args()
    batches = make_batches(args.steps)
    if args.only in (None, "torch"):
        report("PyTorch (CPU, 1 thread)", compare(torch_contenders(batches), args.steps, args.repeats))
    if args.only in (None, "tf"):
        report(
            "TensorFlow / Keras (CPU, 1 thread)", compare(tf_contenders(batches), args.steps, args.repeats)
        )


if __name__ == "__main__":
    main()
