"""Checkpoint adapter for PyTorch: ``state_dict`` tensors as safetensors, optimizer state via JSON."""

from __future__ import annotations

from typing import Any, Callable

from ._serialize import TensorStore, decode, encode
from .errors import CheckpointError

NAME = "torch"
SAFETENSORS_FRAMEWORK = "pt"


def unwrap(model: Any) -> Any:
    """The module whose ``state_dict`` keys are canonical: no DataParallel/DDP or torch.compile wrapper."""
    import torch

    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def model_tensors(model: Any) -> dict[str, Any]:
    """``{state_dict key: tensor}`` of parameters and persistent buffers."""
    import torch

    out = {}
    for key, value in unwrap(model).state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"the model's state_dict entry {key!r} is a {type(value).__name__}, not a tensor "
                "(get_extra_state?); checkpoints store tensors only, pass other state in extra="
            )
        out[key] = value
    return out


def model_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model_tensors(model).items()}


def load_model(model: Any, tensors: dict[str, Any]) -> None:
    """Copy ``tensors`` (a subset of the state_dict keys, shapes already checked) into the model."""
    unwrap(model).load_state_dict(tensors, strict=False)


def optimizer_state(optimizer: Any, store: TensorStore, name: str, model: Any) -> Any:
    """The optimizer's (or scheduler's, scaler's...) ``state_dict()`` as JSON, tensors into ``store``."""
    if not callable(getattr(optimizer, "state_dict", None)):
        raise CheckpointError(
            f"optimizers[{name!r}] is a {type(optimizer).__name__} without state_dict(); pass torch "
            "optimizers, LR schedulers or other objects with state_dict()/load_state_dict()"
        )
    return {
        "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "state_dict": encode(optimizer.state_dict(), store, f"optimizer/{name}", f"optimizers[{name!r}]"),
    }


def load_optimizer(
    optimizer: Any, saved: Any, load_tensor: Callable[[str, str], Any], name: str, model: Any
) -> None:
    state_dict = decode(saved["state_dict"], load_tensor)
    try:
        optimizer.load_state_dict(state_dict)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"the state of optimizers[{name!r}] (saved from a {saved['class']}) does not fit the "
            f"{type(optimizer).__name__} given: {exc}; build the optimizer over the same parameters, "
            "with the same parameter groups, as when saving"
        ) from exc
