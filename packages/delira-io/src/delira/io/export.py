"""Model export: PyTorch to TorchScript and ONNX, Keras/TensorFlow to SavedModel.

Every exporter runs the model on ``example_inputs``, writes the artifact to a temporary sibling,
reloads it (TorchScript: ``torch.jit.load``; ONNX: onnxruntime; SavedModel:
``tf.saved_model.load``), compares the outputs and only then moves it to ``path``. A failed check
raises :class:`ExportError` and leaves ``path`` untouched.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._atomic import atomic_write, temp_sibling
from ._optional import require
from .errors import ExportError

__all__ = ["export_onnx", "export_saved_model", "export_torchscript"]


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _flatten(outputs: Any) -> list[np.ndarray]:
    """Model outputs (a tensor, or nested tuples/lists/dicts of them) as a flat list of numpy arrays."""
    if isinstance(outputs, Mapping):
        return [a for key in sorted(outputs) for a in _flatten(outputs[key])]
    if isinstance(outputs, (tuple, list)):
        return [a for item in outputs for a in _flatten(item)]
    if hasattr(outputs, "detach"):  # torch
        return [outputs.detach().cpu().numpy()]
    return [np.asarray(outputs)]


def _compare(expected: Any, actual: Any, rtol: float, atol: float, what: str) -> None:
    want, got = _flatten(expected), _flatten(actual)
    if len(want) != len(got):
        raise ExportError(f"{what} returns {len(got)} outputs but the model returns {len(want)}")
    for i, (a, b) in enumerate(zip(want, got)):
        if a.shape != b.shape:
            raise ExportError(f"{what}: output {i} has shape {b.shape}, the model's has shape {a.shape}")
        if not np.allclose(b, a, rtol=rtol, atol=atol):
            diff = float(np.max(np.abs(b.astype(np.float64) - a.astype(np.float64))))
            raise ExportError(
                f"{what}: output {i} differs from the model's by up to {diff:.3g} (allowed: atol={atol}, "
                f"rtol={rtol}); the model may use an operation the exporter does not translate faithfully, "
                "or behave differently in eval mode"
            )


@contextlib.contextmanager
def _torch_eval(model: Any) -> Iterator[Any]:
    """Put a torch module in eval mode and no-grad, restoring its training flag afterwards."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield torch
    finally:
        model.train(training)


def export_torchscript(
    model: Any,
    path: str | os.PathLike[str],
    example_inputs: Any,
    *,
    method: str = "trace",
    check: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Path:
    """Export a ``torch.nn.Module`` to a TorchScript file (``.pt``), in eval mode.

    TorchScript is deprecated since torch 2.9 (in favour of ``torch.export``) but still loads
    everywhere libtorch runs; its deprecation warnings are silenced here.

    Args:
        model: the module; its training flag is restored afterwards.
        path: output file.
        example_inputs: a tensor or a tuple of tensors, e.g. ``(N, C, D, H, W) float32``.
        method: ``"trace"`` (``torch.jit.trace``, records the ops run on ``example_inputs``) or
            ``"script"`` (``torch.jit.script``, keeps Python control flow).
        check: reload the file and compare its outputs with the model's.
        rtol, atol: tolerances of the check.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ExportError: tracing/scripting failed or the reloaded module's outputs differ.
    """
    path = Path(path)
    if method not in ("trace", "script"):
        raise ValueError(f"method must be 'trace' or 'script', got {method!r}")
    require("torch", "exporting to TorchScript")
    inputs = _as_tuple(example_inputs)
    with _torch_eval(model) as torch, warnings.catch_warnings():
        # torch 2.9+ marks TorchScript deprecated (in favour of torch.export); it still works
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        expected = model(*inputs)
        try:
            scripted = torch.jit.trace(model, inputs) if method == "trace" else torch.jit.script(model)
        except Exception as exc:
            raise ExportError(f"torch.jit.{method} failed on {type(model).__name__}: {exc}") from exc

        def write(tmp: Path) -> None:
            torch.jit.save(scripted, str(tmp))
            if check:
                loaded = torch.jit.load(str(tmp), map_location="cpu")
                on_cpu = tuple(x.cpu() if hasattr(x, "cpu") else x for x in inputs)
                _compare(
                    expected, loaded(*on_cpu), rtol, atol, f"the TorchScript export of {type(model).__name__}"
                )

        atomic_write(path, write)
    return path


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    example_inputs: Any,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
    opset_version: int = 17,
    check: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> Path:
    """Export a ``torch.nn.Module`` to ONNX (``.onnx``), in eval mode, and verify it with onnxruntime.

    Uses torch's TorchScript-based exporter (``dynamo=False``), which needs no extra package.

    Args:
        model: the module; its training flag is restored afterwards.
        path: output file.
        example_inputs: a tensor or a tuple of tensors, e.g. ``(N, C, H, W) float32``.
        input_names / output_names: graph names; default ``input``/``output`` (``input_0``, ... for
            several).
        dynamic_batch: make axis 0 of every input and output a symbolic ``batch`` dimension; the
            check then also runs a batch of twice the size.
        opset_version: the ONNX opset.
        check: ``onnx.checker`` plus onnxruntime outputs compared with the model's (needs the
            ``[onnx]`` extra).
        rtol, atol: tolerances of the check (1e-4: float32 kernels differ slightly).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ExportError: the export failed or onnxruntime's outputs differ from the model's.
        MissingDependencyError: ``check=True`` without onnx/onnxruntime.
    """
    path = Path(path)
    require("torch", "exporting to ONNX")
    inputs = _as_tuple(example_inputs)
    if check:
        onnx = require("onnx", "checking an ONNX export (or pass check=False)")
        ort = require("onnxruntime", "checking an ONNX export (or pass check=False)")
    with _torch_eval(model) as torch:
        expected = model(*inputs)
        n_out = len(_flatten(expected))
        if input_names is None:
            input_names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
        if output_names is None:
            output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        dynamic_axes = (
            {name: {0: "batch"} for name in [*input_names, *output_names]} if dynamic_batch else None
        )
        options: dict[str, Any] = {}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            options["dynamo"] = False
        doubled = tuple(torch.cat([x, x]) for x in inputs) if dynamic_batch else None
        expected_doubled = model(*doubled) if doubled is not None else None

        def write(tmp: Path) -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    torch.onnx.export(
                        model,
                        inputs,
                        str(tmp),
                        input_names=input_names,
                        output_names=output_names,
                        dynamic_axes=dynamic_axes,
                        opset_version=opset_version,
                        **options,
                    )
            except Exception as exc:
                raise ExportError(f"torch.onnx.export failed on {type(model).__name__}: {exc}") from exc
            if not check:
                return
            onnx.checker.check_model(str(tmp))
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            runs = [(inputs, expected)] + ([(doubled, expected_doubled)] if doubled is not None else [])
            for batch, want in runs:
                feed = {name: x.detach().cpu().numpy() for name, x in zip(input_names, batch)}
                _compare(
                    want, session.run(None, feed), rtol, atol, f"the ONNX export of {type(model).__name__}"
                )

        atomic_write(path, write)
    return path


def _replace_folder(tmp: Path, path: Path) -> None:
    """Move the folder ``tmp`` to ``path``, replacing what is there (not atomic for folders)."""
    if path.exists() or path.is_symlink():
        old = temp_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    else:
        os.replace(tmp, path)


def export_saved_model(
    model: Any,
    path: str | os.PathLike[str],
    example_inputs: Any = None,
    *,
    check: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Path:
    """Export a Keras model (TensorFlow backend) or a ``tf.Module`` to a TensorFlow SavedModel folder.

    Keras models are exported with ``model.export(format="tf_saved_model")``; the SavedModel's
    ``serve`` endpoint runs inference. A ``tf.Module`` is saved with ``tf.saved_model.save`` (give
    it a ``tf.function`` with an input signature).

    Args:
        model: a built ``keras.Model`` or a ``tf.Module``.
        path: output folder; an existing one is replaced once the new export passed its check.
        example_inputs: an array or a tuple of arrays, e.g. ``(N, H, W, C) float32``; needed for
            the check (for Keras models with known input shapes, random inputs with batch 2 are
            made if it is None).
        check: reload with ``tf.saved_model.load`` and compare outputs with the model's.
        rtol, atol: tolerances of the check.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ExportError: the export failed, or the reloaded outputs differ.
        MissingDependencyError: TensorFlow is not installed.
    """
    path = Path(path)
    tf = require("tensorflow", "exporting a SavedModel")
    keras = sys.modules.get("keras")
    is_keras = keras is not None and isinstance(model, keras.layers.Layer)
    if not is_keras and not isinstance(model, tf.Module):
        raise ExportError(
            f"cannot export a {type(model).__name__} to SavedModel; expected a keras.Model or a tf.Module "
            "(export torch modules with export_torchscript or export_onnx)"
        )
    inputs = None if example_inputs is None else _as_tuple(example_inputs)
    if check and inputs is None:
        inputs = _keras_example_inputs(model) if is_keras else None
        if inputs is None:
            raise ExportError("pass example_inputs to check the export (or check=False)")
    tmp = temp_sibling(path)
    try:
        try:
            if is_keras:
                model.export(str(tmp), format="tf_saved_model", verbose=False)
            else:
                tf.saved_model.save(model, str(tmp))
        except Exception as exc:
            raise ExportError(f"exporting {type(model).__name__} to SavedModel failed: {exc}") from exc
        if check:
            assert inputs is not None
            call: Callable[..., Any] = (lambda *x: model(*x, training=False)) if is_keras else model
            expected = call(*inputs)
            loaded = tf.saved_model.load(str(tmp))
            serve = getattr(loaded, "serve", None) or loaded.signatures["serving_default"]
            tensors = [tf.convert_to_tensor(x) for x in inputs]
            _compare(
                expected, serve(*tensors), rtol, atol, f"the SavedModel export of {type(model).__name__}"
            )
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _keras_example_inputs(model: Any) -> tuple[np.ndarray, ...] | None:
    try:
        specs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not specs:
        return None
    rng = np.random.default_rng(0)
    out = []
    for spec in specs:
        shape = [2 if d is None else int(d) for d in spec.shape]
        out.append(rng.standard_normal(shape).astype(spec.dtype if spec.dtype else "float32"))
    return tuple(out)
