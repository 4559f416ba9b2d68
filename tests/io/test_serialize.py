"""The JSON + tensors encoding of checkpoint metadata (extra, config, optimizer state)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delira.io import CheckpointError
from delira.io._serialize import TensorStore, decode, encode

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
keys = st.text(max_size=4) | st.integers(-5, 5) | st.tuples(st.integers(0, 3), st.text(max_size=2))
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=12,
)


def _round_trip(value):
    store = TensorStore()
    document = json.loads(json.dumps(encode(value, store, "extra", "extra")))  # through real JSON text
    return decode(document, lambda key, kind: store.tensors[key]), store


def _same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=60, deadline=None)
@given(values)
def test_nested_values_round_trip_with_their_types(value):
    decoded, _ = _round_trip(value)
    assert _same(decoded, value)


def test_dollar_keys_and_arrays_round_trip():
    value = {"$tensor": "not a marker", "a": np.arange(3, dtype=np.int16), "b": [np.float32(2.5)]}
    decoded, store = _round_trip(value)
    assert decoded["$tensor"] == "not a marker"
    assert decoded["a"].dtype == np.int16 and list(decoded["a"]) == [0, 1, 2]
    assert decoded["b"] == [2.5]
    assert list(store.tensors) == ["extra/a"]


def test_objects_are_refused_with_their_location():
    with pytest.raises(CheckpointError, match=r"extra\['runs'\]\[1\] is a builtins\.object"):
        encode({"runs": [1, object()]}, TensorStore(), "extra", "extra")
