"""Models by name, for either framework, and their valid input sizes without either framework.

``get_model("unet", backend="tf", num_classes=3)`` imports only the framework asked for, when asked.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from delira.models.configs import (
    DCGANConfig,
    DCGANDiscriminatorConfig,
    DCGANGeneratorConfig,
    ResNetConfig,
    UNetConfig,
)
from delira.models.input_size import InputSizeRule

__all__ = [
    "BACKENDS",
    "available_models",
    "check_input_size",
    "get_model",
    "import_backend",
    "input_size_rule",
    "valid_input_sizes",
]

BACKENDS = {"torch": "delira.models.torch", "tf": "delira.models.tf"}


@dataclass(frozen=True)
class _Entry:
    attribute: str  # class or factory in delira.models.torch / delira.models.tf
    config: type
    fixed: tuple[tuple[str, Any], ...] = ()  # arguments the name implies (resnet18: depth=18)


_MODELS: dict[str, _Entry] = {
    "resnet": _Entry("ResNet", ResNetConfig),
    "resnet18": _Entry("resnet18", ResNetConfig, (("depth", 18),)),
    "resnet34": _Entry("resnet34", ResNetConfig, (("depth", 34),)),
    "resnet50": _Entry("resnet50", ResNetConfig, (("depth", 50),)),
    "unet": _Entry("UNet", UNetConfig),
    "dcgan": _Entry("DCGAN", DCGANConfig),
    "dcgan_generator": _Entry("DCGANGenerator", DCGANGeneratorConfig),
    "dcgan_discriminator": _Entry("DCGANDiscriminator", DCGANDiscriminatorConfig),
}


def available_models() -> list[str]:
    """The names ``get_model`` accepts, sorted."""
    return sorted(_MODELS)


def _entry(name: str) -> _Entry:
    key = name.lower().replace("-", "").replace(" ", "") if isinstance(name, str) else name
    if key in _MODELS:
        return _MODELS[key]
    close = difflib.get_close_matches(str(key), _MODELS, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}; available models are {', '.join(available_models())}{suggestion}"
    )


def _config(name: str, kwargs: dict[str, Any]) -> Any:
    entry = _entry(name)
    for key, value in entry.fixed:
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"model {name!r} has {key}={value}; got {key}={kwargs[key]!r}; use 'resnet'")
    try:
        return entry.config(**dict(entry.fixed), **kwargs)
    except TypeError as exc:
        fields = [f for f in entry.config.__dataclass_fields__ if not f.startswith("_")]
        raise TypeError(f"{exc}; model {name!r} takes {', '.join(fields)}") from None


def get_model(name: str, backend: str = "torch", **kwargs: Any) -> Any:
    """Build a reference network by name for one framework.

    Args:
        name: one of ``available_models()``: ``"resnet"`` (pass ``depth``), ``"resnet18"``,
            ``"resnet34"``, ``"resnet50"``, ``"unet"``, ``"dcgan"``, ``"dcgan_generator"``,
            ``"dcgan_discriminator"``.
        backend: ``"torch"`` (a ``torch.nn.Module``) or ``"tf"`` (a ``keras.Model``).
        **kwargs: the model's constructor arguments (see ``delira.models.configs``).

    Returns:
        The model, an ``AbstractNetwork`` of the chosen backend; inputs are channels first.

    Raises:
        ValueError: unknown name or backend, or invalid arguments (checked before the framework is
            imported). ImportError: the backend's framework is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'torch' or 'tf'; got {backend!r}")
    entry = _entry(name)
    _config(name, kwargs)  # validate before importing a framework
    module = import_backend(backend)
    return getattr(module, entry.attribute)(**kwargs)


_EXTRAS = {"torch": "torch", "tensorflow": "tf", "keras": "tf"}


def import_backend(backend: str) -> Any:
    """Import ``delira.models.torch`` or ``delira.models.tf``; a missing framework raises
    ImportError naming the extra to install."""
    try:
        return importlib.import_module(BACKENDS[backend])
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRAS:
            raise
        raise ImportError(
            f"delira.models backend {backend!r} needs {exc.name}, which is not installed; "
            f"pip install 'delira-models[{_EXTRAS[exc.name]}]'"
        ) from exc


def input_size_rule(name: str, **kwargs: Any) -> InputSizeRule:
    """The spatial sizes the named model accepts when built with ``kwargs``.

    Example: ``input_size_rule("unet", num_stages=4).describe() == "multiples of 8"``.
    Raises ValueError for ``"dcgan_generator"``, whose input is a latent vector.
    """
    config = _config(name, kwargs)
    if not hasattr(config, "input_rule"):
        raise ValueError(
            f"{name!r} takes latent vectors (N, latent_dim), not images, so it has no input sizes; "
            f"its output side length is image_size={config.image_size}"
        )
    return config.input_rule()


def valid_input_sizes(name: str, limit: int = 256, **kwargs: Any) -> list[int]:
    """Every valid spatial size up to ``limit`` for the named model built with ``kwargs``.

    Example: ``valid_input_sizes("unet", limit=40, num_stages=4) == [8, 16, 24, 32, 40]``.
    """
    return input_size_rule(name, **kwargs).sizes(limit)


def check_input_size(name: str, spatial_shape: Sequence[int], **kwargs: Any) -> None:
    """Raise ValueError, naming the nearest valid sizes, if the named model cannot take
    ``spatial_shape`` (e.g. ``(30, 32, 32)`` for a 3D UNet); return None otherwise."""
    input_size_rule(name, **kwargs).check(spatial_shape)
