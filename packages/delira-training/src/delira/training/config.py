"""The experiment configuration: defaults, a small schema, validation with clear errors, ``--set`` overrides.

A configuration is a nested dict (read from YAML) with the sections ``model``, ``data``, ``training``
and ``experiment`` plus the top-level keys ``name``, ``backend`` and ``task``. Every key has a
default (:data:`DEFAULTS`: the built-in job, a small 3D UNet on synthetic phantoms), so a config file
only names what differs. :func:`load_config` merges a file and overrides into the defaults and
validates the result up front: an unknown key names the nearest valid one, a wrong type names the
key, the expected type and how to fix it, ``model.args`` are checked against the model's own config
(``delira.models.registry.check_model_args``). All problems are reported at once (:class:`ConfigError`).

:data:`SCHEMA` is the one description of the keys: each leaf (:class:`Field`) holds the key's type,
default and doc; :data:`DEFAULTS` is built from it and :func:`reference_markdown` renders the key
table of ``docs/configuration.md`` from it (:func:`write_reference` rewrites that table).
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

from delira.models.registry import TASKS

__all__ = [
    "DEFAULTS",
    "SCHEMA",
    "TASKS",
    "ConfigError",
    "Field",
    "apply_overrides",
    "dump_config",
    "load_config",
    "merge",
    "parse_override",
    "reference_markdown",
    "validate",
    "write_reference",
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
    """One leaf of the schema: the key's type, its default and what it means.

    Attributes:
        kind: ``"int"``, ``"float"`` (ints accepted), ``"str"``, ``"bool"``, ``"ints"`` (a list of ints),
            ``"strs"`` (a list of strings), ``"str|strs"`` (either), ``"ranges"`` (a ``[low, high]``
            pair or a list of pairs), ``"mapping"`` (any dict, checked by its consumer) or
            ``"str|mappings"`` (a string among ``choices`` or a list of mappings, checked by its consumer).
        default: the value of the built-in job (:data:`DEFAULTS` is built from these).
        doc: what the key means, shown in errors and in the configuration reference.
        nullable: ``null`` is allowed.
        choices: the allowed values (strings), or None for any.
        minimum: the smallest allowed number (ints and floats).
    """

    kind: str
    default: Any
    doc: str
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KIND_NAMES:
            raise ValueError(f"Field: kind {self.kind!r} is not one of {sorted(_KIND_NAMES)}")
        if not self.doc:
            raise ValueError(f"Field({self.kind!r}, {self.default!r}): every key needs a doc; pass doc=...")


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
    "intlists": "a list of lists of integers",
    "str|mappings": "a preset name or a list of mappings",
}


def _model_name_doc() -> str:
    from delira.models.registry import models_for_task

    per_task = "; ".join(f"{task}: {', '.join(models_for_task(task))}" for task in TASKS)
    return f"a delira.models model that fits `task` ({per_task}); see delira.models.get_model"


#: The schema: sections are dicts, leaves are :class:`Field` (type, default, doc of each key).
SCHEMA: dict[str, Any] = {
    "name": Field(
        "str",
        "unet3d-phantom",
        "the run's name; the output folder is <experiment.output>/<name>-<timestamp>",
    ),
    "backend": Field("str", "torch", "the deep-learning framework", choices=("torch", "tf")),
    "task": Field("str", "segmentation", "what the model learns", choices=TASKS),
    "model": {
        "name": Field("str", "unet", _model_name_doc()),
        "args": Field(
            "mapping",
            {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [8, 16, 32]},
            "keyword arguments of the model's constructor, checked against its config "
            "(delira.models.configs); a config file's args are the whole set (the rest take the "
            "constructor's defaults), --set model.args.<key> merges into them; a new model.name "
            "starts from that model's own defaults",
        ),
    },
    "data": {
        "kind": Field("str", "phantom", "the dataset", choices=("phantom", "decathlon")),
        "path": Field("str", None, "root folder of an MSD-layout dataset (kind: decathlon)", nullable=True),
        "phantom": {
            "num_cases": Field("int", 24, "number of synthetic cases", minimum=2),
            "shape": Field("ints", [32, 32, 32], "spatial shape of each case: 2 (2D) or 3 (3D) sizes"),
            "num_classes": Field("int", 3, "label classes, background included", minimum=2),
            "seed": Field("int", 0, "random seed the phantoms are drawn from", minimum=0),
            "noise_std": Field("float", 0.05, "standard deviation of the added Gaussian noise", minimum=0),
        },
        "preprocessing": {
            "target_spacing": Field(
                "float",
                None,
                "one number (isotropic) or one per axis (null entries keep that axis's spacing, as 2D "
                "plans do for the slice axis); null keeps each case's spacing",
                nullable=True,
            ),
            "normalization": Field(
                "str|strs",
                "zscore",
                "per-channel intensity normalization: one scheme for all channels or one per channel",
                choices=("zscore", "zscore_nonzero", "ct", "none"),
            ),
            "ct_stats": Field(
                "mapping",
                None,
                "per channel index {lower, upper, mean, std} of the foreground (ct normalization); "
                "null: fitted on the training cases",
                nullable=True,
            ),
            "crop_nonzero": Field("bool", True, "crop each case to the bounding box of its nonzero voxels"),
            "order_data": Field("int", 3, "image interpolation order (0, 1, 3)", minimum=0),
            "order_seg": Field("int", 1, "label interpolation: 0 nearest, 1 per-label linear", minimum=0),
            "order_z": Field(
                "int", 0, "interpolation order along the coarse axis of anisotropic cases (0, 1)", minimum=0
            ),
            "anisotropy_threshold": Field(
                "float", 3.0, "max/min spacing above which the coarse axis is resampled apart", minimum=1
            ),
            "orientation": Field(
                "str",
                None,
                "reorient every case to this orientation before cropping (RAS: nibabel/MONAI canonical, LPS: "
                "ITK/DICOM); target_spacing, patch_size and slice_axis then refer to the reoriented axes and "
                "predictions are put back in each input's own orientation; null: the files' own layout",
                nullable=True,
                choices=("RAS", "LPS"),
            ),
            "cache_dir": Field("str", None, "where preprocessed cases are cached", nullable=True),
        },
        "spatial_dims": Field(
            "int",
            None,
            "2 trains a 2D network on slices of 3D volumes (along data.slice_axis); null: the data's",
            nullable=True,
            minimum=2,
        ),
        "slice_axis": Field(
            "int", None, "2D on 3D volumes: the axis slices are taken along", nullable=True, minimum=0
        ),
        "regions": Field(
            "intlists",
            None,
            "region-based training (nnU-Net's regions): a list of regions, each a list of label values (e.g. "
            "BraTS [[1, 2, 3], [2, 3], [3]]); the network has one sigmoid output per region "
            "(model.args.num_classes = the number of regions), trained with BCE + soft Dice of the region "
            "masks; predictions are painted back into labels (data.regions_order); null: label-based (softmax)",
            nullable=True,
        ),
        "regions_order": Field(
            "ints",
            None,
            "region training: the label each region paints, regions painted in order over each other where "
            "sigmoid > 0.5 (nnU-Net's regions_class_order); null: each region's one label that no later "
            "region holds (nested regions)",
            nullable=True,
        ),
        "ignore_label": Field(
            "int",
            None,
            "label value of unannotated voxels (sparse annotations): they add nothing to the losses and are "
            "left out of the metrics; above the network's classes (label-based: >= model.args.num_classes) "
            "and in no region; null: every voxel is annotated",
            nullable=True,
            minimum=1,
        ),
        "patch_size": Field("ints", None, "training patch size; null trains on whole volumes", nullable=True),
        "foreground_fraction": Field("float", 0.33, "share of patches centred on foreground", minimum=0),
        "batches_per_epoch": Field(
            "int", None, "patch training: batches per epoch", nullable=True, minimum=1
        ),
        "cache_rate": Field(
            "float",
            None,
            "share of the fold's training cases kept in memory, in (0, 1]; the cache rotates through all "
            "of them epoch by epoch (delira.data.SmartCacheDataset, for datasets larger than memory); "
            "null: no cache, every case read when drawn",
            nullable=True,
        ),
        "cache_replace_rate": Field(
            "float",
            0.1,
            "with data.cache_rate: share of the cache replaced by the next cases each epoch, in [0, 1] "
            "(0: a fixed partial cache)",
        ),
        "transforms": Field(
            "str|mappings",
            "canonical",
            "the training augmentation: a preset name (see 'Augmentation presets' below) or a list of "
            "{name: <delira.augment transform>, <argument>: <value>, ...} entries applied in order",
            choices=("canonical", "mirror", "light", "nnunet", "none"),
        ),
        "augment_device": Field(
            "str",
            "cpu",
            "where the training augmentation runs: cpu (in the loader workers) or cuda (on the batch, "
            "on the GPU of training.device, inside the trainer; needs delira-augment built with CUDA)",
            choices=("cpu", "cuda"),
        ),
        "augmentation": {
            "rotation": Field(
                "ranges",
                [-30.0, 30.0],
                "degrees: one [low, high] range for all rotation axes or one per axis (3 in 3D, 1 in 2D)",
                nullable=True,
            ),
            "scale": Field("ranges", [0.85, 1.25], "range of the isotropic zoom factor", nullable=True),
            "p_rotation": Field("float", 0.3, "per-sample probability of a rotation", minimum=0),
            "p_scale": Field("float", 0.3, "per-sample probability of a zoom", minimum=0),
            "p_elastic": Field("float", 0.2, "per-sample probability of an elastic deformation", minimum=0),
            "mirror_axes": Field(
                "ints",
                None,
                "spatial axes mirrored at random (and at test time); null: all",
                nullable=True,
            ),
        },
    },
    "prediction": {
        "mirror": Field(
            "bool",
            None,
            "mirroring test-time augmentation over data.augmentation.mirror_axes; null: where training "
            "mirrored",
            nullable=True,
        ),
        "overlap": Field("float", 0.5, "sliding-window overlap, a share of the patch (0 to <1)", minimum=0),
        "gaussian": Field("bool", True, "weight the windows with a Gaussian (centre counts most)"),
        "batch_size": Field("int", 2, "windows per forward pass", minimum=1),
        "postprocess": Field(
            "bool", True, "apply the run's postprocessing.json (decided by aggregate) to predictions"
        ),
    },
    "evaluation": {
        "tolerance_mm": Field("float", 1.0, "normalized surface Dice tolerance in mm", minimum=0),
        "original_grid": Field(
            "bool",
            True,
            "evaluate preprocessed (resampled, cropped) cases on their original grid and spacing",
        ),
    },
    "training": {
        "loss": Field(
            "str",
            "ce+dice",
            "segmentation loss, the sum of the named ones: ce (cross-entropy), dice (soft Dice), focal "
            "(focal loss on the softmax), tversky (Tversky loss); definitions in delira.training.losses",
            choices=(
                "ce+dice",
                "ce",
                "dice",
                "focal",
                "tversky",
                "ce+tversky",
                "focal+dice",
                "focal+tversky",
            ),
        ),
        "loss_args": Field(
            "mapping",
            {},
            "arguments per loss of training.loss: ce: {class_weights: [one per class]} (also the "
            "classification cross-entropy), dice: {smooth}, focal: {gamma, alpha: a number for the "
            "foreground or one per class}, tversky: {alpha, beta, smooth}; unset ones take the defaults "
            "(focal gamma 2; tversky alpha 0.3, beta 0.7; smooth 1)",
        ),
        "optimizer": Field("str", "adam", "optimizer name understood by the trainer (adam, adamw, sgd)"),
        "lr": Field("float", 1e-2, "initial learning rate", minimum=0),
        "weight_decay": Field("float", 0.0, "weight decay of the optimizer", minimum=0),
        "schedule": Field(
            "str",
            "cosine",
            "learning-rate schedule: cosine (to 0 per epoch), step (x0.1 every third of the epochs), poly "
            "(lr * (1 - epoch / epochs) ** 0.9 per epoch, nnU-Net's), onecycle (torch's OneCycleLR with "
            "training.lr the peak, per iteration); null: constant",
            nullable=True,
            choices=("cosine", "step", "poly", "onecycle"),
        ),
        "schedule_args": Field(
            "mapping",
            {},
            "arguments of training.schedule: step: step_size, gamma; poly: exponent; onecycle: pct_start, "
            "div_factor, final_div_factor (cosine takes none)",
        ),
        "warmup_epochs": Field(
            "float",
            0,
            "linear learning-rate warm-up over this many epochs (per iteration, fractions allowed) on top "
            "of training.schedule; 0: none",
            minimum=0,
        ),
        "ema_decay": Field(
            "float",
            None,
            "keep an exponential moving average of the weights with this decay in (0, 1) per optimizer "
            "step (e.g. 0.999), used for validation, the checkpoints and prediction; null: none",
            nullable=True,
            minimum=0,
        ),
        "epochs": Field("int", 40, "training epochs per fold", minimum=1),
        "batch_size": Field("int", 2, "samples per training batch", minimum=1),
        "precision": Field("str", "32", "32, bf16 or 16 (mixed precision)", choices=("32", "bf16", "16")),
        "workers": Field("int", 0, "data-loading worker processes (0: in the main process)", minimum=0),
        "device": Field("str", "cpu", "cpu, cuda, cuda:1, ... (torch) or a TensorFlow device string"),
        "grad_clip": Field(
            "float",
            None,
            "clip the global gradient norm to this value; null: no clipping",
            nullable=True,
            minimum=0,
        ),
        "val_every": Field("int", 1, "validate every this many epochs (and after the last one)", minimum=1),
        "monitor": Field(
            "str", None, "history key that picks the best checkpoint; null: task default", nullable=True
        ),
        "mode": Field(
            "str",
            None,
            "whether a smaller (min) or larger (max) training.monitor is better; null: the task default's, "
            "min for a training.monitor you set",
            nullable=True,
            choices=("min", "max"),
        ),
    },
    "experiment": {
        "folds": Field("int", 3, "number of cross-validation folds (1: one train/val split)", minimum=1),
        "seed": Field("int", 0, "seed of the splits, the weights and the augmentation", minimum=0),
        "output": Field("str", "runs", "parent folder of the run folders"),
        "val_fraction": Field(
            "float",
            None,
            "carve a validation set out of each fold's training cases",
            nullable=True,
            minimum=0,
        ),
        "stratify_key": Field("str", None, "sample key to stratify the folds by (e.g. label)", nullable=True),
        "group_key": Field(
            "str", None, "sample key whose groups stay in one fold (e.g. patient)", nullable=True
        ),
    },
    "logging": {
        "mlflow": {
            "enabled": Field(
                "bool",
                False,
                "log the config as params, the metrics per epoch and each fold's files (best checkpoint, "
                "metrics.csv, curves, result) to MLflow, one nested run per fold (extra delira-training[mlflow])",
            ),
            "tracking_uri": Field(
                "str",
                None,
                "an MLflow tracking URI (http://..., sqlite:///...) or a folder (a local sqlite store); "
                "null: <experiment.output>/mlruns",
                nullable=True,
            ),
            "experiment": Field("str", None, "the MLflow experiment; null: the config's name", nullable=True),
        },
        "wandb": {
            "enabled": Field(
                "bool",
                False,
                "log the config, the metrics per epoch and each fold's files to Weights & Biases, one run per "
                "fold grouped by the run folder (extra delira-training[wandb])",
            ),
            "project": Field("str", "delira", "the W&B project"),
            "entity": Field("str", None, "the W&B team or user; null: your default", nullable=True),
            "offline": Field(
                "bool",
                True,
                "keep the runs on disk (<run folder>/wandb; `wandb sync` uploads them later); false: upload live",
            ),
        },
    },
    "launcher": {
        "name": Field(
            "str",
            "sequential",
            "how the folds run: sequential (one after the other in this process), local (parallel "
            "processes on this machine) or submitit (one cluster job per fold, e.g. on SLURM)",
            choices=("sequential", "local", "submitit"),
        ),
        "jobs": Field(
            "int",
            None,
            "local: folds run at once; null: one per GPU with training.device cuda, else one per CPU core",
            nullable=True,
            minimum=1,
        ),
        "cluster": Field(
            "str",
            None,
            "submitit: slurm, local (subprocesses on this machine, for tests) or debug (in this process); "
            "null: slurm where sbatch is found, else local",
            nullable=True,
            choices=("slurm", "local", "debug"),
        ),
        "partition": Field("str", None, "submitit: the SLURM partition", nullable=True),
        "account": Field("str", None, "submitit: the SLURM account to charge", nullable=True),
        "gpus_per_fold": Field("int", 0, "submitit: GPUs of each fold's job", minimum=0),
        "cpus_per_fold": Field(
            "int",
            4,
            "submitit: CPU cores of each fold's job (also its torch and delira.augment threads)",
            minimum=1,
        ),
        "mem_gb": Field(
            "float",
            None,
            "submitit: memory of each fold's job in GB; null: the cluster's",
            nullable=True,
            minimum=0,
        ),
        "time_min": Field(
            "int",
            240,
            "submitit: time limit of each fold's job in minutes (it requeues and resumes after it)",
            minimum=1,
        ),
        "max_requeues": Field(
            "int", 3, "submitit: how often a pre-empted or timed-out fold job is requeued", minimum=0
        ),
        "slurm_options": Field(
            "mapping",
            {},
            "submitit: extra SLURM options as key: value (e.g. constraint: a100, qos: high), passed to sbatch",
        ),
    },
}


def _defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: copy.deepcopy(spec.default) if isinstance(spec, Field) else _defaults(spec)
        for key, spec in schema.items()
    }


#: The built-in job (every schema key's default): a small 3D UNet on synthetic phantoms, 3-fold
#: cross-validation, canonical augmentation. Built from :data:`SCHEMA`.
DEFAULTS: dict[str, Any] = _defaults(SCHEMA)


def _same_model(a: Any, b: Any) -> bool:
    """Whether two ``model.name`` values name the same model (``"ResNet-18"`` is ``"resnet18"``)."""
    from delira.models.registry import canonical_name

    if a == b:
        return True
    try:
        return canonical_name(a) == canonical_name(b)
    except ValueError:  # an unknown name; validate reports it
        return False


def _merge(
    base: Mapping[str, Any], update: Mapping[str, Any], path: tuple[str, ...], replace_args: bool = False
) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    if path == ("model",) and "name" in update and not _same_model(update["name"], out.get("name")):
        out.pop("args", None)  # another model: the old model's arguments do not apply to it
        out.setdefault("args", {})
    for key, value in update.items():
        whole = replace_args and (*path, key) == ("model", "args")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not whole:
            out[key] = _merge(out[key], value, (*path, str(key)), replace_args)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any], replace_args: bool = False) -> dict[str, Any]:
    """A deep copy of ``base`` with ``update`` merged in: dicts merge recursively, other values replace.

    ``model.args`` follows ``model.name``: while the name stays, the arguments ``update`` gives merge
    key-wise into the base's (``{features: [4, 8]}`` keeps the other UNet arguments); when ``update``
    changes ``model.name``, the base's arguments are dropped, so the new model starts from its own
    defaults plus the arguments ``update`` gives (a ResNet does not inherit the UNet's arguments).
    With ``replace_args`` the ``model.args`` that ``update`` gives replace the base's as a whole:
    :func:`load_config` merges a config FILE so, because the arguments a file lists are the model's
    arguments (the others take the constructor's defaults, not the built-in job's), while ``--set``
    overrides merge key-wise. Neither input is modified.

    Example: ``merge(DEFAULTS, {"model": {"name": "resnet18"}})["model"] == {"name": "resnet18",
    "args": {}}``.
    """
    return _merge(base, update, (), replace_args)


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
    elif kind == "str|mappings":
        ok = isinstance(value, (str, list, tuple))
        if ok and not isinstance(value, str):
            return []  # each entry is checked by its consumer, with its position (see _check_semantics)
    elif kind == "intlists":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(r, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
            for r in value
        )
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


def _check_model(task: Any, model: Mapping[str, Any]) -> list[str]:
    """``model.name`` is a delira.models model of ``task``; ``model.args`` fit that model's config."""
    from delira.models.registry import ModelArgumentError, check_model_args, model_task, models_for_task

    name, args = model.get("name"), model.get("args")
    try:
        own_task = model_task(name)
    except ValueError as exc:
        fits = f"; for task {task!r} use one of {models_for_task(task)}" if task in TASKS else ""
        return [f"model.name: {exc}{fits}"]
    if task in TASKS and own_task != task:
        what = f"a {own_task} model" if own_task else "a sub-network, not a whole model"
        problems = [
            f"model.name: {name!r} does not fit task {task!r} ({what}); use one of {models_for_task(task)}"
        ]
    else:
        problems = []
    try:
        check_model_args(name, args if args is not None else {})
    except ModelArgumentError as exc:
        for key, message in exc.problems:
            if key is None:
                problems.append(f"model.args: {message}; fix the arguments in the file or with --set")
            else:
                problems.append(
                    f"model.args.{key}: {message}; fix it in the file or with --set model.args.{key}=..."
                )
    except ValueError as exc:
        problems.append(f"model.args: {exc}")
    return problems


def _is_gpu_device(device: str, backend: Any) -> bool:
    """``device`` names a GPU: ``cuda[:k]`` for torch, a ``GPU`` device string for TensorFlow."""
    if backend == "tf":
        return "GPU" in device.upper()
    return device == "cuda" or device.startswith("cuda:")


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
    problems += _check_model(config.get("task"), model)
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
    problems += _check_cache(data)
    device = str(config.get("training", {}).get("device", "cpu"))
    if data.get("augment_device") == "cuda" and not _is_gpu_device(device, config.get("backend")):
        problems.append(
            f"data.augment_device: cuda augments the batch on the training device, but training.device is "
            f"{device!r}; set training.device to a GPU ('cuda' / 'cuda:1' for torch, '/GPU:0' for tf) or "
            "data.augment_device: cpu"
        )
    options = config.get("launcher", {}).get("slurm_options")
    if isinstance(options, Mapping):
        for key, value in options.items():
            if not isinstance(value, (str, int, float, bool)):
                problems.append(
                    f"launcher.slurm_options.{key}: {value!r} is not a single value; sbatch options take a "
                    "string or a number (e.g. constraint: a100)"
                )
    problems += _check_training(config)
    problems += _check_labels(config)
    if isinstance(data.get("transforms"), (list, tuple)):
        from delira.training.augmentation import check_transforms

        problems += check_transforms(config)
    training = config.get("training", {})
    args = training.get("schedule_args")
    if isinstance(args, Mapping) and args:
        from delira.training.schedules import check_schedule_args

        schedule = training.get("schedule", DEFAULTS["training"]["schedule"])
        if schedule is None:
            problems.append(
                "training.schedule_args: set, but training.schedule is null (constant); remove them"
            )
        else:
            try:
                check_schedule_args(schedule, args)
            except ValueError as exc:
                problems.append(f"training.schedule_args: {exc}".replace("scheduler_kwargs", "schedule_args"))
    overlap = config.get("prediction", {}).get("overlap")
    if isinstance(overlap, (int, float)) and not 0 <= overlap < 1:
        problems.append(f"prediction.overlap: {overlap} must be in [0, 1)")
    exp = config.get("experiment", {})
    if isinstance(exp.get("val_fraction"), float) and not 0 < exp["val_fraction"] < 1:
        problems.append(f"experiment.val_fraction: {exp['val_fraction']} must be in (0, 1) or null")
    return problems


def _check_cache(data: Mapping[str, Any]) -> list[str]:
    """``data.cache_rate`` in (0, 1] or null, ``data.cache_replace_rate`` in [0, 1]."""
    problems = []
    rate, replace = data.get("cache_rate"), data.get("cache_replace_rate")
    if isinstance(rate, (int, float)) and not 0 < rate <= 1:
        problems.append(
            f"data.cache_rate: {rate} must be in (0, 1] (the share of the training cases kept in memory, "
            "e.g. 0.25) or null (no cache)"
        )
    if isinstance(replace, (int, float)) and not 0 <= replace <= 1:
        problems.append(
            f"data.cache_replace_rate: {replace} must be in [0, 1] (the share of the cache replaced per "
            "epoch, e.g. 0.1; 0: a fixed partial cache)"
        )
    default = SCHEMA["data"]["cache_replace_rate"].default
    if rate is None and isinstance(replace, (int, float)) and replace != default:
        problems.append(
            f"data.cache_replace_rate: {replace} is set but data.cache_rate is null (no cache); set "
            "data.cache_rate (e.g. 0.25) or remove data.cache_replace_rate"
        )
    return problems


def _check_training(config: Mapping[str, Any]) -> list[str]:
    """``training.loss_args`` fits ``training.loss`` and the task (each loss's arguments checked,
    per-class lists against ``model.args.num_classes``); ``training.ema_decay`` is in (0, 1)."""
    from delira.training.losses import check_loss_args

    training = config.get("training", {})
    problems = []
    args = training.get("loss_args") or {}
    task = config.get("task")
    if task == "segmentation":
        allowed = [n.strip() for n in str(training.get("loss", "")).split("+")]
        own = f"training.loss {training.get('loss')!r}"
    elif task == "classification":
        allowed, own = ["ce"], "the classification task (cross-entropy)"
    else:
        allowed, own = [], f"the {task} task"
    num_classes = (config.get("model", {}).get("args") or {}).get("num_classes")
    for name, values in args.items():
        where = f"training.loss_args.{name}"
        if name not in allowed:
            problems.append(
                f"{where}: {own} has no loss {name!r}; give arguments of {allowed or 'no loss'} only"
                + (" or add it to training.loss" if task == "segmentation" else "")
            )
            continue
        found = check_loss_args(str(name), values if values is not None else {}, num_classes, where=where)
        problems += [f"{p}; fix it in the file or with --set {p.split(':')[0]}=..." for p in found]
    decay = training.get("ema_decay")
    if decay is not None and not 0 < decay < 1:
        problems.append(f"training.ema_decay: {decay} must be in (0, 1) (e.g. 0.999) or null")
    return problems


def _check_labels(config: Mapping[str, Any]) -> list[str]:
    """``data.regions`` / ``data.regions_order`` / ``data.ignore_label``
    (:mod:`delira.training.regions`): segmentation only; regions of the phantom's labels, one network
    output per region, region losses only; the ignore label above the classes and in no region."""
    from delira.training.losses import REGION_LOSSES
    from delira.training.regions import check_ignore_label, check_regions

    data = config.get("data", {})
    regions, order, ignore = data.get("regions"), data.get("regions_order"), data.get("ignore_label")
    if regions is None and order is None and ignore is None:
        return []
    if config.get("task") != "segmentation":
        return [f"data.regions / data.ignore_label: segmentation only, the task is {config.get('task')!r}"]
    problems = []
    num_classes = (config.get("model", {}).get("args") or {}).get("num_classes")
    if regions is None:
        if order is not None:
            problems.append(
                "data.regions_order: set, but data.regions is null; remove it or set data.regions"
            )
    else:
        labels = None
        if data.get("kind") == "phantom":
            labels = list(range(1, int(data.get("phantom", {}).get("num_classes", 2))))
        problems += check_regions(regions, order, labels)
        if num_classes is not None and num_classes != len(regions):
            problems.append(
                f"model.args.num_classes: {num_classes}, but data.regions has {len(regions)} regions; a region "
                f"model has one output per region: set model.args.num_classes: {len(regions)}"
            )
        training = config.get("training", {})
        names = [n.strip() for n in str(training.get("loss", "")).split("+")]
        bad = [n for n in names if n not in REGION_LOSSES]
        if bad:
            problems.append(
                f"training.loss: {bad} not defined for region training (data.regions); use "
                f"{' / '.join(REGION_LOSSES)} joined with '+' (e.g. ce+dice: BCE + soft Dice, as nnU-Net)"
            )
        if ((training.get("loss_args") or {}).get("ce") or {}).get("class_weights") is not None:
            problems.append(
                "training.loss_args.ce.class_weights: not used by region training (one binary output per "
                "region); remove them"
            )
    valid_regions = regions if regions is not None and not check_regions(regions, check_order=False) else None
    problems += check_ignore_label(ignore, None if regions is not None else num_classes, valid_regions)
    return problems


def validate(config: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Check ``config`` against :data:`SCHEMA` and the cross-key rules; return it as a plain dict.

    The cross-key rules include the model: ``model.name`` must be a delira.models model of ``task``
    (``delira.models.registry.models_for_task``) and ``model.args`` must fit its config
    (``delira.models.registry.check_model_args``: no framework is imported).

    Raises:
        ConfigError: listing every problem (unknown keys with the nearest valid one, wrong types
            naming the key, values outside their choices or range, each invalid
            ``model.args.<key>`` with the model's message and the fix).
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


def _overrides_as_update(overrides: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "a.c=2"]`` -> ``{"a": {"b": 1, "c": 2}}``; a later override wins over an earlier one."""
    update: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text)
        node = update
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return update


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set a.b=value`` overrides to a copy of ``config`` (intermediate dicts are created).

    The overrides are collected into one nested update that :func:`merge` merges into ``config``, so
    ``model.args`` follows ``model.name`` as there: ``--set model.args.features=[4,8]`` keeps the
    other arguments, ``--set model.name=resnet18`` drops the UNet's arguments (together with
    ``--set model.args.width=8``, in either order, the ResNet gets ``{width: 8}``).

    Raises:
        ConfigError: an override without ``=`` or with a value that is not YAML.
    """
    return merge(config, _overrides_as_update(overrides))


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
    config = merge(DEFAULTS, user, replace_args=True)  # a file's model.args are the whole argument set
    config = apply_overrides(config, overrides)
    return validate(config, source)


def dump_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML (keys in schema order) atomically; returns the path."""
    from delira.io import atomic_write

    path = Path(path)
    text = yaml.safe_dump(dict(config), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


REFERENCE_BEGIN = (
    "<!-- generated from delira.training.config.SCHEMA by reference_markdown(); do not edit by hand, "
    "run: python -c 'import delira.training.config as c; c.write_reference(\"docs/configuration.md\")' -->"
)
REFERENCE_END = "<!-- end of the generated key reference -->"


def _leaves(schema: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Field]]:
    for key, spec in schema.items():
        if isinstance(spec, Field):
            yield prefix + key, spec
        else:
            yield from _leaves(spec, f"{prefix}{key}.")


def _yaml_inline(value: Any) -> str:
    """A value as one line of YAML flow style: ``null``, ``true``, ``[8, 16, 32]``, ``'32'``."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text.removesuffix("...").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _key_table() -> str:
    rows = [
        "## Keys",
        "",
        "Every key of the configuration: its default (the built-in job), its type and what it means.",
        "",
        "| key | default | type | meaning |",
        "|---|---|---|---|",
    ]
    for key, spec in _leaves(SCHEMA):
        kind = _KIND_NAMES[spec.kind] + (" or null" if spec.nullable else "")
        meaning = spec.doc
        if spec.choices is not None:
            meaning += "; one of " + ", ".join(f"`{c}`" for c in spec.choices)
        if spec.minimum is not None:
            meaning += f"; >= {spec.minimum:g}"
        default = _yaml_inline(spec.default)
        rows.append(f"| `{key}` | `{_cell(default)}` | {_cell(kind)} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def reference_markdown(document: str | None = None) -> str:
    """The configuration reference's key table, rendered from :data:`SCHEMA`.

    Args:
        document: None, or a Markdown text holding the :data:`REFERENCE_BEGIN` and
            :data:`REFERENCE_END` marker lines (``docs/configuration.md``).

    Returns:
        With ``document`` None: the generated section (a ``## Keys`` heading and one table row per
        key: key, default as YAML, type, doc with its choices and minimum). Otherwise ``document``
        with the text between the markers replaced by that section (the hand-written rest kept).

    Raises:
        ValueError: ``document`` lacks the markers, or has them in the wrong order.
    """
    table = _key_table()
    if document is None:
        return table
    begin, end = document.find(REFERENCE_BEGIN), document.find(REFERENCE_END)
    if begin < 0 or end < begin:
        raise ValueError(
            "the document has no generated key reference: put a line with REFERENCE_BEGIN "
            f"({REFERENCE_BEGIN!r}) and, below it, a line with REFERENCE_END ({REFERENCE_END!r}) "
            "where the table belongs"
        )
    head = document[: begin + len(REFERENCE_BEGIN)]
    return f"{head}\n{table}\n{document[end:]}"


def write_reference(path: str | os.PathLike[str]) -> bool:
    """Rewrite the generated key reference of a Markdown file (``docs/configuration.md``) in place.

    Returns:
        True if the file changed, False if it was up to date.

    Raises:
        ValueError: the file lacks the marker lines (see :func:`reference_markdown`).
    """
    file = Path(path)
    text = file.read_text()
    new = reference_markdown(text)
    if new == text:
        return False
    file.write_text(new)
    return True
