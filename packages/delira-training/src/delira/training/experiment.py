"""``Experiment``: cross-validated training from a config, written to one experiment folder.

The folder (``experiment.output/<name>-<timestamp>`` unless given) holds::

    config.yaml            the resolved configuration
    splits.json            the folds (delira.data format), reused on resume
    augmentation.png       a preview of the training augmentation (with matplotlib)
    fold_<k>/              the trainer's checkpoints/{best,last}.safetensors, metrics.csv,
                           tensorboard/, curves.png; then result.json (the fold's figures) and
                           cases.csv (per-case figures) once the fold is finished
    preprocessing.json     fitted preprocessing statistics (MSD data), used by prediction
    fold_<k>/validation/   the fold's validation predictions on the original grid (.npz)
    summary.json/.csv      per-fold figures, their mean and (population, ddof=0) std
    postprocessing.json    the postprocessing decided on all folds' validation predictions

A fold is finished when its ``result.json`` exists (written atomically, last): a rerun skips it.
An unfinished fold continues from ``checkpoints/last.safetensors``. Folds can run apart
(``folds=[k]``, e.g. one per machine) and :func:`aggregate` summarises them afterwards.
The config-to-objects builders live in :mod:`delira.training.builders`, prediction in
:mod:`delira.training.prediction`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from delira.io._atomic import atomic_write
from delira.training.builders import (
    _eval_mode,
    _forward,
    _losses,
    _monitor,
    _num_classes,
    _ScaleToUnit,
    _trainer_class,
    _training_metrics,
    build_dataset,
    build_network,
    build_transforms,
    slice_axis,
)
from delira.training.config import dump_config, load_config
from delira.training.prediction import (
    POSTPROCESSING_FILE,
    load_run_networks,
    predict,
    predict_file,
    predict_probabilities,
    save_preprocessing_state,
)

__all__ = [
    "Experiment",
    "aggregate",
    "build_dataset",
    "build_network",
    "build_transforms",
    "format_table",
    "load_run_networks",
    "predict",
    "predict_file",
]


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (delira-io's atomic write: unique temporary name, fsync, replace)."""
    text = json.dumps(obj, indent=2, default=_json_default)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


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

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})

    atomic_write(Path(path), write)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return value


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


_PER_CLASS = re.compile(r"^(dice|hd95|nsd)_class_\d+$")


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


def _save_validation(path: Path, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> None:
    """A validation prediction and its reference (original grid), for the postprocessing decision."""
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


def _decide_postprocessing(run_dir: Path) -> Any:
    """Decide nnU-Net's largest-component rule on every fold's saved validation predictions and write
    ``postprocessing.json``; None when the run saved none (not a segmentation run)."""
    files = sorted(run_dir.glob("fold_*/validation/*.npz"))
    if not files:
        return None
    from delira.training.postprocessing import decide_postprocessing

    cases = []
    for f in files:
        with np.load(f) as z:
            cases.append((z["pred"], z["ref"]))
    classes = list(range(1, _num_classes(load_config(run_dir / "config.yaml"))))
    rule = decide_postprocessing(cases, classes)
    rule.save(run_dir / POSTPROCESSING_FILE)
    return rule


def aggregate(run_dir: str | os.PathLike[str], quiet: bool = False) -> dict[str, Any]:
    """Summarise the finished folds of ``run_dir``: ``summary.json`` and ``summary.csv``.

    Reads every ``fold_<k>/result.json``; for every numeric figure of the folds it computes the
    mean and the population standard deviation (``numpy.std``, ddof=0; NaN figures left out) over
    the folds. Prints the table unless ``quiet``. Segmentation runs: decides the postprocessing
    (keep the largest connected component of a class where that improves its mean validation Dice
    over all folds, as nnU-Net does) and writes ``postprocessing.json``, which ``delira predict``
    applies.

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
    rule = _decide_postprocessing(run_dir)
    if rule is not None:
        summary["postprocessing"] = rule.to_dict()
    _write_json(run_dir / "summary.json", summary)
    _write_csv(
        run_dir / "summary.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}], first=["fold"]
    )
    if not quiet:
        shown = [k for k in keys if not _PER_CLASS.match(k)] or keys
        print(format_table([*rows, {"fold": "mean", **mean}, {"fold": "std", **std}], shown))
        if rule is not None:
            kept = rule.largest_component_classes
            print(
                f"postprocessing ({run_dir / POSTPROCESSING_FILE}): "
                + (
                    f"keep the largest component of classes {kept}"
                    if kept
                    else "none improves the validation Dice"
                )
            )
        if missing:
            print(f"folds not finished yet: {missing} (the mean and std cover the finished ones)")
        print(f"summary: {run_dir / 'summary.json'}")
    return summary


# --- the experiment -------------------------------------------------------------------------------
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
        axis = slice_axis(cfg)
        val_tf: list[Any] | None = None
        if axis is not None:
            if not patch or cfg["task"] != "segmentation":
                raise ValueError(
                    "data.spatial_dims: 2 on 3D volumes trains on 2D patches of slices; set data.patch_size "
                    "to 2 sizes (e.g. [192, 160], as `delira plan` does)"
                )
            squeeze = _SqueezeAxis(axis)
            transforms = [squeeze, *transforms]
            val_tf = [squeeze]
            patch = [int(p) for p in patch]
            patch.insert(axis, 1)  # a slice: 1 voxel thick along the slice axis
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
                DataLoader(PatchDataset(val, patch), 1, transforms=val_tf, num_workers=0, seed=seed)
                if val is not None
                else None
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
    def _raw_dataset(self) -> Any:
        """The unpreprocessed MSD dataset (reference labels on the original grid), or None."""
        if self.config["data"]["kind"] != "decathlon":
            return None
        if getattr(self, "_raw", None) is None:
            from delira.data import DecathlonDataset, case_ids_of

            self._raw = DecathlonDataset(self.config["data"]["path"])
            self._raw_index = {str(c): i for i, c in enumerate(case_ids_of(self._raw))}
        return self._raw

    def _evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None, save_dir: Path | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Figures of ``networks`` (an ensemble) on every case of ``data``: ``(means, per-case rows)``.

        Segmentation: Dice, HD95 and normalized surface Dice (``evaluation.tolerance_mm``) per
        class, on the original grid and spacing of each case (``evaluation.original_grid``: the
        probabilities are resampled back and un-cropped, the reference is the label file as read);
        with ``save_dir`` the predictions and references go to ``save_dir/validation/<case>.npz``
        for the postprocessing decision of :func:`aggregate`.
        """
        cfg = self.config
        if cfg["task"] == "segmentation":
            k = _num_classes(cfg)
            raw = self._raw_dataset() if cfg["evaluation"]["original_grid"] else None
            rows = []
            for i in range(len(data)):
                sample = data[i]
                case_id = str(sample.get("case_id", i))
                probs = predict_probabilities(networks, np.asarray(sample["data"], dtype=np.float32), cfg)
                properties = sample.get("properties")
                if raw is not None and properties is not None and case_id in self._raw_index:
                    from delira.data import invert_probabilities

                    probs = invert_probabilities(probs, properties)
                    reference = raw[self._raw_index[case_id]]
                    ref, spacing = np.asarray(reference["seg"])[0], reference["spacing"]
                else:
                    ref = np.asarray(sample["seg"])[0]
                    spacing = sample.get("spacing", (1.0,) * ref.ndim)
                pred = probs.argmax(axis=0).astype(np.uint8)
                row = {"case_id": case_id, **_case_dice(pred, ref, k)}
                row.update(_surface_figures(pred, ref, spacing, k, cfg["evaluation"]["tolerance_mm"]))
                rows.append(row)
                if save_dir is not None:
                    _save_validation(save_dir / "validation" / f"{case_id}.npz", pred, ref, spacing)
            keys = [key for key in rows[0] if key != "case_id"]
            for row in rows[1:]:
                keys += [key for key in row if key not in keys and key != "case_id"]
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
            self._evaluate([trainer.network], eval_data, trainer, save_dir=save_dir)
            if eval_data is not None
            else ({}, [])
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
        self._save_preprocessing(data)
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

    def _save_preprocessing(self, data: Any) -> None:
        """``preprocessing.json``: the statistics the preprocessing fitted (prediction reuses them)."""
        preprocessor = getattr(data, "preprocessor", None)
        if preprocessor is not None and hasattr(preprocessor, "params"):
            save_preprocessing_state(self.run_dir, preprocessor)

    def predict(
        self,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        folds: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> list[Path]:
        """Segment an image file or a folder of images with this run's folds, on their original
        geometry (see :func:`delira.training.prediction.predict` for the options).

        Returns:
            The label files written.
        """
        return predict(self.run_dir, input_path, output_path, folds, **kwargs)

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
