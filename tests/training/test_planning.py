"""The experiment planner: synthetic fingerprints with answers worked out by hand."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import yaml

from delira.data.fingerprint import CaseFingerprint, Fingerprint
from delira.training.config import load_config
from delira.training.planning import (
    Plan,
    add_plan_arguments,
    plan_experiment,
    plan_to_yaml,
    plan_topology,
)

GIB = 1024**3


# -- fingerprints: delira.data's own dataclasses, filled by hand ------------------------------------
STATS = {
    "mean": 40.0,
    "std": 120.0,
    "min": -1000.0,
    "max": 2000.0,
    "median": 35.0,
    "percentile_00_5": -950.5,
    "percentile_99_5": 1210.25,
}


def fingerprint(shapes, spacings, channels=("MR",), crop=1.0, labels=None):
    """Cases of the given shapes and spacings; ``crop`` scales every axis of the nonzero box."""
    cases = [
        CaseFingerprint(
            f"case_{i:03d}",
            tuple(shape),
            tuple(float(s) for s in spacing),
            tuple(max(1, round(n * crop)) for n in shape),
        )
        for i, (shape, spacing) in enumerate(zip(shapes, spacings))
    ]
    return Fingerprint(
        cases,
        list(channels),
        labels or {0: "background", 1: "organ", 2: "tumour"},
        [dict(STATS)] * len(channels),
    )


def usable_gib(gpu):
    return gpu - max(1.0, 0.1 * gpu)


def estimate(plan: Plan) -> int:
    """The memory estimate of the plan's network, patch and batch, from delira.models."""
    from delira.models.configs import UNetConfig
    from delira.models.memory import estimate_unet_memory_bytes

    args = plan.config["model"]["args"]
    net = UNetConfig(**args)
    return estimate_unet_memory_bytes(
        net, plan.config["data"]["patch_size"], plan.config["training"]["batch_size"]
    )


def check_topology(plan: Plan):
    """Every axis of the patch divisible by its stride product; stage 0 stride 1; lengths agree."""
    args, patch = plan.config["model"]["args"], plan.config["data"]["patch_size"]
    strides, kernels = args["strides"], args["kernel_sizes"]
    assert len(strides) == len(kernels) == len(args["features"])
    assert strides[0] == [1] * len(patch)
    for axis, size in enumerate(patch):
        assert size % math.prod(s[axis] for s in strides) == 0, (patch, strides)
    cap = 320 if len(patch) == 3 else 512
    assert args["features"] == [min(32 * 2**i, cap) for i in range(len(strides))]


# -- target spacing, 3D / 2D, topology --------------------------------------------------------------
def test_isotropic_data_plans_a_3d_unet_pooling_every_axis_equally():
    fp = fingerprint([(64, 64, 64)] * 10, [(1.0, 1.0, 1.0)] * 10)
    plan = plan_experiment(fp, dataset_path="/data/Task09_Spleen", gpu_memory_gib=8.0)
    cfg = plan.config
    assert cfg["data"]["preprocessing"]["target_spacing"] == [1.0, 1.0, 1.0]
    assert cfg["data"]["spatial_dims"] == 3 and cfg["model"]["args"]["spatial_dims"] == 3
    assert cfg["data"]["slice_axis"] is None
    # the whole 64^3 median case fits at batch 2 in 8 GiB: the patch is the median shape
    assert cfg["data"]["patch_size"] == [64, 64, 64]
    strides = cfg["model"]["args"]["strides"]
    # 64 -> 32 -> 16 -> 8 -> 4: four poolings on every axis, the last one leaves a 4^3 bottleneck
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert cfg["model"]["args"]["kernel_sizes"] == [[3, 3, 3]] * 5
    check_topology(plan)
    # one batch may cover 5% of 10 * 64^3 voxels = half a patch: the batch stays at the minimum 2
    assert cfg["training"]["batch_size"] == 2
    assert cfg["data"]["augmentation"]["rotation"] == [[-30.0, 30.0]] * 3
    assert "&id" not in plan_to_yaml(plan)  # the YAML repeats equal lists, no anchors
    assert cfg["data"]["augmentation"]["mirror_axes"] == [0, 1, 2]
    assert cfg["data"]["path"] == "/data/Task09_Spleen" and cfg["data"]["kind"] == "decathlon"
    assert cfg["backend"] == "torch" and cfg["training"]["device"] == "cuda"


def test_anisotropic_data_gets_the_10th_percentile_and_pools_the_fine_axes_first():
    # 11 cases, 0.7 x 0.7 mm in plane, slices of 2.5 to 5 mm, 20 to 60 slices
    z = [2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    slices = [60, 50, 44, 38, 30, 20, 24, 28, 32, 36, 40]
    fp = fingerprint([(256, 256, n) for n in slices], [(0.7, 0.7, s) for s in z])
    plan = plan_experiment(fp, dataset_path="/data/x", gpu_memory_gib=8.0)
    cfg = plan.config
    # median 5.0 mm is 7.1x the in-plane 0.7 mm: anisotropic; the 10th percentile of 11 sorted
    # spacings sits at position 0.1 * (11 - 1) = 1, the second smallest: 3.0 mm
    assert cfg["data"]["preprocessing"]["target_spacing"] == [0.7, 0.7, 3.0]
    assert "3" in plan.reasons["data.preprocessing.target_spacing"]
    assert plan.summary["coarse_axis"] == 2
    assert cfg["data"]["spatial_dims"] == 3
    args = cfg["model"]["args"]
    strides, kernels = args["strides"], args["kernel_sizes"]
    # 0.7 -> 1.4 -> 2.8 in plane while z stays at 3.0 (more than 2x 0.7 and 1.4): two in-plane
    # poolings before the first along z; kernel 1 along z while its spacing exceeds 2x the finest
    assert strides[1] == [2, 2, 1] and strides[2] == [2, 2, 1]
    assert kernels[0] == [3, 3, 1] and kernels[1] == [3, 3, 1] and kernels[2] == [3, 3, 3]
    assert strides[3][2] == 2
    check_topology(plan)
    assert len(strides) <= 6
    # the coarse axis turns freely, tilts of it are small
    rotation = cfg["data"]["augmentation"]["rotation"]
    assert rotation[2] == [-180.0, 180.0]
    assert all(abs(lo) <= 15 and hi <= 15 for lo, hi in rotation[:2])
    assert load_config(cfg)["data"]["preprocessing"]["target_spacing"] == [0.7, 0.7, 3.0]


def test_the_coarse_axis_is_never_made_finer_than_the_fine_axes():
    # median z 4 mm (4x the 1 mm in plane), but the 10th percentile (position 1 of 11) is 0.8 mm
    z = [0.8, 0.8] + [4.0] * 9
    fp = fingerprint([(128, 128, 40)] * 11, [(1.0, 1.0, s) for s in z])
    plan = plan_experiment(fp, gpu_memory_gib=8.0)
    assert plan.config["data"]["preprocessing"]["target_spacing"] == [1.0, 1.0, 1.0]
    assert "clamped" in plan.reasons["data.preprocessing.target_spacing"]


def test_few_slices_give_a_2d_plan_along_the_coarse_axis():
    # 10 slices of 6 mm: the median resampled extent along z is 10 voxels < 16
    fp = fingerprint([(256, 256, 10)] * 8, [(0.5, 0.5, 6.0)] * 8)
    plan = plan_experiment(fp, dataset_path="/data/y", gpu_memory_gib=8.0)
    cfg = plan.config
    assert cfg["data"]["spatial_dims"] == 2 and cfg["model"]["args"]["spatial_dims"] == 2
    assert cfg["data"]["slice_axis"] == 2
    assert cfg["data"]["preprocessing"]["target_spacing"] == [0.5, 0.5, None]
    assert len(cfg["data"]["patch_size"]) == 2
    assert cfg["data"]["patch_size"] == [256, 256]  # the whole median slice fits
    assert cfg["data"]["augmentation"]["rotation"] == [[-180.0, 180.0]]
    assert cfg["data"]["augmentation"]["mirror_axes"] == [0, 1]
    assert len(cfg["model"]["args"]["strides"]) <= 7
    assert all(len(s) == 2 for s in cfg["model"]["args"]["strides"])
    check_topology(plan)
    load_config(cfg)


def test_extreme_anisotropy_gives_a_2d_plan_even_with_many_slices():
    # 0.4 x 0.4 x 5 mm (12.5x), 60 slices of 5 mm: 3D could pool z, but in-plane context dominates
    fp = fingerprint([(200, 200, 60)] * 6, [(0.4, 0.4, 5.0)] * 6)
    plan = plan_experiment(fp, gpu_memory_gib=8.0)
    assert plan.config["data"]["spatial_dims"] == 2 and plan.config["data"]["slice_axis"] == 2
    assert plan.config["data"]["preprocessing"]["target_spacing"] == [0.4, 0.4, None]


def test_plan_topology_rounds_the_patch_up_to_the_stride_product():
    top = plan_topology([1.0, 1.0, 1.0], [50, 37, 9])
    # 50: 25, 13, 7 -> 3 poolings (8); 37: 19, 10, 5 -> 3 poolings (8); 9 -> 5: 1 pooling (2)
    assert top.divisor == (8, 8, 2)
    assert top.patch_size == (56, 40, 10)
    assert top.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 1), (2, 2, 1))
    with pytest.raises(ValueError, match="one per spatial axis"):
        plan_topology([1.0, 1.0], [32, 32, 32])


# -- normalization ----------------------------------------------------------------------------------
def test_ct_channels_get_the_fingerprints_foreground_percentiles():
    fp = fingerprint([(64, 64, 64)] * 4, [(1.0, 1.0, 1.0)] * 4, channels=("ct", "T2"))
    pre = plan_experiment(fp, gpu_memory_gib=8.0).config["data"]["preprocessing"]
    assert pre["normalization"] == ["ct", "zscore"]
    assert pre["ct_stats"] == {0: {"lower": -950.5, "upper": 1210.25, "mean": 40.0, "std": 120.0}}


def test_zscore_inside_the_nonzero_mask_when_cropping_shrinks_the_volume_by_a_quarter():
    shapes, spacings = [(64, 64, 64)] * 4, [(1.0, 1.0, 1.0)] * 4
    # 0.9^3 = 73% of the volume left after cropping (shrinks by 27% >= 25%)
    shrunk = plan_experiment(fingerprint(shapes, spacings, crop=0.9), gpu_memory_gib=8.0)
    assert shrunk.config["data"]["preprocessing"]["normalization"] == ["zscore_nonzero"]
    assert shrunk.config["data"]["preprocessing"]["ct_stats"] is None
    # 0.95^3 = 86% left: plain per-case z-score
    kept = plan_experiment(fingerprint(shapes, spacings, crop=0.95), gpu_memory_gib=8.0)
    assert kept.config["data"]["preprocessing"]["normalization"] == ["zscore"]


# -- memory -----------------------------------------------------------------------------------------
def test_a_smaller_gpu_gives_a_smaller_patch_times_batch_and_the_estimate_fits():
    pytest.importorskip("delira.models.memory")
    fp = fingerprint([(192, 192, 160)] * 40, [(1.0, 1.0, 1.0)] * 40)
    sizes = {}
    for gpu in (4.0, 12.0):
        plan = plan_experiment(fp, gpu_memory_gib=gpu)
        assert estimate(plan) <= usable_gib(gpu) * GIB
        assert plan.summary["memory_estimate_gib"] <= usable_gib(gpu)
        check_topology(plan)
        patch, batch = plan.config["data"]["patch_size"], plan.config["training"]["batch_size"]
        assert batch >= 2
        dataset_voxels = 40 * 192 * 192 * 160
        assert batch == 2 or batch * math.prod(patch) <= 0.05 * dataset_voxels  # nnU-Net's 5% cap
        sizes[gpu] = math.prod(patch) * batch
    assert sizes[4.0] <= sizes[12.0]


def test_a_cpu_plan_uses_a_2_gib_budget_and_batch_2():
    fp = fingerprint([(192, 192, 160)] * 40, [(1.0, 1.0, 1.0)] * 40)
    plan = plan_experiment(fp, dataset_path="/data/v", device="cpu", backend="tf")
    assert plan.config["training"]["batch_size"] == 2
    assert plan.config["training"]["device"] == "cpu" and plan.config["backend"] == "tf"
    assert estimate(plan) <= 2 * GIB
    load_config(plan.config)


def test_too_small_a_gpu_is_refused_with_advice():
    fp = fingerprint([(64, 64, 64)] * 4, [(1.0, 1.0, 1.0)] * 4)
    with pytest.raises(ValueError, match=r"gpu_memory_gib=0\.5.*reserve"):
        plan_experiment(fp, gpu_memory_gib=0.5)


# -- YAML, config, CLI ------------------------------------------------------------------------------
def test_the_yaml_round_trips_with_every_reason_as_a_comment_above_its_key():
    z = [2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    fp = fingerprint([(256, 256, 40)] * 11, [(0.7, 0.7, s) for s in z], channels=("CT",))
    plan = plan_experiment(fp, dataset_path="/data/z", gpu_memory_gib=8.0)
    text = plan_to_yaml(plan)
    assert yaml.safe_load(text) == plan.config
    lines = text.splitlines()
    for key, reason in plan.reasons.items():
        comment = f"# {reason}"
        found = [i for i, line in enumerate(lines) if line.strip() == comment]
        assert found, key
        leaf = key.split(".")[-1]
        assert lines[found[0] + 1].strip().startswith(f"{leaf}:"), (key, lines[found[0] + 1])
    assert text.startswith("#") and "summary:" in text and "target_spacing" in text


def test_the_plan_is_a_complete_valid_config():
    fp = fingerprint([(128, 128, 96)] * 6, [(0.8, 0.8, 1.0)] * 6, channels=("MR", "CT"))
    plan = plan_experiment(fp, dataset_path="/data/w", gpu_memory_gib=8.0, name="w")
    resolved = load_config(plan.config)
    for section in ("model", "training", "experiment"):
        assert resolved[section] == plan.config[section]
    assert resolved["name"] == "w"
    # the UNet config builds from the planned arguments (strides and kernels per stage)
    from delira.models.configs import UNetConfig

    net = UNetConfig(**plan.config["model"]["args"])
    assert net.depth == len(plan.config["model"]["args"]["strides"])


def test_plan_arguments_parse_and_exclude_gpu_memory_with_cpu():
    parser = argparse.ArgumentParser()
    add_plan_arguments(parser)
    args = parser.parse_args(
        ["Task01", "-o", "p.yaml", "--gpu-memory", "11", "--set", "training.epochs=5", "--set", "a.b=1"]
    )
    assert args.dataset_or_config == "Task01" and args.output == "p.yaml" and args.gpu_memory == 11.0
    assert args.set == ["training.epochs=5", "a.b=1"] and args.device is None
    args = parser.parse_args(
        ["Task01", "--device", "cpu", "--backend", "tf", "--workers", "2", "--no-progress"]
    )
    assert args.device == "cpu" and args.backend == "tf" and args.workers == 2 and args.no_progress
    with pytest.raises(SystemExit):
        parser.parse_args(["Task01", "--device", "cpu", "--gpu-memory", "8"])


# -- a real MSD folder: fingerprint (cached), plan, --set overrides, the YAML written ---------------
def _msd_folder(root, affine=None):
    nib = pytest.importorskip("nibabel", reason="the MSD folder holds NIfTI files")
    import json

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, slices in enumerate((20, 24, 28)):
        image = np.zeros((24, 24, slices), np.float32)
        image[4:20, 4:20, 2:-2] = rng.normal(100.0, 10.0, size=(16, 16, slices - 4))
        label = (image > 100).astype(np.uint8)
        affine = np.diag([1.0, 1.0, 1.2, 1.0]) if affine is None else affine
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "Tiny",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "inside"},
        "numTraining": 3,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def test_plan_dataset_fingerprints_plans_applies_overrides_and_writes_the_yaml(tmp_path):
    pytest.importorskip("delira.data.fingerprint")
    from delira.training.planning import plan_dataset

    folder = _msd_folder(tmp_path / "Task77_Tiny")
    out = tmp_path / "plans" / "plan.yaml"
    plan = plan_dataset(
        folder,
        output=out,
        progress=False,
        device="cpu",
        overrides=["training.epochs=3", "data.patch_size=[16, 16, 16]"],
    )
    assert (folder / ".delira" / "fingerprint.json").is_file()  # cached beside the dataset
    assert plan.config["training"]["epochs"] == 3 and plan.config["data"]["patch_size"] == [16, 16, 16]
    assert "--set training.epochs=3" in plan.reasons["training.epochs"]
    # the nonzero box is 16 x 16 x (slices - 4) of 24 x 24 x slices: well under 75% -> zscore_nonzero
    assert plan.config["data"]["preprocessing"]["normalization"] == ["zscore_nonzero"]
    assert plan.config["data"]["preprocessing"]["target_spacing"] == [1.0, 1.0, 1.2]
    assert plan.config["model"]["args"]["num_classes"] == 2
    written = yaml.safe_load(out.read_text())
    assert written == plan.config and load_config(out)["data"]["path"] == str(folder.resolve())

    # a config naming the dataset: its name, experiment section and cache_dir are kept
    cache = tmp_path / "cache"
    config = tmp_path / "base.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "backend": "tf",
                "data": {
                    "kind": "decathlon",
                    "path": str(folder),
                    "preprocessing": {"cache_dir": str(cache)},
                },
                "experiment": {"folds": 2, "output": str(tmp_path / "runs")},
            }
        )
    )
    again = plan_dataset(config, progress=False, device="cpu")
    assert (cache / "fingerprint.json").is_file()
    assert again.config["name"] == "tiny" and again.config["backend"] == "tf"
    assert again.config["experiment"]["folds"] == 2
    assert again.config["data"]["preprocessing"]["cache_dir"] == str(cache)


def test_plan_dataset_names_a_folder_without_dataset_json(tmp_path):
    from delira.training.planning import plan_dataset

    with pytest.raises(FileNotFoundError, match=r"no dataset\.json"):
        plan_dataset(tmp_path, progress=False)


def test_a_reoriented_dataset_is_planned_on_its_reoriented_axes(tmp_path):
    """data.preprocessing.orientation: the fingerprint (and so the per-axis target spacing) is taken
    on the reoriented cases. Here voxel axis 2 (1.2 mm) points right, axis 0 anterior, axis 1
    superior, so in RAS the 1.2 mm axis comes first."""
    pytest.importorskip("delira.data.fingerprint")
    from delira.training.planning import plan_dataset

    affine = np.array([[0, 0, 1.2, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    folder = _msd_folder(tmp_path / "Task78_Turned", affine=affine)
    plain = plan_dataset(folder, progress=False, device="cpu")
    assert plain.config["data"]["preprocessing"]["target_spacing"] == [1.0, 1.0, 1.2]
    assert plain.config["data"]["preprocessing"]["orientation"] is None
    ras = plan_dataset(folder, progress=False, device="cpu", overrides=["data.preprocessing.orientation=RAS"])
    assert ras.config["data"]["preprocessing"]["target_spacing"] == [1.2, 1.0, 1.0]
    assert ras.config["data"]["preprocessing"]["orientation"] == "RAS"
