"""The training augmentation of ``data.transforms``: named presets and the list form.

``data.transforms`` is either a preset name (:data:`PRESETS`) or a list of mappings, each naming a
public ``delira.augment`` transform class with its constructor's keyword arguments::

    data:
      transforms:
        - {name: SpatialTransform, rotation: [-15, 15], p_rotation: 0.2, p_elastic: 0}
        - {name: GaussianNoise, std: [0, 0.1], p: 0.1}
        - {name: Mirror}

A ``SpatialTransform`` entry without ``patch_size`` gets the training shape (the patch, or the
whole volume); a ``Mirror`` entry without ``axes`` mirrors ``data.augmentation.mirror_axes``
(default: every spatial axis); ``Rot90`` and ``TransposeAxes`` entries without ``axes`` get every
spatial axis of the data (``(0, 1)`` on 2D data). :func:`check_transforms` checks a list when the configuration is
checked (every entry built once, cheaply: constructors only check their arguments);
:func:`build_transforms` builds the ``delira.augment.Compose`` for a training shape.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "PRESETS",
    "build_transforms",
    "check_transforms",
    "describe_transforms",
    "mirror_axes",
    "transform_classes",
]

#: The presets of ``data.transforms`` and what each contains (also the configuration reference's text).
PRESETS: dict[str, str] = {
    "canonical": (
        "SpatialTransform (data.augmentation's rotation, scale and their p, elastic deformation with "
        "p_elastic), GaussianNoise std (0, 0.01), BrightnessMultiplicative (0.9, 1.1), Gamma (0.8, 1.25) "
        "retaining mean and std, Mirror over data.augmentation.mirror_axes"
    ),
    "mirror": "Mirror over data.augmentation.mirror_axes only (p 0.5 per axis)",
    "light": (
        "cheap, for quick experiments: SpatialTransform with rotation (-15, 15) deg p 0.2 and zoom "
        "(0.9, 1.1) p 0.2 (no elastic deformation), GaussianNoise std (0, 0.05) p 0.15, "
        "BrightnessMultiplicative (0.9, 1.1) p 0.15, Mirror over data.augmentation.mirror_axes"
    ),
    "nnunet": (
        "nnU-Net v2's default training augmentation (nnUNetTrainer.get_training_transforms): "
        "SpatialTransform with data.augmentation.rotation p 0.2 and zoom (0.7, 1.4) p 0.2, no elastic "
        "deformation; GaussianNoise std (0, 0.1) p 0.1; GaussianBlur sigma (0.5, 1) per axis and per "
        "channel (p 0.5 per channel) p 0.2; BrightnessMultiplicative (0.75, 1.25) p 0.15; Contrast "
        "(0.75, 1.25) preserving the range p 0.15 (both per channel, half the factors below 1 and half "
        "above as nnU-Net's BGContrast); SimulateLowResolution zoom (0.5, 1) per channel (p 0.5 "
        "per channel) p 0.25; inverted Gamma (0.7, 1.5) p 0.1 and Gamma (0.7, 1.5) p 0.3, both per channel "
        "retaining mean and std; Mirror over data.augmentation.mirror_axes"
    ),
    "none": "no augmentation",
}

# Not listable: the base class, and Compose (the list itself is one).
_CONTAINERS = ("Compose", "Transform")
# Set by the configuration, not per entry: the executor (data.augment_device) and the seed
# (experiment.seed; the loader passes a per-batch generator to the whole Compose).
_RESERVED = {
    "backend": "the executor follows data.augment_device",
    "seed": "the augmentation is seeded from experiment.seed",
}

_ELASTIC_ALPHA = (0.0, 200.0)
_ELASTIC_SIGMA = (9.0, 13.0)
# nnU-Net's ANISO_THRESHOLD: a 3D patch more than 3x longer than its first axis gets "dummy 2D" aug.
_NNUNET_ANISO_THRESHOLD = 3.0


def transform_classes() -> dict[str, type]:
    """The transform classes a ``data.transforms`` list may name: every public ``delira.augment``
    class (``delira.augment.__all__``) that is a ``Transform``, less the base and the containers."""
    import delira.augment as da

    out = {}
    for name in da.__all__:
        obj = getattr(da, name, None)
        if inspect.isclass(obj) and issubclass(obj, da.Transform) and name not in _CONTAINERS:
            out[name] = obj
    return out


def _keyword_names(cls: type) -> list[str]:
    """The keyword arguments ``cls(...)`` accepts: its ``__init__``'s named parameters and, while a
    constructor forwards ``**kwargs``, those of the base classes (``p``, ``data_key``, ...)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _first_parameter(cls: type) -> str | None:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return params[0].name if params else None


def _accepts(cls: type, name: str) -> bool:
    """Whether ``cls``'s own constructor names the keyword ``name`` (not merely ``**kwargs``)."""
    return name in inspect.signature(cls.__init__).parameters


def _tuples(value: Any) -> Any:
    """YAML lists as tuples (nested too), as the transforms' own defaults are written."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _dims(config: Mapping[str, Any]) -> int:
    from delira.training.builders import spatial_dims

    try:
        return spatial_dims(config)
    except (KeyError, TypeError):  # a partial configuration (validate() on a hand-made dict)
        return 3


def _default_mirror_axes(config: Mapping[str, Any]) -> tuple[int, ...]:
    axes = config["data"].get("augmentation", {}).get("mirror_axes")
    return tuple(range(_dims(config))) if axes is None else tuple(int(a) for a in axes)


def _entry_kwargs(
    entry: Mapping[str, Any], cls: type, config: Mapping[str, Any], spatial_shape: Sequence[int] | None
) -> dict[str, Any]:
    kwargs = {str(k): _tuples(v) for k, v in entry.items() if k != "name"}
    if cls.__name__ == "SpatialTransform" and spatial_shape is not None:
        first = _first_parameter(cls)
        if first is not None and first not in kwargs:
            kwargs[first] = tuple(int(s) for s in spatial_shape)
    if cls.__name__ == "Mirror" and "axes" not in kwargs:
        axes = _default_mirror_axes(config)
        kwargs["axes"] = axes if spatial_shape is None else tuple(a for a in axes if a < len(spatial_shape))
    if cls.__name__ in _ALL_AXES and "axes" not in kwargs:  # their (0, 1, 2) default is 3D only
        kwargs["axes"] = tuple(range(_dims(config) if spatial_shape is None else len(spatial_shape)))
    return kwargs


# Listable transforms whose ``axes`` default to every spatial axis of the data when an entry gives none.
_ALL_AXES = ("Rot90", "TransposeAxes")


# Containers that may be listed: their argument holds nested entries (one, or a list of them).
_NESTED = {"OneOf": ("transforms", True), "RandomApply": ("transform", False)}


def _make(
    entry: Any,
    where: str,
    classes: Mapping[str, type],
    config: Mapping[str, Any],
    shape: Sequence[int] | None,
    problems: list[str],
) -> Any:
    """Build one entry (nested entries of ``OneOf``/``RandomApply`` too); append what is wrong with it
    to ``problems`` (and return None) instead of raising. ``shape`` None: the config check."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        problems.append(
            f"{where}: expected a mapping with a transform name, e.g. {{name: GaussianNoise, std: [0, 0.1]}}, "
            f"got {entry!r}"
        )
        return None
    name = entry["name"]
    if name not in classes:
        close = difflib.get_close_matches(name, list(classes), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        why = (
            " is the list itself; give its members as entries"
            if name == "Compose"
            else " is not a delira.augment transform"
        )
        problems.append(f"{where}: {name!r}{why}; {hint}use one of {', '.join(sorted(classes))}")
        return None
    cls = classes[name]
    accepted = [k for k in _keyword_names(cls) if k not in _RESERVED]
    before = len(problems)
    for key in entry:
        if key == "name":
            continue
        if key in _RESERVED:
            problems.append(f"{where} ({name}): {key!r} is not set per entry ({_RESERVED[key]}); remove it")
        elif key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{where} ({name}): unknown argument {key!r}; {hint}{name} accepts {', '.join(accepted)}"
            )
    if len(problems) > before:
        return None
    nested_key, many = _NESTED.get(name, (None, False))
    kwargs = _entry_kwargs({k: v for k, v in entry.items() if k != nested_key}, cls, config, shape)
    if nested_key is not None:
        given = entry.get(nested_key)
        if many and not (isinstance(given, list) and given):
            problems.append(
                f"{where} ({name}): {nested_key} must be a non-empty list of entries, e.g. "
                f"{nested_key}: [{{name: GaussianNoise}}, {{name: GaussianBlur}}]"
            )
            return None
        items = given if many else [given]
        parts = [
            _make(
                item, f"{where}.{nested_key}" + (f"[{j}]" if many else ""), classes, config, shape, problems
            )
            for j, item in enumerate(items)
        ]
        if len(problems) > before:
            return None
        kwargs[nested_key] = parts if many else parts[0]
    try:
        built = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        fixed = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", str(exc))
        if fixed:  # a base's argument that this class sets itself (SpatialTransform's p)
            message = f"{fixed.group(1)!r} is set by {name} itself; remove it"
        else:
            message = f"{exc}; fix this entry's arguments"
        problems.append(f"{where} ({name}): {message}")
        return None
    if name == "Mirror" or name in _ALL_AXES:
        dims = _dims(config) if shape is None else len(shape)
        if any(a < 0 or a >= dims for a in built.axes):
            problems.append(
                f"{where} ({name}): axes {list(built.axes)} do not fit {dims}D data; give axes in 0..{dims - 1}"
            )
            return None
    return built


def check_transforms(config: Mapping[str, Any]) -> list[str]:
    """The problems of a ``data.transforms`` list (an empty list for a preset name or a good list).

    Each entry must be a mapping with ``name`` one of :func:`transform_classes` (else the closest
    name is suggested), its other keys keyword arguments of that class (else the accepted ones are
    listed), and the class must accept their values: each entry is built once (no data is touched)
    and the constructor's own ``ValueError``/``TypeError`` is reported as
    ``data.transforms[i] (Name): message``. ``Mirror``, ``Rot90`` and ``TransposeAxes`` axes must be
    spatial axes of the data.
    ``OneOf`` (``transforms``: a list of entries) and ``RandomApply`` (``transform``: one entry)
    hold nested entries, checked the same way (``data.transforms[i].transforms[j]``).
    """
    value = config.get("data", {}).get("transforms")
    if not isinstance(value, (list, tuple)):
        return []
    try:
        classes = transform_classes()
    except ImportError as exc:
        return [f"data.transforms: the list form needs delira-augment ({exc}); pip install delira-augment"]
    problems: list[str] = []
    for i, entry in enumerate(value):
        _make(entry, f"data.transforms[{i}]", classes, config, None, problems)
    return problems


def _entries(config: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    value = config["data"]["transforms"]
    return list(value) if isinstance(value, (list, tuple)) else None


def _mirror_entries(entries: Sequence[Any]) -> list[Mapping[str, Any]]:
    """The ``Mirror`` entries of a list, nested ones (``OneOf``, ``RandomApply``) included."""
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("name") == "Mirror":
            found.append(entry)
        nested_key, many = _NESTED.get(str(entry.get("name")), (None, False))
        if nested_key is not None and entry.get(nested_key) is not None:
            found += _mirror_entries(entry[nested_key] if many else [entry[nested_key]])
    return found


def mirror_axes(config: Mapping[str, Any]) -> tuple[int, ...]:
    """The spatial axes the training augmentation mirrors: a preset's ``data.augmentation.mirror_axes``
    (default all), ``()`` for ``none``; for a list the axes of its ``Mirror`` entries, nested ones
    included (none: ``()``)."""
    entries = _entries(config)
    if entries is None:
        return () if config["data"]["transforms"] == "none" else _default_mirror_axes(config)
    axes: set[int] = set()
    for entry in _mirror_entries(entries):
        given = entry.get("axes")
        axes |= set(_default_mirror_axes(config) if given is None else (int(a) for a in given))
    return tuple(sorted(axes))


def _rotation(aug: Mapping[str, Any], spatial_shape: Sequence[int]) -> Any:
    """``data.augmentation.rotation`` as the SpatialTransform takes it (degrees), or None."""
    rotation = aug["rotation"]
    if rotation is not None and isinstance(rotation[0], (list, tuple)):
        rotation = tuple(tuple(float(v) for v in r) for r in rotation)
        need = 3 if len(spatial_shape) == 3 else 1
        if len(rotation) != need:
            raise ValueError(
                f"data.augmentation.rotation lists {len(rotation)} ranges but a {len(spatial_shape)}D patch "
                f"has {need} rotation axes; give {need} [low, high] ranges or one for all"
            )
    elif rotation is not None:
        rotation = tuple(float(v) for v in rotation)
    return rotation


def _canonical(da: Any, aug: Mapping[str, Any], shape: tuple[int, ...]) -> list[Any]:
    rotation = _rotation(aug, shape)
    scale = tuple(float(v) for v in aug["scale"]) if aug["scale"] is not None else (1.0, 1.0)
    spatial = da.SpatialTransform(
        shape,
        rotation=rotation if rotation is not None else (0.0, 0.0),
        scale=scale,
        elastic_alpha=_ELASTIC_ALPHA,
        elastic_sigma=_ELASTIC_SIGMA,
        p_rotation=float(aug["p_rotation"]) if rotation is not None else 0.0,
        p_scale=float(aug["p_scale"]) if aug["scale"] is not None else 0.0,
        p_elastic=float(aug["p_elastic"]),
        order_data=1,
        order_seg=0,
        mode_data="constant",
        mode_seg="constant",
    )
    return [
        spatial,
        da.GaussianNoise(std=(0.0, 0.01)),
        da.BrightnessMultiplicative((0.9, 1.1)),
        da.Gamma((0.8, 1.25), retain_stats=True),
    ]


def _light(da: Any, shape: tuple[int, ...]) -> list[Any]:
    spatial = da.SpatialTransform(
        shape, rotation=(-15.0, 15.0), scale=(0.9, 1.1), p_rotation=0.2, p_scale=0.2, p_elastic=0.0
    )
    return [
        spatial,
        da.GaussianNoise(std=(0.0, 0.05), p=0.15),
        da.BrightnessMultiplicative((0.9, 1.1), p=0.15),
    ]


def _optional(cls: type, **candidates: Any) -> dict[str, Any]:
    """The candidate keyword arguments that ``cls``'s constructor names (features still landing)."""
    return {k: v for k, v in candidates.items() if _accepts(cls, k)}


def _nnunet(da: Any, aug: Mapping[str, Any], shape: tuple[int, ...]) -> list[Any]:
    """nnU-Net v2's ``nnUNetTrainer.get_training_transforms`` from the delira.augment classes there are.

    Same order, per-sample probabilities and ranges. Keyword arguments that delira.augment may lack
    are passed only where the constructor names them (:func:`_optional`): per-channel draws
    (nnU-Net's ``synchronize_channels=False``: ``per_channel``/``p_per_channel``), the dummy-2D
    spatial transform (``dummy_2d_axis``) and the low-resolution simulation's ``ignore_axes``.
    Dummy 2D as nnU-Net decides it: a 3D patch whose longest axis is more than 3x its first axis is
    transformed in-plane only (about axis 0: ``data.augmentation.rotation``'s range for axis 0, as
    ``delira plan`` writes +-180 deg there, or its one range) and not resampled to low resolution
    along axis 0. Brightness, contrast and gamma draw per channel (``per_channel=True``) with
    nnU-Net's ``BGContrast`` (``sampling="bg"``: half the draws below 1, half above).
    """
    rotation = _rotation(aug, shape)
    dummy_2d = len(shape) == 3 and max(shape) / shape[0] > _NNUNET_ANISO_THRESHOLD
    extra: dict[str, Any] = {}
    if dummy_2d and _accepts(da.SpatialTransform, "dummy_2d_axis"):
        extra["dummy_2d_axis"] = 0
        if rotation is not None and isinstance(rotation[0], tuple):
            rotation = rotation[0]  # the angle about axis 0: the in-plane rotation
    spatial = da.SpatialTransform(
        shape,
        rotation=rotation if rotation is not None else (0.0, 0.0),
        scale=(0.7, 1.4),
        p_rotation=0.2 if rotation is not None else 0.0,
        p_scale=0.2,
        p_elastic=0.0,
        order_data=1,  # bgv2: bilinear image, per-label bilinear + argmax seg
        order_seg=1,
        **extra,
    )
    per_channel = {"per_channel": True}
    blur = da.GaussianBlur(
        (0.5, 1.0), per_axis=True, p=0.2, **_optional(da.GaussianBlur, **per_channel, p_per_channel=0.5)
    )
    lowres = da.SimulateLowResolution(
        (0.5, 1.0),
        order_down=0,
        order_up=3,
        p=0.25,
        **_optional(
            da.SimulateLowResolution,
            **per_channel,
            p_per_channel=0.5,
            per_axis=False,
            ignore_axes=(0,) if dummy_2d else None,
        ),
    )
    return [
        spatial,
        da.GaussianNoise(std=(0.0, 0.1), p=0.1),  # bgv2 noise_variance is the std; channels synchronised
        blur,
        da.BrightnessMultiplicative((0.75, 1.25), p=0.15, sampling="bg", **per_channel),
        da.Contrast((0.75, 1.25), preserve_range=True, p=0.15, sampling="bg", **per_channel),
        lowres,
        da.Gamma((0.7, 1.5), invert=True, retain_stats=True, p=0.1, sampling="bg", **per_channel),
        da.Gamma((0.7, 1.5), invert=False, retain_stats=True, p=0.3, sampling="bg", **per_channel),
    ]


def build_transforms(
    config: Mapping[str, Any], spatial_shape: Sequence[int], seed: int = 0, backend: str | None = None
) -> Any:
    """The ``delira.augment.Compose`` of ``data.transforms`` for batches of ``spatial_shape``, or None.

    Args:
        config: the resolved configuration.
        spatial_shape: the spatial shape of the training batches (whole volumes or patches).
        seed: the Compose's own seed (the loader passes a per-batch ``rng`` anyway).
        backend: the delira.augment executor (``"cuda"`` for ``data.augment_device: cuda``); None:
            chosen from the input.

    Returns:
        A transform called as ``t(**batch, rng=...)`` on ``{"data": (N, C, *spatial) float32,
        "seg": (N, 1, *spatial) int}``, or None (``none``, an empty list, ``mirror`` without axes).

    Raises:
        ValueError: a list entry the class refuses (:func:`check_transforms` reports these earlier).
    """
    import delira.augment as da

    shape = tuple(int(s) for s in spatial_shape)
    axes = tuple(a for a in mirror_axes(config) if a < len(shape))
    entries = _entries(config)
    if entries is not None:
        classes = transform_classes()
        problems: list[str] = []
        members = [
            _make(e, f"data.transforms[{i}]", classes, config, shape, problems) for i, e in enumerate(entries)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return da.Compose(members, seed=seed, backend=backend) if members else None
    kind = config["data"]["transforms"]
    if kind == "none":
        return None
    mirror = [da.Mirror(axes, p_per_axis=0.5)] if axes else []
    aug = config["data"]["augmentation"]
    if kind == "mirror":
        members = []
    elif kind == "canonical":
        members = _canonical(da, aug, shape)
    elif kind == "light":
        members = _light(da, shape)
    elif kind == "nnunet":
        members = _nnunet(da, aug, shape)
    else:
        raise ValueError(f"data.transforms: {kind!r} is not one of {list(PRESETS)}")
    members += mirror
    return da.Compose(members, seed=seed, backend=backend) if members else None


def describe_transforms(config: Mapping[str, Any], transform: Any = None) -> str:
    """``data.transforms`` in one line: ``"preset nnunet: SpatialTransform, GaussianNoise, ..."``
    (the members of ``transform``, the built Compose, when given) or ``"list: GaussianNoise, Mirror"``."""
    entries = _entries(config)
    if entries is not None:
        names = [str(e.get("name")) if isinstance(e, Mapping) else "?" for e in entries]
        return "list: " + (", ".join(names) if names else "(empty)")
    text = f"preset {config['data']['transforms']}"
    members = getattr(transform, "transforms", None)
    if members:
        text += ": " + ", ".join(type(t).__name__ for t in members)
    return text
