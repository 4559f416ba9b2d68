"""`delira run` then `delira predict`: a NIfTI in, a segmentation NIfTI out with the input's geometry."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

nib = pytest.importorskip("nibabel", reason="delira predict on NIfTI files needs nibabel")
pytest.importorskip("torch", reason="the run trains a PyTorch network")

from delira.training.cli import main  # noqa: E402

CONFIG = {
    "name": "tiny-predict",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {
        "phantom": {"num_cases": 4, "shape": [16, 16, 16], "num_classes": 3, "seed": 2},
        "transforms": "none",
    },
    "training": {"epochs": 2, "batch_size": 2, "lr": 0.01},
    "experiment": {"folds": 2},
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(config), "--run-dir", str(root / "run")]) == 0
    return root / "run"


def _write_input(path, shape=(16, 20, 24)):
    from delira.data import SyntheticPhantomDataset

    image = SyntheticPhantomDataset(num_cases=1, shape=shape, num_classes=3, seed=5)[0]["data"][0]
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # axes swapped in the plane
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [10.5, -20.25, 30.0]
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(path))
    return image


@pytest.mark.parametrize("folds", [None, ["0"]])
def test_predict_writes_labels_with_the_input_geometry(trained_run, tmp_path, folds):
    source = tmp_path / "scan.nii.gz"
    image = _write_input(source)
    out = tmp_path / "out" / "seg.nii.gz"
    args = ["predict", str(trained_run), "--input", str(source), "--output", str(out)]
    assert main(args + (["--folds", *folds] if folds else [])) == 0
    written, given = nib.load(str(out)), nib.load(str(source))
    labels = np.asarray(written.dataobj)
    assert labels.shape == image.shape
    assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() <= 2
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-5)
    np.testing.assert_allclose(written.header.get_zooms()[:3], [0.8, 1.2, 2.5], atol=1e-6)
    np.testing.assert_allclose(written.affine[:3, 3], [10.5, -20.25, 30.0], atol=1e-5)


def test_predict_explains_a_folder_that_is_not_a_run(tmp_path):
    source = tmp_path / "scan.nii.gz"
    _write_input(source)
    with pytest.raises(FileNotFoundError, match="not an experiment folder"):
        main(["predict", str(tmp_path), "--input", str(source), "--output", str(tmp_path / "o.nii.gz")])
