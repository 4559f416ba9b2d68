"""Capture and restore random number generator states as JSON plus tensors (no pickle).

Captured: Python's :mod:`random`, numpy's global RandomState, any numpy Generators passed by name,
and, only where the framework is already imported, torch (CPU, and CUDA where CUDA is initialised),
TensorFlow's global ``tf.random.Generator`` and Keras' global SeedGenerator (used by
``keras.random.*`` without a seed).
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from ._serialize import TensorStore, decode, encode
from .errors import CheckpointError


def _keras_global_seed_generator() -> Any:
    """Keras' global SeedGenerator, or None (it is created on first use; private Keras API)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    return global_state.get_global_attribute("global_seed_generator")


def capture(store: TensorStore, generators: Mapping[str, np.random.Generator] | None) -> dict[str, Any]:
    """The current RNG states as JSON-compatible data (torch states go into ``store``)."""
    version, internal, gauss_next = random.getstate()
    # the legacy global RandomState is what np.random.* functions use, so it is what must be saved
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": name,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if generators:
        state["numpy_generators"] = {
            str(k): encode(g.bit_generator.state, store, f"rng/numpy/{k}", f"generators[{k!r}]")
            for k, g in generators.items()
        }
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch_cpu"] = {"$tensor": store.put("rng/torch_cpu", torch.get_rng_state())}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["torch_cuda"] = [
                {"$tensor": store.put(f"rng/torch_cuda/{i}", s)}
                for i, s in enumerate(torch.cuda.get_rng_state_all())
            ]
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "random"):
        generator = tf.random.get_global_generator()
        state["tensorflow"] = {
            "algorithm": int(generator.algorithm),
            "state": [int(v) for v in generator.state.numpy()],
        }
    if "keras" in sys.modules:
        seed_generator = _keras_global_seed_generator()
        if seed_generator is not None:
            from ._keras_backend import to_numpy

            values = to_numpy(seed_generator.state)
            state["keras_global_seed"] = {"dtype": str(values.dtype), "state": values.tolist()}
    return state


def restore(
    state: dict[str, Any],
    load_tensor: Callable[[str, str], Any],
    generators: Mapping[str, np.random.Generator] | None,
) -> None:
    """Set the RNGs to ``state`` (from :func:`capture`); frameworks not imported are left alone."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["bit_generator"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    if generators:
        saved = state.get("numpy_generators", {})
        for name, generator in generators.items():
            if name not in saved:
                raise CheckpointError(
                    f"the checkpoint holds no state for the numpy Generator {name!r} (it has "
                    f"{sorted(saved) or 'none'}); pass the names used in save_checkpoint(generators=...)"
                )
            generator.bit_generator.state = decode(saved[name], load_tensor)
    torch = sys.modules.get("torch")
    if torch is not None and "torch_cpu" in state:
        torch.set_rng_state(decode(state["torch_cpu"], load_tensor))
        cuda = state.get("torch_cuda")
        if cuda and torch.cuda.is_available():
            if torch.cuda.device_count() == len(cuda):
                torch.cuda.set_rng_state_all([decode(s, load_tensor) for s in cuda])
            else:
                warnings.warn(
                    f"the checkpoint holds CUDA RNG states of {len(cuda)} devices but "
                    f"{torch.cuda.device_count()} are visible; the CUDA RNGs are not restored",
                    stacklevel=3,
                )
    tf = sys.modules.get("tensorflow")
    if tf is not None and "tensorflow" in state and hasattr(tf, "random"):
        saved_tf = state["tensorflow"]
        generator = tf.random.get_global_generator()
        values = np.asarray(saved_tf["state"], dtype=np.int64)
        if int(generator.algorithm) == saved_tf["algorithm"] and tuple(generator.state.shape) == values.shape:
            generator.reset(values)
        else:
            tf.random.set_global_generator(tf.random.Generator.from_state(values, saved_tf["algorithm"]))
    if "keras" in sys.modules and "keras_global_seed" in state:
        seed_generator = _keras_global_seed_generator()
        saved_keras = state["keras_global_seed"]
        values = np.asarray(saved_keras["state"], dtype=saved_keras["dtype"])
        if seed_generator is None:
            try:  # private Keras API: creates the global SeedGenerator
                from keras.src.random.seed_generator import global_seed_generator

                seed_generator = global_seed_generator()
            except (ImportError, ValueError):
                return
        seed_generator.state.assign(values)
