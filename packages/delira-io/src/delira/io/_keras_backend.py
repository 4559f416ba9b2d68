"""Checkpoint adapter for Keras 3 (any backend; TensorFlow with ``tf.keras``).

Variables are matched by a stable key derived from ``variable.path``: auto-numbered layer names
(``dense_7``) depend on how many layers the process created before, so each path component is
renamed to its base name plus its rank among siblings of the same base (``dense``, ``dense_1``, ...).
Two models built by the same code get the same keys in any process.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

import numpy as np

from ._serialize import TensorStore
from .errors import CheckpointError

NAME = "keras"
SAFETENSORS_FRAMEWORK = "np"
_NUMBER_SUFFIX = re.compile(r"_\d+$")


def canonical_keys(paths: list[str]) -> list[str]:
    """Stable keys for variable paths listed in model order; duplicates get distinct keys."""
    root: dict[str, Any] = {"children": {}, "counts": {}}
    keys = []
    for path in paths:
        parts = path.split("/")
        node, names = root, []
        for depth, part in enumerate(parts):
            leaf = depth == len(parts) - 1
            if not leaf and part in node["children"]:
                canonical, node = node["children"][part]
            else:
                base = _NUMBER_SUFFIX.sub("", part)
                rank = node["counts"].get(base, 0)
                node["counts"][base] = rank + 1
                canonical = base if rank == 0 else f"{base}_{rank}"
                child: dict[str, Any] = {"children": {}, "counts": {}}
                if not leaf:
                    node["children"][part] = (canonical, child)
                node = child
            names.append(canonical)
        keys.append("/".join(names))
    return keys


def to_numpy(variable: Any) -> np.ndarray:
    """A Keras variable's value as a numpy array, on any Keras backend."""
    keras = sys.modules["keras"]
    value = getattr(variable, "value", variable)
    if keras.backend.backend() == "tensorflow":
        return np.asarray(value.numpy())  # np.array(tf tensor) warns under numpy 2
    return np.asarray(keras.ops.convert_to_numpy(value))


def _variables(model: Any) -> list[tuple[str, Any]]:
    variables, seen = [], set()
    for v in model.variables:
        if id(v) not in seen:
            seen.add(id(v))
            variables.append(v)
    if not variables:
        raise CheckpointError(
            f"the Keras model {model.name!r} has no weights yet; build it first (model.build(input_shape), "
            "or call it on a batch, or give it a keras.Input) so its variables exist"
        )
    return list(zip(canonical_keys([v.path for v in variables]), variables))


def model_tensors(model: Any) -> dict[str, np.ndarray]:
    """``{stable key: numpy array}`` of every model variable (weights, statistics, seed states)."""
    return {k: to_numpy(v) for k, v in _variables(model)}


def model_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in v.shape) for k, v in _variables(model)}


def load_model(model: Any, tensors: dict[str, Any]) -> None:
    for key, variable in _variables(model):
        if key in tensors:
            variable.assign(tensors[key])


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _check_optimizer(optimizer: Any, name: str) -> None:
    if not hasattr(optimizer, "variables") or not hasattr(optimizer, "build"):
        raise CheckpointError(
            f"optimizers[{name!r}] is a {type(optimizer).__name__}, not a Keras optimizer; pass "
            "keras.optimizers.Optimizer instances"
        )


def optimizer_state(optimizer: Any, store: TensorStore, name: str, model: Any) -> Any:
    """Optimizer variables (iterations, learning rate, slots) in order, plus its config for reference."""
    _check_optimizer(optimizer, name)
    entries = []
    for i, variable in enumerate(optimizer.variables):
        key = store.put(f"optimizer/{name}/{i:04d}", to_numpy(variable))
        entries.append({"key": key, "path": variable.path, "shape": [int(d) for d in variable.shape]})
    return {
        "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "config": _jsonable(optimizer.get_config()),
        "variables": entries,
    }


def load_optimizer(
    optimizer: Any, saved: Any, load_tensor: Callable[[str, str], Any], name: str, model: Any
) -> None:
    _check_optimizer(optimizer, name)
    entries = saved["variables"]
    if len(optimizer.variables) != len(entries) and not optimizer.built:
        optimizer.build(model.trainable_variables)  # creates the slot variables
    variables = list(optimizer.variables)
    shapes = [tuple(int(d) for d in v.shape) for v in variables]
    saved_shapes = [tuple(e["shape"]) for e in entries]
    if shapes != saved_shapes:
        raise CheckpointError(
            f"the state of optimizers[{name!r}] (a {saved['class']} with {len(entries)} variables) does not "
            f"fit the {type(optimizer).__name__} given ({len(variables)} variables); first difference: "
            + _first_difference(entries, variables)
            + "; pass the same optimizer class, built over the same model, as when saving"
        )
    for variable, entry in zip(variables, entries):
        variable.assign(load_tensor(entry["key"], "$ndarray"))


def _first_difference(entries: list[dict[str, Any]], variables: list[Any]) -> str:
    for i in range(max(len(entries), len(variables))):
        saved = f"{entries[i]['path']} {tuple(entries[i]['shape'])}" if i < len(entries) else "nothing"
        have = f"{variables[i].path} {tuple(variables[i].shape)}" if i < len(variables) else "nothing"
        if (
            i >= len(entries)
            or i >= len(variables)
            or tuple(entries[i]["shape"]) != tuple(variables[i].shape)
        ):
            return f"variable {i} is {saved} in the checkpoint and {have} in the optimizer"
    return "none"
