"""Picklable datasets, transforms and readers for the delira.data tests, and leak probes."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np


# -- datasets -------------------------------------------------------------------------------------------
class ArangeDataset:
    """Sample i: data = i + arange, a (1, 4, 4, 4) float32 volume; seg = i % 3; label i % 2."""

    def __init__(self, n: int = 10, shape: tuple[int, ...] = (4, 4, 4)) -> None:
        self.n, self.shape = n, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(i)
        size = int(np.prod(self.shape))
        data = (np.arange(size, dtype=np.float32) + 1000 * i).reshape(1, *self.shape)
        seg = np.full((1, *self.shape), i % 3, dtype=np.int16)
        return {"data": data, "seg": seg, "label": i % 2, "case_id": f"case{i:02d}"}


class FailingDataset(ArangeDataset):
    """Raises ValueError('bad sample 5') for index ``bad``."""

    def __init__(self, n: int = 10, bad: int = 5) -> None:
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i: int) -> dict[str, Any]:
        if int(i) == self.bad:
            raise ValueError(f"bad sample {i}: corrupt file")
        return super().__getitem__(i)


class ExitingDataset(ArangeDataset):
    """The process loading index ``bad`` exits at once with code 3 (like a crash in native code)."""

    def __init__(self, n: int = 10, bad: int = 5) -> None:
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i: int) -> dict[str, Any]:
        if int(i) == self.bad:
            os._exit(3)
        return super().__getitem__(i)


class SlowDataset(ArangeDataset):
    """Sleeps ``delay`` seconds per sample."""

    def __init__(self, n: int = 10, delay: float = 0.2) -> None:
        super().__init__(n)
        self.delay = delay

    def __getitem__(self, i: int) -> dict[str, Any]:
        time.sleep(self.delay)
        return super().__getitem__(i)


class RaggedDataset(ArangeDataset):
    """Index ``odd`` has a (1, 4, 4, 3) volume, the others (1, 4, 4, 4)."""

    def __init__(self, n: int = 10, odd: int = 3) -> None:
        super().__init__(n)
        self.odd = odd

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        if int(i) == self.odd:
            sample["data"] = sample["data"][..., :3].copy()
        return sample


class UnpicklableMetaDataset(ArangeDataset):
    """Samples carry a lambda (metadata that cannot be sent back to the main process)."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        sample["callback"] = lambda: None
        return sample


class GlobalRandomDataset(ArangeDataset):
    """Adds legacy ``np.random`` noise in ``__getitem__`` (reproducible only through global seeding)."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        sample["data"] = sample["data"] + np.random.random_sample(sample["data"].shape).astype(np.float32)  # noqa: NPY002
        return sample


# -- transforms -----------------------------------------------------------------------------------------
def add_rng_noise(data: np.ndarray, rng: np.random.Generator, **batch: Any) -> dict[str, Any]:
    """data + standard normal noise drawn from the loader's generator (a new array)."""
    return {"data": data + rng.standard_normal(data.shape).astype(np.float32), **batch}


def scale_in_place(data: np.ndarray, rng: np.random.Generator, **batch: Any) -> dict[str, Any]:
    """data *= U(1, 2), in place."""
    data *= np.float32(rng.uniform(1.0, 2.0))
    return {"data": data, **batch}


def flip_seg_view(data: np.ndarray, seg: np.ndarray, **batch: Any) -> dict[str, Any]:
    """Returns seg as a reversed view of itself and data unchanged (exercises overlapping copies)."""
    return {"data": data, "seg": seg[..., ::-1], **batch}


def add_global_noise(**batch: Any) -> dict[str, Any]:
    """A batchgenerators-style transform: draws from the global ``np.random`` state."""
    batch["data"] = batch["data"] + np.random.random_sample(batch["data"].shape).astype(np.float32)  # noqa: NPY002
    return batch


def returns_list(**batch: Any) -> list:
    """A broken transform: returns a list instead of the batch dict."""
    return list(batch)


class KillSelfTransform:
    """Kills its own process with ``sig`` on batch ``bad`` (identified by the first case id)."""

    def __init__(self, case_id: str, sig: int = signal.SIGKILL) -> None:
        self.case_id, self.sig = case_id, sig

    def __call__(self, **batch: Any) -> dict[str, Any]:
        if batch["case_id"][0] == self.case_id:
            os.kill(os.getpid(), self.sig)
        return batch


# -- readers --------------------------------------------------------------------------------------------
class NibabelImage:
    """What the dataset formats need from an image: array (x, y, z[, c]) and spacing."""

    def __init__(self, array: np.ndarray, spacing: tuple[float, ...]) -> None:
        self.array, self.spacing = array, spacing


def nibabel_reader(path: str) -> NibabelImage:
    """Read a NIfTI file with nibabel: the stored array and the voxel sizes of the spatial axes."""
    import nibabel as nib

    img = nib.load(path)
    array = np.asarray(img.dataobj)
    ndim = min(array.ndim, 3)
    return NibabelImage(array, tuple(float(z) for z in img.header.get_zooms()[:ndim]))


# -- leak probes ----------------------------------------------------------------------------------------
def _ppid_map() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            out[int(name)] = int(fields[1])
    return out


def descendants(pid: int | None = None) -> set[int]:
    """Live (non-zombie) descendant processes of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    parents = _ppid_map()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def our_segments() -> set[str]:
    """Shared-memory segments that a loader of this process created (``delira_<pid>_*``)."""
    prefix = f"delira_{os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


_WARM = []


def warm_up_start_method() -> None:
    """Start the fork server and resource tracker (long-lived stdlib helpers) before a leak probe."""
    if _WARM:
        return
    from delira.data import DataLoader

    with DataLoader(ArangeDataset(2), 1, num_workers=1) as loader:
        for _ in loader:
            pass
    _WARM.append(True)


def mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process (from /proc/self/maps), or None."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else None
    return None
