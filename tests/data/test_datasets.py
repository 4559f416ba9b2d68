"""Generic datasets: LazyDataset, CacheDataset, ConcatDataset, Subset."""

from __future__ import annotations

import delira_data_testing as h
import numpy as np
import pytest

from delira.data import CacheDataset, ConcatDataset, Dataset, LazyDataset, Subset, case_ids_of


def load_square(item):
    return {"data": np.full((1, 2, 2), item * item, dtype=np.float32), "case_id": f"sq{item}"}


def test_lazy_dataset_loads_on_access():
    calls = []

    def load(item):
        calls.append(item)
        return load_square(item)

    ds = LazyDataset([3, 4, 5], load)
    assert calls == [] and len(ds) == 3 and isinstance(ds, Dataset)
    assert ds[1]["data"][0, 0, 0] == 16 and calls == [4]
    assert ds[-1]["data"][0, 0, 0] == 25
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    with pytest.raises(TypeError, match="dict"):
        LazyDataset([1], lambda item: [item])[0]


def test_cache_dataset_loads_everything_once_in_parallel():
    calls = []

    def load(item):
        calls.append(item)
        return load_square(item)

    source = LazyDataset(list(range(6)), load)
    cached = CacheDataset(source, num_workers=3)
    assert sorted(calls) == list(range(6))
    for i in range(6):
        assert cached[i]["data"][0, 0, 0] == i * i
    assert len(calls) == 6  # served from memory
    assert cached.case_ids == source.case_ids


def test_concat_dataset_maps_indices_in_order():
    a, b = h.ArangeDataset(3), LazyDataset([7, 8], load_square, case_ids=["sq7", "sq8"])
    ds = ConcatDataset([a, b])
    assert len(ds) == 5
    assert [ds.locate(i) for i in range(5)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert ds[4]["case_id"] == "sq8" and ds[2]["case_id"] == "case02"
    assert ds.case_ids == ["0", "1", "2", "sq7", "sq8"]
    with pytest.raises(ValueError):
        ConcatDataset([])


def test_subset_and_from_case_ids():
    ds = LazyDataset([1, 2, 3, 4], load_square, case_ids=["sq1", "sq2", "sq3", "sq4"])
    assert LazyDataset([{"case_id": "x"}], dict).case_ids == ["x"]
    sub = Subset(ds, [3, 0])
    assert [sub[i]["case_id"] for i in range(2)] == ["sq4", "sq1"]
    assert sub.case_ids == ["sq4", "sq1"]
    by_id = Subset.from_case_ids(ds, ["sq3", "sq2"])
    assert by_id.indices == [2, 1]
    with pytest.raises(KeyError, match="sq9"):
        Subset.from_case_ids(ds, ["sq1", "sq9"])
    assert case_ids_of(h.ArangeDataset(2)) == ["0", "1"]
