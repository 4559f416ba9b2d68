"""Config-to-objects builders: the dataset, preprocessing, augmentation, network and trainer that a
configuration (:mod:`delira.training.config`) names. The losses are built by
:mod:`delira.training.losses` (``training.loss``, ``training.loss_args``).

Every function takes the resolved configuration (``load_config``) and builds one thing; the
:class:`~delira.training.experiment.Experiment` and the prediction code
(:mod:`delira.training.prediction`) call them, so training and inference build the same objects.
What depends on the task (losses, metrics, monitor, loaders, evaluation) is in
:mod:`delira.training.tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from delira.training.config import ConfigError
from delira.training.losses import KerasSoftDice, TorchSoftDice

__all__ = [
    "build_dataset",
    "build_network",
    "build_preprocessor",
    "build_transforms",
    "check_augment_device",
    "mirror_axes",
    "spatial_dims",
]


def spatial_dims(config: Mapping[str, Any]) -> int:
    """The number of spatial axes the network sees: ``data.spatial_dims``, else the model's, else 3."""
    dims = config["data"].get("spatial_dims")
    if dims is None:
        dims = config["model"]["args"].get("spatial_dims")
    if dims is None and config["data"]["kind"] == "phantom":
        dims = len(config["data"]["phantom"]["shape"])
    return int(dims or 3)


def slice_axis(config: Mapping[str, Any]) -> int | None:
    """2D training on 3D volumes: the spatial axis slices are taken along (default the last); else None."""
    if config["data"].get("spatial_dims") != 2 or config["data"]["kind"] == "phantom":
        return None
    axis = config["data"].get("slice_axis")
    return 2 if axis is None else int(axis)


def mirror_axes(config: Mapping[str, Any]) -> tuple[int, ...]:
    """The spatial axes mirrored in training, or ``()`` when the training augmentation does not mirror:
    for a preset ``data.augmentation.mirror_axes`` (default all; ``none``: ``()``), for a
    ``data.transforms`` list the axes of its ``Mirror`` entries (see :mod:`delira.training.augmentation`)."""
    from delira.training import augmentation

    return augmentation.mirror_axes(config)


def build_transforms(
    config: Mapping[str, Any], spatial_shape: Sequence[int], seed: int = 0, backend: str | None = None
) -> Any:
    """The training augmentation of ``data.transforms`` (a preset with the ranges of
    ``data.augmentation``, or the list form): see :func:`delira.training.augmentation.build_transforms`.

    Args:
        config: the resolved configuration.
        spatial_shape: the spatial shape of the training batches (whole volumes or patches).
        seed: the transforms' own seed (the loader passes a per-batch ``rng`` anyway).
        backend: the delira.augment executor of every transform (``"cuda"`` for
            ``data.augment_device: cuda``); None: chosen from the input (``"auto"``).

    Returns:
        A ``delira.augment`` transform called as ``t(**batch, rng=...)`` on batches
        ``{"data": (N, C, *spatial) float32, "seg": (N, 1, *spatial) int}``, or None.
    """
    from delira.training import augmentation

    return augmentation.build_transforms(config, spatial_shape, seed=seed, backend=backend)


def check_augment_device(config: Mapping[str, Any]) -> None:
    """Raise :class:`~delira.training.config.ConfigError` unless ``data.augment_device`` can run here:
    ``cuda`` needs delira-augment built with CUDA and a visible GPU (checked before any training)."""
    transforms = config["data"]["transforms"]
    if config["data"].get("augment_device", "cpu") != "cuda" or transforms in ("none", []):
        return
    from delira.augment._cuda import require_cuda

    try:
        require_cuda("data.augment_device: cuda")
    except RuntimeError as exc:
        raise ConfigError(
            [
                f"{exc} On a machine without a GPU set data.augment_device: cpu (--set data.augment_device=cpu)."
            ]
        ) from exc


def build_preprocessor(config: Mapping[str, Any]) -> Any:
    """The :class:`delira.data.Preprocessor` of ``data.preprocessing`` (crop, normalise, resample), or
    None when the config asks for none of it (no target spacing, normalization ``none``, no
    orientation)."""
    from delira.data import Preprocessor

    pre = config["data"]["preprocessing"]
    spacing = pre["target_spacing"]
    if spacing is None and pre["normalization"] == "none" and pre.get("orientation") is None:
        return None
    norm = pre["normalization"]
    kwargs: dict[str, Any] = {
        "target_spacing": spacing,
        "normalization": norm if isinstance(norm, str) else tuple(norm),
        "crop_nonzero": pre["crop_nonzero"],
        "order_data": pre["order_data"],
        "order_seg": pre["order_seg"],
        "order_z": pre["order_z"],
        "anisotropy_threshold": pre["anisotropy_threshold"],
        "seed": config["experiment"]["seed"],
    }
    if pre.get("orientation") is not None:
        kwargs["orientation"] = pre["orientation"]
    if pre.get("ct_stats"):
        kwargs["ct_stats"] = {int(c): dict(v) for c, v in pre["ct_stats"].items()}
    return Preprocessor(**kwargs)


def cache_dir(config: Mapping[str, Any]) -> Path:
    """Where preprocessed cases are cached: ``data.preprocessing.cache_dir`` or ``<output>/cache``."""
    pre = config["data"]["preprocessing"]
    return Path(pre["cache_dir"] or Path(config["experiment"]["output"]) / "cache")


def build_dataset(config: Mapping[str, Any], num_workers: int | None = None) -> Any:
    """The dataset named by ``data`` (``phantom`` or ``decathlon``) as a ``delira.data`` dataset.

    An MSD folder is checked (every problem listed at once, see :func:`delira.data.check_dataset`)
    before training, while it is preprocessed (:func:`build_preprocessor`) into a cache or, without
    preprocessing, loaded into memory; ``num_workers`` threads (default ``training.workers``) read
    cases in parallel.

    Samples: ``{"data": float32 (C, *spatial), "seg": int16 (1, *spatial) | "label": int,
    "case_id": str, ...}``; the dataset has ``case_ids``.
    """
    from delira.data import CacheDataset, DecathlonDataset, PreprocessedDataset, SyntheticPhantomDataset
    from delira.training.tasks import task_for

    data = config["data"]
    if data["kind"] == "phantom":
        p = data["phantom"]
        return SyntheticPhantomDataset(
            num_cases=p["num_cases"],
            shape=tuple(p["shape"]),
            num_classes=p["num_classes"],
            task=task_for(config).phantom_task,
            seed=p["seed"],
            noise_std=p["noise_std"],
        )
    # Missing listed files are reported by the checks together with every other problem.
    raw = DecathlonDataset(data["path"], allow_missing=True)
    preprocessor = build_preprocessor(config)
    workers = config["training"]["workers"] if num_workers is None else num_workers
    if preprocessor is None:
        return CacheDataset(raw, num_workers=workers, check=True)
    return PreprocessedDataset(raw, preprocessor, cache_dir=cache_dir(config), num_workers=workers)


# The soft Dice losses moved to delira.training.losses (with cross-entropy, focal and Tversky, and the
# deep-supervision weighting); these names stay for code that imported them from here.
_TorchSoftDice = TorchSoftDice
_KerasSoftDice = KerasSoftDice


def build_network(config: Mapping[str, Any]) -> Any:
    """The network of ``model`` for ``backend`` (``delira.models.get_model``)."""
    import delira.models

    try:
        return delira.models.get_model(
            config["model"]["name"], backend=config["backend"], **config["model"]["args"]
        )
    except TypeError as exc:
        raise ValueError(
            f"model.args do not fit model {config['model']['name']!r}: {exc}; fix model.args in the config"
        ) from exc


def _trainer_class(backend: str) -> Any:
    if backend == "torch":
        from delira.training.trainer_torch import PyTorchNetworkTrainer

        return PyTorchNetworkTrainer
    from delira.training.trainer_tf import TfNetworkTrainer

    return TfNetworkTrainer


def _eval_mode(net: Any, backend: str) -> None:
    if backend == "torch":
        net.eval()
