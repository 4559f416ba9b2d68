"""``Experiment``: cross-validated training from a config, written to one experiment folder.

The folder (``experiment.output/<name>-<timestamp>`` unless given) holds::

    config.yaml            the resolved configuration
    splits.json            the folds (delira.data format), reused on resume
    augmentation.png       a preview of the training augmentation (with matplotlib)
    fold_<k>/              the trainer's checkpoints/{best,last}.safetensors, metrics.csv,
                           tensorboard/, curves.png; then result.json (the fold's figures) and
                           cases.csv (per-case figures) once the fold is finished
    summary.json/.csv      per-fold figures, their mean and (population, ddof=0) std

A fold is finished when its ``result.json`` exists (written atomically, last): a rerun skips it.
An unfinished fold continues from ``checkpoints/last.safetensors``. Folds can run apart
(``folds=[k]``, e.g. one per machine) and :func:`aggregate` summarises them afterwards.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from delira.training.config import dump_config, load_config

__all__ = [
    "Experiment",
    "aggregate",
    "build_dataset",
    "build_network",
    "build_transforms",
    "format_table",
    "load_run_networks",
    "predict_file",
]

# The canonical augmentation (delira.augment.bench.delira_pipeline) with per-sample probabilities
# as nnU-Net applies them, so that a small network on small volumes still sees mostly clean data.
_ROTATION = (-30.0, 30.0)
_SCALE = (0.85, 1.25)
_ELASTIC_ALPHA = (0.0, 200.0)
_ELASTIC_SIGMA = (9.0, 13.0)


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temporary file, then ``os.replace``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> None:
    """Write ``rows`` (dicts) as CSV atomically; columns: ``first``, then the other keys in order."""
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})
    os.replace(tmp, path)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return value


# --- building blocks from the config ---------------------------------------------------------------
def build_transforms(config: Mapping[str, Any], spatial_shape: Sequence[int], seed: int = 0) -> Any:
    """The training augmentation named by ``data.transforms``.

    Args:
        config: the resolved configuration.
        spatial_shape: the spatial shape of the training batches (whole volumes or patches).
        seed: the transforms' own seed (the loader passes a per-batch ``rng`` anyway).

    Returns:
        A ``delira.augment`` transform called as ``t(**batch, rng=...)`` on batches
        ``{"data": (N, C, *spatial) float32, "seg": (N, 1, *spatial) int}``, or None.
    """
    kind = config["data"]["transforms"]
    if kind == "none":
        return None
    import delira.augment as da

    axes = tuple(range(len(spatial_shape)))
    mirror = da.Mirror(axes, p_per_axis=0.5)
    if kind == "mirror":
        return da.Compose([mirror], seed=seed)
    spatial = da.SpatialTransform(
        tuple(int(s) for s in spatial_shape),
        rotation=_ROTATION,
        scale=_SCALE,
        elastic_alpha=_ELASTIC_ALPHA,
        elastic_sigma=_ELASTIC_SIGMA,
        p_rotation=0.3,
        p_scale=0.3,
        p_elastic=0.2,
        order_data=1,
        order_seg=0,
        mode_data="constant",
        mode_seg="constant",
    )
    intensity = [
        da.GaussianNoise(std=(0.0, 0.01)),
        da.BrightnessMultiplicative((0.9, 1.1)),
        da.Gamma((0.8, 1.25), retain_stats=True),
    ]
    return da.Compose([spatial, *intensity, mirror], seed=seed)


class _ScaleToUnit:
    """GAN targets: each image min-max scaled to ``[-1, 1]`` (the generator's tanh range)."""

    def __call__(self, **batch: Any) -> dict[str, Any]:
        data = np.asarray(batch["data"], dtype=np.float32)
        axes = tuple(range(1, data.ndim))
        lo, hi = data.min(axis=axes, keepdims=True), data.max(axis=axes, keepdims=True)
        return {**batch, "data": (2.0 * (data - lo) / np.maximum(hi - lo, 1e-8) - 1.0).astype(np.float32)}


def build_dataset(config: Mapping[str, Any]) -> Any:
    """The dataset named by ``data`` (``phantom`` or ``decathlon``) as a ``delira.data`` dataset.

    Samples: ``{"data": float32 (C, *spatial), "seg": int16 (1, *spatial) | "label": int,
    "case_id": str, ...}``; the dataset has ``case_ids``.
    """
    from delira.data import (
        CacheDataset,
        DecathlonDataset,
        PreprocessedDataset,
        Preprocessor,
        SyntheticPhantomDataset,
    )

    data, task = config["data"], config["task"]
    if data["kind"] == "phantom":
        p = data["phantom"]
        return SyntheticPhantomDataset(
            num_cases=p["num_cases"],
            shape=tuple(p["shape"]),
            num_classes=p["num_classes"],
            task="classification" if task == "classification" else "segmentation",
            seed=p["seed"],
            noise_std=p["noise_std"],
        )
    raw = DecathlonDataset(data["path"])
    pre = data["preprocessing"]
    spacing = pre["target_spacing"]
    if spacing is None and pre["normalization"] == "none":
        return CacheDataset(raw)
    if isinstance(spacing, (int, float)):
        spacing = [float(spacing)] * 3
    cache = pre["cache_dir"] or str(Path(config["experiment"]["output"]) / "cache")
    preprocessor = Preprocessor(
        target_spacing=spacing, normalization=pre["normalization"], seed=config["experiment"]["seed"]
    )
    return PreprocessedDataset(raw, preprocessor, cache_dir=cache)


class _TorchSoftDice:
    """Soft Dice loss of the foreground classes (batch Dice, as nnU-Net): ``1 - mean_k D_k`` with
    ``D_k = (2 sum p_k t_k + 1) / (sum p_k + sum t_k + 1)`` over the batch and all voxels.

    Called as ``loss(logits (N, K, *spatial) float, labels (N, *spatial) int64)`` -> scalar tensor.
    """

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        probs = torch.softmax(logits.float(), dim=1)[:, 1:]
        onehot = (
            torch.nn.functional.one_hot(labels.long(), logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
        )
        axes = [0, *range(2, probs.dim())]
        intersection = (probs * onehot).sum(axes)
        total = probs.sum(axes) + onehot.sum(axes)
        return 1.0 - ((2.0 * intersection + 1.0) / (total + 1.0)).mean()


class _KerasSoftDice:
    """The soft Dice loss of :class:`_TorchSoftDice` in Keras' argument order:
    ``loss(labels (N, *spatial) int, logits (N, K, *spatial) float)`` -> scalar."""

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        k = logits.shape[1]
        probs = ops.softmax(ops.cast(logits, "float32"), axis=1)[:, 1:]
        onehot = ops.moveaxis(ops.one_hot(ops.cast(labels, "int32"), k), -1, 1)[:, 1:]
        axes = [0, *range(2, len(probs.shape))]
        intersection = ops.sum(probs * onehot, axis=axes)
        total = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes)
        return 1.0 - ops.mean((2.0 * intersection + 1.0) / (total + 1.0))


def _losses(config: Mapping[str, Any]) -> dict[str, Any]:
    """The training losses: cross-entropy (+ soft Dice for segmentation, ``training.loss``) or the
    adversarial loss of a GAN, in the backend's argument order."""
    task, backend, choice = config["task"], config["backend"], config["training"]["loss"]
    if backend == "torch":
        import torch

        if task == "gan":
            return {"adversarial": torch.nn.BCEWithLogitsLoss()}
        ce: Any = torch.nn.CrossEntropyLoss()
        dice: Any = _TorchSoftDice()
    else:
        import keras

        if task == "gan":
            return {"adversarial": keras.losses.BinaryCrossentropy(from_logits=True)}
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if task == "segmentation":
            from delira.models.tf import channels_first

            ce = channels_first(ce)
        dice = _KerasSoftDice()
    if task != "segmentation":
        return {"ce": ce}
    return {name: fn for name, fn in (("ce", ce), ("dice", dice)) if name in choice.split("+")}


def _num_classes(config: Mapping[str, Any]) -> int:
    return int(config["model"]["args"].get("num_classes", 2))


def _training_metrics(config: Mapping[str, Any]) -> dict[str, Any] | None:
    from delira.training.metrics import classification_metric, segmentation_metric

    if config["task"] == "segmentation":
        return {"dice": segmentation_metric("dice", _num_classes(config))}
    if config["task"] == "classification":
        return {"accuracy": classification_metric("accuracy")}
    return None


def _monitor(config: Mapping[str, Any]) -> tuple[str, str]:
    t = config["training"]
    default = {
        "segmentation": ("val_dice", "max"),
        "classification": ("val_accuracy", "max"),
        "gan": ("train_loss", "min"),
    }
    monitor, mode = default[config["task"]]
    return t["monitor"] or monitor, t["mode"] or (mode if not t["monitor"] else "min")


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


def _predict_probabilities(
    networks: Sequence[Any], volume: np.ndarray, patch_size: Sequence[int] | None
) -> np.ndarray:
    """Class probabilities ``(K, *spatial)`` float32 of a ``(C, *spatial)`` volume, averaged over
    ``networks`` (the fold ensemble; each network's softmax, sliding windows of ``patch_size``)."""
    from delira.training.predictor import Predictor

    window = tuple(int(p) for p in patch_size) if patch_size else None
    total = None
    for net in networks:
        probs = np.asarray(Predictor(net, patch_size=window, overlap=0.5).predict(volume), dtype=np.float32)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(networks)


def _case_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    """Dice of each foreground class of one case and their mean (absent classes left out)."""
    from delira.training.metrics import dice

    return {
        ("dice_mean" if k == "mean" else f"dice_{k}"): float(v)
        for k, v in dice(pred, target, num_classes).items()
    }


def _mean_std(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    mean, std = {}, {}
    for key in keys:
        values = np.array(
            [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))], dtype=np.float64
        )
        values = values[np.isfinite(values)]
        mean[key] = float(values.mean()) if values.size else math.nan
        std[key] = float(values.std()) if values.size else math.nan
    return mean, std


def format_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], label: str = "fold") -> str:
    """A plain-text table: one row per ``rows`` entry (``label`` column first), numbers to 4 places."""
    header = [label, *keys]
    body = [
        [str(r.get(label, ""))]
        + [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(b) for b in body)])


def aggregate(run_dir: str | os.PathLike[str], quiet: bool = False) -> dict[str, Any]:
    """Summarise the finished folds of ``run_dir``: ``summary.json`` and ``summary.csv``.

    Reads every ``fold_<k>/result.json``; for every numeric figure of the folds it computes the
    mean and the population standard deviation (``numpy.std``, ddof=0; NaN figures left out) over
    the folds. Prints the table unless ``quiet``.

    Returns:
        ``{"folds": [{"fold": k, <figure>: float, ...}], "mean": {...}, "std": {...},
        "missing": [k, ...]}`` (``missing``: folds of ``splits.json`` without a result).

    Raises:
        FileNotFoundError: no finished fold in ``run_dir``.
    """
    run_dir = Path(run_dir)
    results = []
    for path in sorted(run_dir.glob("fold_*/result.json"), key=lambda p: int(p.parent.name.split("_")[1])):
        results.append(json.loads(path.read_text()))
    if not results:
        raise FileNotFoundError(
            f"{run_dir} holds no finished fold (fold_<k>/result.json); run the folds first with "
            f"`delira run --resume {run_dir}` (or `--fold k` per machine)"
        )
    rows = [{"fold": r["fold"], **r["metrics"]} for r in results]
    keys = [k for k in rows[0] if k != "fold"]
    mean, std = _mean_std(rows, keys)
    expected: list[int] = []
    if (run_dir / "splits.json").exists():
        expected = list(range(len(json.loads((run_dir / "splits.json").read_text())["folds"])))
    missing = [k for k in expected if k not in {r["fold"] for r in results}]
    summary = {"folds": rows, "mean": mean, "std": std, "missing": missing}
    _write_json(run_dir / "summary.json", summary)
    _write_csv(
        run_dir / "summary.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}], first=["fold"]
    )
    if not quiet:
        print(format_table([*rows, {"fold": "mean", **mean}, {"fold": "std", **std}], keys))
        if missing:
            print(f"folds not finished yet: {missing} (the mean and std cover the finished ones)")
        print(f"summary: {run_dir / 'summary.json'}")
    return summary


def load_run_networks(
    run_dir: str | os.PathLike[str], folds: Sequence[int] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """The configuration and the best network of each finished fold of an experiment folder.

    Returns:
        ``(config, networks)``: the networks in evaluation mode, best checkpoint weights loaded.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` or no fold checkpoint.
    """
    from delira.io import load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(
            f"{run_dir} is not an experiment folder (no config.yaml); pass the folder `delira run` wrote"
        )
    config = load_config(run_dir / "config.yaml")
    paths = []
    for fold_dir in sorted(run_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1])):
        if folds is not None and int(fold_dir.name.split("_")[1]) not in folds:
            continue
        ckpt = fold_dir / "checkpoints" / "best.safetensors"
        if not ckpt.exists():
            ckpt = fold_dir / "checkpoints" / "last.safetensors"
        if ckpt.exists():
            paths.append(ckpt)
    if (run_dir / "run" / "checkpoints" / "best.safetensors").exists():
        paths.append(run_dir / "run" / "checkpoints" / "best.safetensors")
    if not paths:
        raise FileNotFoundError(
            f"{run_dir} holds no checkpoint (fold_<k>/checkpoints/best.safetensors); train first"
        )
    networks = []
    for path in paths:
        net = build_network(config)
        _build(net, config)
        load_checkpoint(path, net, restore_rng=False)
        _eval_mode(net, config["backend"])
        networks.append(net)
    return config, networks


def _build(net: Any, config: Mapping[str, Any]) -> None:
    """Keras models need their weights created before loading; torch modules already have them."""
    if config["backend"] == "tf" and not net.built:
        shape = _input_shape(config)
        net(np.zeros((1, *shape), dtype=np.float32))


def _input_shape(config: Mapping[str, Any]) -> tuple[int, ...]:
    args = config["model"]["args"]
    if config["task"] == "gan":
        return (int(args.get("latent_dim", 100)),)
    size = config["data"]["patch_size"] or config["data"]["phantom"]["shape"]
    return (int(args.get("in_channels", 1)), *[int(s) for s in size])


def _eval_mode(net: Any, backend: str) -> None:
    if backend == "torch":
        net.eval()


# --- the experiment -------------------------------------------------------------------------------
class Experiment:
    """Train and evaluate a model from a configuration, in a cross-validation scheme.

    Args:
        config: a path to a YAML file, a mapping, the name of a shipped config or None (the
            built-in default: a small 3D UNet on synthetic phantoms).
        run_dir: the experiment folder; default ``<experiment.output>/<name>-<UTC timestamp>``.
            An existing folder with a ``config.yaml`` is resumed (its config must match).
        overrides: ``"a.b=value"`` strings applied on top of the config.
        verbose: progress bars and the printed summary.

    Example::

        exp = Experiment("unet3d-phantom.yaml", overrides=["training.epochs=5"])
        summary = exp.kfold(exp.dataset(), n_splits=3)
        summary["mean"]["dice_mean"]
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        overrides: Sequence[str] = (),
        verbose: bool = True,
    ) -> None:
        self.config = load_config(config, overrides)
        if run_dir is None:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
            run_dir = Path(self.config["experiment"]["output"]) / f"{self.config['name']}-{stamp}"
        self.run_dir = Path(run_dir)
        self.verbose = verbose
        self._check_resumed_config()

    def _check_resumed_config(self) -> None:
        path = self.run_dir / "config.yaml"
        if path.exists():
            saved = load_config(path)
            diff = [d for d in _differences(saved, self.config) if not d.startswith(_MACHINE_KEYS)]
            if diff:
                raise ValueError(
                    f"{self.run_dir} was started with another configuration (differences: {', '.join(diff)}); "
                    f"resume it with its own config (`delira run --resume {self.run_dir}`) or choose a new folder"
                )

    def _log(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    # -- data ---------------------------------------------------------------------------------------
    def dataset(self) -> Any:
        """The dataset of the config (see :func:`build_dataset`)."""
        return build_dataset(self.config)

    def _train_shape(self, data: Any) -> tuple[int, ...]:
        patch = self.config["data"]["patch_size"]
        if patch:
            return tuple(int(p) for p in patch)
        shape = tuple(np.asarray(data[0]["data"]).shape[1:])
        return shape

    def _loaders(self, train: Any, val: Any, fold: int) -> tuple[Any, Any]:
        from delira.data import DataLoader, ForegroundOversamplingSampler, PatchDataset

        cfg, t = self.config, self.config["training"]
        seed = cfg["experiment"]["seed"] * 1000 + fold
        patch = cfg["data"]["patch_size"]
        augment = build_transforms(cfg, self._train_shape(train), seed=seed)
        transforms = [
            tr for tr in (augment, _ScaleToUnit() if cfg["task"] == "gan" else None) if tr is not None
        ]
        if patch and cfg["task"] == "segmentation":
            per_epoch = cfg["data"]["batches_per_epoch"] or max(len(train) // t["batch_size"], 1)
            sampler = ForegroundOversamplingSampler(
                train,
                t["batch_size"],
                cfg["data"]["foreground_fraction"],
                num_samples=per_epoch * t["batch_size"],
                seed=seed,
            )
            train_loader = DataLoader(
                PatchDataset(train, patch),
                t["batch_size"],
                sampler=sampler,
                transforms=transforms or None,
                num_workers=t["workers"],
                seed=seed,
            )
            val_loader = (
                DataLoader(PatchDataset(val, patch), 1, num_workers=0, seed=seed) if val is not None else None
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
            val_tf = [_ScaleToUnit()] if cfg["task"] == "gan" else None
            val_loader = (
                DataLoader(val, 1, transforms=val_tf, num_workers=0, seed=seed) if val is not None else None
            )
        if cfg["task"] == "gan":
            val_loader = None  # a GAN has no validation loss; checkpoints follow the training loss
        return train_loader, val_loader

    def _trainer(self, save_dir: Path | None, fold: int) -> Any:
        from delira.training.seed import seed_everything

        cfg, t = self.config, self.config["training"]
        monitor, mode = _monitor(cfg)
        seed = cfg["experiment"]["seed"] * 1000 + fold
        # the initial weights depend on the seed only (the trainer seeds again when fit starts)
        seed_everything(seed, frameworks=("torch",) if cfg["backend"] == "torch" else ("tensorflow",))
        network = build_network(cfg)
        kwargs = {"weight_decay": t["weight_decay"]} if t["weight_decay"] else None
        return _trainer_class(cfg["backend"])(
            network,
            losses=_losses(cfg),
            optimizer=t["optimizer"],
            lr=t["lr"],
            optimizer_kwargs=kwargs,
            scheduler=t["schedule"],
            metrics=_training_metrics(cfg),
            device=t["device"],
            precision=t["precision"],
            grad_clip=t["grad_clip"],
            val_every=t["val_every"],
            monitor=monitor,
            mode=mode,
            save_dir=save_dir,
            seed=seed,
            verbose=self.verbose,
        )

    # -- evaluation ---------------------------------------------------------------------------------
    def _evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Figures of ``networks`` (an ensemble) on every case of ``data``: ``(means, per-case rows)``."""
        cfg = self.config
        if cfg["task"] == "segmentation":
            k = _num_classes(cfg)
            rows = []
            for i in range(len(data)):
                sample = data[i]
                probs = _predict_probabilities(
                    networks, np.asarray(sample["data"], dtype=np.float32), cfg["data"]["patch_size"]
                )
                pred = probs.argmax(axis=0)
                rows.append(
                    {
                        "case_id": sample.get("case_id", str(i)),
                        **_case_dice(pred, np.asarray(sample["seg"])[0], k),
                    }
                )
            keys = [key for key in rows[0] if key != "case_id"]
            return _mean_std(rows, keys)[0], rows
        if cfg["task"] == "classification":
            rows = []
            for i in range(len(data)):
                sample = data[i]
                logits = np.mean(
                    [
                        _forward(net, np.asarray(sample["data"], np.float32)[None], cfg["backend"])[0]
                        for net in networks
                    ],
                    axis=0,
                )
                rows.append(
                    {
                        "case_id": sample.get("case_id", str(i)),
                        "label": int(sample["label"]),
                        "predicted": int(np.argmax(logits)),
                    }
                )
            accuracy = float(np.mean([r["label"] == r["predicted"] for r in rows]))
            return {"accuracy": accuracy}, rows
        history = trainer.history if trainer is not None else []
        last = history[-1] if history else {}
        return {k: float(v) for k, v in last.items() if k.startswith("train_")}, []

    # -- the public API -----------------------------------------------------------------------------
    def _prepare_folder(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.yaml").exists():
            dump_config(self.config, self.run_dir / "config.yaml")

    def _fit(self, train: Any, val: Any, save_dir: Path, fold: int, test: Any = None) -> dict[str, Any]:
        """Train one model into ``save_dir`` (resuming from its last checkpoint) and evaluate it."""
        result_path = save_dir / "result.json"
        if result_path.exists():
            self._log(f"{save_dir.name}: finished earlier, skipped")
            return json.loads(result_path.read_text())
        save_dir.mkdir(parents=True, exist_ok=True)
        last = save_dir / "checkpoints" / "last.safetensors"
        if last.exists():
            from delira.io import read_checkpoint_info

            self._log(f"{save_dir.name}: resuming after epoch {read_checkpoint_info(last).epoch}")
        trainer = self._trainer(save_dir, fold)
        train_loader, val_loader = self._loaders(train, val, fold)
        history = trainer.fit(
            train_loader, val_loader, epochs=self.config["training"]["epochs"], resume_from="last"
        )
        best = save_dir / "checkpoints" / "best.safetensors"
        if best.exists():
            trainer.load_checkpoint(best)
        _eval_mode(trainer.network, self.config["backend"])
        eval_data = test if test is not None else val
        metrics, rows = (
            self._evaluate([trainer.network], eval_data, trainer) if eval_data is not None else ({}, [])
        )
        monitor, mode = _monitor(self.config)
        scored = [h for h in history if monitor in h]
        best_epoch = None
        if scored:
            pick = max if mode == "max" else min
            best_epoch = int(pick(scored, key=lambda h: h[monitor])["epoch"])
        result = {
            "fold": fold,
            "metrics": metrics,
            "epochs": len(history),
            "best_epoch": best_epoch,
            "train_cases": len(train),
            "eval_cases": 0 if eval_data is None else len(eval_data),
        }
        if rows:
            _write_csv(save_dir / "cases.csv", rows, first=["case_id"])
        _write_json(result_path, result)  # last: marks the fold finished
        return result

    def run(self, train: Any, val: Any = None, name: str = "run") -> dict[str, Any]:
        """Train one model on ``train`` (checkpoints chosen on ``val``) into ``run_dir/<name>``.

        Args:
            train, val: datasets (``__len__``, ``__getitem__`` -> sample dicts).
            name: the sub-folder.

        Returns:
            ``{"fold": 0, "metrics": {...}, "epochs": int, "best_epoch": int | None, ...}``, the
            metrics measured on ``val`` with the best checkpoint.
        """
        self._prepare_folder()
        return self._fit(train, val, self.run_dir / name, 0)

    def test(self, data: Any, folds: Sequence[int] | None = None) -> dict[str, Any]:
        """Evaluate the ensemble of the folds' best networks (softmax averaged) on ``data``.

        Writes ``test.json`` (means) and ``test_cases.csv`` (per case) into the experiment folder.

        Returns:
            ``{"metrics": {...}, "cases": [...], "folds": int}``.
        """
        _, networks = load_run_networks(self.run_dir, folds)
        metrics, rows = self._evaluate(networks, data)
        out = {"metrics": metrics, "cases": rows, "folds": len(networks)}
        _write_json(self.run_dir / "test.json", {"metrics": metrics, "folds": len(networks)})
        if rows:
            _write_csv(self.run_dir / "test_cases.csv", rows, first=["case_id"])
        self._log(format_table([{"set": "test", **metrics}], list(metrics), label="set"))
        return out

    def splits(
        self,
        data: Any,
        n_splits: int,
        stratify_key: str | None = None,
        group_key: str | None = None,
        val_fraction: float | None = None,
        seed: int = 0,
    ) -> Any:
        """The folds of ``data`` (``splits.json`` of the folder when it exists, else drawn and saved).

        Without ``val_fraction`` fold ``k`` trains on the other folds and is validated (checkpoint
        choice and the reported figures) on its own cases. With it, a share ``val_fraction`` of the
        training cases is held out for the checkpoint choice and the fold's cases become its
        ``test`` set, on which the figures are reported.
        """
        from delira.data import (
            Fold,
            Splits,
            case_ids_of,
            group_kfold_split,
            kfold_split,
            load_splits,
            stratified_kfold_split,
        )

        ids = [str(c) for c in case_ids_of(data)]
        path = self.run_dir / "splits.json"
        if path.exists():
            splits = load_splits(path)
            splits.check_covers(ids)
            return splits
        if n_splits < 2:
            cut = max(1, round(len(ids) * (val_fraction or 0.2)))
            rng = np.random.default_rng(seed)
            order = [ids[i] for i in rng.permutation(len(ids))]
            splits = Splits(
                [Fold(tuple(sorted(order[cut:])), tuple(sorted(order[:cut])))],
                "train_val",
                seed,
                {"val_fraction": val_fraction or 0.2},
            )
        elif group_key:
            splits = group_kfold_split(
                ids, [data[i][group_key] for i in range(len(data))], n_splits=n_splits, seed=seed
            )
        elif stratify_key:
            labels = getattr(data, "labels", None) if stratify_key == "label" else None
            labels = labels or [data[i][stratify_key] for i in range(len(data))]
            splits = stratified_kfold_split(ids, labels, n_splits=n_splits, seed=seed)
        else:
            splits = kfold_split(ids, n_splits=n_splits, seed=seed)
        if val_fraction and n_splits >= 2:
            folds = []
            for k, fold in enumerate(splits):
                rng = np.random.default_rng([seed, k])
                train = list(fold.train)
                cut = max(1, round(len(train) * val_fraction))
                picked = set(rng.choice(len(train), size=cut, replace=False).tolist())
                folds.append(
                    Fold(
                        tuple(c for i, c in enumerate(train) if i not in picked),
                        tuple(c for i, c in enumerate(train) if i in picked),
                        fold.val,
                    )
                )
            splits = Splits(folds, splits.kind, seed, {**splits.params, "val_fraction": val_fraction})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        splits.save(path)
        return splits

    def kfold(
        self,
        data: Any = None,
        n_splits: int | None = None,
        stratify_key: str | None = None,
        group_key: str | None = None,
        val_fraction: float | None = None,
        seed: int | None = None,
        folds: Sequence[int] | None = None,
    ) -> dict[str, Any] | None:
        """K-fold cross-validation: train and evaluate every fold, then summarise.

        Args:
            data: the dataset (default: the config's, :meth:`dataset`).
            n_splits, stratify_key, group_key, val_fraction, seed: the splitting (see
                :meth:`splits`); defaults from the ``experiment`` section of the config.
            folds: run only these folds (e.g. ``[2]`` on one of several machines); the summary
                is written once every fold of ``splits.json`` is finished (else call
                :func:`aggregate` later).

        Returns:
            The summary (see :func:`aggregate`), or None while folds are missing.
        """
        from delira.data import Subset

        exp = self.config["experiment"]
        data = self.dataset() if data is None else data
        n_splits = exp["folds"] if n_splits is None else n_splits
        seed = exp["seed"] if seed is None else seed
        self._prepare_folder()
        splits = self.splits(
            data,
            n_splits,
            stratify_key if stratify_key is not None else exp["stratify_key"],
            group_key if group_key is not None else exp["group_key"],
            val_fraction if val_fraction is not None else exp["val_fraction"],
            seed,
        )
        self._preview(data)
        wanted = range(len(splits)) if folds is None else folds
        for k in wanted:
            if not 0 <= k < len(splits):
                raise ValueError(
                    f"fold {k} does not exist; {self.run_dir / 'splits.json'} has folds 0..{len(splits) - 1}"
                )
            fold = splits[k]
            self._log(f"fold {k}/{len(splits)}: {len(fold.train)} training, {len(fold.val)} validation cases")
            train = Subset.from_case_ids(data, fold.train)
            val = Subset.from_case_ids(data, fold.val)
            test = Subset.from_case_ids(data, fold.test) if fold.test else None
            self._fit(train, val, self.run_dir / f"fold_{k}", k, test=test)
        done = [k for k in range(len(splits)) if (self.run_dir / f"fold_{k}" / "result.json").exists()]
        if len(done) < len(splits):
            self._log(
                f"finished folds: {done} of {len(splits)}; run `delira aggregate {self.run_dir}` once all are done"
            )
            return None
        return aggregate(self.run_dir, quiet=not self.verbose)

    def _preview(self, data: Any) -> None:
        """``augmentation.png``: a few training samples before and after the augmentation (needs matplotlib)."""
        path = self.run_dir / "augmentation.png"
        if path.exists() or self.config["data"]["transforms"] == "none" or self.config["data"]["patch_size"]:
            return
        try:
            import matplotlib  # noqa: F401

            import delira.augment as da
            from delira.data import collate
        except ImportError:
            return
        batch = collate([data[i] for i in range(min(2, len(data)))])
        batch = {k: v for k, v in batch.items() if k in ("data", "seg")}
        try:
            da.preview(batch, build_transforms(self.config, batch["data"].shape[2:]), path)
        except Exception as exc:  # a preview must never stop a run
            print(f"note: no augmentation preview ({exc})", file=sys.stderr)


def _forward(net: Any, x: np.ndarray, backend: str) -> np.ndarray:
    """The network's output for a ``(N, C, *spatial)`` float32 batch, as numpy (no gradients)."""
    if backend == "torch":
        import torch

        device = next(net.parameters()).device
        with torch.no_grad():
            return net(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return np.asarray(net(x, training=False))


# Keys that may differ between the machines running the folds of one experiment.
_MACHINE_KEYS = ("training.device:", "training.workers:")


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping) and key != "args":
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def predict_file(
    run_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    folds: Sequence[int] | None = None,
) -> Path:
    """Segment one image with the folds of an experiment (softmax averaged) and write the labels.

    The input is read with ``delira.io.read_image`` (``(x, y, z)`` or ``(x, y, z, c)``), normalised
    as the training data were (per-case z-score for an MSD config with ``zscore``; phantoms as
    they are) and predicted with a sliding window of the training patch size (the whole volume
    for whole-volume training when it fits). The output holds uint8 labels ``(x, y, z)`` with the
    input's spacing, origin and direction. Resampling to ``data.preprocessing.target_spacing`` is
    not done: predict on images of the training spacing.

    Returns:
        The path written.
    """
    from delira.io import Image, read_image, write_image

    config, networks = load_run_networks(run_dir, folds)
    if config["task"] != "segmentation":
        raise ValueError(f"delira predict segments images; {run_dir} holds a {config['task']} experiment")
    image = read_image(input_path)
    array = np.asarray(image.array, dtype=np.float32)
    ndim = len(image.spacing)
    data = array[None] if array.ndim == ndim else np.moveaxis(array.reshape(*array.shape[:ndim], -1), -1, 0)
    channels = int(config["model"]["args"].get("in_channels", 1))
    if data.shape[0] != channels:
        raise ValueError(
            f"{input_path} has {data.shape[0]} channel(s) but the model takes {channels}; give an image with "
            f"{channels} channel(s) (channels on the last axis)"
        )
    if config["data"]["kind"] == "decathlon" and config["data"]["preprocessing"]["normalization"] == "zscore":
        from delira.data import zscore

        data = zscore(data)
    patch = config["data"]["patch_size"]
    if not patch and config["data"]["kind"] == "phantom":
        trained = [int(s) for s in config["data"]["phantom"]["shape"]]
        if list(data.shape[1:]) != trained:
            patch = trained  # a sliding window of the training volume size
    probs = _predict_probabilities(networks, np.ascontiguousarray(data), patch)
    labels = probs.argmax(axis=0).astype(np.uint8)
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(out, Image(labels, image.spacing, image.origin, image.direction))
    return out
