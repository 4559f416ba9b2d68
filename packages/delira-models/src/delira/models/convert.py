"""Copy weights between the PyTorch and the Keras implementation of a network.

The two implementations of every network name their sublayers alike (``layer2.0.conv1``,
``encoder.1.norm2``, ...): a PyTorch module at a dotted path in ``named_modules()`` has a Keras twin
at the same path (attributes, list indices). The converter walks every PyTorch module that holds
weights, finds its twin, and copies each weight with the layout change it needs:

============================  ==========================  =====================================
PyTorch                       Keras (channels last)       transform
============================  ==========================  =====================================
Conv weight (out, in, *k)     kernel (*k, in, out)        move axes 0, 1 to the end, reversed
ConvTranspose (in, out, *k)   kernel (*k, out, in)        the same axis move
Linear weight (out, in)       kernel (in, out)            transpose
BatchNorm weight, bias,       gamma, beta,                none
running_mean, running_var     moving_mean, moving_variance
InstanceNorm weight, bias     gamma, beta                 none
============================  ==========================  =====================================

It checks that both models were built with the same arguments, that every weight on both sides is
copied exactly once, and that shapes agree; any mismatch raises ValueError naming the layer.
Importing this module imports neither framework.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["keras_to_torch", "torch_to_keras", "weight_pairs"]


def _kind(module: Any) -> str | None:
    from torch import nn

    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batch_norm"
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return "instance_norm"
    return None


def _resolve(keras_model: Any, path: str) -> Any:
    obj = keras_model
    for part in path.split("."):
        try:
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        except (AttributeError, IndexError, TypeError):
            raise ValueError(
                f"the Keras model {type(keras_model).__name__} has no layer at {path!r} (stopped at "
                f"{part!r}), which the PyTorch model has; convert between the two implementations "
                "of the same network, built with the same arguments"
            ) from None
    return obj


# (torch attribute, keras attribute) per kind; torch buffers included
_NAMES = {
    "conv": (("weight", "kernel"), ("bias", "bias")),
    "conv_transpose": (("weight", "kernel"), ("bias", "bias")),
    "linear": (("weight", "kernel"), ("bias", "bias")),
    "batch_norm": (
        ("weight", "gamma"),
        ("bias", "beta"),
        ("running_mean", "moving_mean"),
        ("running_var", "moving_variance"),
    ),
    "instance_norm": (("weight", "gamma"), ("bias", "beta")),
}


def _to_keras_layout(kind: str, name: str, array: np.ndarray) -> np.ndarray:
    if name == "weight" and kind in ("conv", "conv_transpose"):
        return np.transpose(array, (*range(2, array.ndim), 1, 0))
    if name == "weight" and kind == "linear":
        return array.T
    return array


def _to_torch_layout(kind: str, name: str, array: np.ndarray) -> np.ndarray:
    if name == "weight" and kind in ("conv", "conv_transpose"):
        k = array.ndim - 2
        return np.transpose(array, (k + 1, k, *range(k)))
    if name == "weight" and kind == "linear":
        return array.T
    return array


def _check_configs(torch_model: Any, keras_model: Any) -> None:
    t_cfg, k_cfg = getattr(torch_model, "config", None), getattr(keras_model, "config", None)
    if t_cfg is None or k_cfg is None:
        return
    if type(t_cfg) is not type(k_cfg) or t_cfg.as_dict() != k_cfg.as_dict():
        raise ValueError(
            f"the models were built differently: PyTorch {type(torch_model).__name__}{t_cfg.as_dict()} vs "
            f"Keras {type(keras_model).__name__}{k_cfg.as_dict()}; build both with the same arguments"
        )


def weight_pairs(torch_model: Any, keras_model: Any) -> Iterator[tuple[str, str, Any, Any]]:
    """Every (path, kind, torch tensor, keras variable) pair the converters copy, e.g.
    ``("layer1.0.conv1.weight", "conv", Parameter (8, 8, 3, 3), Variable (3, 3, 8, 8))``.

    Raises:
        ValueError: the models differ in arguments or structure, or a weight on either side has no
            twin.
    """
    _check_configs(torch_model, keras_model)
    seen_torch: set[int] = set()
    seen_keras: set[int] = set()
    for path, module in torch_model.named_modules():
        kind = _kind(module)
        if kind is None:
            continue
        layer = _resolve(keras_model, path) if path else keras_model
        for t_name, k_name in _NAMES[kind]:
            tensor = getattr(module, t_name, None)
            variable = getattr(layer, k_name, None)
            if tensor is None and variable is None:
                continue
            if tensor is None or variable is None:
                side = "Keras" if tensor is None else "PyTorch"
                raise ValueError(
                    f"{path}.{t_name}: only the {side} model has this weight ({k_name} in Keras); "
                    "the models differ (e.g. bias=True on one side)"
                )
            expected = _to_keras_layout(kind, t_name, np.empty(tuple(tensor.shape), dtype=np.uint8)).shape
            if tuple(variable.shape) != expected:
                raise ValueError(
                    f"{path}.{t_name}: PyTorch shape {tuple(tensor.shape)} needs Keras shape {expected} "
                    f"for a {kind} layer; the Keras {k_name} has shape {tuple(variable.shape)}"
                )
            seen_torch.add(id(tensor))
            seen_keras.add(id(variable))
            yield f"{path}.{t_name}" if path else t_name, kind, tensor, variable
    missed_torch = [
        name
        for name, t in [*torch_model.named_parameters(), *torch_model.named_buffers()]
        if id(t) not in seen_torch and not name.endswith("num_batches_tracked")
    ]
    missed_keras = [v.path for v in keras_model.weights if id(v) not in seen_keras]
    if missed_torch or missed_keras:
        raise ValueError(
            f"weights without a twin: PyTorch {missed_torch}, Keras {missed_keras}; the converter copies "
            "only conv, transposed conv, linear, batch norm and instance norm layers at equal paths"
        )


def torch_to_keras(torch_model: Any, keras_model: Any) -> Any:
    """Copy every weight (and batch-norm statistic) of a PyTorch network into its Keras twin.

    Args:
        torch_model: e.g. ``delira.models.torch.UNet(...)``.
        keras_model: the same network from ``delira.models.tf``, built with the same arguments.

    Returns:
        ``keras_model``, whose outputs now equal the PyTorch model's (eval mode, up to float error).
    """
    pairs = list(weight_pairs(torch_model, keras_model))  # validate everything before writing
    for path, kind, tensor, variable in pairs:
        name = path.rsplit(".", 1)[-1]
        variable.assign(_to_keras_layout(kind, name, tensor.detach().cpu().numpy()))
    return keras_model


def keras_to_torch(keras_model: Any, torch_model: Any) -> Any:
    """Copy every weight (and batch-norm statistic) of a Keras network into its PyTorch twin.

    Args:
        keras_model: e.g. ``delira.models.tf.ResNet(...)``.
        torch_model: the same network from ``delira.models.torch``, built with the same arguments.

    Returns:
        ``torch_model``, whose outputs now equal the Keras model's (eval mode, up to float error).
    """
    import torch

    pairs = list(weight_pairs(torch_model, keras_model))
    with torch.no_grad():
        for path, kind, tensor, variable in pairs:
            name = path.rsplit(".", 1)[-1]
            array = _to_torch_layout(kind, name, np.asarray(variable.numpy()))
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(tensor.dtype))
    return torch_model
