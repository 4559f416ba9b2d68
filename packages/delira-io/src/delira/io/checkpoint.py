"""Checkpoints: model weights, optimizer state, RNG states and metadata in one safetensors file.

Format (``format_version`` 1), one file, written atomically:

* a safetensors file (https://github.com/huggingface/safetensors): tensors plus a string header;
  nothing is pickled, so loading an untrusted checkpoint cannot run code;
* tensors: ``model/<key>`` model weights (torch: ``state_dict`` keys; Keras: stable variable
  paths), ``optimizer/<name>/...`` optimizer tensors, ``rng/...`` RNG states, ``extra/...``,
  ``config/...`` arrays inside ``extra``/``config``;
* header ``__metadata__``: ``format = "delira-checkpoint"``, ``format_version = "1"`` and
  ``state``, a JSON document with ``framework``, ``created``, ``epoch``, ``metrics``, ``extra``,
  ``config``, ``versions``, ``optimizers`` and ``rng``, where non-JSON values are markers such as
  ``{"$tensor": "optimizer/optimizer/state/0/exp_avg"}`` (see ``_serialize``).

The package README holds the full specification.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import _rng
from ._atomic import atomic_write
from ._optional import require
from ._serialize import TensorStore, decode, encode, to_python_number
from .errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointInfo",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
]

FORMAT_NAME = "delira-checkpoint"
FORMAT_VERSION = 1
_SHOWN_KEYS = 20
_STATE_KEYS = ("framework", "created", "epoch", "metrics", "extra", "config", "versions", "optimizers", "rng")


@dataclass
class CheckpointInfo:
    """What :func:`load_checkpoint` and :func:`read_checkpoint_info` return besides the restored state.

    Attributes:
        path: the checkpoint file.
        format_version: the file's format version (int).
        framework: ``"torch"`` or ``"keras"``, the model type it was saved from.
        created: UTC time of the save, ISO 8601.
        epoch: the ``epoch`` passed to :func:`save_checkpoint` (int or None).
        metrics: ``{name: value}`` as saved (numbers as Python floats/ints).
        extra: the ``extra`` passed to save (arrays come back as numpy arrays / torch tensors).
        config: the ``config`` passed to save.
        versions: package versions at save time (python, numpy, delira-io, torch, ...).
        missing_keys / unexpected_keys / mismatched_keys: with ``strict=False``, the model keys
            not found in the file, the file keys not in the model, and the keys whose shapes
            differ (``{key: (file shape, model shape)}``); these were not loaded.
    """

    path: Path
    format_version: int
    framework: str
    created: str
    epoch: int | None
    metrics: dict[str, Any]
    extra: Any
    config: Any
    versions: dict[str, str]
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


# --- framework dispatch --------------------------------------------------------------------------
def _backend(model: Any) -> ModuleType:
    """The adapter module for ``model``'s framework, chosen by type without importing frameworks."""
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.layers.Layer):
        from . import _keras_backend

        return _keras_backend
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from . import _torch_backend

        return _torch_backend
    raise CheckpointError(
        f"cannot checkpoint a {type(model).__module__}.{type(model).__qualname__}; expected a "
        "torch.nn.Module or a Keras model/layer (keras.Model, tf.keras.Model)"
    )


def _named_optimizers(optimizers: Any) -> dict[str, Any]:
    """``None`` -> {}, one optimizer -> {"optimizer": opt}, a list -> {"0": ..}, a dict as given."""
    if optimizers is None:
        return {}
    if isinstance(optimizers, Mapping):
        return {str(k): v for k, v in optimizers.items()}
    if isinstance(optimizers, Sequence) and not isinstance(optimizers, str):
        return {str(i): v for i, v in enumerate(optimizers)}
    return {"optimizer": optimizers}


def _optimizer_kind(optimizers: Any) -> str:
    if optimizers is None:
        return "none"
    if isinstance(optimizers, Mapping):
        return "dict"
    if isinstance(optimizers, Sequence) and not isinstance(optimizers, str):
        return "list"
    return "single"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("delira-io", "safetensors"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    for module in ("torch", "tensorflow", "keras"):
        if module in sys.modules:
            versions[module] = str(getattr(sys.modules[module], "__version__", "unknown"))
    return versions


# --- save ----------------------------------------------------------------------------------------
def save_checkpoint(
    path: str | os.PathLike[str],
    model: Any,
    optimizers: Any = None,
    epoch: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Any = None,
    *,
    config: Any = None,
    generators: Mapping[str, np.random.Generator] | None = None,
) -> Path:
    """Save the complete training state to one safetensors file, atomically.

    The file is written to a temporary sibling, fsynced and renamed over ``path``: a crash or a
    SIGKILL during the save leaves the previous checkpoint at ``path`` intact.

    Args:
        path: the checkpoint file (``.safetensors`` suggested); the folder must exist.
        model: a ``torch.nn.Module`` (state_dict: parameters and buffers; DataParallel/DDP and
            torch.compile wrappers are unwrapped) or a built Keras model/layer (all its variables:
            weights, BatchNorm statistics, dropout seed states).
        optimizers: ``None``, one optimizer, a list or a ``{name: optimizer}`` dict. torch: anything
            with ``state_dict()``/``load_state_dict()`` (optimizers, LR schedulers, GradScaler);
            Keras: ``keras.optimizers.Optimizer``.
        epoch: the number of finished epochs (int).
        metrics: ``{name: number}``; numpy scalars and one-element tensors become Python numbers.
        extra: anything JSON-like (dict/list/tuple/str/int/float/bool/None), numpy arrays and torch
            tensors included; no arbitrary objects (no pickle).
        config: the run's configuration, same rules as ``extra``.
        generators: ``{name: numpy.random.Generator}`` whose states to save as well.

    Also saved: the states of Python's ``random``, numpy's global RNG, torch (CPU; CUDA if
    initialised) and TensorFlow/Keras global generators (where imported), and package versions.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        CheckpointError: unsupported model type, an unbuilt Keras model, a value that cannot be
            stored without pickle (the message says where), or the folder does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot save {path}: the folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise CheckpointError(
            f"cannot save {path}: it is a folder; a checkpoint is one file, pass a file name"
        )
    backend = _backend(model)
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(to_python_number(epoch), int):
            raise CheckpointError(f"epoch must be an int or None, got {epoch!r}")
        epoch = int(to_python_number(epoch))
    metrics = {} if metrics is None else dict(metrics)
    store = TensorStore()
    for key, tensor in backend.model_tensors(model).items():
        store.put(f"model/{key}", tensor)
    named = _named_optimizers(optimizers)
    state = {
        "framework": backend.NAME,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "epoch": epoch,
        "metrics": encode(
            {str(k): to_python_number(v) for k, v in metrics.items()}, store, "metrics", "metrics"
        ),
        "extra": encode(extra, store, "extra", "extra"),
        "config": encode(config, store, "config", "config"),
        "versions": _versions(),
        "optimizers": {
            "names": list(named),
            "kind": _optimizer_kind(optimizers),
            "state": {name: backend.optimizer_state(opt, store, name, model) for name, opt in named.items()},
        },
        "rng": _rng.capture(store, generators),
    }
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "state": json.dumps(state, allow_nan=True),
    }
    atomic_write(path, lambda tmp: store.save(tmp, header))
    return path


# --- load ----------------------------------------------------------------------------------------
class _Reader:
    """Reads tensors from a checkpoint file with the framework each marker asks for."""

    def __init__(self, path: Path, safetensors: ModuleType) -> None:
        self.path = path
        self._safetensors = safetensors
        self._handles: dict[str, Any] = {}

    def handle(self, framework: str) -> Any:
        if framework not in self._handles:
            self._handles[framework] = self._safetensors.safe_open(str(self.path), framework=framework)
        return self._handles[framework]

    def close(self) -> None:
        """Release the memory maps (tensors already read are copies and stay valid)."""
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()

    def tensor(self, key: str, kind: str) -> Any:
        if kind == "$tensor":
            require("torch", f"loading the torch tensor {key!r} from {self.path}")
        handle = self.handle("pt" if kind == "$tensor" else "np")
        try:
            return handle.get_tensor(key)
        except Exception as exc:
            raise CheckpointFormatError(
                f"{self.path} refers to the tensor {key!r}, which the file lacks or cannot decode ({exc}); "
                "the checkpoint is damaged"
            ) from exc


def _open(path: Path) -> tuple[_Reader, dict[str, Any], int]:
    if not path.exists():
        raise CheckpointNotFoundError(
            f"checkpoint {str(path)!r} does not exist (absolute: {path.absolute()})"
        )
    if path.is_dir():
        raise CheckpointFormatError(f"{path} is a folder; a delira checkpoint is one .safetensors file")
    safetensors = require("safetensors", "loading a checkpoint")
    reader = _Reader(path, safetensors)
    try:
        state, version = _read_header(path, reader)
    except BaseException:
        reader.close()
        raise
    return reader, state, version


def _read_header(path: Path, reader: _Reader) -> tuple[dict[str, Any], int]:
    try:
        header = reader.handle("np").metadata() or {}
    except Exception as exc:
        raise CheckpointFormatError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}); it is corrupt, "
            "truncated or not a checkpoint"
        ) from exc
    if header.get("format") != FORMAT_NAME:
        raise CheckpointFormatError(
            f"{path} is a safetensors file but not a delira checkpoint (its header has format="
            f"{header.get('format')!r}, expected {FORMAT_NAME!r}); load plain weights with safetensors directly"
        )
    raw_version = header.get("format_version", "")
    try:
        version = int(raw_version)
    except ValueError:
        raise CheckpointFormatError(
            f"{path} has an unknown checkpoint format version {raw_version!r}; this delira-io reads "
            f"versions 1 to {FORMAT_VERSION}"
        ) from None
    if version > FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{path} has checkpoint format version {version}, newer than this delira-io reads (1 to "
            f"{FORMAT_VERSION}); upgrade delira-io (pip install -U delira-io)"
        )
    if version < 1:
        raise CheckpointFormatError(f"{path} has an unknown checkpoint format version {version}")
    try:
        state = json.loads(header["state"])
    except (KeyError, ValueError) as exc:
        raise CheckpointFormatError(f"{path} has a damaged checkpoint header ({exc})") from exc
    missing = (
        [key for key in _STATE_KEYS if key not in state] if isinstance(state, dict) else list(_STATE_KEYS)
    )
    if missing:
        raise CheckpointFormatError(
            f"{path} has a damaged checkpoint header: the state lacks {missing}; expected "
            f"the fields {list(_STATE_KEYS)} of format version {version}"
        )
    return state, version


def _info(path: Path, reader: _Reader, state: dict[str, Any], version: int) -> CheckpointInfo:
    return CheckpointInfo(
        path=path,
        format_version=version,
        framework=state["framework"],
        created=state["created"],
        epoch=state["epoch"],
        metrics=decode(state["metrics"], reader.tensor),
        extra=decode(state["extra"], reader.tensor),
        config=decode(state["config"], reader.tensor),
        versions=state["versions"],
    )


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read a checkpoint's metadata (epoch, metrics, extra, config, versions) without a model.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointFormatError: not a delira checkpoint, damaged, or a newer format version.
    """
    path = Path(path)
    reader, state, version = _open(path)
    try:
        return _info(path, reader, state, version)
    finally:
        reader.close()


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:_SHOWN_KEYS])
    return shown + (f" ... and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def load_checkpoint(
    path: str | os.PathLike[str],
    model: Any,
    optimizers: Any = None,
    *,
    restore_rng: bool = True,
    strict: bool = True,
    generators: Mapping[str, np.random.Generator] | None = None,
) -> CheckpointInfo:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizers``).

    Nothing in the file is executed (safetensors + JSON). The weights are checked against the
    model before anything is changed.

    Args:
        path: the checkpoint file.
        model: a model of the same architecture and framework as the saved one (Keras: built).
        optimizers: ``None`` (optimizer state not loaded) or the same structure as at save time
            (one optimizer, a list or a dict with the same names). Keras optimizers that were
            never stepped are built over ``model.trainable_variables`` first.
        restore_rng: also restore the RNG states (Python, numpy, torch, TensorFlow/Keras where
            imported), so training resumes exactly where it stopped.
        strict: with ``False``, weights whose keys or shapes do not match are skipped and listed in
            the returned info instead of raising.
        generators: ``{name: numpy.random.Generator}`` to restore (names as given to save).

    Returns:
        :class:`CheckpointInfo` with epoch, metrics, extra, config and versions.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointFormatError: not a delira checkpoint, damaged, or a newer / unknown format version.
        CheckpointMismatchError: (strict) the model's keys differ; the message lists the missing,
            unexpected and mis-shaped keys.
        CheckpointError: framework or optimizer structure differs from the saved one.
    """
    path = Path(path)
    reader, state, version = _open(path)
    try:
        return _load(path, reader, state, version, model, optimizers, restore_rng, strict, generators)
    finally:
        reader.close()


def _load(
    path: Path,
    reader: _Reader,
    state: dict[str, Any],
    version: int,
    model: Any,
    optimizers: Any,
    restore_rng: bool,
    strict: bool,
    generators: Mapping[str, np.random.Generator] | None,
) -> CheckpointInfo:
    backend = _backend(model)
    if state["framework"] != backend.NAME:
        raise CheckpointError(
            f"{path} holds a {state['framework']} model but the model given is a {backend.NAME} model; "
            f"load it into a {state['framework']} model of the same architecture"
        )
    weights = reader.handle(backend.SAFETENSORS_FRAMEWORK)
    file_shapes = {
        key[len("model/") :]: tuple(weights.get_slice(key).get_shape())
        for key in weights.keys()
        if key.startswith("model/")
    }
    model_shapes = backend.model_shapes(model)
    missing = [k for k in model_shapes if k not in file_shapes]
    unexpected = [k for k in file_shapes if k not in model_shapes]
    mismatched = {
        k: (file_shapes[k], model_shapes[k])
        for k in model_shapes
        if k in file_shapes and file_shapes[k] != model_shapes[k]
    }
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"missing in the checkpoint ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected, not in the model ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            shown = list(mismatched.items())[:_SHOWN_KEYS]
            parts.append(
                f"shape differs ({len(mismatched)}): "
                + ", ".join(
                    f"{k!r} is {list(a)} in the checkpoint, {list(b)} in the model" for k, (a, b) in shown
                )
            )
        raise CheckpointMismatchError(
            f"the weights in {path} do not fit the model {type(model).__name__}: "
            + "; ".join(parts)
            + ". Build the same architecture as when saving, or pass strict=False to load the matching keys",
            missing,
            unexpected,
            mismatched,
        )
    named = _named_optimizers(optimizers)
    saved_optimizers = state["optimizers"]["state"]
    if named and sorted(named) != sorted(saved_optimizers):
        raise CheckpointError(
            f"{path} holds optimizer states named {sorted(saved_optimizers) or 'none'} but the optimizers "
            f"given are named {sorted(named)}; pass them in the same structure (one, a list or a dict) "
            "as to save_checkpoint"
        )
    try:
        tensors = {
            k: weights.get_tensor(f"model/{k}")
            for k in model_shapes
            if k in file_shapes and k not in mismatched
        }
    except Exception as exc:
        raise CheckpointFormatError(
            f"could not read the weights in {path} ({exc}); the file is damaged"
        ) from exc
    backend.load_model(model, tensors)
    for name, optimizer in named.items():
        backend.load_optimizer(optimizer, saved_optimizers[name], reader.tensor, name, model)
    if restore_rng:
        _rng.restore(state["rng"], reader.tensor, generators)
    info = _info(path, reader, state, version)
    info.missing_keys, info.unexpected_keys, info.mismatched_keys = missing, unexpected, mismatched
    return info
