"""plan -> run -> predict on a small MSD folder made of real MR volumes shipped with nibabel.

The four cases are nibabel's ``anatomical.nii`` (a 2 mm brain MR) as is, mirrored, with every third
slice (an anisotropic 2 x 2 x 6 mm case) and cropped with another header spacing; the labels are
intensity classes of each image (so a tiny network learns them in a few epochs). The prediction of
every case must come back on the case's own grid (shape, affine) and overlap its label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

nib = pytest.importorskip("nibabel", reason="the MSD folder holds NIfTI files")
pytest.importorskip("torch", reason="the run trains a PyTorch network")
pytest.importorskip("scipy", reason="surface metrics and postprocessing use scipy.ndimage")

from delira.training.cli import main  # noqa: E402

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


def _labels(image: np.ndarray) -> np.ndarray:
    """Intensity classes: 1 above the 50th, 2 above the 90th percentile of the nonzero voxels."""
    inside = image[image > 0]
    low, high = np.percentile(inside, [50, 90])
    return ((image > low).astype(np.uint8) + (image > high).astype(np.uint8)).astype(np.uint8)


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, affine) of the four cases: different spacings, one anisotropic axis."""
    img = nib.load(str(ANATOMICAL))
    data = np.asarray(img.dataobj, dtype=np.float32)
    base = img.affine
    thick = base.copy()
    thick[:3, 2] *= 3.0  # every third slice: 2 x 2 x 6 mm
    cropped = np.diag([1.8, 1.8, 2.2, 1.0])
    cropped[:3, 3] = [-30.0, 12.5, 4.0]
    shifted = base.copy()
    shifted[:3, 3] += [5.0, -3.0, 7.5]
    return [
        (data, base),
        (np.ascontiguousarray(data[::-1]), shifted),
        (np.ascontiguousarray(data[:, :, ::3]), thick),
        (np.ascontiguousarray(data[2:31, 3:39, 1:24]), cropped),
    ]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msd") / "Task90_Anatomical"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, (image, affine) in enumerate(_cases()):
        name = f"brain_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(_labels(image), affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "Anatomical",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "tissue", "2": "bright"},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root


@pytest.fixture(scope="module")
def planned_run(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    plan = out / "plan.yaml"
    settings = [
        f"data.preprocessing.cache_dir={out / 'cache'}",
        f"experiment.output={out / 'runs'}",
        "experiment.folds=2",
        "training.epochs=8",
        "data.batches_per_epoch=4",
        "training.optimizer=adam",
        "training.lr=0.01",
        "training.schedule=null",
    ]
    args = ["plan", str(task), "-o", str(plan), "--device", "cpu", "--no-progress"]
    for item in settings:
        args += ["--set", item]
    assert main(args) == 0
    assert main(["run", str(plan), "--run-dir", str(out / "run")]) == 0
    return plan, out / "run"


def test_the_plan_is_a_complete_commented_config(planned_run, task):
    plan, _ = planned_run
    text = plan.read_text()
    config = yaml.safe_load(text)
    assert config["data"]["kind"] == "decathlon" and Path(config["data"]["path"]) == task
    spacing = config["data"]["preprocessing"]["target_spacing"]
    assert len(spacing) == 3 and all(1.5 <= s <= 6.0 for s in spacing if s is not None)
    assert "#" in text  # the reasons are written as comments


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)


def test_predict_every_case_on_its_original_grid(planned_run, task, tmp_path):
    _, run = planned_run
    out = tmp_path / "pred"
    args = ["predict", str(run), "--input", str(task / "imagesTr"), "--output", str(out)]
    assert main([*args, "--save-probabilities", "--no-progress"]) == 0
    for i in range(4):
        name = f"brain_{i:03d}.nii.gz"
        given = nib.load(str(task / "imagesTr" / name))
        label = np.asarray(nib.load(str(task / "labelsTr" / name)).dataobj)
        written = nib.load(str(out / name))
        pred = np.asarray(written.dataobj)
        assert pred.shape == given.shape
        np.testing.assert_allclose(written.affine, given.affine, atol=1e-4)
        assert _dice(pred > 0, label > 0) > 0.5, name
        with np.load(out / f"brain_{i:03d}_probabilities.npz") as z:
            probs = z["probabilities"]
        assert probs.shape == (3, *given.shape)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-3)


def test_the_run_reports_surface_metrics_and_decides_postprocessing(planned_run):
    _, run = planned_run
    summary = json.loads((run / "summary.json").read_text())
    for key in ("dice_mean", "hd95_mean", "nsd_mean"):
        assert key in summary["mean"] and key in summary["std"]
    assert (run / "postprocessing.json").exists()
    assert (run / "preprocessing.json").exists()
    assert summary["postprocessing"]["largest_component_classes"] is not None


def test_a_2d_run_on_slices_trains_and_predicts_3d_volumes(task, tmp_path):
    """data.spatial_dims: 2: a 2D UNet trained on slices along the last axis (not resampled), whose
    prediction is a 3D label map on the input's grid."""
    run = tmp_path / "run2d"
    settings = [
        f"data.path={task}",
        f"data.preprocessing.cache_dir={tmp_path / 'cache'}",
        "data.preprocessing.target_spacing=[2.0, 2.0, null]",
        "data.spatial_dims=2",
        "data.slice_axis=2",
        "data.patch_size=[32, 40]",
        "data.batches_per_epoch=4",
        "data.augmentation.rotation=[-180, 180]",
        "model.args={spatial_dims: 2, in_channels: 1, num_classes: 3, features: [8, 16]}",
        "training.epochs=6",
        "training.lr=0.01",
        "training.workers=0",
        "experiment.folds=2",
    ]
    args = ["run", "msd-folder", "--run-dir", str(run)]
    for item in settings:
        args += ["--set", item]
    assert main(args) == 0
    out = tmp_path / "seg.nii.gz"
    source = task / "imagesTr" / "brain_002.nii.gz"  # the 2 x 2 x 6 mm case
    assert main(["predict", str(run), "--input", str(source), "--output", str(out)]) == 0
    given, written = nib.load(str(source)), nib.load(str(out))
    pred = np.asarray(written.dataobj)
    label = np.asarray(nib.load(str(task / "labelsTr" / "brain_002.nii.gz")).dataobj)
    assert pred.shape == given.shape
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-4)
    assert _dice(pred > 0, label > 0) > 0.5
