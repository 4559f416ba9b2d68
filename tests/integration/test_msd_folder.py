"""The shipped `msd-folder` config on a small MSD-layout folder written to disk: preprocessing,
patch training with foreground oversampling, sliding-window evaluation, the summary."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="the MSD folder holds NIfTI files")
pytest.importorskip("torch", reason="the run trains a PyTorch network")

from delira.training.cli import main  # noqa: E402


def _write_task(root, num_cases=4):
    from delira.data import SyntheticPhantomDataset

    phantoms = SyntheticPhantomDataset(num_cases=num_cases, shape=(20, 24, 16), num_classes=3, seed=3)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(num_cases):
        sample = phantoms[i]
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
        nib.save(
            nib.Nifti1Image(sample["data"][0] * 100.0 + 20.0, affine),
            str(root / "imagesTr" / f"case_{i:03d}.nii.gz"),
        )
        nib.save(
            nib.Nifti1Image(sample["seg"][0].astype(np.uint8), affine),
            str(root / "labelsTr" / f"case_{i:03d}.nii.gz"),
        )
        training.append(
            {"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"}
        )
    dataset = {
        "name": "Phantoms",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "spheres", "2": "ellipsoids"},
        "numTraining": num_cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(dataset))


def test_msd_folder_config_runs_end_to_end(tmp_path):
    task = tmp_path / "Task99_Phantoms"
    _write_task(task)
    run_dir = tmp_path / "run"
    overrides = [
        f"data.path={task}",
        f"data.preprocessing.cache_dir={tmp_path / 'cache'}",
        "data.patch_size=[16, 16, 16]",
        "data.batches_per_epoch=2",
        "data.transforms=mirror",
        "model.args.features=[4, 8]",
        "training.epochs=1",
        "training.workers=0",
        "experiment.folds=2",
    ]
    args = ["run", "msd-folder", "--run-dir", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    splits = json.loads((run_dir / "splits.json").read_text())["folds"]
    assert sorted(c for f in splits for c in f["val"]) == [f"case_{i:03d}" for i in range(4)]
    figures = []
    for k in range(2):
        with (run_dir / f"fold_{k}" / "cases.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert sorted(r["case_id"] for r in rows) == sorted(splits[k]["val"])
        figures.append(np.nanmean([float(r["dice_class_2"]) for r in rows]))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mean"]["dice_class_2"] == pytest.approx(np.mean(figures), abs=1e-12)
    assert summary["std"]["dice_class_2"] == pytest.approx(np.std(figures), abs=1e-12)
