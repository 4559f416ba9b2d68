"""The distributed parts of the framework-agnostic training loop, with two ranks as two threads of
this process and a numpy all-reduce between them (no torch, no process group): each rank's training
batches, validation divided without padding (also with fewer batches than ranks), the ranks'
agreement checks and the rank in the device-transform seeds, against hand computations."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from delira.training import BaseNetworkTrainer


class _Reducer:
    """Element-wise sum over ``world`` threads (what torch's all_reduce does over processes)."""

    def __init__(self, world: int) -> None:
        self.slots: list[np.ndarray | None] = [None] * world
        self.barrier = threading.Barrier(world, timeout=30)

    def all_reduce(self, rank: int, values: np.ndarray) -> np.ndarray:
        self.slots[rank] = np.array(values, dtype=np.float64)
        self.barrier.wait()
        total = np.sum(np.stack(self.slots), axis=0)
        self.barrier.wait()
        return total


class _FakeTrainer(BaseNetworkTrainer):
    """A 'network' whose loss on a batch is the mean of its data; records what it trained on."""

    framework = "fake"

    def __init__(self, reducer: _Reducer, rank: int, world: int, **kwargs):
        super().__init__(network=None, losses={"l": lambda *a: 0.0}, verbose=False, **kwargs)
        self.reducer, self._rank, self._world = reducer, rank, world
        self.trained: list[list[str]] = []

    @property
    def _seed_framework(self) -> str:
        return "none"

    def _setup(self) -> None:
        self.rank, self.world_size, self.optimizer = self._rank, self._world, object()

    def _train_step(self, batch, step_now, context):
        self.trained.append([str(c) for c in batch["case_id"]])
        return {"loss": float(np.mean(batch["data"]))}

    def _eval_step(self, batch):
        return float(np.mean(batch["data"])), batch["data"]

    def get_lr(self) -> float:
        return 0.1

    def set_lr(self, value: float) -> None:
        pass

    def _all_reduce_sum(self, values):
        return self.reducer.all_reduce(self.rank, values)


def _on_ranks(world, fn):
    """``[fn(trainer_of_rank_r) for r]`` with the ranks running at the same time; exceptions kept."""
    reducer = _Reducer(world)
    results: list = [None] * world

    def run(rank):
        try:
            results[rank] = fn(_FakeTrainer(reducer, rank, world))
        except Exception as exc:  # handed to the test
            results[rank] = exc

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _cases(values):
    return [{"data": np.full((1, 2), v, np.float32), "case_id": f"c{k}"} for k, v in enumerate(values)]


def test_training_batches_and_loss_over_two_ranks():
    from delira.data import DataLoader

    values = np.arange(10, dtype=np.float32) * 0.5
    cases = _cases(values)

    def fit(trainer):
        history = trainer.fit(DataLoader(cases, batch_size=2, shuffle=True, seed=4), epochs=1)
        return trainer.trained, history

    (trained0, history0), (trained1, history1) = _on_ranks(2, fit)
    order = np.random.default_rng([4, 0]).permutation(10)  # RandomSampler's documented order
    ids = [f"c{k}" for k in order]
    assert trained0 == [ids[0:2], ids[4:6], ids[8:9]]
    assert trained1 == [ids[2:4], ids[6:8], ids[9:10]]
    # train_loss: the mean of the 6 batch losses of both ranks, by hand
    batch_losses = [np.mean(values[order[a:b]]) for a, b in ((0, 2), (4, 6), (8, 9), (2, 4), (6, 8), (9, 10))]
    assert history0 == history1
    assert history0[0]["train_loss"] == pytest.approx(np.mean(batch_losses), abs=1e-6)


@pytest.mark.parametrize("n, batch", [(5, 1), (1, 1), (7, 2)])
def test_validation_over_two_ranks_equals_one_process(n, batch):
    from delira.data import DataLoader

    values = np.linspace(-1, 2, n).astype(np.float32)
    loader = DataLoader(_cases(values), batch_size=batch)
    batches = [values[i : i + batch] for i in range(0, n, batch)]
    expected = float(np.mean([np.mean(b) for b in batches]))  # mean over the batches, by hand
    results = _on_ranks(2, lambda t: t.evaluate(loader))
    for result in results:
        assert not isinstance(result, Exception), result
        assert result["loss"] == pytest.approx(expected, abs=1e-6)


def test_validation_metrics_that_differ_between_ranks_are_refused():
    from delira.data import DataLoader

    loader = DataLoader(_cases([0.0, 1.0]), batch_size=1)

    def evaluate(trainer):
        trainer.metrics = {f"only_on_rank_{trainer._rank}": lambda p, b: 1.0}
        return trainer.evaluate(loader)

    for result in _on_ranks(2, evaluate):
        assert isinstance(result, ValueError) and "different validation metrics" in str(result)


def test_same_on_all_ranks():
    assert _on_ranks(2, lambda t: (t._setup(), t._same_on_all_ranks([3, 7]))[1]) == [True, True]
    assert _on_ranks(3, lambda t: (t._setup(), t._same_on_all_ranks([t._rank == 2]))[1]) == [False] * 3
    assert _on_ranks(2, lambda t: (t._setup(), t._same_on_all_ranks([1 + t._rank, 2 - t._rank]))[1]) == [
        False,
        False,
    ]


def test_device_transform_seeds_include_the_rank():
    def draws(trainer):
        trainer._setup()
        trainer.device_transforms = [lambda rng, **b: {**b, "x": rng.integers(1 << 30)}]
        trainer._transform_takes_rng = [True]
        return trainer._prepare_transforms({}, (2, 5))["x"]

    assert _on_ranks(2, draws) == [np.random.default_rng([0, 2, 5, 0, r]).integers(1 << 30) for r in range(2)]
