"""Datasets: the :class:`Dataset` protocol and the generic containers built on it.

A dataset is anything with ``__len__`` and ``__getitem__`` that returns one *sample*: a dict

``{"data": float32 (C, *spatial), "seg": int16 or uint8 (1, *spatial), "label": int,
"case_id": str, ...metadata}``

(``seg`` for segmentation data, ``label`` for classification data; both may be present). The
:class:`~delira.data.DataLoader` stacks the arrays of a batch to ``(N, C, *spatial)`` and collects
everything else into lists. Datasets that know their cases expose ``case_ids`` (one ``str`` per
index), which :mod:`delira.data.splits` and :meth:`Subset.from_case_ids` use.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CacheDataset",
    "ConcatDataset",
    "Dataset",
    "LazyDataset",
    "Subset",
    "case_ids_of",
]


@runtime_checkable
class Dataset(Protocol):
    """What the loader needs from a dataset: a length and samples by index.

    ``__getitem__(index)`` returns a dict of arrays plus metadata (see the module docstring). The
    index is usually an ``int`` in ``[0, len)``; samplers may hand richer keys (for example the
    :class:`~delira.data.samplers.PatchKey` of a patch sampler) to datasets that understand them.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> dict[str, Any]: ...


def _check_index(index: Any, length: int, owner: str) -> int:
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner} indices must be integers, got {index!r} ({type(index).__name__}); "
            "wrap the dataset in a PatchDataset to use patch keys"
        ) from None
    if i != index:
        raise TypeError(f"{owner} indices must be integers, got {index!r}")
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} is out of range for {owner} with {length} samples")
    return i


def _check_sample(sample: Any, index: Any, owner: str) -> dict[str, Any]:
    if not isinstance(sample, Mapping):
        raise TypeError(
            f"{owner}: sample {index!r} is a {type(sample).__name__}, expected a dict like "
            "{'data': array, 'seg': array, 'case_id': str}; return a dict from the loading function"
        )
    return dict(sample)


def case_ids_of(dataset: Any) -> list[str]:
    """The case ids of ``dataset``: its ``case_ids`` attribute, else ``"0", "1", ...``.

    Args:
        dataset: any dataset.

    Returns:
        ``len(dataset)`` strings, one per index.
    """
    ids = getattr(dataset, "case_ids", None)
    if ids is None:
        return [str(i) for i in range(len(dataset))]
    ids = [str(i) for i in ids]
    if len(ids) != len(dataset):
        raise ValueError(
            f"{type(dataset).__name__}.case_ids has {len(ids)} entries but the dataset has "
            f"{len(dataset)} samples; give one case id per sample"
        )
    return ids


class LazyDataset:
    """Samples loaded on access: ``dataset[i] == load(items[i])``, nothing kept in memory.

    Args:
        items: one entry per case, whatever ``load`` understands (file paths, records, ...).
            Must be picklable when the loader uses worker processes.
        load: ``load(item) -> dict`` returning the sample dict (``"data"`` float32
            ``(C, *spatial)``, ...). Must be picklable (a module-level function or a class).
        case_ids: optional ids, one per item (default: the item's ``"case_id"`` if items are
            dicts that have one, else the index as a string).
    """

    def __init__(
        self,
        items: Sequence[Any],
        load: Callable[[Any], Mapping[str, Any]],
        case_ids: Sequence[str] | None = None,
    ) -> None:
        self.items = list(items)
        if not callable(load):
            raise TypeError(f"load must be callable (item -> sample dict), got {type(load).__name__}")
        self.load = load
        if case_ids is None:
            case_ids = [
                str(it["case_id"]) if isinstance(it, Mapping) and "case_id" in it else str(i)
                for i, it in enumerate(self.items)
            ]
        if len(case_ids) != len(self.items):
            raise ValueError(f"got {len(case_ids)} case_ids for {len(self.items)} items; give one per item")
        self.case_ids = [str(c) for c in case_ids]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = _check_index(index, len(self), type(self).__name__)
        return _check_sample(self.load(self.items[i]), i, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, load={getattr(self.load, '__name__', self.load)!r})"


class CacheDataset:
    """Every sample of ``source`` loaded once, up front, and served from memory.

    Args:
        source: the dataset to cache (typically a file-based, lazy dataset).
        num_workers: threads used to load the samples (0: load in this thread). Reading and
            decompressing medical images releases the GIL, so threads speed up the load without
            copying the arrays between processes.
        check: check every case while loading it (:func:`delira.data.check_dataset`'s checks:
            missing or unreadable files, image/label shapes, non-integer labels, NaN or infinite
            values) and raise one :class:`~delira.data.DatasetError` listing every problem.

    The samples are shallow-copied dicts of the cached arrays on access: replacing a key in the
    returned dict does not alter the cache, but modifying an array in place does.
    """

    def __init__(self, source: Dataset, num_workers: int = 0, *, check: bool = False) -> None:
        n = len(source)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")

        def load(i: int) -> dict[str, Any]:
            return _check_sample(source[i], i, type(source).__name__)

        if check:
            from delira.data.checks import scan_cases

            name = type(source).__name__
            self.samples = scan_cases(source, lambda i, s: _check_sample(s, i, name), num_workers=num_workers)
        elif num_workers == 0 or n <= 1:
            self.samples = [load(i) for i in range(n)]
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as pool:
                self.samples = list(pool.map(load, range(n)))
        self.case_ids = case_ids_of(source)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        return dict(self.samples[_check_index(index, len(self), type(self).__name__)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"


class ConcatDataset:
    """Several datasets one after the other: indices ``[0, len(a))`` go to ``a``, then ``b``, ...

    Args:
        datasets: the datasets, at least one.
    """

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset; got none")
        self.cumulative_sizes: list[int] = []
        total = 0
        for d in self.datasets:
            total += len(d)
            self.cumulative_sizes.append(total)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset number, index inside that dataset)`` of a global index."""
        i = _check_index(index, len(self), type(self).__name__)
        d = bisect.bisect_right(self.cumulative_sizes, i)
        start = self.cumulative_sizes[d - 1] if d > 0 else 0
        return d, i - start

    def __getitem__(self, index: Any) -> dict[str, Any]:
        d, i = self.locate(index)
        return self.datasets[d][i]

    @property
    def case_ids(self) -> list[str]:
        """The case ids of all datasets, in order."""
        return [c for d in self.datasets for c in case_ids_of(d)]


class Subset:
    """A view of some samples of a dataset: ``subset[j] == dataset[indices[j]]``.

    Args:
        dataset: the full dataset.
        indices: indices into ``dataset`` (ints in ``[-len, len)``), repeats allowed.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        n = len(dataset)
        self.indices = [_check_index(i, n, type(dataset).__name__) for i in indices]

    @classmethod
    def from_case_ids(cls, dataset: Dataset, case_ids: Iterable[str]) -> Subset:
        """The samples of ``dataset`` whose case id is in ``case_ids``, in the order given.

        Raises:
            KeyError: a case id that ``dataset`` does not have (all of them are listed).
        """
        position = {c: i for i, c in enumerate(case_ids_of(dataset))}
        wanted = [str(c) for c in case_ids]
        missing = [c for c in wanted if c not in position]
        if missing:
            raise KeyError(
                f"{len(missing)} case ids are not in the dataset ({type(dataset).__name__} with "
                f"{len(position)} cases): {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
                "check that the splits file belongs to this dataset"
            )
        return cls(dataset, [position[c] for c in wanted])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        return self.dataset[self.indices[_check_index(index, len(self), type(self).__name__)]]

    @property
    def case_ids(self) -> list[str]:
        """The case ids of the selected samples."""
        ids = case_ids_of(self.dataset)
        return [ids[i] for i in self.indices]

    @property
    def labels(self) -> list[Any]:
        """The per-case labels of the selected samples (when the dataset has ``labels``)."""
        labels = getattr(self.dataset, "labels", None)
        if labels is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no per-case labels")
        return [labels[i] for i in self.indices]
