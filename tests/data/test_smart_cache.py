"""SmartCacheDataset / SmartCacheSampler: a partial cache that rotates through the source."""

from __future__ import annotations

import copy
import math
import os
import pickle
import threading

import delira_data_testing as h
import numpy as np
import pytest

from delira.data import (
    DataLoader,
    ForegroundOversamplingSampler,
    LazyDataset,
    SmartCacheDataset,
    SmartCacheSampler,
)


def cache_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("delira-smartcache")]


def segments_of(ds: SmartCacheDataset) -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(ds._prefix + "_")}


def assert_same_sample(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype
            np.testing.assert_array_equal(got[key], value)
        else:
            assert got[key] == value


class GatedSource(h.ArangeDataset):
    """ArangeDataset whose indices outside ``free`` wait for ``gate`` (at most 30 s) before loading.

    Records, at every load, how many cache segments exist (the memory in use) in ``resident``.
    """

    def __init__(self, n: int, free: set[int]) -> None:
        super().__init__(n)
        self.free, self.gate = set(free), threading.Event()
        self.resident: list[int] = []
        self.prefix: str | None = None

    def __getitem__(self, i: int) -> dict:
        if int(i) not in self.free:
            self.gate.wait(30)
        if self.prefix is not None:
            self.resident.append(sum(n.startswith(self.prefix + "_") for n in os.listdir("/dev/shm")))
        return super().__getitem__(i)


# -- the rotation ---------------------------------------------------------------------------------------
def test_cached_indices_follow_the_hand_computed_rotation(no_leaks):
    # 10 cases, 4 cached, replace_rate 0.5 -> 2 replaced per epoch, in index order (shuffle=False):
    # the window of 4 slides by 2 around the ring 0..9.
    expected = {
        0: [0, 1, 2, 3],
        1: [2, 3, 4, 5],
        2: [4, 5, 6, 7],
        3: [6, 7, 8, 9],
        4: [8, 9, 0, 1],
        5: [0, 1, 2, 3],
    }
    with SmartCacheDataset(h.ArangeDataset(10), cache_num=4, replace_rate=0.5, shuffle=False) as ds:
        assert (ds.cache_num, ds.replace_num, len(ds)) == (4, 2, 10)
        for epoch, window in expected.items():
            ds.set_epoch(epoch)
            assert ds.cached_indices == window
            assert ds.indices_for_epoch(epoch) == window
        ds.set_epoch(2)  # a jump back (a resumed run): the same cache as epoch 2 had
        assert ds.cached_indices == [4, 5, 6, 7]


def test_shuffled_rotation_walks_the_seeded_permutation(no_leaks):
    n, seed = 9, 5
    perm = np.random.default_rng(seed).permutation(n).tolist()  # the documented order
    with SmartCacheDataset(h.ArangeDataset(n), cache_num=3, replace_rate=1 / 3, seed=seed) as ds:
        assert ds.replace_num == 1
        for epoch in range(12):
            ds.set_epoch(epoch)
            assert ds.cached_indices == [perm[(epoch + k) % n] for k in range(3)]
        with SmartCacheDataset(h.ArangeDataset(n), cache_num=3, replace_rate=1 / 3, seed=seed) as again:
            assert all(again.indices_for_epoch(e) == ds.indices_for_epoch(e) for e in range(12))
        with SmartCacheDataset(h.ArangeDataset(n), cache_num=3, replace_rate=1 / 3, seed=seed + 1) as other:
            assert [other.indices_for_epoch(e) for e in range(9)] != [
                ds.indices_for_epoch(e) for e in range(9)
            ]


@pytest.mark.parametrize(
    "n, cache_num, replace_rate", [(10, 4, 0.5), (11, 3, 0.34), (7, 6, 0.1), (25, 7, 0.3)]
)
def test_every_case_is_cached_within_the_documented_number_of_epochs(n, cache_num, replace_rate, no_leaks):
    with SmartCacheDataset(h.ArangeDataset(n), cache_num=cache_num, replace_rate=replace_rate, seed=3) as ds:
        replace = min(math.ceil(replace_rate * cache_num), n - cache_num)
        assert ds.replace_num == replace
        epochs = math.ceil((n - cache_num) / replace) + 1
        seen = set()
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            seen.update(ds.cached_indices)
            assert len(ds.cached_indices) == len(set(ds.cached_indices)) == cache_num
        assert seen == set(range(n))


def test_sizes_from_rates():
    src = h.ArangeDataset(10)
    with SmartCacheDataset(src, cache_rate=0.3, replace_rate=0.0) as ds:  # 0.3 * 10 = 3.0000000000000004
        assert (ds.cache_num, ds.replace_num) == (3, 0)
    with SmartCacheDataset(src, cache_rate=0.01) as ds:  # at least one sample
        assert ds.cache_num == 1 and ds.replace_num == 1
    with SmartCacheDataset(src, cache_num=50) as ds:  # clipped to the dataset
        assert (ds.cache_num, ds.replace_num) == (10, 0) and ds.cached_indices == ds.indices_for_epoch(3)
    with SmartCacheDataset(src, cache_num=6, cache_rate=0.5) as ds:  # the smaller of the two
        assert ds.cache_num == 5
    with SmartCacheDataset(src, cache_num=8, replace_rate=0.5) as ds:  # no more than the uncached cases
        assert ds.replace_num == 2
    with SmartCacheDataset(
        h.ArangeDataset(40), cache_num=30, replace_rate=0.1
    ) as ds:  # 0.1 * 30 = 3.0000000000000004
        assert ds.replace_num == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"cache_rate": 0.0}, ValueError, r"cache_rate must be in \(0, 1\]"),
        ({"cache_rate": 1.5}, ValueError, "cache_rate"),
        ({"cache_rate": float("nan")}, ValueError, "cache_rate"),
        ({"cache_rate": "0.5"}, TypeError, "cache_rate must be a number"),
        ({"replace_rate": -0.1}, ValueError, r"replace_rate must be in \[0, 1\]"),
        ({"replace_rate": 2}, ValueError, "replace_rate"),
        ({"replace_rate": True}, TypeError, "replace_rate"),
        ({"cache_num": 0}, ValueError, "cache_num must be >= 1"),
        ({"cache_num": 2.5}, TypeError, "cache_num must be an integer"),
        ({"num_replace_workers": 0}, ValueError, "num_replace_workers must be >= 1"),
        ({"num_init_workers": -1}, ValueError, "num_init_workers"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SmartCacheDataset(h.ArangeDataset(4), **kwargs)
    assert not cache_threads()


def test_bad_epochs_and_empty_sources_are_errors(no_leaks):
    with pytest.raises(ValueError, match="empty"):
        SmartCacheDataset(h.ArangeDataset(0))
    with SmartCacheDataset(h.ArangeDataset(4), cache_num=2) as ds:
        with pytest.raises(ValueError, match="epoch must be >= 0"):
            ds.set_epoch(-1)
        with pytest.raises(TypeError, match="epoch must be an integer"):
            ds.indices_for_epoch(1.5)
        with pytest.raises(IndexError, match="out of range"):
            ds[4]
        with pytest.raises(TypeError, match="SmartCacheSampler needs a SmartCacheDataset"):
            SmartCacheSampler(h.ArangeDataset(4))
        with pytest.raises(ValueError, match="needs shuffle=True"):
            ds.sampler(shuffle=False, replacement=True)


# -- contents -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("num_init_workers", [0, 3])
def test_cached_samples_equal_the_source(shared, num_init_workers, no_leaks):
    src = h.ArangeDataset(8)
    with SmartCacheDataset(
        src, cache_num=3, replace_rate=0.67, seed=1, shared=shared, num_init_workers=num_init_workers
    ) as ds:
        assert ds.shared is shared
        for epoch in [0, 1, 2, 5, 6]:
            ds.set_epoch(epoch)
            for i in range(8):  # cached ones from memory, the others loaded from the source
                sample = ds[i]
                assert_same_sample(sample, src[i])
                if i in ds.cached_indices:
                    assert not sample["data"].flags.writeable
            assert ds.case_ids == [str(i) for i in range(8)]  # as case_ids_of(src)
        if shared:  # this epoch's cache, plus the replacements loaded (or being loaded) for the next
            assert ds.cache_num <= len(segments_of(ds)) <= ds.cache_num + ds.replace_num
        else:
            assert not segments_of(ds)


def test_metadata_and_odd_arrays_survive_the_shared_segment(no_leaks):
    def load(i):
        return {
            "data": np.arange(6, dtype=np.float64).reshape(2, 3) * i,
            "empty": np.zeros((0, 3), dtype=np.int16),
            "scalar": np.array(i, dtype=np.uint8),
            "strided": np.arange(20, dtype=np.int32)[::3],
            "case_id": f"c{i}",
            "properties": {"spacing": (1.0, 2.0), "locations": np.array([[i, i]])},
        }

    src = LazyDataset(list(range(4)), load)
    with SmartCacheDataset(src, cache_num=2, replace_rate=0.5, shuffle=False) as ds:
        worker_copy = copy.copy(ds)  # a worker's copy (the pickled state): reads the segments by name
        for i in ds.cached_indices:
            for got in (ds[i], worker_copy[i]):
                assert list(got) == list(src[i])
                for key in ("data", "empty", "scalar", "strided"):
                    np.testing.assert_array_equal(got[key], src[i][key])
                    assert got[key].dtype == src[i][key].dtype and got[key].shape == src[i][key].shape
                assert got["case_id"] == f"c{i}" and got["properties"]["spacing"] == (1.0, 2.0)
                np.testing.assert_array_equal(got["properties"]["locations"], [[i, i]])


def in_shared_memory(array: np.ndarray) -> bool:
    return (h.mapped_file(array.ctypes.data) or "").startswith("/dev/shm/")


def test_a_pickled_copy_maps_the_cache_and_loads_the_rest(no_leaks):
    src = h.ArangeDataset(6)
    with SmartCacheDataset(src, cache_num=2, replace_rate=0.0, shuffle=False) as ds:
        assert len(pickle.dumps(ds)) < 2000  # the rotation and the source, no samples
        clone = pickle.loads(pickle.dumps(ds))
        cached = clone[1]["data"]
        assert h.mapped_file(cached.ctypes.data) == f"/dev/shm/{ds._prefix}_c1"
        assert not cached.flags.writeable
        np.testing.assert_array_equal(cached, src[1]["data"])
        missed = clone[4]["data"]
        assert not in_shared_memory(missed)  # not cached: loaded from the source
        np.testing.assert_array_equal(missed, src[4]["data"])
        del cached, missed
        clone.close()  # a copy never frees the main process's cache
        assert len(segments_of(ds)) == 2
    with SmartCacheDataset(src, cache_num=2, replace_rate=0.0, shared=False) as private:
        assert not segments_of(private)
        assert not in_shared_memory(pickle.loads(pickle.dumps(private))[1]["data"])


def mapped_segments(ds: SmartCacheDataset) -> tuple[set[str], set[str]]:
    """The cache segments this process maps (from /proc/self/maps): (present, unlinked)."""
    present, unlinked = set(), set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 5 and os.path.basename(parts[5]).startswith(ds._prefix + "_c"):
                (unlinked if parts[-1] == "(deleted)" else present).add(os.path.basename(parts[5]))
    return present, unlinked


def test_a_worker_copy_reuses_its_mappings_and_releases_evicted_ones(no_leaks):
    src = h.ArangeDataset(12)
    with SmartCacheDataset(src, cache_num=4, replace_rate=0.5, shuffle=False, shared=True) as ds:
        clone = pickle.loads(pickle.dumps(ds))
        first = clone[0]["data"]
        assert clone[0]["data"] is first  # the same mapping, not mapped again
        del first
        for epoch in range(1, 8):
            ds.set_epoch(epoch)
            window = ds.indices_for_epoch(epoch)
            for i in window:
                assert_same_sample(clone[i], src[i])
                assert in_shared_memory(clone[i]["data"])
            present, unlinked = mapped_segments(ds)
            assert {f"{ds._prefix}_c{i}" for i in window} <= present
            assert not unlinked  # no sample that left the cache is kept alive by the copy
        del clone


def test_unpicklable_metadata_is_served_here_and_loaded_by_copies(no_leaks):
    src = h.UnpicklableMetaDataset(4)
    with SmartCacheDataset(src, cache_num=2, replace_rate=0.0, shuffle=False) as ds:
        assert callable(ds[0]["callback"]) and not ds[0]["data"].flags.writeable  # from the cache
        got = copy.copy(ds)[0]  # a worker's copy cannot read the metadata back: loads the sample
        assert callable(got["callback"]) and not in_shared_memory(got["data"])
        np.testing.assert_array_equal(got["data"], src[0]["data"])


def test_a_full_dev_shm_falls_back_to_private_memory(monkeypatch, no_leaks):
    import errno

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    src = h.ArangeDataset(6)
    with pytest.warns(RuntimeWarning, match="is full"):
        ds = SmartCacheDataset(src, cache_num=3, replace_rate=0.0, shuffle=False)
    with ds:
        assert not segments_of(ds)  # the segments that did not fit were removed again
        for i in range(6):
            assert_same_sample(ds[i], src[i])


# -- background replacement -----------------------------------------------------------------------------
def test_replacements_load_in_the_background_without_blocking_cached_reads(no_leaks):
    src = GatedSource(10, free={0, 1, 2, 3})
    with SmartCacheDataset(src, cache_num=4, replace_rate=0.5, shuffle=False) as ds:
        # The replacements of epoch 1 (cases 4, 5) wait for the gate; the cached cases are served.
        for _ in range(3):
            for i in ds.cached_indices:
                assert_same_sample(ds[i], h.ArangeDataset(10)[i])
        assert ds.pending_indices == [] and cache_threads()
        src.gate.set()
        ds.set_epoch(1)  # waits for 4 and 5
        assert ds.cached_indices == [2, 3, 4, 5]
        assert_same_sample(ds[5], h.ArangeDataset(10)[5])
    assert not cache_threads()


def test_cache_never_holds_more_than_the_documented_bound(no_leaks):
    src = GatedSource(12, free=set(range(12)))
    with SmartCacheDataset(src, cache_num=5, replace_rate=0.4, shuffle=False, num_replace_workers=2) as ds:
        src.prefix = ds._prefix
        bound = ds.cache_num + ds.replace_num  # this epoch's cache + the next epoch's replacements
        for epoch in [1, 2, 3, 9, 10, 4]:  # with jumps
            ds.set_epoch(epoch)
            assert len(ds.cached_indices) == ds.cache_num == 5
            assert len(ds.cached_indices) + len(ds.pending_indices) <= bound
            assert len(segments_of(ds)) <= bound
        assert src.resident and max(src.resident) < bound  # observed at every load, before storing it


def test_close_stops_the_threads_and_frees_every_segment(no_leaks):
    src = GatedSource(10, free={0, 1, 2, 3})
    ds = SmartCacheDataset(src, cache_num=4, replace_rate=0.5, num_replace_workers=2, shuffle=False)
    kept = ds[0]
    assert len(cache_threads()) == 2 and len(segments_of(ds)) == 4
    opener = threading.Timer(0.2, src.gate.set)  # both threads wait inside the source meanwhile
    opener.start()
    ds.close()  # waits for the two samples being loaded; they are not stored
    opener.join()
    ds.close()  # idempotent
    assert not cache_threads() and not segments_of(ds) and ds.closed
    np.testing.assert_array_equal(kept["data"], h.ArangeDataset(10)[0]["data"])  # still valid
    with pytest.raises(RuntimeError, match="closed"):
        ds[0]
    with pytest.raises(RuntimeError, match="closed"):
        ds.set_epoch(1)


def test_garbage_collection_also_shuts_down(no_leaks):
    import gc

    ds = SmartCacheDataset(h.SlowDataset(10, delay=0.02), cache_num=4, replace_rate=0.5)
    prefix = ds._prefix
    assert cache_threads()
    del ds
    gc.collect()
    assert not cache_threads()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def test_a_failed_background_load_is_raised_when_its_epoch_starts(no_leaks):
    src = h.FailingDataset(10, bad=5)
    with SmartCacheDataset(src, cache_num=4, replace_rate=0.5, shuffle=False) as ds:
        with pytest.raises(ValueError, match="bad sample 5"):
            ds.set_epoch(1)  # 5 enters the cache in epoch 1: retried here, and raised
        assert ds.cached_indices == [2, 3, 4]  # the others are cached
        assert_same_sample(ds[4], src[4])
        with pytest.raises(ValueError, match="bad sample 5"):
            ds.set_epoch(1)  # tried again
        ds.set_epoch(3)
        assert ds.cached_indices == [6, 7, 8, 9]
    for bad in (0, 5):  # the first or the last case of the initial cache, loaded by 2 threads
        with pytest.raises(ValueError, match=f"bad sample {bad}"):
            SmartCacheDataset(h.FailingDataset(10, bad=bad), cache_num=6, shuffle=False, num_init_workers=2)
    assert not cache_threads()


# -- the sampler and the loader -------------------------------------------------------------------------
def test_sampler_draws_from_the_current_cache_and_moves_it(no_leaks):
    with SmartCacheDataset(h.ArangeDataset(10), cache_num=4, replace_rate=0.5, shuffle=False) as ds:
        in_order = ds.sampler(shuffle=False, num_samples=6)
        shuffled = ds.sampler(seed=3)
        drawn = ds.sampler(replacement=True, num_samples=20, seed=3)
        for epoch in range(4):
            in_order.set_epoch(epoch)
            window = [(2 * epoch + k) % 10 for k in range(4)]
            assert ds.cached_indices == window and ds.epoch == epoch
            assert list(in_order) == window + window[:2]
            shuffled.set_epoch(epoch)
            perm = np.random.default_rng([3, epoch]).permutation(4)  # RandomSampler's documented draw
            assert list(shuffled) == [window[k] for k in perm]
            drawn.set_epoch(epoch)
            keys = list(drawn)
            assert len(keys) == len(drawn) == 20 and set(keys) <= set(window)


def test_loader_with_the_default_sampler_still_gets_every_sample(no_leaks):
    src = h.ArangeDataset(6)
    with SmartCacheDataset(src, cache_num=2, replace_rate=0.5) as ds:
        batches = list(DataLoader(ds, batch_size=3))
    data = np.concatenate([b["data"] for b in batches])
    np.testing.assert_array_equal(data, np.stack([src[i]["data"] for i in range(6)]))


def test_patch_sampler_on_top_of_the_cache(no_leaks):
    from delira.data import PatchDataset

    with SmartCacheDataset(h.ArangeDataset(8), cache_num=3, replace_rate=0.34, shuffle=False) as ds:
        base = ds.sampler(replacement=True, num_samples=6, seed=1)
        sampler = ForegroundOversamplingSampler(base, batch_size=2, seed=1)
        loader = DataLoader(PatchDataset(ds, (2, 2, 2)), batch_size=2, sampler=sampler)
        for epoch in range(3):
            loader.set_epoch(epoch)
            ids = [c for batch in loader for c in batch["case_id"]]
            assert len(ids) == 6
            assert {int(c[4:]) for c in ids} <= set(ds.indices_for_epoch(epoch)) == set(ds.cached_indices)


def _write_cases(folder, n):
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"case{i}.npz")
        np.savez(path, data=np.full((1, 3, 3), 1000.0 * i, dtype=np.float32) + np.arange(9).reshape(1, 3, 3))
        paths.append(path)
    return paths


def _poison(path):
    np.savez(path, data=np.full((1, 3, 3), -1.0, dtype=np.float32))


@pytest.fixture
def start_helpers():
    """Start the fork server (a long-lived stdlib helper process) before the leak probe."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


@pytest.mark.parametrize(
    "start_method, persistent",
    [("fork", False), ("forkserver", False), ("forkserver", True), ("fork", True), ("auto", False)],
)
def test_two_workers_serve_every_batch_from_the_current_cache(
    tmp_path, start_method, persistent, start_helpers, no_leaks
):
    n, cache_num = 8, 4
    paths = _write_cases(str(tmp_path), n)
    originals = [np.load(p)["data"] for p in paths]
    src = LazyDataset(paths, np.load)  # reads the files whenever asked, in any process
    with SmartCacheDataset(src, cache_num=cache_num, replace_rate=0.5, seed=7) as ds:
        loader = DataLoader(
            ds,
            batch_size=2,
            sampler=ds.sampler(seed=7),
            num_workers=2,
            start_method=start_method,
            persistent_workers=persistent,
            seed=7,
        )
        with loader:
            for epoch in range(4):
                loader.set_epoch(epoch)
                ds.set_epoch(epoch)  # what the loader's sampler does first (then a no-op)
                window = ds.indices_for_epoch(epoch)
                assert ds.cached_indices == window
                # The cases of this epoch's cache now read wrong from disk: a worker that loaded them
                # from the source instead of the cache would deliver -1s. (The background threads load
                # the next epoch's cases, which are left alone.)
                for i in window:
                    _poison(paths[i])
                seen = []
                for batch in loader:
                    for data in batch["data"]:
                        index = int(data[0, 0, 0]) // 1000
                        assert index in window and data[0, 0, 0] >= 0
                        np.testing.assert_array_equal(data, originals[index])
                        seen.append(index)
                    no_leaks.extend(loader.worker_pids)
                assert sorted(seen) == sorted(window)
                for i in window:
                    np.savez(paths[i], data=originals[i])
                # "auto" does not fork while the background threads run (fork_blockers names them)
                assert loader.worker_start_method in (
                    {"fork", "forkserver"} if start_method == "auto" else {start_method}
                )
