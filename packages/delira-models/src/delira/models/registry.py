"""Models by name, for either framework, and their valid input sizes without either framework.

``get_model("unet", backend="tf", num_classes=3)`` imports only the framework asked for, when asked.
``check_model_args("unet", {...})`` validates constructor arguments and ``models_for_task("gan")``
lists the models of a task, both without a framework.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
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
    "TASKS",
    "ModelArgumentError",
    "available_models",
    "canonical_name",
    "check_input_size",
    "check_model_args",
    "get_model",
    "import_backend",
    "input_size_rule",
    "model_arguments",
    "model_task",
    "models_for_task",
    "valid_input_sizes",
]

BACKENDS = {"torch": "delira.models.torch", "tf": "delira.models.tf"}


@dataclass(frozen=True)
class _Entry:
    attribute: str  # class or factory in delira.models.torch / delira.models.tf
    config: type
    fixed: tuple[tuple[str, Any], ...] = ()  # arguments the name implies (resnet18: depth=18)
    task: str | None = None  # what a whole model of this name learns; None for sub-networks


#: The tasks a registered model can learn (``_Entry.task``).
TASKS = ("segmentation", "classification", "gan")

_MODELS: dict[str, _Entry] = {
    "resnet": _Entry("ResNet", ResNetConfig, task="classification"),
    "resnet18": _Entry("resnet18", ResNetConfig, (("depth", 18),), task="classification"),
    "resnet34": _Entry("resnet34", ResNetConfig, (("depth", 34),), task="classification"),
    "resnet50": _Entry("resnet50", ResNetConfig, (("depth", 50),), task="classification"),
    "unet": _Entry("UNet", UNetConfig, task="segmentation"),
    "dcgan": _Entry("DCGAN", DCGANConfig, task="gan"),
    "dcgan_generator": _Entry("DCGANGenerator", DCGANGeneratorConfig),
    "dcgan_discriminator": _Entry("DCGANDiscriminator", DCGANDiscriminatorConfig),
}


def available_models() -> list[str]:
    """The names ``get_model`` accepts, sorted."""
    return sorted(_MODELS)


def _key(name: str) -> Any:
    """``"ResNet-18"`` -> ``"resnet18"``: the spelling ``_MODELS`` uses (non-strings unchanged)."""
    return name.lower().replace("-", "").replace(" ", "") if isinstance(name, str) else name


def _entry(name: str) -> _Entry:
    key = _key(name)
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


def canonical_name(name: str) -> str:
    """The registered spelling of a model name: ``canonical_name("ResNet-18") == "resnet18"``.

    Raises:
        ValueError: unknown model name (the message names the nearest one).
    """
    _entry(name)
    return str(_key(name))


def models_for_task(task: str) -> list[str]:
    """The names of the whole models that learn ``task``, sorted.

    Example: ``models_for_task("classification") == ["resnet", "resnet18", "resnet34", "resnet50"]``;
    ``"segmentation"`` gives ``["unet"]``, ``"gan"`` gives ``["dcgan"]``. Sub-networks such as
    ``"dcgan_generator"`` belong to no task.

    Raises:
        ValueError: ``task`` is not one of :data:`TASKS`.
    """
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}{suggestion}")
    return sorted(name for name, entry in _MODELS.items() if entry.task == task)


def model_task(name: str) -> str | None:
    """The task the named model learns (one of :data:`TASKS`), or None for a sub-network.

    ``name`` is spelled as for :func:`get_model` (``"ResNet-18"`` is ``"resnet18"``).

    Raises:
        ValueError: unknown model name (the message names the nearest one).
    """
    return _entry(name).task


def model_arguments(name: str) -> list[str]:
    """The constructor arguments the named model takes, in the order of its config dataclass.

    Example: ``model_arguments("resnet18") == ["depth", "spatial_dims", "in_channels",
    "num_classes", "width"]``.

    Raises:
        ValueError: unknown model name.
    """
    return [f.name for f in fields(_entry(name).config) if not f.name.startswith("_")]


class ModelArgumentError(ValueError):
    """Invalid constructor arguments of a model, all of them at once.

    Attributes:
        model: the model name as given.
        problems: ``(argument, message)`` pairs; ``argument`` is the offending key of ``args``, or
            None where the model's config rejects the combination without naming one key.
    """

    def __init__(self, model: str, problems: list[tuple[str | None, str]]) -> None:
        self.model = model
        self.problems = list(problems)
        lines = "\n".join(f"  - {key + ': ' if key else ''}{message}" for key, message in self.problems)
        super().__init__(f"invalid arguments for model {model!r} ({len(self.problems)} problem(s)):\n{lines}")


def _names(message: str, key: Any) -> re.Match[str] | None:
    """Where ``message`` names the argument ``key`` as a word (``features``, not ``base_features``)."""
    return re.search(rf"(?<![\w.]){re.escape(str(key))}(?!\w)", message)


def _culprit(message: str, given: Mapping[str, Any], build: Any) -> str | None:
    """The key of ``given`` a config error is about: the first one the message names, else the
    first whose removal makes this error go away; None if neither finds one."""
    named = [(match.start(), key) for key in given if (match := _names(message, key)) is not None]
    if named:
        return min(named)[1]
    for key in given:
        rest = {k: v for k, v in given.items() if k != key}
        try:
            build(rest)
        except (TypeError, ValueError) as exc:
            if str(exc) == message:
                continue
        return key
    return None


def check_model_args(name: str, args: Mapping[str, Any]) -> None:
    """Validate constructor arguments of the named model without importing a framework.

    Checks every key of ``args`` against the model's config dataclass (``UNetConfig``,
    ``ResNetConfig``, ...): unknown keys (with the nearest valid name), arguments that contradict
    the name (``resnet18`` with ``depth=34``) and values the config rejects. Every problem is
    reported at once.

    Args:
        name: a model name as for :func:`get_model` (``"unet"``, ``"resnet18"``, ...).
        args: the keyword arguments ``get_model(name, backend, **args)`` would receive
            (plain YAML values: ints, strings, lists).

    Raises:
        ValueError: unknown model name or ``args`` not a mapping.
        ModelArgumentError: (a ValueError) one ``(argument, message)`` pair per problem.
    """
    entry = _entry(name)
    if not isinstance(args, Mapping):
        raise ValueError(
            f"model {name!r}: the arguments must be a mapping of argument names to values, got "
            f"{type(args).__name__} {args!r}; e.g. {{num_classes: 3}}"
        )
    valid = model_arguments(name)
    problems: list[tuple[str | None, str]] = []
    known: dict[str, Any] = {}
    for key, value in args.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append((str(key), f"unknown argument; {hint}model {name!r} takes {', '.join(valid)}"))
            continue
        fixed = dict(entry.fixed)
        if key in fixed and value != fixed[key]:
            problems.append(
                (
                    str(key),
                    f"model {name!r} has {key}={fixed[key]}; got {value!r}; leave it out, or use "
                    f"model 'resnet' with {key}={value!r}",
                )
            )
            continue
        known[key] = value

    def build(kwargs: Mapping[str, Any]) -> Any:
        return entry.config(**{**dict(entry.fixed), **kwargs})

    while True:  # the config stops at its first problem: drop the culprit and look for more
        try:
            build(known)
            break
        except (TypeError, ValueError) as exc:
            message = str(exc)
            key = _culprit(message, known, build)
            # another given argument the message names, which the model could do without: say so
            optional = {f.name for f in fields(entry.config) if f.default is None}
            others = [k for k in known if k != key and k in optional and _names(message, k)]
            if others and key is not None:
                message += f"; to keep {key}, set {' and '.join(others)} to None (null in YAML)"
            problems.append((key, message))
            if key is None:
                break
            del known[key]
    if problems:
        raise ModelArgumentError(name, problems)


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
