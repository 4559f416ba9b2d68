"""delira.models: reference classification, segmentation and GAN networks in PyTorch and TensorFlow.

Importing this package imports neither framework. The networks live in two subpackages with the
same class names, loaded on first use:

- ``delira.models.torch``: ``torch.nn.Module`` networks (imports torch),
- ``delira.models.tf``: Keras 3 networks on TensorFlow (imports tensorflow and keras),
- ``delira.models.convert``: ``torch_to_keras`` / ``keras_to_torch`` weight copies.

Both take channels-first input ``(N, C, *spatial) float32`` and build their layers from the same
framework-free plan. ``get_model(name, backend=...)`` builds a network by name; the registry
(``available_models``, ``models_for_task`` / ``model_task`` over ``TASKS``, ``canonical_name``,
``model_arguments``, ``check_model_args``, which raises ``ModelArgumentError`` listing every
problem), ``valid_input_sizes``, ``check_input_size`` and the UNet memory estimate
(``delira.models.memory``: ``estimate_unet_memory_bytes``) need no framework.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from delira.models._steps import deep_supervision_weights
from delira.models.configs import (
    DCGANConfig,
    DCGANDiscriminatorConfig,
    DCGANGeneratorConfig,
    ResNetConfig,
    UNetConfig,
)
from delira.models.input_size import InputSizeRule
from delira.models.memory import (
    estimate_unet_memory_bytes,
    unet_activation_breakdown,
    unet_activation_elements,
    unet_parameter_count,
)
from delira.models.registry import (
    BACKENDS,
    TASKS,
    ModelArgumentError,
    available_models,
    canonical_name,
    check_input_size,
    check_model_args,
    get_model,
    import_backend,
    input_size_rule,
    model_arguments,
    model_task,
    models_for_task,
    valid_input_sizes,
)

try:
    __version__ = version("delira-models")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY_SUBMODULES = ("convert", "tf", "torch")


def __getattr__(name: str) -> Any:
    """Import ``torch``, ``tf`` and ``convert`` on first attribute access."""
    if name in BACKENDS:
        return import_backend(name)
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_SUBMODULES])


__all__ = [
    "TASKS",
    "DCGANConfig",
    "DCGANDiscriminatorConfig",
    "DCGANGeneratorConfig",
    "InputSizeRule",
    "ModelArgumentError",
    "ResNetConfig",
    "UNetConfig",
    "__version__",
    "available_models",
    "canonical_name",
    "check_input_size",
    "check_model_args",
    "deep_supervision_weights",
    "estimate_unet_memory_bytes",
    "get_model",
    "input_size_rule",
    "model_arguments",
    "model_task",
    "models_for_task",
    "unet_activation_breakdown",
    "unet_activation_elements",
    "unet_parameter_count",
    "valid_input_sizes",
]
