"""``data.cache_rate`` / ``data.cache_replace_rate``: training from a partial, rotating cache of the
fold's training cases (delira.data.SmartCacheDataset), checked against the cache's own rotation rule
worked out by hand for a 4-case fold, with every read of a case logged from whichever process made it.

The fold: 8 phantoms, 2 folds, so 4 training and 4 validation cases; ``cache_rate: 0.5`` caches 2 of
the 4, ``cache_replace_rate: 0.5`` replaces 1 of them per epoch, so epoch ``e`` caches the rotation
positions ``e, e + 1`` (mod 4) and the 3 epochs together cache all 4 cases.
"""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import pytest

from delira.training.callbacks import Callback
from delira.training.config import ConfigError, load_config

pytest.importorskip("torch", reason="the Experiment tests train PyTorch networks")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # loader workers started by the fork server import the recording source by name
    sys.path.insert(0, HERE)

import smart_cache_recording as recording  # noqa: E402

PHANTOM = {"num_cases": 8, "shape": [16, 16, 16], "num_classes": 3, "seed": 1}


def our_segments() -> set[str]:
    """Shared-memory segments made by this process (the cache's and the loaders', ``delira_<pid>_*``)."""
    prefix = f"delira_{os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


@pytest.fixture
def cached_config(tiny_config):
    """``make(data=..., training=...)``: the tiny experiment on 8 phantoms with cache_rate 0.5 and
    replace_rate 0.5, 3 epochs, 2 loader workers, no augmentation."""

    def make(data=None, training=None):
        return tiny_config(
            data={
                "phantom": dict(PHANTOM),
                "transforms": "none",
                "cache_rate": 0.5,
                "cache_replace_rate": 0.5,
                **(data or {}),
            },
            training={"epochs": 3, "workers": 2, **(training or {})},
        )

    return make


class Record:
    """What the training did with its caches: the caches made, per sampled epoch the cache's
    contents and the keys drawn, the loaders of each fold, and the log of every case read."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.caches: list = []
        self.epochs: list[dict] = []
        self.loaders: list[tuple] = []
        self.batches: list[tuple] = []  # (loader, epoch, batch keys) of every DataLoader.batch_keys

    def epochs_of(self, cache) -> dict[int, dict]:
        """``{epoch: {"cached", "keys", "segments"}}`` of ``cache`` (the last sampling of each epoch)."""
        return {e["epoch"]: e for e in self.epochs if e["cache"] is cache}


@pytest.fixture
def record(monkeypatch, tmp_path):
    """Spy on the caches that the task builds (their source logs its reads), on the keys their
    samplers draw in each epoch, and on the loaders of each fold."""
    import delira.data
    import delira.training.tasks as tasks
    from delira.data import DataLoader, SmartCacheDataset, SmartCacheSampler

    rec = Record(str(tmp_path / "reads.log"))

    def make_cache(source, **kwargs):
        cache = SmartCacheDataset(recording.RecordingSource(source, rec.log), **kwargs)
        rec.caches.append(cache)
        return cache

    real_iter = SmartCacheSampler.__iter__

    def sampled(self):
        keys = list(real_iter(self))
        ds = self.dataset
        segments = {n for n in os.listdir("/dev/shm") if n.startswith(ds._prefix + "_")}
        first = (keys[0], np.array(ds[keys[0]]["data"]))  # what the cache serves for the first key
        rec.epochs.append(
            {
                "cache": ds,
                "epoch": self.epoch,
                "cached": ds.cached_indices,
                "keys": keys,
                "segments": segments,
                "first": first,
            }
        )
        return iter(keys)

    real_batch_keys = DataLoader.batch_keys

    def batch_keys(self, epoch=None):
        out = real_batch_keys(self, epoch)
        rec.batches.append((self, self.epoch if epoch is None else epoch, out))
        return out

    real_loaders = tasks.Task.loaders

    def loaders(self, train, val, fold):
        out = real_loaders(self, train, val, fold)
        rec.loaders.append((train, val, *out))
        return out

    monkeypatch.setattr(delira.data, "SmartCacheDataset", make_cache)
    monkeypatch.setattr(SmartCacheSampler, "__iter__", sampled)
    monkeypatch.setattr(tasks.Task, "loaders", loaders)
    monkeypatch.setattr(DataLoader, "batch_keys", batch_keys)
    return rec


def check_epochs_come_from_the_cache(rec: Record, cache, epochs: range, keys_per_epoch: int) -> None:
    """Every sampled epoch drew its keys from what was cached then, which is the epoch's window of
    the rotation (positions ``e * replace_num ...`` of the seeded order), held in shared memory."""
    seen = rec.epochs_of(cache)
    assert sorted(seen) == list(epochs)
    for e in epochs:
        window = [cache.order[(e * cache.replace_num + k) % len(cache)] for k in range(cache.cache_num)]
        assert seen[e]["cached"] == window, f"epoch {e}"
        assert set(seen[e]["keys"]) <= set(window), f"epoch {e} drew a case that was not cached"
        assert len(seen[e]["keys"]) == keys_per_epoch
        assert len(seen[e]["segments"]) >= cache.cache_num  # the cache is in /dev/shm (workers map it)


def test_bad_values_raise_a_config_error_listing_each_of_them(cached_config):
    with pytest.raises(ConfigError) as info:
        load_config(cached_config(data={"cache_rate": 1.5, "cache_replace_rate": -0.1}))
    assert info.value.problems == [
        "data.cache_rate: 1.5 must be in (0, 1] (the share of the training cases kept in memory, e.g. 0.25) "
        "or null (no cache)",
        "data.cache_replace_rate: -0.1 must be in [0, 1] (the share of the cache replaced per epoch, e.g. 0.1; "
        "0: a fixed partial cache)",
    ]
    for bad in (0, 0.0, -1):
        with pytest.raises(ConfigError, match=r"data\.cache_rate: .* must be in \(0, 1\]"):
            load_config(cached_config(data={"cache_rate": bad}))
    with pytest.raises(ConfigError, match=r"data\.cache_replace_rate: 1\.5 must be in \[0, 1\]"):
        load_config(cached_config(data={"cache_replace_rate": 1.5}))
    with pytest.raises(ConfigError, match=r"data\.cache_rate: expected a number"):
        load_config(cached_config(data={"cache_rate": "half"}))
    with pytest.raises(ConfigError) as info:  # a replace rate without a cache does nothing: said so
        load_config(cached_config(data={"cache_rate": None, "cache_replace_rate": 0.5}))
    assert "data.cache_rate is null" in str(info.value) and "set data.cache_rate" in str(info.value)
    # the range ends and the defaults are accepted
    assert (
        load_config(cached_config(data={"cache_rate": 1, "cache_replace_rate": 0}))["data"]["cache_rate"] == 1
    )
    assert load_config(cached_config(data={"cache_rate": 1e-3, "cache_replace_rate": 1}))
    defaults = load_config({})["data"]
    assert defaults["cache_rate"] is None and defaults["cache_replace_rate"] == 0.1


@pytest.mark.parametrize("start_method", ["auto", "forkserver"])
def test_a_run_trains_from_the_rotating_cache_and_visits_every_case(
    tmp_path, monkeypatch, cached_config, record, start_method
):
    """With the loader's start method ``auto`` (fork here once the cache's thread is done) and
    forced to the fork server (the workers unpickle the cache and map its segments by name)."""
    from delira.data import DataLoader
    from delira.training.experiment import Experiment

    if start_method != "auto":
        real_init = DataLoader.__init__

        def init(self, *args, **kwargs):
            real_init(self, *args, **{**kwargs, "start_method": start_method})

        monkeypatch.setattr(DataLoader, "__init__", init)
    before = our_segments()
    experiment = Experiment(cached_config(), run_dir=tmp_path / "run", verbose=False)
    assert experiment.kfold(folds=[0]) is None  # fold 1 not run: no summary yet
    fold = experiment.run_dir / "fold_0"
    history = _history(fold)
    assert len(history) == 3 and all(np.isfinite(r["train_loss"]) for r in history)

    (cache,) = record.caches
    (train, val, train_loader, val_loader) = record.loaders[0]
    assert len(cache) == len(train) == 4 and (cache.cache_num, cache.replace_num) == (2, 1)
    assert cache.seed == experiment.task.fold_seed(0)
    # whole volumes: an epoch has as many samples as without the cache (4), each cached case twice
    check_epochs_come_from_the_cache(record, cache, range(3), keys_per_epoch=4)
    for e, seen in record.epochs_of(cache).items():
        assert collections.Counter(seen["keys"]) == {i: 2 for i in seen["cached"]}, f"epoch {e}"
    assert set().union(*(s["keys"] for s in record.epochs_of(cache).values())) == set(range(4))

    # the persistent workers read every sample from the cache: the only reads of a training case are
    # the cache's loads in this process, one per case entering the cache (2, then 1 per epoch)
    assert train_loader.persistent_workers
    assert train_loader.worker_start_method in (
        ("fork", "forkserver") if start_method == "auto" else (start_method,)
    )
    reads = recording.reads(record.log)
    assert {pid for pid, _ in reads} == {os.getpid()}, "a loader worker read a case from the source"
    assert {i for _, i in reads} == set(range(4))
    assert 2 + 1 * 2 <= len(reads) <= 2 + 1 * 3  # the replacement for a 4th epoch may have started

    # validation: every validation case, uncached, in one-case batches
    assert val_loader.dataset is val and len(val) == 4
    assert sorted(k for batch in val_loader.batch_keys(0) for k in batch) == [0, 1, 2, 3]
    assert len((fold / "cases.csv").read_text().strip().splitlines()) == 1 + 4

    # the cache is closed with the training: no thread, no /dev/shm segment left
    assert cache.closed and not train_loader.worker_pids
    assert our_segments() == before


def test_patch_training_draws_the_patches_cases_from_the_cache(tmp_path, cached_config, record):
    """Foreground oversampling over the cached cases: the cache's sampler (uniform, with
    replacement) picks the cases, the foreground share of each batch stays nnU-Net's."""
    from delira.data import ForegroundOversamplingSampler, PatchKey
    from delira.training.experiment import Experiment

    before = our_segments()
    config = cached_config(data={"patch_size": [8, 8, 8], "batches_per_epoch": 3})
    Experiment(config, run_dir=tmp_path / "run", verbose=False).kfold(folds=[0])
    (cache,) = record.caches
    (_, _, train_loader, _) = record.loaders[0]
    check_epochs_come_from_the_cache(record, cache, range(3), keys_per_epoch=3 * 2)
    sampler = train_loader.sampler
    assert isinstance(sampler, ForegroundOversamplingSampler) and sampler.base.dataset is cache
    drawn = [(e, keys) for loader, e, keys in record.batches if loader is train_loader]
    assert sorted({e for e, _ in drawn}) == [0, 1, 2]
    for e, keys in drawn:
        assert all(isinstance(k, PatchKey) for batch in keys for k in batch)
        assert [[k.foreground for k in batch] for batch in keys] == [[False, True]] * 3  # 0.33 of 2
        assert [k.index for batch in keys for k in batch] == record.epochs_of(cache)[e]["keys"]
    assert {pid for pid, _ in recording.reads(record.log)} == {os.getpid()}
    assert our_segments() == before


def test_without_workers_the_batches_are_the_cached_cases_themselves(cached_config, record):
    """``training.workers: 0``: the loader reads the cache in this process; each batch holds the
    sampled cases exactly as the source gives them, and close_loaders frees the cache."""
    from delira.data import Subset, SyntheticPhantomDataset
    from delira.training.tasks import task_for

    data = SyntheticPhantomDataset(**PHANTOM)
    train, val = Subset(data, [0, 2, 4, 6]), Subset(data, [1, 3, 5, 7])
    task = task_for(load_config(cached_config(training={"workers": 0})))
    before = our_segments()
    train_loader, val_loader = task.loaders(train, val, fold=0)
    try:
        (cache,) = record.caches
        assert not train_loader.persistent_workers and len(cache) == 4
        for e in range(3):
            train_loader.set_epoch(e)
            batches = list(train_loader)
            keys = record.epochs_of(cache)[e]["keys"]
            assert [c for b in batches for c in b["case_id"]] == [train.case_ids[k] for k in keys]
            got = np.concatenate([b["data"] for b in batches])
            np.testing.assert_array_equal(got, np.stack([np.asarray(train[k]["data"]) for k in keys]))
        check_epochs_come_from_the_cache(record, cache, range(3), keys_per_epoch=4)
    finally:
        task.close_loaders(train_loader, val_loader)
    assert cache.closed and our_segments() == before
    task.close_loaders()  # idempotent


def test_a_loader_that_fails_after_its_cache_was_made_frees_the_cache(monkeypatch, cached_config, record):
    import delira.data
    from delira.data import SyntheticPhantomDataset
    from delira.training.tasks import task_for

    def refused(*args, **kwargs):
        raise ValueError("refused by the test")

    monkeypatch.setattr(delira.data, "DataLoader", refused)
    data = SyntheticPhantomDataset(**PHANTOM)
    before = our_segments()
    with pytest.raises(ValueError, match="refused by the test"):
        task_for(load_config(cached_config())).loaders(data, data, fold=0)
    (cache,) = record.caches
    assert cache.closed and our_segments() == before


def _write_msd_task(root, num_cases):
    """An MSD-layout folder (dataset.json, imagesTr/, labelsTr/) of phantoms as NIfTI files."""
    import json

    nib = pytest.importorskip("nibabel", reason="the MSD folder holds NIfTI files")
    from delira.data import SyntheticPhantomDataset

    phantoms = SyntheticPhantomDataset(num_cases=num_cases, shape=(20, 24, 16), num_classes=3, seed=3)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    training = []
    for i in range(num_cases):
        sample = phantoms[i]
        image, label = f"imagesTr/case_{i:03d}.nii.gz", f"labelsTr/case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(sample["data"][0] * 100.0 + 20.0, affine), str(root / image))
        nib.save(nib.Nifti1Image(sample["seg"][0].astype(np.uint8), affine), str(root / label))
        training.append({"image": f"./{image}", "label": f"./{label}"})
    labels = {"0": "background", "1": "spheres", "2": "ellipsoids"}
    meta = {"name": "Phantoms", "modality": {"0": "MRI"}, "labels": labels, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": num_cases}))


def test_the_cache_holds_the_preprocessed_cases_of_the_preprocessing_cache(tmp_path, record):
    """An MSD folder preprocessed once into data.preprocessing.cache_dir, patch training from a
    rotating memory cache of those preprocessed cases: the cached samples are the preprocessed
    dataset's own, and nothing is read from the files by the workers."""
    from delira.data import PreprocessedDataset, Subset
    from delira.training.experiment import Experiment

    _write_msd_task(tmp_path / "Task99_Phantoms", 8)
    overrides = [
        f"data.path={tmp_path / 'Task99_Phantoms'}",
        f"data.preprocessing.cache_dir={tmp_path / 'cache'}",
        "data.patch_size=[16, 16, 16]",
        "data.batches_per_epoch=2",
        "data.transforms=none",
        "data.cache_rate=0.5",
        "data.cache_replace_rate=0.5",
        "model.args.features=[4, 8]",
        "training.epochs=2",
        "training.workers=2",
        "experiment.folds=2",
    ]
    before = our_segments()
    experiment = Experiment("msd-folder", run_dir=tmp_path / "run", overrides=overrides, verbose=False)
    experiment.kfold(folds=[0])
    (cache,) = record.caches
    train = cache.source.source
    assert isinstance(train, Subset) and isinstance(train.dataset, PreprocessedDataset)
    assert len(train) == 4 and any((tmp_path / "cache").rglob("*"))
    check_epochs_come_from_the_cache(record, cache, range(2), keys_per_epoch=2 * 2)
    assert {pid for pid, _ in recording.reads(record.log)} == {os.getpid()}
    for e, seen in record.epochs_of(cache).items():  # the preprocessed case, read again from its file
        key, served = seen["first"]
        np.testing.assert_array_equal(served, np.asarray(train[key]["data"]), err_msg=f"epoch {e}")
    history = _history(tmp_path / "run" / "fold_0")
    assert len(history) == 2 and all(np.isfinite(r["train_loss"]) for r in history)
    assert cache.closed and our_segments() == before


class _InterruptAt(Callback):
    """A callback that raises KeyboardInterrupt (Ctrl-C) at the end of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_ctrl_c_closes_the_cache_and_resume_caches_what_the_epoch_cached(tmp_path, cached_config, record):
    """Interrupted at the end of epoch 1 (before its checkpoint), resumed: the resumed epochs cache
    and draw exactly what the uninterrupted run did (the cache of an epoch is a function of the fold
    seed and the epoch), and train to the same losses."""
    from delira.training.experiment import Experiment

    before = our_segments()
    Experiment(cached_config(), run_dir=tmp_path / "straight", verbose=False).kfold(folds=[0])
    straight = record.caches[0]
    want = {e: s["keys"] for e, s in record.epochs_of(straight).items()}
    expected = _history(tmp_path / "straight" / "fold_0")

    run_dir = tmp_path / "resumed"
    stopped = Experiment(
        cached_config(), run_dir=run_dir, verbose=False, callbacks=[lambda fold: _InterruptAt(1)]
    )
    with pytest.raises(KeyboardInterrupt):
        stopped.kfold(folds=[0])
    interrupted = record.caches[1]
    assert interrupted.closed and our_segments() == before  # Ctrl-C: closed, nothing left in /dev/shm

    Experiment(cached_config(), run_dir=run_dir, verbose=False).kfold(folds=[0])
    resumed = record.caches[2]
    seen = record.epochs_of(resumed)
    start = min(seen)
    assert start >= 1 and sorted(seen) == list(range(start, 3))  # resumed after a checkpoint
    assert {e: s["keys"] for e, s in seen.items()} == {e: want[e] for e in seen}
    assert {e: s["cached"] for e, s in seen.items()} == {
        e: record.epochs_of(straight)[e]["cached"] for e in seen
    }
    got = _history(run_dir / "fold_0")
    assert len(got) == 3
    np.testing.assert_allclose([r["train_loss"] for r in got], [r["train_loss"] for r in expected], rtol=1e-5)
    assert resumed.closed and our_segments() == before


def test_distributed_training_is_refused_with_the_fix(monkeypatch, cached_config):
    from delira.data import SyntheticPhantomDataset
    from delira.training.distributed import get_world_size
    from delira.training.tasks import task_for

    torchrun = {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
    }
    for key, value in {**torchrun, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    assert get_world_size() == 2
    config = load_config(cached_config())
    data = SyntheticPhantomDataset(**PHANTOM)
    before = our_segments()
    with pytest.raises(ConfigError) as info:
        task_for(config).loaders(data, data, fold=0)
    message = str(info.value)
    assert "data.cache_rate" in message and "2 ranks" in message and "data.cache_rate: null" in message
    assert our_segments() == before  # refused before any cache was made


def _history(fold_dir):
    """The per-epoch rows of the fold's training log (the CSV logger's ``metrics.csv``), as floats."""
    import csv

    with (fold_dir / "metrics.csv").open() as fh:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]
