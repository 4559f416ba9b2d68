"""Every shipped config trains with both backends: a tiny two-epoch run of each (shapes, cases and
features shrunk through overrides, nothing else changed), then the loss and the run folder are checked.

The loss must be finite and move between the first and the last epoch (the fold's ``metrics.csv``);
the folder must hold the config, the splits, each fold's result, checkpoints and metrics, and the
summary. A GAN run must also hold its sample grid of the first epoch.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import delira.training
from delira.training import Experiment, load_config

CONFIG_DIR = Path(delira.training.__file__).parent / "configs"

PHANTOM_UNET = [
    "data.phantom.num_cases=4",
    "data.phantom.shape=[16, 16, 16]",
    "model.args.features=[4, 8]",
    "training.batch_size=2",
]

#: per shipped config: the overrides that make it tiny (on top of COMMON)
TINY = {
    "unet3d-phantom": PHANTOM_UNET,
    "unet3d-phantom-tf": PHANTOM_UNET,
    "resnet3d-phantom": [
        "data.phantom.num_cases=6",  # two of each label: the folds are stratified by label
        "data.phantom.shape=[16, 16, 16]",
        "model.args.width=4",
        "training.batch_size=2",
    ],
    "dcgan-phantom": [
        "data.phantom.num_cases=8",
        "data.phantom.shape=[16, 16]",
        "model.args.image_size=16",
        "model.args.generator_features=8",
        "model.args.discriminator_features=8",
        "training.batch_size=4",
        "experiment.folds=1",  # as shipped: one train/val split
    ],
    "msd-folder": [
        "data.patch_size=[16, 16, 16]",
        "data.batches_per_epoch=2",
        "model.args.features=[4, 8]",
    ],
}
COMMON = ["training.epochs=2", "training.workers=0", "training.device=cpu", "experiment.folds=2"]
BACKENDS = [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]


def test_every_shipped_config_is_covered():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(TINY)


def write_msd_task(root: Path, num_cases: int = 4) -> None:
    """A small MSD-layout folder: phantoms as NIfTI (anisotropic spacing), dataset.json."""
    nib = pytest.importorskip("nibabel", reason="the MSD folder holds NIfTI files")
    from delira.data import SyntheticPhantomDataset

    phantoms = SyntheticPhantomDataset(num_cases=num_cases, shape=(20, 24, 16), num_classes=3, seed=3)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    training = []
    for i in range(num_cases):
        sample = phantoms[i]
        image, label = f"imagesTr/case_{i:03d}.nii.gz", f"labelsTr/case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(sample["data"][0] * 100.0 + 20.0, affine), str(root / image))
        nib.save(nib.Nifti1Image(sample["seg"][0].astype(np.uint8), affine), str(root / label))
        training.append({"image": f"./{image}", "label": f"./{label}"})
    dataset = {
        "name": "Phantoms",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "spheres", "2": "ellipsoids"},
        "numTraining": num_cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(dataset))


def train_losses(path: Path) -> list[float]:
    with path.open(newline="") as fh:
        return [float(row["train_loss"]) for row in csv.DictReader(fh)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(TINY))
def test_shipped_config_trains_on_both_backends(tmp_path, name, backend):
    pytest.importorskip("tensorflow" if backend == "tf" else "torch")
    overrides = [f"backend={backend}", *COMMON, *TINY[name]]
    if name == "msd-folder":
        write_msd_task(tmp_path / "Task99_Phantoms")
        overrides += [
            f"data.path={tmp_path / 'Task99_Phantoms'}",
            f"data.preprocessing.cache_dir={tmp_path / 'cache'}",
        ]
    run = tmp_path / "run"
    summary = Experiment(name, run_dir=run, overrides=overrides, verbose=False).kfold()

    assert summary is not None and not summary["missing"]
    assert load_config(run / "config.yaml")["backend"] == backend
    for file in ("config.yaml", "splits.json", "summary.json", "summary.csv"):
        assert (run / file).is_file(), f"{name} ({backend}): {file} missing"
    folds = len(json.loads((run / "splits.json").read_text())["folds"])
    assert folds == (1 if name == "dcgan-phantom" else 2)
    assert [f["fold"] for f in summary["folds"]] == list(range(folds))
    from delira.io import read_checkpoint_info

    for k in range(folds):
        fold = run / f"fold_{k}"
        for file in (
            "result.json",
            "metrics.csv",
            "checkpoints/last.safetensors",
            "checkpoints/best.safetensors",
        ):
            assert (fold / file).is_file(), f"{name} ({backend}): fold_{k}/{file} missing"
        assert json.loads((fold / "result.json").read_text())["epochs"] == 2
        info = read_checkpoint_info(fold / "checkpoints" / "last.safetensors")
        assert info.framework == ("torch" if backend == "torch" else "keras") and info.epoch == 2
        losses = train_losses(fold / "metrics.csv")
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses
        assert losses[0] != losses[-1], f"{name} ({backend}): the training loss did not move: {losses}"
    if name == "dcgan-phantom":
        # a GAN run draws a grid of samples per epoch (Experiment adds GanSampleGrid for task "gan")
        assert (run / "fold_0" / "samples" / "samples_epoch_001.png").is_file()
