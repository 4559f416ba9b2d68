"""Prediction on the original geometry: the trained folds of a run applied to new images.

An image goes through the run's own preprocessing (crop to the nonzero region, normalisation,
resampling to the target spacing: :func:`delira.training.builders.build_preprocessor`), is predicted
with sliding windows (Gaussian weights), mirroring test-time augmentation (on where training mirrored)
and the fold ensemble (probabilities averaged), and the probabilities go back to the original grid
(resampled, un-cropped: :func:`delira.data.invert_probabilities`). The label map is written with the
input's spacing, origin and direction; the run's ``postprocessing.json`` (decided by
:func:`~delira.training.experiment.aggregate`) is applied. 2D runs (``data.spatial_dims: 2``) predict
every slice along ``data.slice_axis``.

Region runs (``data.regions``): the networks' outputs are one sigmoid probability per region (of the
logits averaged over windows and mirrorings, then over the folds); the label map written is the
regions painted in ``data.regions_order`` where the probability is > 0.5
(:func:`delira.training.regions.paint_regions`), comparable with the reference labels; saved
probabilities are the region probabilities.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from delira.training.builders import (
    _eval_mode,
    build_network,
    build_preprocessor,
    mirror_axes,
    slice_axis,
    spatial_dims,
)
from delira.training.config import load_config

__all__ = [
    "RunPredictor",
    "invert_output",
    "load_run_networks",
    "predict",
    "predict_file",
    "predict_probabilities",
    "probabilities_to_labels",
    "regions_of",
]

#: the file written beside the folds with the fitted preprocessing statistics (CT percentiles, ...)
PREPROCESSING_FILE = "preprocessing.json"
#: the postprocessing decided by ``aggregate``
POSTPROCESSING_FILE = "postprocessing.json"

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif", ".tiff")


def _window(config: Mapping[str, Any], spatial: Sequence[int]) -> tuple[int, ...] | None:
    """The sliding-window size: the training patch, or for whole-volume phantom training the training
    volume's size when the input differs from it (None: predict the volume in one pass)."""
    patch = config["data"]["patch_size"]
    if patch:
        return tuple(int(p) for p in patch)
    if config["data"]["kind"] == "phantom":
        trained = tuple(int(s) for s in config["data"]["phantom"]["shape"])
        if tuple(spatial) != trained:
            return trained
    return None


def tta_axes(config: Mapping[str, Any], mirror: bool | None = None) -> tuple[int, ...]:
    """The mirroring test-time augmentation axes: ``prediction.mirror`` (or ``mirror``) true → the
    training mirror axes (all when training did not mirror); null → the training mirror axes; false → none."""
    choice = config.get("prediction", {}).get("mirror") if mirror is None else mirror
    if choice is False:
        return ()
    axes = mirror_axes(config)
    if choice is True and not axes:
        return tuple(range(spatial_dims(config)))
    return axes


def regions_of(config: Mapping[str, Any]) -> tuple[list[list[int]], list[int]] | None:
    """``(data.regions, the label each paints)`` of a region run (the order defaults to
    :func:`delira.training.regions.default_regions_order`), or None for a label-based run."""
    from delira.training.regions import default_regions_order

    regions = config["data"].get("regions")
    if regions is None:
        return None
    regions = [[int(v) for v in r] for r in regions]
    order = config["data"].get("regions_order") or default_regions_order(regions)
    if order is None:
        raise ValueError(
            f"data.regions {regions} are not nested; set data.regions_order (the label each region paints)"
        )
    return regions, [int(v) for v in order]


def probabilities_to_labels(probabilities: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """The label map ``(*spatial)`` of ``(K, *spatial)`` probabilities: the argmax (uint8), or for a
    region run the regions painted in order where their probability is > 0.5."""
    regions = regions_of(config)
    if regions is None:
        return np.asarray(probabilities).argmax(axis=0).astype(np.uint8)
    from delira.training.regions import paint_regions

    return paint_regions(probabilities, regions[1], threshold=0.5)


def invert_output(
    probabilities: np.ndarray, properties: Mapping[str, Any], config: Mapping[str, Any]
) -> np.ndarray:
    """:func:`delira.data.invert_probabilities` (back to the original grid) for the run's outputs:
    outside the crop box class probabilities are background, region probabilities 0 (a background
    channel is put in front for the inversion and dropped afterwards)."""
    from delira.data import invert_probabilities

    if config["data"].get("regions") is None:
        return invert_probabilities(probabilities, properties)
    probs = np.asarray(probabilities, dtype=np.float32)
    padded = np.concatenate([np.zeros_like(probs[:1]), probs], axis=0)
    return np.ascontiguousarray(invert_probabilities(padded, properties)[1:])


def predict_probabilities(
    networks: Sequence[Any],
    volume: np.ndarray,
    config: Mapping[str, Any],
    *,
    mirror: bool | None = None,
) -> np.ndarray:
    """Class probabilities ``(K, *spatial)`` float32 of a preprocessed ``(C, *spatial)`` volume (a
    region run, ``data.regions``: region probabilities ``(R, *spatial)``, sigmoids).

    Averaged over ``networks`` (the fold ensemble; each network's softmax over Gaussian-weighted
    sliding windows of the training patch with ``prediction.overlap``, and over the mirrorings of
    :func:`tta_axes`). 2D runs predict the slices along ``data.slice_axis`` one by one.
    """
    from delira.training.predictor import Predictor

    volume = np.ascontiguousarray(volume, dtype=np.float32)
    pred_cfg = config.get("prediction", {})
    axes = tta_axes(config, mirror)
    axis = slice_axis(config)
    spatial = volume.shape[1:]
    if axis is not None and len(spatial) != 3:
        raise ValueError(
            f"a 2D run on 3D volumes (data.slice_axis {axis}) needs (C, x, y, z) volumes, got {volume.shape}"
        )
    inplane = tuple(s for i, s in enumerate(spatial) if i != axis) if axis is not None else spatial
    window = _window(config, inplane)
    total: np.ndarray | None = None
    for net in networks:
        predictor = Predictor(
            net,
            patch_size=window,
            overlap=float(pred_cfg.get("overlap", 0.5)),
            mirror_axes=axes or None,
            batch_size=int(pred_cfg.get("batch_size", 2)),
            gaussian=bool(pred_cfg.get("gaussian", True)),
            output="sigmoid" if config["data"].get("regions") is not None else "probabilities",
        )
        if axis is None:
            probs = np.asarray(predictor.predict(volume), dtype=np.float32)
        else:
            slices = [
                np.asarray(predictor.predict(np.take(volume, i, axis=1 + axis)), dtype=np.float32)
                for i in range(spatial[axis])
            ]
            probs = np.stack(slices, axis=1 + axis)
        total = probs if total is None else total + probs
    if total is None:
        raise ValueError("no network given; pass the folds' networks (load_run_networks)")
    return total / len(networks)


def _fold_number(folder: Path) -> int | None:
    """``k`` of a ``fold_<k>`` folder, else None."""
    name = folder.name
    return int(name[5:]) if name.startswith("fold_") and name[5:].isdigit() else None


def _find_checkpoints(run_dir: Path, folds: Sequence[int] | None) -> list[Path]:
    """The best (else last) checkpoint of every trained model in ``run_dir``: ``fold_<k>/`` folders
    (in fold order) and any other sub-folder with ``checkpoints/`` (``Experiment.run(name=...)``)."""
    folders = [p for p in run_dir.iterdir() if p.is_dir() and (p / "checkpoints").is_dir()]
    numbered = [(_fold_number(p), p) for p in folders]
    if folds is not None:
        numbered = [(k, p) for k, p in numbered if k is not None and k in folds]
    numbered.sort(key=lambda kp: (0, kp[0], "") if kp[0] is not None else (1, 0, kp[1].name))
    paths = []
    for _, folder in numbered:
        for name in ("best.safetensors", "last.safetensors"):
            if (folder / "checkpoints" / name).exists():
                paths.append(folder / "checkpoints" / name)
                break
    return paths


def _build(net: Any, config: Mapping[str, Any]) -> None:
    """Keras models need their weights created before loading (one call on zeros of the task's
    input shape, :meth:`delira.training.tasks.Task.input_shape`); torch modules already have them."""
    if config["backend"] == "tf" and not net.built:
        from delira.training.tasks import task_for

        net(np.zeros((1, *task_for(config).input_shape()), dtype=np.float32))


def load_run_networks(
    run_dir: str | os.PathLike[str], folds: Sequence[int] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """The configuration and the best network of each trained model of an experiment folder.

    Args:
        run_dir: the folder ``delira run`` wrote (``config.yaml``, ``fold_<k>/checkpoints/``).
        folds: only these folds (default every trained one, and models of ``Experiment.run``).

    Returns:
        ``(config, networks)``: the networks in evaluation mode, best checkpoint weights loaded
        (the last one where no best was written).

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` or no checkpoint.
    """
    from delira.io import load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(
            f"{run_dir} is not an experiment folder (no config.yaml); pass the folder `delira run` wrote"
        )
    config = load_config(run_dir / "config.yaml")
    paths = _find_checkpoints(run_dir, folds)
    if not paths:
        which = f" for folds {list(folds)}" if folds is not None else ""
        raise FileNotFoundError(
            f"{run_dir} holds no checkpoint{which} (fold_<k>/checkpoints/best.safetensors); train first "
            f"(`delira run --resume {run_dir}`)"
        )
    networks = []
    for path in paths:
        net = build_network(config)
        _build(net, config)
        load_checkpoint(path, net, restore_rng=False)
        _eval_mode(net, config["backend"])
        networks.append(net)
    return config, networks


def save_preprocessing_state(run_dir: str | os.PathLike[str], preprocessor: Any) -> None:
    """Write the fitted preprocessing statistics (CT clip/mean/std per channel) to
    ``run_dir/preprocessing.json``, so prediction normalises as training did."""
    from delira.io import atomic_write

    ct = {str(c): asdict(n) for c, n in preprocessor.ct.items()}
    doc = {"params": preprocessor.params(), "ct": ct}
    text = json.dumps(doc, indent=2, default=str)
    atomic_write(Path(run_dir) / PREPROCESSING_FILE, lambda tmp: tmp.write_text(text))


def run_preprocessor(run_dir: str | os.PathLike[str], config: Mapping[str, Any]) -> Any:
    """The run's preprocessor with the statistics fitted in training (None when the run has none).

    Raises:
        FileNotFoundError: the run normalises with dataset-wide CT statistics but neither the config
            (``data.preprocessing.ct_stats``) nor ``preprocessing.json`` holds them.
    """
    preprocessor = build_preprocessor(config) if config["data"]["kind"] != "phantom" else None
    if preprocessor is None:
        return None
    path = Path(run_dir) / PREPROCESSING_FILE
    if path.exists():
        from delira.data.preprocessing import CTNormalization

        saved = json.loads(path.read_text())
        for c, stats in saved.get("ct", {}).items():
            preprocessor.ct.setdefault(int(c), CTNormalization(**stats))
    channels = int(config["model"]["args"].get("in_channels", 1))
    if preprocessor.needs_fit(channels):
        raise FileNotFoundError(
            f"{path} is missing: the run normalises with CT statistics fitted in training; rerun "
            f"`delira run --resume {run_dir}` to write it, or set data.preprocessing.ct_stats"
        )
    return preprocessor


def _to_channels_first(array: np.ndarray, ndim: int) -> np.ndarray:
    """``(*spatial)`` or ``(*spatial, C)`` (as read) -> ``(C, *spatial)`` float32."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == ndim:
        return array[None]
    return np.ascontiguousarray(np.moveaxis(array.reshape(*array.shape[:ndim], -1), -1, 0))


class RunPredictor:
    """The folds of one run, loaded once, predicting images on their original geometry.

    Args:
        run_dir: the experiment folder.
        folds: the folds of the ensemble (default: every trained fold).
        mirror: mirroring test-time augmentation (default ``prediction.mirror`` of the run's config:
            on where training mirrored).
        postprocess: apply the run's ``postprocessing.json`` (default ``prediction.postprocess``).

    Example::

        predictor = RunPredictor("runs/Task04-20261203-101500")
        labels, probabilities = predictor.predict_image(delira.io.read_image("case.nii.gz"))
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        folds: Sequence[int] | None = None,
        mirror: bool | None = None,
        postprocess: bool | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config, self.networks = load_run_networks(self.run_dir, folds)
        if self.config["task"] != "segmentation":
            raise ValueError(
                f"delira predict segments images; {self.run_dir} holds a {self.config['task']} experiment"
            )
        self.mirror = mirror
        self.preprocessor = run_preprocessor(self.run_dir, self.config)
        self.rule = None
        use_post = self.config["prediction"]["postprocess"] if postprocess is None else postprocess
        if use_post and (self.run_dir / POSTPROCESSING_FILE).exists():
            from delira.training.postprocessing import PostprocessingRule

            self.rule = PostprocessingRule.load(self.run_dir / POSTPROCESSING_FILE)
        self.channels = int(self.config["model"]["args"].get("in_channels", 1))

    def predict_array(
        self,
        data: np.ndarray,
        spacing: Sequence[float],
        origin: Sequence[float] | None = None,
        direction: Any = None,
        case_id: str = "case",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict one image given as ``(C, *spatial)`` float32 with its spacing (mm per axis).

        Returns:
            ``(labels, probabilities)``: ``(*spatial)`` uint8 labels (postprocessed) and ``(K, *spatial)``
            float32 probabilities (a region run: the painted regions and ``(R, *spatial)`` region
            probabilities), both on the input's grid.
        """
        data = np.asarray(data, dtype=np.float32)
        if data.shape[0] != self.channels:
            raise ValueError(
                f"{case_id}: the image has {data.shape[0]} channel(s) but the model takes {self.channels}; "
                f"give an image with {self.channels} channel(s) (channels on the last axis of the file)"
            )
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{case_id}: the image holds NaN or infinite values; fix or mask them first")
        properties = None
        volume = data
        if self.preprocessor is not None:
            ndim = data.ndim - 1
            sample = {
                "data": data,
                "spacing": tuple(float(s) for s in spacing),
                "origin": tuple(origin) if origin is not None else (0.0,) * ndim,
                "direction": np.asarray(direction if direction is not None else np.eye(ndim)),
                "case_id": case_id,
            }
            pre = self.preprocessor(sample)
            volume, properties = np.asarray(pre["data"], dtype=np.float32), pre["properties"]
        probs = predict_probabilities(self.networks, volume, self.config, mirror=self.mirror)
        if properties is not None:
            probs = invert_output(probs, properties, self.config)
        labels = probabilities_to_labels(probs, self.config)
        if self.rule is not None:
            from delira.training.postprocessing import apply_postprocessing

            labels = apply_postprocessing(labels, self.rule).astype(np.uint8)
        return labels, probs

    def predict_image(self, image: Any, case_id: str = "case") -> tuple[np.ndarray, np.ndarray]:
        """Predict a :class:`delira.io.Image` (``(*spatial)`` or ``(*spatial, C)``); see :meth:`predict_array`."""
        ndim = len(image.spacing)
        return self.predict_array(
            _to_channels_first(image.array, ndim), image.spacing, image.origin, image.direction, case_id
        )


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _list_inputs(input_path: Path) -> list[Path]:
    if input_path.is_file():
        return [input_path]
    if not input_path.exists():
        raise FileNotFoundError(f"{input_path} does not exist; pass an image file or a folder of images")
    files = sorted(
        p
        for p in input_path.iterdir()
        if p.is_file()
        and any(p.name.lower().endswith(s) for s in _IMAGE_SUFFIXES)
        and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(
            f"{input_path} holds no image file ({', '.join(_IMAGE_SUFFIXES)}); pass an image or a folder of images"
        )
    return files


def _output_paths(inputs: list[Path], input_path: Path, output: Path) -> list[Path]:
    """One input file and an output with an image extension: that file; else ``output/<case>`` with
    the input's format for NRRD and MetaImage inputs and ``.nii.gz`` for all others."""
    if input_path.is_file() and any(output.name.lower().endswith(s) for s in _IMAGE_SUFFIXES):
        return [output]
    keep = (".nrrd", ".mha")
    return [
        output / (_case_name(p) + (p.suffix if p.name.lower().endswith(keep) else ".nii.gz")) for p in inputs
    ]


def predict(
    run_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    folds: Sequence[int] | None = None,
    *,
    save_probabilities: bool = False,
    mirror: bool | None = None,
    postprocess: bool | None = None,
    progress: bool = True,
    io_workers: int = 2,
) -> list[Path]:
    """Segment an image file or every image of a folder with the folds of a run.

    Reading the next images and writing the finished ones run in background threads while the
    network predicts (overlapped IO and compute); a progress bar counts the cases.

    Args:
        run_dir: the experiment folder.
        input_path: an image file (any format of ``delira.io.read_image``) or a folder of them.
        output_path: the label file (for one input file with an image extension) or a folder
            (``<output>/<case>.nii.gz``, created).
        folds: the folds of the ensemble (default all).
        save_probabilities: also write ``<case>_probabilities.npz`` (``probabilities`` (K, *spatial)
            float32 on the input's grid, and ``spacing``) beside each label file; a region run saves
            the region probabilities ``(R, *spatial)``.
        mirror, postprocess: see :class:`RunPredictor`.
        progress: show a progress bar (tqdm) for folders.
        io_workers: background threads reading and writing files.

    Returns:
        The label files written, in input order.
    """
    from delira.io import Image, atomic_write, read_image, write_image

    input_path, output = Path(input_path), Path(output_path)
    inputs = _list_inputs(input_path)
    outputs = _output_paths(inputs, input_path, output)
    predictor = RunPredictor(run_dir, folds, mirror=mirror, postprocess=postprocess)
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress and len(inputs) > 1:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(inputs), desc="predict", unit="case", file=sys.stderr)
        except ImportError:
            bar = None

    def write(out: Path, image: Any, labels: np.ndarray, probs: np.ndarray) -> Path:
        write_image(out, Image(labels, image.spacing, image.origin, image.direction))
        if save_probabilities:
            target = out.with_name(f"{_case_name(out)}_probabilities.npz")

            def dump(tmp: Path) -> None:
                with tmp.open("wb") as fh:
                    np.savez(fh, probabilities=probs.astype(np.float32), spacing=np.asarray(image.spacing))

            atomic_write(target, dump)
        return out

    written: list[Path] = []
    with ThreadPoolExecutor(max(1, io_workers)) as pool:
        reads = [pool.submit(read_image, inputs[0])]
        writes = []
        for i, path in enumerate(inputs):
            if i + 1 < len(inputs):
                reads.append(pool.submit(read_image, inputs[i + 1]))  # read ahead while predicting
            try:
                image = reads[i].result()
            except Exception as exc:
                raise type(exc)(f"{path}: {exc}") from exc
            labels, probs = predictor.predict_image(image, case_id=_case_name(path))
            writes.append(pool.submit(write, outputs[i], image, labels, probs))
            reads[i] = None  # free the image
            if bar is not None:
                bar.update(1)
        written = [w.result() for w in writes]
    if bar is not None:
        bar.close()
    return written


def predict_file(
    run_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    folds: Sequence[int] | None = None,
) -> Path:
    """Segment one image with the folds of a run and write the labels (see :func:`predict`).

    Returns:
        The path written.
    """
    return predict(run_dir, input_path, output_path, folds, progress=False)[0]
