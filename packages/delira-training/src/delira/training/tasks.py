"""What a model learns, as one strategy object per task: ``SegmentationTask``, ``ClassificationTask``
and ``GanTask``.

A :class:`Task` owns everything of an experiment that depends on the task: the training losses
(per backend), the training metrics, the monitored figure, the train/val loaders of a fold (with the
transforms the task adds), the per-epoch callbacks and the evaluation of networks on a dataset
(per-case rows and their means). :class:`~delira.training.experiment.Experiment` calls the task
picked by :func:`task_for` and holds no task switch; a new task is one subclass added to
:data:`TASKS`.

Example::

    task = task_for(load_config("resnet3d-phantom"))
    train_loader, val_loader = task.loaders(train, val, fold=0)
    means, rows = task.evaluate([network], val)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from delira.training.builders import (
    build_transforms,
    check_augment_device,
    slice_axis,
)

__all__ = ["TASKS", "ClassificationTask", "GanTask", "SegmentationTask", "Task", "task_for"]


# --- helpers shared by the evaluations --------------------------------------------------------------
def _mean_std(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per key the mean and population std (ddof=0) of the finite numbers of ``rows`` (NaN: none)."""
    mean, std = {}, {}
    for key in keys:
        values = np.array(
            [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))], dtype=np.float64
        )
        values = values[np.isfinite(values)]
        mean[key] = float(values.mean()) if values.size else math.nan
        std[key] = float(values.std()) if values.size else math.nan
    return mean, std


def _case_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    """Dice of each foreground class of one case and their mean (absent classes left out)."""
    from delira.training.metrics import dice

    return {
        ("dice_mean" if k == "mean" else f"dice_{k}"): float(v)
        for k, v in dice(pred, target, num_classes).items()
    }


def _surface_figures(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], num_classes: int, tolerance_mm: float
) -> dict[str, float]:
    """HD95 (mm) and normalized surface Dice of each foreground class present in ``pred`` or ``ref``,
    and their means over those classes (undefined HD95s, one mask empty, left out of the mean)."""
    from delira.training.evaluation import evaluate_case

    present = [c for c in range(1, num_classes) if np.any(pred == c) or np.any(ref == c)]
    if not present:
        return {}
    per_class = evaluate_case(pred, ref, tuple(float(s) for s in spacing), present, tolerance_mm=tolerance_mm)
    out: dict[str, float] = {}
    for c in present:
        out[f"hd95_class_{c}"] = float(per_class[c]["hd95"])
        out[f"nsd_class_{c}"] = float(per_class[c]["nsd"])
    hd = [out[f"hd95_class_{c}"] for c in present if math.isfinite(out[f"hd95_class_{c}"])]
    out["hd95_mean"] = float(np.mean(hd)) if hd else math.nan
    out["nsd_mean"] = float(np.mean([out[f"nsd_class_{c}"] for c in present]))
    return out


def _region_figures(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    regions: Sequence[Sequence[int]],
    ignore_label: int | None,
    tolerance_mm: float,
) -> dict[str, float]:
    """Dice, HD95 and NSD of each region (``dice_region_<i>``, ``hd95_region_<i>``,
    ``nsd_region_<i>``, ``i`` the index in ``data.regions``) on the region masks of the painted
    prediction and of the reference labels (as nnU-Net's evaluation of region runs), voxels labelled
    ``ignore_label`` left out; the means over the regions (Dice of regions absent from both and
    undefined HD95s left out)."""
    from delira.training.evaluation import evaluate_case
    from delira.training.regions import labels_to_regions

    pred_masks, ref_masks = labels_to_regions(pred, regions), labels_to_regions(ref, regions)
    ignored = None if ignore_label is None else np.asarray(ref) == ignore_label
    out: dict[str, float] = {}
    sp = tuple(float(s) for s in spacing)
    for i, (p, r) in enumerate(zip(pred_masks, ref_masks)):
        p, r = p.astype(np.uint8), r.astype(np.uint8)
        if ignored is not None:  # 2: neither in nor out of the region, scored as no class
            p, r = np.where(ignored, 2, p).astype(np.uint8), np.where(ignored, 2, r).astype(np.uint8)
        if not p.any() and not r.any():
            out[f"dice_region_{i}"] = math.nan
            continue
        figures = evaluate_case(p, r, sp, [1], tolerance_mm=tolerance_mm)[1]
        out[f"dice_region_{i}"] = float(figures["dice"])
        out[f"hd95_region_{i}"] = float(figures["hd95"])
        out[f"nsd_region_{i}"] = float(figures["nsd"])
    for name in ("dice", "hd95", "nsd"):
        values = [v for key, v in out.items() if key.startswith(f"{name}_region_") and math.isfinite(v)]
        out[f"{name}_mean"] = float(np.mean(values)) if values else math.nan
    return out


def _save_validation(path: Path, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> None:
    """A validation prediction and its reference (original grid), for the postprocessing decision."""
    from delira.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez_compressed(
                fh,
                pred=pred.astype(np.uint8),
                ref=np.asarray(ref).astype(np.uint8),
                spacing=np.asarray(spacing),
            )

    atomic_write(path, write)


# --- transforms the tasks add -----------------------------------------------------------------------
class _SqueezeAxis:
    """2D training on 3D volumes: drop the 1-voxel slice axis of patch batches
    (``(N, C, x, y, z)`` with size 1 on ``axis`` -> ``(N, C, *two axes)``)."""

    def __init__(self, axis: int) -> None:
        self.axis = int(axis)

    def __call__(self, **batch: Any) -> dict[str, Any]:
        out = dict(batch)
        for key in ("data", "seg"):
            if key in out:
                value = np.asarray(out[key])
                if value.ndim == 5:
                    out[key] = np.ascontiguousarray(np.take(value, 0, axis=2 + self.axis))
        return out


class _ScaleToUnit:
    """GAN targets: each image min-max scaled to ``[-1, 1]`` (the generator's tanh range):
    ``data (N, C, *spatial)`` -> float32 of the same shape."""

    def __call__(self, **batch: Any) -> dict[str, Any]:
        data = batch["data"]
        if type(data).__module__.startswith("torch"):  # a device batch (data.augment_device: cuda)
            flat = data.float().flatten(1)
            shape = (-1,) + (1,) * (data.ndim - 1)
            lo, hi = flat.amin(1).view(shape), flat.amax(1).view(shape)
            return {**batch, "data": 2.0 * (data.float() - lo) / (hi - lo).clamp_min(1e-8) - 1.0}
        if not isinstance(data, np.ndarray) and hasattr(data, "numpy"):  # a TensorFlow tensor
            import tensorflow as tf

            axes = list(range(1, len(data.shape)))
            data = tf.cast(data, tf.float32)
            lo = tf.reduce_min(data, axis=axes, keepdims=True)
            hi = tf.reduce_max(data, axis=axes, keepdims=True)
            return {**batch, "data": 2.0 * (data - lo) / tf.maximum(hi - lo, 1e-8) - 1.0}
        data = np.asarray(data, dtype=np.float32)
        axes = tuple(range(1, data.ndim))
        lo, hi = data.min(axis=axes, keepdims=True), data.max(axis=axes, keepdims=True)
        return {**batch, "data": (2.0 * (data - lo) / np.maximum(hi - lo, 1e-8) - 1.0).astype(np.float32)}


# --- the strategies ---------------------------------------------------------------------------------
class Task:
    """The task-dependent part of an experiment, built from the resolved configuration.

    Subclasses set :attr:`name`, :attr:`default_monitor` and :attr:`phantom_task`, and implement
    :meth:`losses` and :meth:`evaluate`; the other methods have defaults that fit supervised tasks
    trained on whole volumes.

    Args:
        config: the resolved configuration (:func:`delira.training.config.load_config`).
    """

    #: the value of ``task`` in the configuration
    name: ClassVar[str] = ""
    #: ``(figure, "min" | "max")`` monitored for the best checkpoint unless ``training.monitor`` says
    default_monitor: ClassVar[tuple[str, str]] = ("val_loss", "min")
    #: the ``task`` of :class:`delira.data.SyntheticPhantomDataset` for phantom data
    phantom_task: ClassVar[str] = "segmentation"
    #: whether 2D training on slices of 3D volumes (``data.spatial_dims: 2``) is supported
    trains_on_slices: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self._caches: list[Any] = []  # the SmartCacheDatasets of loaders() not closed yet

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- training ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """``model.args.num_classes`` (default 2)."""
        return int(self.config["model"]["args"].get("num_classes", 2))

    def fold_seed(self, fold: int) -> int:
        """The seed of fold ``fold``: ``experiment.seed * 1000 + fold`` (weights, loaders, callbacks)."""
        return int(self.config["experiment"]["seed"]) * 1000 + int(fold)

    def losses(self, backend: str | None = None) -> dict[str, Any]:
        """The training losses ``{name: loss}`` in the argument order of ``backend`` (default the
        config's): torch ``loss(predictions, targets)``, Keras ``loss(targets, predictions)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define its losses")

    def training_metrics(self) -> dict[str, Any] | None:
        """Metrics the trainer computes per epoch (numpy callables), or None."""
        return None

    def monitor(self) -> tuple[str, str]:
        """``(figure, mode)`` for the best checkpoint: ``training.monitor``/``training.mode`` when set
        (a monitor without a mode is minimised), else :attr:`default_monitor`."""
        t = self.config["training"]
        monitor, mode = self.default_monitor
        return t["monitor"] or monitor, t["mode"] or (mode if not t["monitor"] else "min")

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one network input without the batch axis (builds Keras models before loading
        weights): ``(in_channels, *patch or phantom shape)``."""
        args = self.config["model"]["args"]
        size = self.config["data"]["patch_size"] or self.config["data"]["phantom"]["shape"]
        return (int(args.get("in_channels", 1)), *[int(s) for s in size])

    def transforms(self) -> list[Any]:
        """Transforms added after the augmentation for this task (called as ``t(**batch)``)."""
        return []

    def callbacks(self, fold_dir: Path | None, fold: int) -> list[Any]:
        """Per-epoch trainer callbacks of fold ``fold`` writing into ``fold_dir`` (None: no folder):
        :class:`~delira.training.schedules.LinearWarmup` for ``training.warmup_epochs`` (first, so
        that the others see the warmed-up rate) and :class:`~delira.training.callbacks.ModelEMA` for
        ``training.ema_decay``; subclasses add their own after these."""
        t = self.config["training"]
        out: list[Any] = []
        if t.get("warmup_epochs"):
            from delira.training.schedules import LinearWarmup

            out.append(LinearWarmup(float(t["warmup_epochs"])))
        if t.get("ema_decay") is not None:
            from delira.training.callbacks import ModelEMA

            out.append(ModelEMA(float(t["ema_decay"])))
        return out

    def class_weights(self) -> list[float] | None:
        """``training.loss_args.ce.class_weights`` (the cross-entropy's per-class weights), or None."""
        ce = (self.config["training"].get("loss_args") or {}).get("ce") or {}
        weights = ce.get("class_weights")
        return None if weights is None else [float(w) for w in weights]

    @property
    def augments_on_device(self) -> bool:
        """``data.augment_device: cuda``: the augmentation (and :meth:`transforms` after it) runs on
        the training batch on the GPU inside the trainer instead of in the loader."""
        return self.config["data"].get("augment_device", "cpu") == "cuda"

    def device_transforms(self, train: Any, fold: int) -> list[Any]:
        """The transforms the trainer applies to each training batch on the device: with
        ``data.augment_device: cuda`` the augmentation on delira.augment's CUDA executor, then
        :meth:`transforms`; otherwise none (they run in the loader).

        Raises:
            ConfigError: ``cuda`` on a machine where delira-augment cannot run on a GPU.
        """
        if not self.augments_on_device:
            return []
        check_augment_device(self.config)
        augment = build_transforms(
            self.config, self.train_shape(train), seed=self.fold_seed(fold), backend="cuda"
        )
        return [tr for tr in (augment, *self.transforms()) if tr is not None]

    def train_shape(self, data: Any) -> tuple[int, ...]:
        """The spatial shape of the training batches: ``data.patch_size``, else the first case's."""
        patch = self.config["data"]["patch_size"]
        if patch:
            return tuple(int(p) for p in patch)
        return tuple(np.asarray(data[0]["data"]).shape[1:])

    def loaders(self, train: Any, val: Any, fold: int) -> tuple[Any, Any]:
        """The train and validation loaders of fold ``fold``.

        Args:
            train, val: datasets (``__len__``, ``__getitem__`` -> sample dicts); ``val`` may be None.
            fold: the fold number (seeds the sampling and the augmentation).

        Returns:
            ``(train_loader, val_loader)``: ``delira.data.DataLoader`` objects; the validation loader
            has batches of one whole case, or is None.
        """
        cfg = self.config
        seed = self.fold_seed(fold)
        patch = cfg["data"]["patch_size"]
        if self.augments_on_device:
            transforms = []  # the trainer runs them on the device (device_transforms)
        else:
            augment = build_transforms(cfg, self.train_shape(train), seed=seed)
            transforms = [tr for tr in (augment, *self.transforms()) if tr is not None]
        axis = slice_axis(cfg)
        val_tf: list[Any] | None = None
        if axis is not None:
            if not patch or not self.trains_on_slices:
                raise ValueError(
                    "data.spatial_dims: 2 on 3D volumes trains on 2D patches of slices; set data.patch_size "
                    "to 2 sizes (e.g. [192, 160], as `delira plan` does)"
                )
            squeeze = _SqueezeAxis(axis)
            transforms = [squeeze, *transforms]
            val_tf = [squeeze]
            patch = [int(p) for p in patch]
            patch.insert(axis, 1)  # a slice: 1 voxel thick along the slice axis
        try:
            return self._build_loaders(train, val, transforms, val_tf, patch, seed)
        except BaseException:  # e.g. a loader refused after its cache was made: free the cache
            self.close_loaders()
            raise

    # -- the partial rotating cache (data.cache_rate) ----------------------------------------------
    def _training_cache(self, train: Any, seed: int) -> Any:
        """``data.cache_rate``: the fold's training cases ``train`` behind a
        :class:`~delira.data.SmartCacheDataset` (``cache_rate`` of them in shared memory, rotated by
        ``data.cache_replace_rate`` per epoch in a ring seeded by the fold seed ``seed``); None
        without a cache. Validation is never cached. The cache is closed by :meth:`close_loaders`.

        Raises:
            ConfigError: a distributed job (more than one rank), which the cache does not support.
        """
        data = self.config["data"]
        if data.get("cache_rate") is None:
            return None
        from delira.training.distributed import get_world_size

        world = get_world_size()
        if world > 1:
            from delira.training.config import ConfigError

            raise ConfigError(
                [
                    f"data.cache_rate: {data['cache_rate']} is not supported in distributed training (this job "
                    f"has {world} ranks: each would hold its own full copy of the epoch's cache, {world} times "
                    "the memory, though it reads only its share of the keys); set data.cache_rate: null, or "
                    "train on one process"
                ]
            )
        from delira.data import SmartCacheDataset

        workers = int(self.config["training"]["workers"])
        cache = SmartCacheDataset(
            train,
            cache_rate=float(data["cache_rate"]),
            replace_rate=float(data.get("cache_replace_rate", 0.1)),
            seed=seed,
            num_init_workers=min(workers, 4),
            num_replace_workers=1,
        )
        self._caches.append(cache)
        return cache

    def close_loaders(self, *loaders: Any) -> None:
        """Stop the workers of ``loaders`` (those of :meth:`loaders`; None skipped) and close the
        training caches (``data.cache_rate``) made since the last call, freeing their shared memory.
        Idempotent; call it when the fold's training ends, also on an error or an interrupt."""
        try:
            for loader in loaders:
                if loader is not None and hasattr(loader, "close"):
                    loader.close()
        finally:
            caches, self._caches = self._caches, []
            for cache in caches:
                cache.close()

    def _build_loaders(
        self,
        train: Any,
        val: Any,
        transforms: list[Any],
        val_tf: list[Any] | None,
        patch: Any,
        seed: int,
    ) -> tuple[Any, Any]:
        """Whole-volume loaders: shuffled training batches, validation batches of one case.

        With ``data.cache_rate`` the training batches come from the cache
        (:meth:`_training_cache`): an epoch still has ``len(train)`` samples, drawn from the cases
        cached that epoch (the cache's permutations repeated), and the workers are persistent
        (started once; they read each epoch's replacements from shared memory).
        """
        from delira.data import DataLoader

        t = self.config["training"]
        cache = self._training_cache(train, seed)
        if cache is not None:
            train_loader = DataLoader(
                cache,
                t["batch_size"],
                sampler=cache.sampler(shuffle=True, num_samples=len(train), seed=seed),
                transforms=transforms or None,
                num_workers=t["workers"],
                seed=seed,
                drop_last=len(train) > t["batch_size"],
                persistent_workers=t["workers"] > 0,
            )
        else:
            train_loader = DataLoader(
                train,
                t["batch_size"],
                transforms=transforms or None,
                num_workers=t["workers"],
                seed=seed,
                shuffle=True,
                drop_last=len(train) > t["batch_size"],
            )
        val_loader = (
            DataLoader(val, 1, transforms=None, num_workers=0, seed=seed) if val is not None else None
        )
        return train_loader, val_loader

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None, save_dir: Path | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Figures of ``networks`` (an ensemble, in evaluation mode) on every case of ``data``.

        Args:
            networks: trained networks of the config's backend.
            data: a dataset of sample dicts.
            trainer: the trainer that trained them (its history), or None.
            save_dir: the fold folder (where files of the evaluation may go), or None.

        Returns:
            ``(means, rows)``: ``{figure: float}`` and one ``{"case_id": str, figure: value}`` per case.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define its evaluation")


class SegmentationTask(Task):
    """Voxel-wise classes: the sum of ``training.loss`` (cross-entropy, soft Dice, focal, Tversky;
    ``training.loss_args``; with ``model.args.deep_supervision`` weighted over the outputs as
    nnU-Net), Dice per epoch,
    patch loaders with foreground oversampling (``data.patch_size``), evaluation by Dice, HD95 and
    normalized surface Dice per class on each case's original grid."""

    name = "segmentation"
    default_monitor = ("val_dice", "max")
    phantom_task = "segmentation"
    trains_on_slices = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._raw: Any = None
        self._raw_index: dict[str, int] = {}

    def losses(self, backend: str | None = None) -> dict[str, Any]:
        """The losses of ``training.loss`` with ``training.loss_args``
        (:func:`delira.training.losses.segmentation_losses`), in the order named; with
        ``model.args.deep_supervision`` each is a :class:`~delira.training.losses.DeepSupervisionLoss`
        over the UNet's outputs (nnU-Net's weights ``1 / 2**k`` normalised, the lowest resolution
        left out; labels subsampled by the UNet's cumulative strides)."""
        from delira.training.losses import segmentation_losses

        t = self.config["training"]
        return segmentation_losses(
            t["loss"],
            backend or self.config["backend"],
            self.num_classes,
            t.get("loss_args") or {},
            deep_supervision_strides=self._deep_supervision_strides(),
            regions=self.config["data"].get("regions"),
            ignore_label=self.config["data"].get("ignore_label"),
        )

    def loaders(self, train: Any, val: Any, fold: int) -> tuple[Any, Any]:
        """:meth:`Task.loaders`, after checking ``data.regions`` against the dataset's label values
        where it declares them (an MSD dataset's ``declared_labels``, through subsets)."""
        self.check_dataset_labels(train)
        return super().loaders(train, val, fold)

    def check_dataset_labels(self, data: Any) -> None:
        """Raise ValueError when a region of ``data.regions`` holds a label value that the dataset
        does not declare (``declared_labels`` or the keys of ``label_names``, found on ``data`` or
        the datasets it wraps, else for ``data.kind: decathlon`` on the MSD folder's dataset); nothing
        to check for datasets that do not declare their labels."""
        regions = self.config["data"].get("regions")
        declared, node = None, data
        for _ in range(6):  # Subset -> cache -> preprocessed -> the format's dataset
            declared = getattr(node, "declared_labels", None) or getattr(node, "label_names", None)
            if declared is not None or node is None:
                break
            node = getattr(node, "dataset", None) or getattr(node, "source", None)
        if regions is None:
            return
        if declared is None and self.config["data"]["kind"] == "decathlon":
            raw = self._raw_dataset()  # preprocessed cases keep no link to the MSD folder's labels
            declared = getattr(raw, "declared_labels", None) or getattr(raw, "label_names", None)
        if declared is None:
            return
        from delira.training.regions import check_regions

        labels = [int(v) for v in declared if int(v) != 0]
        problems = check_regions(regions, self.config["data"].get("regions_order"), labels)
        if problems:
            raise ValueError("; ".join(problems))

    def _deep_supervision_strides(self) -> list[tuple[int, ...]] | None:
        """Per UNet output, how much smaller than the input it is per axis; None without deep supervision."""
        model = self.config["model"]
        args = dict(model["args"])
        if not args.get("deep_supervision"):
            return None
        from delira.models.configs import UNetConfig

        return [tuple(s) for s in UNetConfig(**args).cumulative_strides]

    def training_metrics(self) -> dict[str, Any] | None:
        from delira.training.metrics import segmentation_metric

        data = self.config["data"]
        return {
            "dice": segmentation_metric(
                "dice",
                self.num_classes,
                regions=data.get("regions"),
                regions_order=self.label_values if data.get("regions") is not None else None,
                ignore_label=data.get("ignore_label"),
            )
        }

    @property
    def label_values(self) -> list[int]:
        """The foreground labels the predictions hold: ``1 .. num_classes - 1``, or for a region run
        (``data.regions``) the labels the regions paint (``data.regions_order``), in region order."""
        from delira.training.prediction import regions_of

        regions = regions_of(self.config)
        return list(range(1, self.num_classes)) if regions is None else regions[1]

    def _build_loaders(
        self,
        train: Any,
        val: Any,
        transforms: list[Any],
        val_tf: list[Any] | None,
        patch: Any,
        seed: int,
    ) -> tuple[Any, Any]:
        """Patches with foreground oversampling (``data.patch_size``), else whole volumes.

        With ``data.cache_rate`` the cases of the patches are drawn uniformly with replacement from
        the cases cached that epoch (:meth:`Task._training_cache`'s sampler as the base of the
        :class:`~delira.data.ForegroundOversamplingSampler`) instead of from all training cases; the
        foreground share of each batch and the number of batches per epoch are unchanged.
        """
        if not patch:
            return super()._build_loaders(train, val, transforms, val_tf, patch, seed)
        from delira.data import DataLoader, ForegroundOversamplingSampler, PatchDataset

        cfg, t = self.config, self.config["training"]
        per_epoch = cfg["data"]["batches_per_epoch"] or max(len(train) // t["batch_size"], 1)
        cache = self._training_cache(train, seed)
        base = train
        if cache is not None:
            base = cache.sampler(
                shuffle=True, replacement=True, num_samples=per_epoch * t["batch_size"], seed=seed
            )
        sampler = ForegroundOversamplingSampler(
            base,
            t["batch_size"],
            cfg["data"]["foreground_fraction"],
            num_samples=per_epoch * t["batch_size"],
            seed=seed,
        )
        train_loader = DataLoader(
            PatchDataset(
                train if cache is None else cache, patch, ignore_label=cfg["data"].get("ignore_label")
            ),
            t["batch_size"],
            sampler=sampler,
            transforms=transforms or None,
            num_workers=t["workers"],
            seed=seed,
            persistent_workers=cache is not None and t["workers"] > 0,
        )
        val_loader = (
            DataLoader(PatchDataset(val, patch), 1, transforms=val_tf, num_workers=0, seed=seed)
            if val is not None
            else None
        )
        return train_loader, val_loader

    def _raw_dataset(self) -> Any:
        """The unpreprocessed MSD dataset (reference labels on the original grid), or None."""
        if self.config["data"]["kind"] != "decathlon":
            return None
        if self._raw is None:
            from delira.data import DecathlonDataset, case_ids_of

            self._raw = DecathlonDataset(self.config["data"]["path"])
            self._raw_index = {str(c): i for i, c in enumerate(case_ids_of(self._raw))}
        return self._raw

    def evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None, save_dir: Path | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Dice, HD95 and normalized surface Dice (``evaluation.tolerance_mm``) per class, on the
        original grid and spacing of each case (``evaluation.original_grid``: the probabilities are
        resampled back and un-cropped, the reference is the label file as read); with ``save_dir``
        the predictions and references go to ``save_dir/validation/<case>.npz`` for the
        postprocessing decision of :func:`~delira.training.experiment.aggregate`."""
        from delira.training.prediction import invert_output, predict_probabilities, probabilities_to_labels

        cfg = self.config
        k = self.num_classes
        regions, ignore = cfg["data"].get("regions"), cfg["data"].get("ignore_label")
        raw = self._raw_dataset() if cfg["evaluation"]["original_grid"] else None
        rows = []
        for i in range(len(data)):
            sample = data[i]
            case_id = str(sample.get("case_id", i))
            probs = predict_probabilities(networks, np.asarray(sample["data"], dtype=np.float32), cfg)
            properties = sample.get("properties")
            if raw is not None and properties is not None and case_id in self._raw_index:
                probs = invert_output(probs, properties, cfg)
                reference = raw[self._raw_index[case_id]]
                ref, spacing = np.asarray(reference["seg"])[0], reference["spacing"]
            else:
                ref = np.asarray(sample["seg"])[0]
                spacing = sample.get("spacing", (1.0,) * ref.ndim)
            pred = probabilities_to_labels(probs, cfg)
            if ignore is not None:  # unannotated voxels: the ignore label in both, scored as no class
                pred = np.where(np.asarray(ref) == ignore, ignore, pred).astype(np.uint8)
            if regions is not None:
                row = {"case_id": case_id}
                row.update(
                    _region_figures(pred, ref, spacing, regions, ignore, cfg["evaluation"]["tolerance_mm"])
                )
            else:
                row = {"case_id": case_id, **_case_dice(pred, ref, k)}
                row.update(_surface_figures(pred, ref, spacing, k, cfg["evaluation"]["tolerance_mm"]))
            rows.append(row)
            if save_dir is not None:
                _save_validation(save_dir / "validation" / f"{case_id}.npz", pred, ref, spacing)
        keys = [key for key in rows[0] if key != "case_id"]
        for row in rows[1:]:
            keys += [key for key in row if key not in keys and key != "case_id"]
        return _mean_std(rows, keys)[0], rows


class ClassificationTask(Task):
    """One label per case: cross-entropy (``training.loss_args.ce.class_weights``), accuracy per
    epoch, whole-volume loaders, evaluation by the accuracy of the ensemble's mean logits (per case:
    label and predicted class)."""

    name = "classification"
    default_monitor = ("val_accuracy", "max")
    phantom_task = "classification"

    def losses(self, backend: str | None = None) -> dict[str, Any]:
        from delira.training.losses import make_loss

        weights = self.class_weights()
        args = {} if weights is None else {"class_weights": weights}
        return {"ce": make_loss("ce", backend or self.config["backend"], **args)}

    def training_metrics(self) -> dict[str, Any] | None:
        from delira.training.metrics import classification_metric

        return {"accuracy": classification_metric("accuracy")}

    def evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None, save_dir: Path | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """``({"accuracy": float}, [{"case_id", "label", "predicted"}, ...])``: the predicted class is
        the argmax of the networks' logits ``(K,)`` averaged over the ensemble
        (:meth:`delira.training.predictor.Predictor.forward` on each ``(1, C, *spatial)`` case)."""
        from delira.training.predictor import Predictor

        predictors = [Predictor(net) for net in networks]
        rows = []
        for i in range(len(data)):
            sample = data[i]
            batch = np.asarray(sample["data"], np.float32)[None]
            logits = np.mean([p.forward(batch)[0] for p in predictors], axis=0)
            rows.append(
                {
                    "case_id": sample.get("case_id", str(i)),
                    "label": int(sample["label"]),
                    "predicted": int(np.argmax(logits)),
                }
            )
        accuracy = float(np.mean([r["label"] == r["predicted"] for r in rows]))
        return {"accuracy": accuracy}, rows


class GanTask(Task):
    """A generator against a discriminator: the adversarial loss, images scaled to ``[-1, 1]``, no
    validation loader (checkpoints follow the training loss), a grid of generated samples per epoch
    (``<fold>/samples/samples_epoch_<e>.png``) and the last epoch's training losses as its figures."""

    name = "gan"
    default_monitor = ("train_loss", "min")
    phantom_task = "segmentation"
    #: images in the per-epoch sample grid
    num_samples: ClassVar[int] = 16

    def losses(self, backend: str | None = None) -> dict[str, Any]:
        backend = backend or self.config["backend"]
        if backend == "torch":
            import torch

            return {"adversarial": torch.nn.BCEWithLogitsLoss()}
        import keras

        return {"adversarial": keras.losses.BinaryCrossentropy(from_logits=True)}

    def input_shape(self) -> tuple[int, ...]:
        """``(latent_dim,)``: the generator's input."""
        return (int(self.config["model"]["args"].get("latent_dim", 100)),)

    def transforms(self) -> list[Any]:
        return [_ScaleToUnit()]

    def callbacks(self, fold_dir: Path | None, fold: int) -> list[Any]:
        """The common ones (:meth:`Task.callbacks`), then
        :class:`~delira.training.callbacks.GanSampleGrid` into ``fold_dir/samples`` (seeded by the
        fold's seed; none without a folder)."""
        common = super().callbacks(fold_dir, fold)
        if fold_dir is None:
            return common
        from delira.training.callbacks import GanSampleGrid

        return [
            *common,
            GanSampleGrid(
                folder=Path(fold_dir) / "samples", num_samples=self.num_samples, seed=self.fold_seed(fold)
            ),
        ]

    def _build_loaders(
        self,
        train: Any,
        val: Any,
        transforms: list[Any],
        val_tf: list[Any] | None,
        patch: Any,
        seed: int,
    ) -> tuple[Any, Any]:
        train_loader, _ = super()._build_loaders(train, None, transforms, None, patch, seed)
        return train_loader, None  # a GAN has no validation loss; checkpoints follow the training loss

    def evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None, save_dir: Path | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The ``train_*`` figures of the trainer's last epoch (no per-case rows); ``({}, [])``
        without a trainer (e.g. :meth:`Experiment.test`)."""
        history = trainer.history if trainer is not None else []
        last = history[-1] if history else {}
        return {k: float(v) for k, v in last.items() if k.startswith("train_")}, []


#: the task classes by the config's ``task`` value; a new task is one class added here
TASKS: dict[str, type[Task]] = {
    SegmentationTask.name: SegmentationTask,
    ClassificationTask.name: ClassificationTask,
    GanTask.name: GanTask,
}


def task_for(config: Mapping[str, Any]) -> Task:
    """The :class:`Task` of ``config["task"]`` (a resolved configuration).

    Raises:
        ValueError: the config names a task not in :data:`TASKS`.
    """
    name = config.get("task", "segmentation")
    try:
        cls = TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"task {name!r} is not known; set task to one of {sorted(TASKS)} (or register a Task subclass "
            "in delira.training.tasks.TASKS)"
        ) from None
    return cls(config)
