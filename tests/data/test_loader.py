"""The DataLoader: determinism across worker counts, the seed protocol, errors, shutdown, leaks."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import delira_data_testing as h
import numpy as np
import pytest

from delira.data import (
    DataLoader,
    RandomSampler,
    RemoteTraceback,
    SyntheticPhantomDataset,
    WorkerError,
)

TIMEOUT = 60  # a backstop so that a regression fails instead of hanging the suite


def owned(batch):
    """A deep copy of a batch (arrays copied), so it outlives the loader's shared memory slots."""
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert list(x) == list(y)
        for key in x:
            if isinstance(x[key], np.ndarray):
                assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, key
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)
            else:
                assert x[key] == y[key], key


# -- determinism ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transform", [h.add_rng_noise, h.add_global_noise, h.scale_in_place])
def test_batches_identical_for_0_1_2_workers(transform, no_leaks):
    dataset = SyntheticPhantomDataset(num_cases=7, shape=(16, 16, 16), seed=4)
    results = {}
    for workers in (0, 1, 2):
        loader = DataLoader(
            dataset,
            batch_size=2,
            transforms=transform,
            num_workers=workers,
            seed=11,
            shuffle=True,
            timeout=TIMEOUT,
        )
        loader.set_epoch(3)
        results[workers] = [owned(b) for b in loader]
        no_leaks.extend(loader.worker_pids)
    assert len(results[0]) == 4  # 7 samples, batch 2, last batch smaller
    assert results[0][-1]["data"].shape == (1, 1, 16, 16, 16)
    assert_batches_equal(results[0], results[1])
    assert_batches_equal(results[0], results[2])


def test_dataset_drawing_from_global_numpy_is_reproducible_in_workers(no_leaks):
    dataset = h.GlobalRandomDataset(6)
    runs = []
    for workers in (0, 2, 2):
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, seed=5, timeout=TIMEOUT)
        runs.append([owned(b) for b in loader])
    assert_batches_equal(runs[0], runs[1])
    assert_batches_equal(runs[0], runs[2])


def test_batch_follows_the_documented_seed_protocol():
    """Batch i of epoch e == stack(samples) transformed with default_rng(SeedSequence([seed, e, i]))."""
    dataset = h.ArangeDataset(6)
    loader = DataLoader(
        dataset, batch_size=2, transforms=h.add_rng_noise, num_workers=2, seed=9, timeout=TIMEOUT
    )
    loader.set_epoch(4)
    batches = [owned(b) for b in loader]
    for i, batch in enumerate(batches):
        samples = [dataset[k] for k in (2 * i, 2 * i + 1)]
        rng = np.random.default_rng(np.random.SeedSequence([9, 4, i]))
        data = np.stack([s["data"] for s in samples])
        expected = data + rng.standard_normal(data.shape).astype(np.float32)
        np.testing.assert_array_equal(batch["data"], expected)
        np.testing.assert_array_equal(batch["seg"], np.stack([s["seg"] for s in samples]))
        assert batch["case_id"] == [s["case_id"] for s in samples]
        np.testing.assert_array_equal(batch["label"], [s["label"] for s in samples])


def test_sequence_of_transforms_gets_spawned_generators():
    dataset = h.ArangeDataset(2)
    loader = DataLoader(dataset, batch_size=2, transforms=[h.add_rng_noise, h.scale_in_place], seed=1)
    batch = next(iter(loader))
    first, second = np.random.SeedSequence([1, 0, 0]).spawn(2)
    data = np.stack([dataset[0]["data"], dataset[1]["data"]])
    data = data + np.random.default_rng(first).standard_normal(data.shape).astype(np.float32)
    data *= np.float32(np.random.default_rng(second).uniform(1.0, 2.0))
    np.testing.assert_array_equal(batch["data"], data)


def test_epochs_differ_and_repeat():
    dataset = SyntheticPhantomDataset(num_cases=4, shape=(16, 16, 16))
    loader = DataLoader(dataset, batch_size=2, transforms=h.add_rng_noise, shuffle=True, seed=0)
    epoch0 = [owned(b) for b in loader]
    loader.set_epoch(1)
    epoch1 = [owned(b) for b in loader]
    loader.set_epoch(0)
    assert_batches_equal(epoch0, [owned(b) for b in loader])
    assert not np.array_equal(epoch0[0]["data"], epoch1[0]["data"])


def test_in_process_loading_leaves_global_random_state_alone():
    np.random.seed(123)  # noqa: NPY002
    expected = np.random.random_sample(3)  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    for _ in DataLoader(h.ArangeDataset(4), batch_size=2, transforms=h.add_global_noise):
        pass
    np.testing.assert_array_equal(np.random.random_sample(3), expected)  # noqa: NPY002


def test_persistent_workers_serve_several_epochs_and_abandoned_epochs(no_leaks):
    dataset = h.ArangeDataset(8)
    reference = DataLoader(dataset, batch_size=2, transforms=h.add_rng_noise, shuffle=True, seed=2)
    loader = DataLoader(
        dataset,
        batch_size=2,
        transforms=h.add_rng_noise,
        shuffle=True,
        seed=2,
        num_workers=2,
        persistent_workers=True,
        timeout=TIMEOUT,
    )
    with loader:
        for epoch in range(3):
            loader.set_epoch(epoch)
            reference.set_epoch(epoch)
            it = iter(loader)
            first = owned(next(it))  # abandon the epoch after one batch: the next one drains it
            pids = list(loader.worker_pids)
            assert_batches_equal([first], [owned(next(iter(reference)))])
            assert_batches_equal([owned(b) for b in loader], [owned(b) for b in reference])
            assert loader.worker_pids == pids  # the same processes every epoch
            no_leaks.extend(pids)


# -- shared memory ------------------------------------------------------------------------------------------
def test_batches_are_views_of_shared_memory(no_leaks):
    loader = DataLoader(h.ArangeDataset(4), batch_size=2, num_workers=1, timeout=TIMEOUT)
    it = iter(loader)
    batch = next(it)
    path = h.mapped_file(batch["data"].ctypes.data)
    assert path is not None and path.startswith(f"/dev/shm/delira_{os.getpid()}_"), path
    no_leaks.extend(loader.worker_pids)
    del it, batch


def test_batches_outlive_the_loader_and_stay_correct(no_leaks):
    dataset = h.ArangeDataset(10)
    loader = DataLoader(dataset, batch_size=3, transforms=h.flip_seg_view, num_workers=2, timeout=TIMEOUT)
    held = list(loader)  # keeps every slot in use: the workers must allocate more, not overwrite
    no_leaks.extend(loader.worker_pids)
    loader.close()
    gc.collect()
    assert not h.our_segments()  # unlinked although still mapped by the arrays in `held`
    expected = list(DataLoader(dataset, batch_size=3, transforms=h.flip_seg_view))
    assert_batches_equal(held, expected)


def test_slots_are_reused_when_batches_are_dropped(no_leaks):
    loader = DataLoader(
        h.ArangeDataset(40, shape=(8, 8, 8)),
        batch_size=2,
        transforms=h.scale_in_place,
        num_workers=2,
        prefetch=2,
    )
    most = 0
    for batch in loader:
        most = max(most, len(h.our_segments()))
        no_leaks.extend(loader.worker_pids)
        del batch
    # 20 batches; per worker at most prefetch in flight + the one held + one being dropped.
    assert 0 < most <= 2 * (2 + 2)


def test_copying_transform_with_overlapping_views_stays_correct():
    """A transform returning a reversed view of its input makes the worker copy within one slot."""
    dataset = h.ArangeDataset(12)
    got = [owned(b) for b in DataLoader(dataset, 3, transforms=h.flip_seg_view, num_workers=1, prefetch=1)]
    for i, batch in enumerate(got):
        seg = np.stack([dataset[k]["seg"] for k in range(3 * i, 3 * i + 3)])
        np.testing.assert_array_equal(batch["seg"], seg[..., ::-1])


# -- errors ---------------------------------------------------------------------------------------------------
def test_worker_exception_is_reraised_with_its_traceback(no_leaks):
    loader = DataLoader(h.FailingDataset(10, bad=5), batch_size=2, num_workers=2, timeout=TIMEOUT)
    seen = []
    with pytest.raises(ValueError, match="bad sample 5") as info:
        for batch in loader:
            seen.append(batch["case_id"])
            no_leaks.extend(loader.worker_pids)
    assert seen == [["case00", "case01"], ["case02", "case03"]]
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "Traceback" in str(cause) and "FailingDataset" in str(cause) and "__getitem__" in str(cause)
    assert loader.worker_pids == []


def test_worker_that_exits_raises_worker_error(no_leaks):
    loader = DataLoader(h.ExitingDataset(10, bad=4), batch_size=2, num_workers=2, timeout=TIMEOUT)
    with pytest.raises(WorkerError, match=r"worker 0 \(pid \d+\) exited with code 3"):
        for _ in loader:
            no_leaks.extend(loader.worker_pids)


def test_worker_killed_by_signal_raises_worker_error(no_leaks):
    loader = DataLoader(
        h.ArangeDataset(10),
        batch_size=2,
        transforms=h.KillSelfTransform("case06"),
        num_workers=2,
        timeout=TIMEOUT,
    )
    with pytest.raises(WorkerError, match=r"worker 1 .* killed by SIGKILL"):
        for _ in loader:
            no_leaks.extend(loader.worker_pids)


def test_worker_killed_from_outside_while_main_waits(no_leaks):
    loader = DataLoader(h.SlowDataset(6, delay=30.0), batch_size=1, num_workers=2, timeout=TIMEOUT)
    it = iter(loader)
    pids = loader.worker_pids
    no_leaks.extend(pids)
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(WorkerError, match="killed by SIGKILL"):
        next(it)


def test_inconsistent_shapes_name_the_sample():
    with pytest.raises(ValueError, match=r"sample 3 \(batch position 1\) has 'data' of shape \(1, 4, 4, 3\)"):
        list(DataLoader(h.RaggedDataset(6, odd=3), batch_size=2))


def test_inconsistent_shapes_in_a_worker_name_the_sample(no_leaks):
    loader = DataLoader(h.RaggedDataset(6, odd=3), batch_size=2, num_workers=1, timeout=TIMEOUT)
    with pytest.raises(ValueError, match=r"sample 3 \(batch position 1\)"):
        for _ in loader:
            no_leaks.extend(loader.worker_pids)


def test_unpicklable_batch_metadata_is_reported(no_leaks):
    loader = DataLoader(h.UnpicklableMetaDataset(4), batch_size=2, num_workers=1, timeout=TIMEOUT)
    with pytest.raises(Exception, match=r"lambda|pickle") as info:
        for _ in loader:
            no_leaks.extend(loader.worker_pids)
    assert "worker 0" in "".join(getattr(info.value, "__notes__", [])) or "worker 0" in str(info.value)


def test_transform_returning_a_non_dict_is_an_error():
    with pytest.raises(TypeError, match="returns_list returned a list"):
        list(DataLoader(h.ArangeDataset(2), 2, transforms=h.returns_list))


def test_unpicklable_dataset_says_how_to_fix(no_leaks):
    dataset = h.ArangeDataset(4)
    dataset.hook = lambda: None
    with pytest.raises(TypeError, match="picklable"):
        iter(DataLoader(dataset, 2, num_workers=1, start_method="spawn"))


def test_empty_dataset_and_empty_epoch_are_errors():
    with pytest.raises(ValueError, match="empty"):
        DataLoader(h.ArangeDataset(0), batch_size=2)
    with pytest.raises(ValueError, match="no batch"):
        DataLoader(h.ArangeDataset(3), batch_size=4, drop_last=True)


def test_drop_last_and_lengths():
    loader = DataLoader(h.ArangeDataset(7), batch_size=3, drop_last=True)
    assert len(loader) == 2 and [len(b["case_id"]) for b in loader] == [3, 3]
    loader = DataLoader(h.ArangeDataset(7), batch_size=3)
    assert len(loader) == 3 and [len(b["case_id"]) for b in loader] == [3, 3, 1]


def test_sampler_keys_reach_the_dataset():
    sampler = RandomSampler(5, replacement=True, num_samples=9, seed=3)
    loader = DataLoader(h.ArangeDataset(5), batch_size=4, sampler=sampler)
    sampler.set_epoch(0)
    keys = list(sampler)
    ids = [c for b in loader for c in b["case_id"]]
    assert ids == [f"case{k:02d}" for k in keys]


# -- shutdown -------------------------------------------------------------------------------------------------
def test_end_of_iteration_stops_workers(no_leaks):
    loader = DataLoader(h.ArangeDataset(8), batch_size=2, num_workers=2, timeout=TIMEOUT)
    for _ in loader:
        no_leaks.extend(loader.worker_pids)
    assert loader.worker_pids == []


def test_break_and_garbage_collection_stop_workers(no_leaks):
    loader = DataLoader(h.ArangeDataset(20), batch_size=2, num_workers=2, timeout=TIMEOUT)
    for _ in loader:
        no_leaks.extend(loader.worker_pids)
        break
    gc.collect()
    del loader
    gc.collect()


def test_close_stops_workers(no_leaks):
    loader = DataLoader(h.SlowDataset(20, delay=0.05), batch_size=2, num_workers=2, timeout=TIMEOUT)
    it = iter(loader)
    next(it)
    no_leaks.extend(loader.worker_pids)
    loader.close()
    assert loader.worker_pids == []
    with pytest.raises(StopIteration):
        next(it)


def test_keyboard_interrupt_in_the_loop_body(no_leaks):
    loader = DataLoader(h.ArangeDataset(20), batch_size=2, num_workers=2, timeout=TIMEOUT)

    def train():
        for _ in loader:
            no_leaks.extend(loader.worker_pids)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train()
    gc.collect()


def test_keyboard_interrupt_while_waiting_for_a_batch(no_leaks):
    # The first batch takes 30 s, so the interrupt always arrives while the main process waits.
    loader = DataLoader(h.SlowDataset(6, delay=30.0), batch_size=1, num_workers=2, timeout=TIMEOUT)
    it = iter(loader)
    no_leaks.extend(loader.worker_pids)
    timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            next(it)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 25  # the busy workers were terminated, not waited for
    assert loader.worker_pids == []


def test_fork_start_method_also_cleans_up(no_leaks):
    loader = DataLoader(h.ArangeDataset(6), batch_size=2, num_workers=2, start_method="fork", timeout=TIMEOUT)
    reference = [owned(b) for b in DataLoader(h.ArangeDataset(6), batch_size=2)]
    got = []
    for b in loader:
        got.append(owned(b))
        no_leaks.extend(loader.worker_pids)
    assert_batches_equal(got, reference)


def test_portable_copy_path_without_dev_shm(monkeypatch, no_leaks):
    """Where segments are not files (macOS, ...) the main process copies batches out once."""
    from delira.data.loader import shm

    monkeypatch.setattr(shm, "segment_dir", lambda: None)  # in this process only; workers map as usual
    dataset = h.ArangeDataset(6)
    loader = DataLoader(dataset, batch_size=2, transforms=h.add_rng_noise, num_workers=2, timeout=TIMEOUT)
    got = []
    for b in loader:
        path = h.mapped_file(b["data"].ctypes.data)
        assert path is None or not path.startswith("/dev/shm/")  # an ordinary, owned copy
        got.append(b)
        no_leaks.extend(loader.worker_pids)
    assert_batches_equal(got, [owned(b) for b in DataLoader(dataset, 2, transforms=h.add_rng_noise)])


KILL_MAIN_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {helpers!r})
import delira_data_testing as h
from delira.data import DataLoader

if __name__ == "__main__":
    loader = DataLoader(h.SlowDataset(20, delay=0.2), batch_size=2, num_workers=2)
    it = iter(loader)
    next(it)
    print(os.getpid(), *loader.worker_pids, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_exit_and_segments_go_when_the_main_process_is_killed(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "killed_main.py"
    script.write_text(KILL_MAIN_SCRIPT.format(helpers=os.path.dirname(h.__file__)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    main_pid, *pids = (int(p) for p in proc.stdout.split())
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(map(h.pid_alive, pids)):
        time.sleep(0.05)
    assert not any(map(h.pid_alive, pids)), "workers outlived their main process"

    def leftovers():  # the stdlib resource tracker unlinks them once the last worker is gone
        return [n for n in os.listdir("/dev/shm") if n.startswith(f"delira_{main_pid}_")]

    while time.monotonic() < deadline and leftovers():
        time.sleep(0.05)
    assert not leftovers()


def test_malloc_tuning_in_workers_can_be_switched_off():
    import subprocess
    import sys

    code = "from delira.data.loader.worker import keep_freed_memory; print(keep_freed_memory())"
    env = dict(os.environ, DELIRA_DATA_MALLOC_TUNING="0")
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert off.stdout.strip() == "False"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert on.stdout.strip() == ("True" if os.confstr("CS_GNU_LIBC_VERSION") else "False")
