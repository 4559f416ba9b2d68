"""Dataset checks on small broken MSD folders written with nibabel: every problem listed at once."""

from __future__ import annotations

import json

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("delira.io")

from delira.data import DatasetError, DecathlonDataset, check_case, check_dataset  # noqa: E402

SHAPE = (8, 7, 6)
SPACING = (0.8, 0.8, 2.5)


def write_nifti(path, array, spacing=SPACING, origin=(0.0, 0.0, 0.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(array, affine), str(path))


def good_case(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, SHAPE).astype(np.float32)
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[2:5, 2:5, 1:4] = 1
    seg[6:, 5:, 4:] = 2
    return image, seg


def write_msd(root, cases):
    """``cases``: ``{case_id: (image, seg, image kwargs, seg kwargs)}``; returns root."""
    training = []
    for case_id, (image, seg, image_kw, seg_kw) in cases.items():
        name = f"{case_id}.nii.gz"
        write_nifti(root / "imagesTr" / name, image, **image_kw)
        if seg is not None:
            write_nifti(root / "labelsTr" / name, seg, **seg_kw)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "Broken",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def broken_folder(root):
    cases = {}
    for i in range(9):
        image, seg = good_case(i)
        cases[f"case_{i:03d}"] = [image, seg, {}, {}]
    cases["case_001"][1] = None  # label listed, never written
    cases["case_003"][1] = good_case(3)[1][:, :, :5]  # label shape differs
    cases["case_004"][3] = {"spacing": (0.8, 0.8, 3.0)}  # label spacing differs
    cases["case_005"][1] = cases["case_005"][1].astype(np.float32)
    cases["case_005"][1][0, 0, 0] = 0.5  # a non-integer label
    cases["case_006"][0][1, 2, 3] = np.nan
    cases["case_006"][0][1, 2, 4] = np.inf
    cases["case_007"][1][0, 0, 0] = 5  # undeclared label
    cases["case_008"][3] = {"origin": (10.0, 0.0, 0.0)}  # label origin differs
    write_msd(root, {k: tuple(v) for k, v in cases.items()})
    # case_002: a truncated .nii.gz image
    path = root / "imagesTr" / "case_002.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root


def test_every_problem_of_every_case_is_listed_with_case_file_and_fix(tmp_path):
    root = broken_folder(tmp_path)
    with pytest.raises(DatasetError) as info:
        check_dataset(root)
    problems = info.value.problems
    assert isinstance(info.value, ValueError)
    by_case = {f"case_{i:03d}": [p for p in problems if f"case case_{i:03d}:" in p] for i in range(9)}
    assert by_case["case_000"] == []  # the good case
    assert all(len(v) == 1 for k, v in by_case.items() if k != "case_000"), problems
    assert len(problems) == 8
    expect = {
        "case_001": ("labelsTr/case_001.nii.gz", "does not exist"),
        "case_002": ("imagesTr/case_002.nii.gz", "truncated or corrupt"),
        "case_003": ("labelsTr/case_003.nii.gz", "spatial shape (8, 7, 5)"),
        "case_004": ("labelsTr/case_004.nii.gz", "spacing"),
        "case_005": ("labelsTr/case_005.nii.gz", "non-integer value(s) (e.g. 0.5)"),
        "case_006": ("imagesTr/case_006.nii.gz", "1 NaN and 1 infinite"),
        "case_007": ("labelsTr/case_007.nii.gz", "[5]"),
        "case_008": ("labelsTr/case_008.nii.gz", "origin"),
    }
    for case, (file, what) in expect.items():
        (problem,) = by_case[case]
        assert file in problem and what in problem, problem
    # every line also says how to fix it, and the message lists them all
    assert all(";" in p for p in problems)
    assert all(p in str(info.value) for p in problems)


def test_threads_report_the_same_problems_in_case_order(tmp_path):
    root = broken_folder(tmp_path)
    with pytest.raises(DatasetError) as serial:
        check_dataset(root)
    with pytest.raises(DatasetError) as threaded:
        check_dataset(DecathlonDataset(root, allow_missing=True), num_workers=3)
    assert threaded.value.problems == serial.value.problems


def test_a_clean_folder_passes_and_tiny_geometry_noise_is_tolerated(tmp_path):
    image, seg = good_case(0)
    noisy = (SPACING[0] * (1 + 1e-5), SPACING[1], SPACING[2])
    root = write_msd(tmp_path, {"a": (image, seg, {}, {"spacing": noisy}), "b": (*good_case(1), {}, {})})
    check_dataset(root)  # no error
    ds = DecathlonDataset(root)
    assert ds[0]["seg"].dtype == np.int16


def test_nnunet_v2_region_labels_are_declared(tmp_path):
    image, seg = good_case(0)
    seg[0, 0, 0] = 3
    root = write_msd(tmp_path, {"a": (image, seg, {}, {})})
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole": [1, 2, 3]}
    (root / "dataset.json").write_text(json.dumps(meta))
    check_dataset(root)  # 2 and 3 belong to the region label


def test_check_case_on_samples_in_memory():
    data = np.ones((2, 4, 4), dtype=np.float32)
    seg = np.zeros((1, 4, 4), dtype=np.int16)
    assert check_case({"data": data, "seg": seg, "case_id": "ok"}, declared_labels=[0, 1]) == []
    data[1, 0, 0] = np.nan
    bad_seg = np.zeros((1, 4, 3), dtype=np.float64)
    bad_seg[0, 0, 0] = 1.5
    problems = check_case(
        {"data": data, "seg": bad_seg, "case_id": "x"},
        declared_labels=[0, 1],
        files={"images": ["t1.nii.gz", "t2.nii.gz"], "seg": "x_seg.nii.gz"},
    )
    assert len(problems) == 3
    assert "t2.nii.gz (channel 1) holds 1 NaN" in problems[0]
    assert "x_seg.nii.gz has spatial shape (4, 3)" in problems[1]
    assert "non-integer" in problems[2] and "1.5" in problems[2]
    undeclared = check_case({"data": np.ones((1, 3)), "seg": np.array([[0, 2, 7]]), "case_id": "u"}, [0, 2])
    assert len(undeclared) == 1 and "[7]" in undeclared[0]
    geometry = check_case(
        {
            "data": np.ones((1, 2, 2)),
            "spacing": (1.0, 1.0),
            "seg": np.zeros((1, 2, 2), np.uint8),
            "seg_spacing": (1.0, 1.01),
            "case_id": "g",
        }
    )
    assert len(geometry) == 1 and "spacing" in geometry[0]


# -- the five problems of issue 13, found before training starts ---------------------------------------
def five_problem_folder(root, missing=True):
    """An MSD folder of 6 cases; 5 of them (4 with ``missing=False``) have one problem each."""
    cases = {f"case_{i:03d}": list((*good_case(i), {}, {})) for i in range(6)}
    if missing:
        cases["case_001"][1] = None  # listed in dataset.json, never written
    cases["case_003"][1] = good_case(3)[1][:, :5, :]  # label of another shape
    seg = cases["case_004"][1].astype(np.float32)
    seg[0, 0, 0] = 0.5
    cases["case_004"][1] = seg  # a float label holding 0.5
    cases["case_005"][0][4, 3, 2] = np.nan  # a NaN image voxel
    write_msd(root, {k: tuple(v) for k, v in cases.items()})
    path = root / "imagesTr" / "case_002.nii.gz"  # a truncated .nii.gz
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root


FIVE_EXPECTED = {  # case: (file, finding, fix)
    "case_001": ("labelsTr/case_001.nii.gz", "does not exist", "restore the file"),
    "case_002": ("imagesTr/case_002.nii.gz", "truncated or corrupt", "download or export it again"),
    "case_003": ("labelsTr/case_003.nii.gz", "spatial shape (8, 5, 6)", "export the label on the image's"),
    "case_004": ("labelsTr/case_004.nii.gz", "non-integer value(s) (e.g. 0.5)", "save the segmentation with"),
    "case_005": ("imagesTr/case_005.nii.gz", "1 NaN", "replace them"),
}


def assert_five_problems(error, missing=True):
    """``error`` lists exactly the five problems (four without the missing file), each with its case,
    file and fix, all in one message."""
    expected = {k: v for k, v in FIVE_EXPECTED.items() if missing or k != "case_001"}
    problems = error.problems
    assert len(problems) == len(expected), problems
    for case, (file, finding, fix) in expected.items():
        (problem,) = [p for p in problems if f"case {case}:" in p]
        assert file in problem and finding in problem and fix in problem, problem
        assert problem in str(error)
    assert f"{len(expected)} problem(s) found" in str(error)


def test_the_five_problems_are_listed_together(tmp_path):
    root = five_problem_folder(tmp_path / "Task01_Broken")
    with pytest.raises(DatasetError) as info:
        check_dataset(root)
    assert_five_problems(info.value)


def broken_experiment(tmp_path, normalization, missing=True):
    """Run a k-fold Experiment on the broken folder; returns its DatasetError, after checking that
    no fold started training."""
    pytest.importorskip("torch", reason="the Experiment trains a PyTorch network")
    from delira.training import Experiment

    root = five_problem_folder(tmp_path / "Task01_Broken", missing=missing)
    config = {
        "name": "broken",
        "task": "segmentation",
        "model": {
            "name": "unet",
            "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
        },
        "data": {
            "kind": "decathlon",
            "path": str(root),
            "transforms": "none",
            "preprocessing": {"normalization": normalization, "cache_dir": str(tmp_path / "cache")},
        },
        "training": {"epochs": 1, "batch_size": 2, "workers": 2},
        "experiment": {"folds": 2, "seed": 0, "output": str(tmp_path / "out")},
    }
    run_dir = tmp_path / "run"
    with pytest.raises(DatasetError) as info:
        Experiment(config, run_dir=run_dir, verbose=False).kfold()
    assert not list(run_dir.glob("fold_*/checkpoints/*")) and not list(run_dir.glob("fold_*/metrics.csv"))
    return info.value


def test_an_experiment_lists_four_problems_together_before_the_first_epoch(tmp_path):
    assert_five_problems(broken_experiment(tmp_path, "zscore", missing=False), missing=False)


@pytest.mark.parametrize("normalization", ["zscore", "none"])
def test_an_experiment_on_a_broken_folder_stops_before_the_first_epoch(tmp_path, normalization):
    assert_five_problems(broken_experiment(tmp_path, normalization))
