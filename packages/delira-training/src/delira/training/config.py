"""The experiment configuration: defaults, a small schema, validation with clear errors, ``--set`` overrides.

A configuration is a nested dict (read from YAML) with the sections ``model``, ``data``, ``training``
and ``experiment`` plus the top-level keys ``name``, ``backend`` and ``task``. Every key has a
default (:data:`DEFAULTS`: the built-in job, a small 3D UNet on synthetic phantoms), so a config file
only names what differs. :func:`load_config` merges a file and overrides into the defaults and
validates the result up front: an unknown key names the nearest valid one, a wrong type names the
key, the expected type and how to fix it. All problems are reported at once (:class:`ConfigError`).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULTS",
    "SCHEMA",
    "ConfigError",
    "apply_overrides",
    "dump_config",
    "load_config",
    "merge",
    "parse_override",
    "validate",
]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; this loader reads it as the number researchers mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


class ConfigError(ValueError):
    """One or more problems in a configuration; ``problems`` lists them (one line each)."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where} ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Field:
    """One leaf of the schema.

    Attributes:
        kind: ``"int"``, ``"float"`` (ints accepted), ``"str"``, ``"bool"``, ``"ints"`` (a list of ints),
            ``"strs"`` (a list of strings), ``"str|strs"`` (either), ``"ranges"`` (a ``[low, high]``
            pair or a list of pairs) or ``"mapping"`` (any dict, checked by its consumer).
        nullable: ``null`` is allowed.
        choices: the allowed values (strings), or None for any.
        minimum: the smallest allowed number (ints and floats).
        doc: what the key means, shown in errors.
    """

    kind: str
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    doc: str = ""


_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "ints": "a list of integers",
    "strs": "a list of strings",
    "mapping": "a mapping (key: value pairs)",
    "str|strs": "a string or a list of strings (one per channel)",
    "ranges": "a [low, high] pair or a list of such pairs (one per axis)",
}

#: The schema: sections are dicts, leaves are :class:`Field`.
SCHEMA: dict[str, Any] = {
    "name": Field("str", doc="the run's name; the output folder is <experiment.output>/<name>-<timestamp>"),
    "backend": Field("str", choices=("torch", "tf"), doc="the deep-learning framework"),
    "task": Field("str", choices=("segmentation", "classification", "gan"), doc="what the model learns"),
    "model": {
        "name": Field(
            "str", doc="a delira.models name: unet, resnet18/34/50, dcgan (see delira.models.get_model)"
        ),
        "args": Field("mapping", doc="keyword arguments of the model's constructor"),
    },
    "data": {
        "kind": Field("str", choices=("phantom", "decathlon"), doc="the dataset"),
        "path": Field("str", nullable=True, doc="root folder of an MSD-layout dataset (kind: decathlon)"),
        "phantom": {
            "num_cases": Field("int", minimum=2),
            "shape": Field("ints"),
            "num_classes": Field("int", minimum=2),
            "seed": Field("int", minimum=0),
            "noise_std": Field("float", minimum=0),
        },
        "preprocessing": {
            "target_spacing": Field(
                "float",
                nullable=True,
                doc="one number (isotropic) or one per axis (null entries keep that axis's spacing, as 2D "
                "plans do for the slice axis); null keeps each case's spacing",
            ),
            "normalization": Field(
                "str|strs",
                choices=("zscore", "zscore_nonzero", "ct", "none"),
                doc="per-channel intensity normalization: one scheme for all channels or one per channel",
            ),
            "ct_stats": Field(
                "mapping",
                nullable=True,
                doc="per channel index {lower, upper, mean, std} of the foreground (ct normalization); "
                "null: fitted on the training cases",
            ),
            "crop_nonzero": Field("bool", doc="crop each case to the bounding box of its nonzero voxels"),
            "order_data": Field("int", choices=None, minimum=0, doc="image interpolation order (0, 1, 3)"),
            "order_seg": Field("int", minimum=0, doc="label interpolation: 0 nearest, 1 per-label linear"),
            "order_z": Field(
                "int", minimum=0, doc="interpolation order along the coarse axis of anisotropic cases (0, 1)"
            ),
            "anisotropy_threshold": Field(
                "float", minimum=1, doc="max/min spacing above which the coarse axis is resampled apart"
            ),
            "cache_dir": Field("str", nullable=True, doc="where preprocessed cases are cached"),
        },
        "spatial_dims": Field(
            "int",
            nullable=True,
            choices=None,
            minimum=2,
            doc="2 trains a 2D network on slices of 3D volumes (along data.slice_axis); null: the data's",
        ),
        "slice_axis": Field(
            "int", nullable=True, minimum=0, doc="2D on 3D volumes: the axis slices are taken along"
        ),
        "patch_size": Field("ints", nullable=True, doc="training patch size; null trains on whole volumes"),
        "foreground_fraction": Field("float", minimum=0, doc="share of patches centred on foreground"),
        "batches_per_epoch": Field("int", nullable=True, minimum=1, doc="patch training: batches per epoch"),
        "transforms": Field("str", choices=("canonical", "mirror", "none"), doc="the training augmentation"),
        "augmentation": {
            "rotation": Field(
                "ranges",
                nullable=True,
                doc="degrees: one [low, high] range for all rotation axes or one per axis (3 in 3D, 1 in 2D)",
            ),
            "scale": Field("ranges", nullable=True, doc="range of the isotropic zoom factor"),
            "p_rotation": Field("float", minimum=0, doc="per-sample probability of a rotation"),
            "p_scale": Field("float", minimum=0, doc="per-sample probability of a zoom"),
            "p_elastic": Field("float", minimum=0, doc="per-sample probability of an elastic deformation"),
            "mirror_axes": Field(
                "ints", nullable=True, doc="spatial axes mirrored at random (and at test time); null: all"
            ),
        },
    },
    "prediction": {
        "mirror": Field(
            "bool",
            nullable=True,
            doc="mirroring test-time augmentation over data.augmentation.mirror_axes; null: where training "
            "mirrored",
        ),
        "overlap": Field("float", minimum=0, doc="sliding-window overlap, a share of the patch (0 to <1)"),
        "gaussian": Field("bool", doc="weight the windows with a Gaussian (centre counts most)"),
        "batch_size": Field("int", minimum=1, doc="windows per forward pass"),
        "postprocess": Field(
            "bool", doc="apply the run's postprocessing.json (decided by aggregate) to predictions"
        ),
    },
    "evaluation": {
        "tolerance_mm": Field("float", minimum=0, doc="normalized surface Dice tolerance in mm"),
        "original_grid": Field(
            "bool",
            doc="evaluate preprocessed (resampled, cropped) cases on their original grid and spacing",
        ),
    },
    "training": {
        "loss": Field(
            "str", choices=("ce+dice", "ce", "dice"), doc="segmentation loss: cross-entropy and/or soft Dice"
        ),
        "optimizer": Field("str", doc="optimizer name understood by the trainer (adam, adamw, sgd)"),
        "lr": Field("float", minimum=0),
        "weight_decay": Field("float", minimum=0),
        "schedule": Field("str", nullable=True, choices=("cosine", "step"), doc="learning-rate schedule"),
        "epochs": Field("int", minimum=1),
        "batch_size": Field("int", minimum=1),
        "precision": Field("str", choices=("32", "bf16", "16"), doc="32, bf16 or 16 (mixed precision)"),
        "workers": Field("int", minimum=0, doc="data-loading worker processes (0: in the main process)"),
        "device": Field("str", doc="cpu, cuda, cuda:1, ... (torch) or a TensorFlow device string"),
        "grad_clip": Field("float", nullable=True, minimum=0),
        "val_every": Field("int", minimum=1),
        "monitor": Field(
            "str", nullable=True, doc="history key that picks the best checkpoint; null: task default"
        ),
        "mode": Field("str", nullable=True, choices=("min", "max")),
    },
    "experiment": {
        "folds": Field("int", minimum=1, doc="number of cross-validation folds (1: one train/val split)"),
        "seed": Field("int", minimum=0),
        "output": Field("str", doc="parent folder of the run folders"),
        "val_fraction": Field(
            "float", nullable=True, minimum=0, doc="carve a validation set out of each fold's training cases"
        ),
        "stratify_key": Field("str", nullable=True, doc="sample key to stratify the folds by (e.g. label)"),
        "group_key": Field(
            "str", nullable=True, doc="sample key whose groups stay in one fold (e.g. patient)"
        ),
    },
}

#: The built-in job: a small 3D UNet on synthetic phantoms, 3-fold cross-validation, canonical augmentation.
DEFAULTS: dict[str, Any] = {
    "name": "unet3d-phantom",
    "backend": "torch",
    "task": "segmentation",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [8, 16, 32]},
    },
    "data": {
        "kind": "phantom",
        "path": None,
        "phantom": {"num_cases": 24, "shape": [32, 32, 32], "num_classes": 3, "seed": 0, "noise_std": 0.05},
        "preprocessing": {
            "target_spacing": None,
            "normalization": "zscore",
            "ct_stats": None,
            "crop_nonzero": True,
            "order_data": 3,
            "order_seg": 1,
            "order_z": 0,
            "anisotropy_threshold": 3.0,
            "cache_dir": None,
        },
        "spatial_dims": None,
        "slice_axis": None,
        "patch_size": None,
        "foreground_fraction": 0.33,
        "batches_per_epoch": None,
        "transforms": "canonical",
        "augmentation": {
            "rotation": [-30.0, 30.0],
            "scale": [0.85, 1.25],
            "p_rotation": 0.3,
            "p_scale": 0.3,
            "p_elastic": 0.2,
            "mirror_axes": None,
        },
    },
    "prediction": {"mirror": None, "overlap": 0.5, "gaussian": True, "batch_size": 2, "postprocess": True},
    "evaluation": {"tolerance_mm": 1.0, "original_grid": True},
    "training": {
        "loss": "ce+dice",
        "optimizer": "adam",
        "lr": 1e-2,
        "weight_decay": 0.0,
        "schedule": "cosine",
        "epochs": 40,
        "batch_size": 2,
        "precision": "32",
        "workers": 0,
        "device": "cpu",
        "grad_clip": None,
        "val_every": 1,
        "monitor": None,
        "mode": None,
    },
    "experiment": {
        "folds": 3,
        "seed": 0,
        "output": "runs",
        "val_fraction": None,
        "stratify_key": None,
        "group_key": None,
    },
}


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``update`` merged in: dicts merge recursively, other values replace.

    ``model.args`` is replaced as a whole when ``model.name`` changes, so that a ResNet config does
    not inherit the UNet's arguments.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "args":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_leaf(path: str, value: Any, spec: Field) -> list[str]:
    if value is None:
        return (
            []
            if spec.nullable
            else [
                f"{path}: null is not allowed; expected {_KIND_NAMES[spec.kind]} ({spec.doc or 'required'})"
            ]
        )
    kind = spec.kind
    ok: bool
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if path.endswith("target_spacing") and isinstance(value, list):  # a per-axis spacing
            ok = all(v is None or (_is_number(v) and v > 0) for v in value)
            return (
                []
                if ok
                else [f"{path}: expected a list of positive numbers (or null entries), got {value!r}"]
            )
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "ints":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    elif kind == "strs":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    elif kind == "str|strs":
        ok = isinstance(value, str) or (
            isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)
        )
        if ok and not isinstance(value, str) and spec.choices is not None:
            bad = [v for v in value if v not in spec.choices]
            return [f"{path}: {bad} not among {list(spec.choices)}"] if bad else []
    elif kind == "ranges":
        pairs = [value] if isinstance(value, (list, tuple)) and value and _is_number(value[0]) else value
        ok = isinstance(pairs, (list, tuple)) and len(pairs) > 0
        ok = ok and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p) and p[0] <= p[1]
            for p in pairs
        )
    else:  # mapping
        ok = isinstance(value, Mapping)
    if not ok:
        hint = f" ({spec.doc})" if spec.doc else ""
        return [
            f"{path}: expected {_KIND_NAMES[kind]}{hint}, got {type(value).__name__} {value!r}; "
            f"fix it in the file or with --set {path}=..."
        ]
    problems = []
    if spec.choices is not None and value not in spec.choices:
        problems.append(
            f"{path}: {value!r} is not one of {list(spec.choices)}; {_suggest(str(value), spec.choices)}".rstrip(
                "; "
            )
        )
    if spec.minimum is not None and kind in ("int", "float") and value < spec.minimum:
        problems.append(f"{path}: {value!r} is below the minimum {spec.minimum:g}")
    return problems


def _check(path: str, value: Any, schema: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, Mapping):
        return [
            f"{path or 'the configuration'}: expected a mapping of keys {sorted(schema)}, got {type(value).__name__}"
        ]
    problems: list[str] = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in schema:
            problems.append(
                f"{where}: unknown key; {_suggest(str(key), schema)}valid keys here: {', '.join(sorted(schema))}"
            )
            continue
        spec = schema[key]
        if isinstance(spec, Field):
            problems += _check_leaf(where, item, spec)
        else:
            problems += _check(where, item, spec)
    return problems


def _check_semantics(config: Mapping[str, Any]) -> list[str]:
    """Cross-key rules that a per-key schema cannot express."""
    problems = []
    data, model = config.get("data", {}), config.get("model", {})
    if data.get("kind") == "decathlon" and not data.get("path"):
        problems.append(
            "data.path: data.kind is 'decathlon' but no path is given; set data.path to the MSD task folder"
        )
    if data.get("kind") == "decathlon" and config.get("task") != "segmentation":
        problems.append("task: an MSD (decathlon) dataset is a segmentation dataset; set task: segmentation")
    names = {
        "segmentation": ("unet",),
        "classification": ("resnet18", "resnet34", "resnet50"),
        "gan": ("dcgan",),
    }
    task, name = config.get("task"), model.get("name")
    if task in names and isinstance(name, str) and name not in names[task]:
        problems.append(f"model.name: {name!r} does not fit task {task!r}; use one of {list(names[task])}")
    shape, patch = data.get("phantom", {}).get("shape"), data.get("patch_size")
    if isinstance(shape, list) and len(shape) not in (2, 3):
        problems.append(f"data.phantom.shape: expected 2 or 3 sizes, got {shape}")
    if (
        isinstance(patch, list)
        and isinstance(shape, list)
        and data.get("kind") == "phantom"
        and len(patch) != len(shape)
    ):
        problems.append(
            f"data.patch_size: {patch} has {len(patch)} axes but data.phantom.shape {shape} has {len(shape)}"
        )
    dims, axis = data.get("spatial_dims"), data.get("slice_axis")
    if dims is not None and dims not in (2, 3):
        problems.append(f"data.spatial_dims: {dims} must be 2 or 3 (or null: the data's own)")
    model_dims = (model.get("args") or {}).get("spatial_dims")
    if dims is not None and model.get("name") == "unet" and model_dims is not None and model_dims != dims:
        problems.append(
            f"model.args.spatial_dims: {model_dims} differs from data.spatial_dims {dims}; set both to {dims}"
        )
    if axis is not None and dims != 2:
        problems.append(
            "data.slice_axis: only used with data.spatial_dims: 2; remove it or set spatial_dims: 2"
        )
    if dims == 2 and isinstance(patch, list) and len(patch) != 2:
        problems.append(f"data.patch_size: {patch} must have 2 sizes for data.spatial_dims: 2")
    overlap = config.get("prediction", {}).get("overlap")
    if isinstance(overlap, (int, float)) and not 0 <= overlap < 1:
        problems.append(f"prediction.overlap: {overlap} must be in [0, 1)")
    exp = config.get("experiment", {})
    if isinstance(exp.get("val_fraction"), float) and not 0 < exp["val_fraction"] < 1:
        problems.append(f"experiment.val_fraction: {exp['val_fraction']} must be in (0, 1) or null")
    return problems


def validate(config: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Check ``config`` against :data:`SCHEMA` and the cross-key rules; return it as a plain dict.

    Raises:
        ConfigError: listing every problem (unknown keys with the nearest valid one, wrong types
            naming the key, values outside their choices or range).
    """
    problems = _check("", config, SCHEMA)
    if not problems:
        problems = _check_semantics(config)
    if problems:
        raise ConfigError(problems, source)
    return dict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.epochs=5"`` -> ``(["training", "epochs"], 5)``; the value is parsed as YAML.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            [f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. --set training.epochs=5"]
        )
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([f"--set {text!r}: the value is not valid YAML ({exc})"]) from exc
    return [part.strip() for part in key.split(".")], value


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set a.b=value`` overrides to a copy of ``config`` (intermediate dicts are created)."""
    out = copy.deepcopy(dict(config))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def load_config(
    path: str | os.PathLike[str] | Mapping[str, Any] | None = None, overrides: Iterable[str] = ()
) -> dict[str, Any]:
    """The resolved configuration: :data:`DEFAULTS`, then the file (or mapping), then the overrides.

    Args:
        path: a YAML file, a mapping, the name of a shipped example config (``"resnet3d-phantom"``,
            see ``delira.training.configs``) or None for the built-in default job.
        overrides: ``"a.b=value"`` strings (values parsed as YAML).

    Raises:
        ConfigError: the file is missing or not YAML, or the result fails :func:`validate`.
    """
    source = None
    user: Mapping[str, Any] = {}
    if isinstance(path, Mapping):
        user = path
    elif path is not None:
        file = Path(path)
        if not file.exists():
            shipped = Path(__file__).parent / "configs" / f"{file.name.removesuffix('.yaml')}.yaml"
            if shipped.exists() and file.parent == Path("."):
                file = shipped
            else:
                names = sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml"))
                raise ConfigError(
                    [f"{path}: no such file; give a YAML file or a shipped config: {', '.join(names)}"]
                )
        source = str(file)
        try:
            user = _load_yaml(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from exc
        if not isinstance(user, Mapping):
            raise ConfigError(
                [f"the file holds a {type(user).__name__}, expected a mapping of sections"], source
            )
    problems = _check("", user, SCHEMA)  # unknown keys in the user's part, before merging
    if problems:
        raise ConfigError(problems, source)
    config = merge(DEFAULTS, user)
    config = apply_overrides(config, overrides)
    return validate(config, source)


def dump_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML (keys in schema order) atomically; returns the path."""
    from delira.io._atomic import atomic_write

    path = Path(path)
    text = yaml.safe_dump(dict(config), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
