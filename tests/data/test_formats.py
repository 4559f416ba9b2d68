"""Dataset formats read from folders built here with real NIfTI files (nibabel)."""

from __future__ import annotations

import json
import sys

import delira_data_testing as h
import nibabel as nib
import numpy as np
import pytest

from delira.data import DataLoader, DecathlonDataset, ManifestDataset, group_kfold_split
from delira.data.formats import default_reader

SPACING = (0.8, 0.9, 2.5)
SHAPE = (6, 5, 4)


def write_nifti(path, array, spacing=SPACING):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def volumes(case, channels=2):
    rng = np.random.default_rng(case)
    image = rng.random((*SHAPE, channels)).astype(np.float32)  # (x, y, z, c) as MSD stores it
    seg = rng.integers(0, 3, SHAPE).astype(np.uint8)
    return image, seg


def build_msd(root, cases=(1, 2, 3), split_channels=False):
    training = []
    for case in cases:
        image, seg = volumes(case)
        name = f"heart_{case:03d}.nii.gz"
        if split_channels:  # nnU-Net v1 conversion: one file per channel, listed without suffix
            for c in range(image.shape[-1]):
                write_nifti(root / "imagesTr" / f"heart_{case:03d}_{c:04d}.nii.gz", image[..., c])
        else:
            write_nifti(root / "imagesTr" / name, image)
        write_nifti(root / "labelsTr" / name, seg)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    image, _ = volumes(9)
    write_nifti(root / "imagesTs" / "heart_009.nii.gz", image)
    meta = {
        "name": "Heart",
        "modality": {"0": "T1", "1": "T2"},
        "labels": {"0": "background", "1": "atrium", "2": "ventricle"},
        "numTraining": len(cases),
        "training": training,
        "test": ["./imagesTs/heart_009.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("split_channels", [False, True])
def test_msd_layout(tmp_path, split_channels):
    ds = DecathlonDataset(build_msd(tmp_path, split_channels=split_channels), reader=h.nibabel_reader)
    assert len(ds) == 3 and ds.case_ids == ["heart_001", "heart_002", "heart_003"]
    assert ds.channel_names == ["T1", "T2"] and ds.label_names == {
        0: "background",
        1: "atrium",
        2: "ventricle",
    }
    s = ds[1]
    image, seg = volumes(2)
    assert s["data"].shape == (2, *SHAPE) and s["data"].dtype == np.float32
    np.testing.assert_array_equal(s["data"], np.moveaxis(image, -1, 0))
    assert s["seg"].shape == (1, *SHAPE) and s["seg"].dtype == np.int16
    np.testing.assert_array_equal(s["seg"][0], seg)
    np.testing.assert_allclose(s["spacing"], SPACING, rtol=1e-6)
    assert s["case_id"] == "heart_002"
    test = DecathlonDataset(tmp_path, split="test", reader=h.nibabel_reader)
    assert test.case_ids == ["heart_009"] and "seg" not in test[0]


def test_nnunet_v2_layout(tmp_path):
    for case in ("a", "b"):
        image, seg = volumes(ord(case), channels=1)
        write_nifti(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", image[..., 0])
        write_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz", seg)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = DecathlonDataset(tmp_path, reader=h.nibabel_reader)
    assert ds.case_ids == ["a", "b"] and ds.label_names == {0: "background", 1: "liver"}
    np.testing.assert_array_equal(ds[1]["data"][0], volumes(ord("b"), channels=1)[0][..., 0])


def test_missing_files_are_listed(tmp_path):
    build_msd(tmp_path)
    (tmp_path / "labelsTr" / "heart_002.nii.gz").unlink()
    (tmp_path / "imagesTr" / "heart_003.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        DecathlonDataset(tmp_path, reader=h.nibabel_reader)
    message = str(info.value)
    assert "2 file(s)" in message
    assert str(tmp_path / "labelsTr" / "heart_002.nii.gz") in message
    assert str(tmp_path / "imagesTr" / "heart_003.nii.gz") in message
    (tmp_path / "labelsTr" / "heart_002.nii.gz").touch()
    image, _ = volumes(3)
    write_nifti(tmp_path / "imagesTr" / "heart_003_0000.nii.gz", image[..., 0])  # channel 1 is missing
    with pytest.raises(FileNotFoundError, match=r"heart_003_0001\.nii\.gz"):
        DecathlonDataset(tmp_path, reader=h.nibabel_reader)
    with pytest.raises(FileNotFoundError, match=r"dataset\.json"):
        DecathlonDataset(tmp_path / "nowhere")


def test_empty_training_split_is_an_error(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "training": []}))
    with pytest.raises(ValueError, match="no training cases"):
        DecathlonDataset(tmp_path, reader=h.nibabel_reader)


def test_msd_dataset_through_worker_processes(tmp_path, no_leaks):
    ds = DecathlonDataset(build_msd(tmp_path), reader=h.nibabel_reader)
    loader = DataLoader(ds, batch_size=3, num_workers=1, timeout=60)
    batches = []
    for b in loader:
        batches.append({k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in b.items()})
        no_leaks.extend(loader.worker_pids)
    (batch,) = batches
    assert batch["data"].shape == (3, 2, *SHAPE) and batch["seg"].shape == (3, 1, *SHAPE)
    np.testing.assert_array_equal(batch["data"][2], np.moveaxis(volumes(3)[0], -1, 0))
    assert batch["case_id"] == ["heart_001", "heart_002", "heart_003"]


def test_default_reader_is_delira_io(tmp_path):
    try:
        from delira.io import read_image  # noqa: F401
    except ImportError:
        pytest.skip("delira.io.read_image is not available")
    ds = DecathlonDataset(build_msd(tmp_path, cases=(4,)))
    s = ds[0]
    np.testing.assert_array_equal(s["data"], np.moveaxis(volumes(4)[0], -1, 0))
    np.testing.assert_allclose(s["spacing"], SPACING, rtol=1e-6)


def test_missing_delira_io_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "delira.io", None)
    with pytest.raises(ImportError, match=r"pip install 'delira-data\[io\]'"):
        default_reader()


def write_manifest_cases(root):
    rows = []
    for i, (label, patient) in enumerate(
        [("benign", "p1"), ("malignant", "p1"), ("benign", "p2"), ("malignant", "p3")]
    ):
        image, seg = volumes(10 + i, channels=1)
        write_nifti(root / "img" / f"c{i}.nii.gz", image[..., 0])
        write_nifti(root / "seg" / f"c{i}.nii.gz", seg)
        rows.append(
            {
                "id": f"c{i}",
                "image": f"img/c{i}.nii.gz",
                "mask": f"seg/c{i}.nii.gz",
                "label": label,
                "patient": patient,
            }
        )
    return rows


def test_manifest_csv(tmp_path):
    rows = write_manifest_cases(tmp_path)
    lines = ["id,image,mask,label,patient"] + [",".join(r.values()) for r in rows]
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    ds = ManifestDataset(
        tmp_path / "cases.csv",
        seg_column="mask",
        case_id_column="id",
        group_column="patient",
        reader=h.nibabel_reader,
    )
    assert ds.classes == ["benign", "malignant"] and ds.labels == [0, 1, 0, 1]
    assert ds.groups == ["p1", "p1", "p2", "p3"] and ds.case_ids == ["c0", "c1", "c2", "c3"]
    s = ds[1]
    np.testing.assert_array_equal(s["data"][0], volumes(11, channels=1)[0][..., 0])
    np.testing.assert_array_equal(s["seg"][0], volumes(11, channels=1)[1])
    assert s["label"] == 1 and s["group"] == "p1"
    splits = group_kfold_split(ds.case_ids, ds.groups, n_splits=2)
    for fold in splits:
        assert ("c0" in fold.val) == ("c1" in fold.val)


def test_manifest_json_int_labels_and_errors(tmp_path):
    rows = write_manifest_cases(tmp_path)
    cases = [{"image": r["image"], "label": i % 2} for i, r in enumerate(rows)]
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    ds = ManifestDataset(tmp_path / "cases.json", reader=h.nibabel_reader)
    assert ds.labels == [0, 1, 0, 1] and ds.classes is None and ds[2]["label"] == 0
    cases[2]["image"] = "img/gone.nii.gz"
    (tmp_path / "broken.json").write_text(json.dumps(cases))
    with pytest.raises(FileNotFoundError, match=r"gone\.nii\.gz"):
        ManifestDataset(tmp_path / "broken.json", reader=h.nibabel_reader)
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(ValueError, match="no case"):
        ManifestDataset(tmp_path / "empty.csv")
    del cases[1]["label"]
    (tmp_path / "nolabel.json").write_text(json.dumps(cases))
    with pytest.raises(ValueError, match=r"column 'label' is missing or empty in row\(s\) \[1\]"):
        ManifestDataset(tmp_path / "nolabel.json")
