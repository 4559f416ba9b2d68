"""JSON plus tensors, no pickle: nested Python values whose arrays go into a safetensors file.

:func:`encode` turns a nested structure into JSON-compatible values. Numpy arrays and torch
tensors are stored in a :class:`TensorStore` under a key and replaced by a marker; other
non-JSON types get markers too, so :func:`decode` restores them exactly:

``{"$ndarray": key}``  a numpy array          ``{"$tensor": key}``  a torch tensor
``{"$tuple": [...]}``   a tuple               ``{"$dict": [[k, v], ...]}``  a dict whose keys
are not all strings (or start with ``$``); dicts with plain string keys stay JSON objects.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._tensor_file import write_safetensors
from .errors import CheckpointError


def _torch_tensor_type() -> Any:
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else ()


class TensorStore:
    """Tensors to write to one safetensors file: ``{key: numpy array or torch tensor}``."""

    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> str:
        """Add ``value`` under ``key`` (made unique with ``#n`` if taken); returns the key used."""
        unique, n = key, 1
        while unique in self.tensors:
            unique, n = f"{key}#{n}", n + 1
        if isinstance(value, _torch_tensor_type()):
            value = value.detach()
        else:
            value = np.asarray(value)
            if value.dtype.kind not in "biuf" and value.dtype.name != "bfloat16":
                raise CheckpointError(
                    f"the array stored as {key!r} has dtype {value.dtype}, which safetensors cannot "
                    "hold; store bool, integer or floating point arrays"
                )
        self.tensors[unique] = value
        return unique

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        """Write every tensor to ``path`` as safetensors with ``metadata`` in its header."""
        with open(path, "wb") as stream:
            write_safetensors(stream, self.tensors, metadata)


def encode(value: Any, store: TensorStore, key: str, where: str) -> Any:
    """``value`` as JSON-compatible data, its arrays and tensors put into ``store`` under ``key...``.

    Raises:
        CheckpointError: ``value`` holds something that cannot be stored without pickle; the
            message names where (``where``, e.g. ``"extra['model']"``).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):  # numpy scalars become Python numbers
        return encode(value.item(), store, key, where)
    if isinstance(value, np.ndarray):
        return {"$ndarray": store.put(key, value)}
    if isinstance(value, _torch_tensor_type()):
        return {"$tensor": store.put(key, value)}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, store, f"{key}/{i}", f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, store, f"{key}/{i}", f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, store, f"{key}/{k}", f"{where}[{k!r}]") for k, v in value.items()}
        return {
            "$dict": [
                [
                    encode(k, store, f"{key}/key{i}", f"{where} key {k!r}"),
                    encode(v, store, f"{key}/{k}", f"{where}[{k!r}]"),
                ]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise CheckpointError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint cannot store "
        "without pickle; use JSON types (dict, list, tuple, str, int, float, bool, None), numpy arrays "
        "or torch tensors"
    )


def decode(value: Any, load_tensor: Callable[[str, str], Any]) -> Any:
    """Invert :func:`encode`; ``load_tensor(key, kind)`` returns the stored array (kind ``"$ndarray"``
    or ``"$tensor"``)."""
    if isinstance(value, list):
        return [decode(v, load_tensor) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((marker, payload),) = value.items()
        if marker in ("$ndarray", "$tensor"):
            return load_tensor(payload, marker)
        if marker == "$tuple":
            return tuple(decode(v, load_tensor) for v in payload)
        if marker == "$dict":
            return {decode(k, load_tensor): decode(v, load_tensor) for k, v in payload}
    return {k: decode(v, load_tensor) for k, v in value.items()}


def to_python_number(value: Any) -> Any:
    """A one-element numpy array / tensor / numpy scalar as a Python number; anything else unchanged."""
    if isinstance(value, (np.generic, np.ndarray)) or isinstance(value, _torch_tensor_type()):
        if int(np.prod(getattr(value, "shape", ()))) == 1:
            return value.item()
    return value
