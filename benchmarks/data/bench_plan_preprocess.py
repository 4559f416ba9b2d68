"""Plan and preprocessing: Delira against nnU-Net v2 on the same synthetic anisotropic CT dataset.

The script

1. generates a seeded synthetic CT dataset (default 20 cases of about 300 x 300 x 60 voxels, each
   shape varied by +-10 %, spacing 0.7-0.9 mm in-plane and 2.5-3.5 mm between slices; a body with a
   fat rim and a spine, a large organ (label 1) and small lesions (label 2), HU-like int16
   intensities with noise; labels uint8; NIfTI with real affines) and writes it twice, sharing the
   files through hard links: in the MSD layout for Delira (``imagesTr/case_000.nii.gz``,
   ``labelsTr``, ``dataset.json`` with ``"modality": {"0": "CT"}``) and in nnU-Net v2's raw layout
   (``Dataset501_SynthCT/imagesTr/case_000_0000.nii.gz``, ``labelsTr``, ``dataset.json`` with
   ``channel_names``, ``labels``, ``numTraining``, ``file_ending``);
2. Delira: ``compute_fingerprint(folder, num_workers=W)``, ``plan_experiment(fingerprint,
   gpu_memory_gib=G)`` and the preprocessing of every case as ``delira run`` does it
   (``build_preprocessor(plan.config)`` into a ``PreprocessedDataset`` with ``W`` workers);
3. nnU-Net v2, from its own virtual environment that the script creates when it is missing
   (``python3 -m venv``, then ``pip install nnunetv2==2.8.1 torch==2.13.0``: the exact torch pin
   takes the CPU wheel on this machine; nnU-Net is never imported by Delira nor installed into the
   project's ``.venv``): ``nnUNetv2_extract_fingerprint -d ID -np W --clean``,
   ``nnUNetv2_plan_experiment -d ID`` and ``nnUNetv2_preprocess -d ID -c 3d_fullres -np W`` (and
   ``-c 2d`` with ``--nnunet-2d``), each timed as a subprocess, then reads ``nnUNetPlans.json``;
4. prints both plans side by side (target spacing, median resampled shape, patch, batch, pooling
   and kernel sizes per stage, normalization) in Delira's axis order ``(x, y, z)`` (nnU-Net's plans
   are in SimpleITK's ``(z, y, x)`` order, after its ``transpose_forward``; the script maps them
   back), and the timings of both (fingerprint, plan, preprocess; total and per case) with the ratio
   nnU-Net / Delira, and writes everything as JSON.

nnU-Net's timings are of its command-line tools, so they include starting Python and importing
torch; that start-up (``python -c "import nnunetv2..."``, measured separately) is reported too,
with the ratios computed both with and without it. Delira's stages run in this process after
its modules are imported (the import time is reported separately as well).

Run (from the repository root)::

    .venv/bin/python benchmarks/data/bench_plan_preprocess.py [--cases 20] [--shape 300 300 60]
        [--workers 2] [--json bench-results/plan_preprocess.json] [--quick]

``--quick`` is a 4-case 64 x 64 x 20 smoke run. ``--work-dir DIR --keep`` keeps (and on the next
run reuses, when generated with the same parameters) the dataset; ``--skip-delira`` /
``--skip-nnunet`` run one side; ``--nnunet-json PATH`` takes nnU-Net's results from an earlier
result file of the same dataset instead of running it again. The figures are only comparable
within one run on one machine; on a machine shared with other work they are noisy (the load
average is recorded).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

NNUNET_VERSION = "2.8.1"
TORCH_VERSION = "2.13.0"  # exact pin: the CPU wheel on this machine (a looser pin pulls CUDA wheels)
DEFAULT_VENV = Path("/tmp/bench-nnunet-venv")  # benchmarks/data/.venv-nnunet would not be git-ignored
LABELS = {0: "background", 1: "organ", 2: "lesion"}
REPO = Path(__file__).resolve().parents[2]


# -- 1. the synthetic dataset ------------------------------------------------------------------------
def synth_case(
    index: int, seed: int, base_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic CT case.

    Args:
        index: the case number (with ``seed``, it seeds the case).
        seed: the dataset seed.
        base_shape: ``(x, y, z)`` voxels; each axis is varied by a factor in ``[0.9, 1.1]``.

    Returns:
        ``(image, label, affine)``: ``image`` int16 ``(x, y, z)`` in HU (air -1000, fat about -100,
        soft tissue about 40, organ about 70, lesions about 130, spine 300-700, noise sd 15);
        ``label`` uint8 ``(x, y, z)`` with 0 (background), 1 (organ), 2 (lesions); ``affine``
        float64 ``(4, 4)`` voxel-to-RAS (x and y flipped, as a CT stored in LPS order), spacing
        ``(s, s, sz)`` with ``s`` in ``[0.7, 0.9]`` mm and ``sz`` in ``[2.5, 3.5]`` mm.
    """
    rng = np.random.default_rng([seed, index])
    shape = tuple(max(8, round(n * rng.uniform(0.9, 1.1))) for n in base_shape)
    s_in, s_z = rng.uniform(0.7, 0.9), rng.uniform(2.5, 3.5)
    spacing = (s_in, s_in, s_z)
    # millimetre coordinates centred on the volume, as open grids (x, 1, 1), (1, y, 1), (1, 1, z)
    x, y, z = (
        ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(s)).reshape(
            [-1 if a == axis else 1 for a in range(3)]
        )
        for axis, (n, s) in enumerate(zip(shape, spacing))
    )
    ex, ey, ez = (n * s / 2 for n, s in zip(shape, spacing))

    # body: an elliptic cylinder along z, with a fat rim
    a, b = 0.88 * ex * rng.uniform(0.9, 1.0), 0.68 * ey * rng.uniform(0.9, 1.0)
    q_body = (x / a) ** 2 + (y / b) ** 2  # (x, y, 1)
    image = np.where(q_body < 1, np.float32(40), np.float32(-1000))
    image = np.where((q_body >= 0.82) & (q_body < 1), np.float32(-100), image)
    image = np.broadcast_to(image, shape).copy()
    # spine: a bright cylinder at the back of the body
    sy0 = -0.62 * b
    q_spine = ((x / 14.0) ** 2 + ((y - sy0) / 12.0) ** 2).astype(np.float32)
    spine = np.broadcast_to(q_spine < 1, shape)
    image[spine] = (300 + 400 * (1 - np.broadcast_to(q_spine, shape)[spine])).astype(np.float32)

    # the organ (label 1): a large ellipsoid with a wavy surface, in the right half of the body
    c1 = (-0.35 * a * rng.uniform(0.8, 1.2), 0.05 * b * rng.uniform(-1, 1), 0.2 * ez * rng.uniform(-1, 1))
    r1 = (0.45 * a * rng.uniform(0.9, 1.1), 0.55 * b * rng.uniform(0.9, 1.1), min(0.6 * ez, 90.0))
    phase = rng.uniform(0, 2 * np.pi, 3)
    wave = 0.12 * (np.sin(x / 17.0 + phase[0]) * np.sin(y / 23.0 + phase[1]) + np.sin(z / 29.0 + phase[2]))
    q_organ = ((x - c1[0]) / r1[0]) ** 2 + ((y - c1[1]) / r1[1]) ** 2 + ((z - c1[2]) / r1[2]) ** 2 + wave
    organ = q_organ < 1
    label = organ.astype(np.uint8)
    image[organ] = 70
    # lesions (label 2): 1-3 small spheres inside the organ and one elsewhere in the body
    for k in range(int(rng.integers(1, 4)) + 1):
        if k == 0:  # outside the organ, left of the spine
            c = (
                0.45 * a * rng.uniform(0.7, 1.0),
                -0.25 * b * rng.uniform(0.5, 1.0),
                0.3 * ez * rng.uniform(-1, 1),
            )
        else:
            c = tuple(c1[i] + 0.45 * r1[i] * rng.uniform(-1, 1) for i in range(3))
        r = rng.uniform(6.0, 18.0)
        lesion = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + ((z - c[2]) * 0.9) ** 2) < r * r
        label[lesion] = 2
        image[lesion] = 130
    image += rng.standard_normal(shape, dtype=np.float32) * np.float32(15)
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [ex - spacing[0] / 2, ey - spacing[1] / 2, -ez + spacing[2] / 2]
    return image, label, affine


def _write_case(job: tuple[int, int, tuple[int, int, int], str]) -> dict[str, Any]:
    import nibabel as nib

    index, seed, base_shape, folder = job
    image, label, affine = synth_case(index, seed, base_shape)
    case = f"case_{index:03d}"
    for array, path in ((image, f"imagesTr/{case}.nii.gz"), (label, f"labelsTr/{case}.nii.gz")):
        nii = nib.Nifti1Image(array, affine)
        nii.set_qform(affine, code=1)
        nii.set_sform(affine, code=1)
        nib.save(nii, str(Path(folder) / path))
    spacing = [float(v) for v in np.abs(np.diag(affine))[:3]]
    counts = np.bincount(label.reshape(-1), minlength=3)
    return {
        "case_id": case,
        "shape": list(image.shape),
        "spacing": spacing,
        "voxels_per_label": counts.tolist(),
    }


def write_datasets(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write the MSD folder ``work/msd/SynthCT`` and the nnU-Net raw folder ``work/nnunet_raw/
    Dataset<ID>_SynthCT`` (hard links to the same files); reuse them when ``work/dataset.json``
    records the same generation parameters.

    Returns:
        ``{"params", "msd", "nnunet_raw", "cases": [{"case_id", "shape", "spacing",
        "voxels_per_label"}], "generate_s"}``.
    """
    params = {
        "cases": args.cases,
        "shape": list(args.shape),
        "seed": args.seed,
        "dataset_id": args.dataset_id,
    }
    record = work / "dataset.json"
    msd = work / "msd" / "SynthCT"
    raw = work / "nnunet_raw" / f"Dataset{args.dataset_id:03d}_SynthCT"
    if record.is_file():
        saved = json.loads(record.read_text())
        if (
            saved["params"] == params
            and (msd / "dataset.json").is_file()
            and (raw / "dataset.json").is_file()
        ):
            print(f"reusing the dataset in {work} (same generation parameters)")
            return saved
    for folder in (msd, raw):
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "labelsTr").mkdir(parents=True)
    start = time.perf_counter()
    jobs = [(i, args.seed, tuple(args.shape), str(msd)) for i in range(args.cases)]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            cases = list(pool.map(_write_case, jobs))
    else:
        cases = [_write_case(j) for j in jobs]
    for c in cases:
        case = c["case_id"]
        for src, dst in (
            (msd / "imagesTr" / f"{case}.nii.gz", raw / "imagesTr" / f"{case}_0000.nii.gz"),
            (msd / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz"),
        ):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    msd_json = {
        "name": "SynthCT",
        "description": "synthetic anisotropic CT (benchmarks/data/bench_plan_preprocess.py)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [
            {"image": f"./imagesTr/{c['case_id']}.nii.gz", "label": f"./labelsTr/{c['case_id']}.nii.gz"}
            for c in cases
        ],
        "test": [],
    }
    (msd / "dataset.json").write_text(json.dumps(msd_json, indent=2))
    nnunet_json = {
        "channel_names": {"0": "CT"},
        "labels": {v: k for k, v in LABELS.items()},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "SynthCT",
    }
    (raw / "dataset.json").write_text(json.dumps(nnunet_json, indent=2))
    out = {
        "params": params,
        "msd": str(msd),
        "nnunet_raw": str(raw),
        "cases": cases,
        "generate_s": time.perf_counter() - start,
    }
    record.write_text(json.dumps(out, indent=2))
    return out


# -- 2. Delira --------------------------------------------------------------------------------------
def _delira_import_s() -> float:
    code = (
        "import time; t = time.perf_counter(); import delira.data.fingerprint, delira.data.preprocessing, "
        "delira.training.planning, delira.training.builders; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_delira(dataset: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fingerprint, plan and preprocess the MSD folder with Delira, timing each stage.

    Returns:
        ``{"timings": {stage: seconds}, "plan": the plan summary for the table, "config": the
        planned ``data.preprocessing`` and ``model.args``, "output": {"shapes", "bytes"}}``.
    """
    try:
        from delira.data import DecathlonDataset, PreprocessedDataset
        from delira.data.fingerprint import compute_fingerprint
        from delira.training.builders import build_preprocessor
        from delira.training.planning import plan_experiment
    except ImportError as exc:
        raise SystemExit(
            f"Delira's side needs delira.data.fingerprint, delira.training.planning and "
            f"delira.training.builders (issue 12): {exc}. Run with --skip-delira to time nnU-Net alone"
        ) from exc
    import_s = _delira_import_s()

    out_dir = work / "delira"
    if out_dir.exists():
        shutil.rmtree(out_dir)  # nothing cached from an earlier run
    out_dir.mkdir(parents=True)
    folder = dataset["msd"]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    fingerprint = compute_fingerprint(
        folder, num_workers=args.workers, progress=False, cache=out_dir / "fingerprint.json"
    )
    timings["fingerprint"] = time.perf_counter() - start

    start = time.perf_counter()
    plan = plan_experiment(fingerprint, dataset_path=folder, gpu_memory_gib=args.gpu_memory)
    timings["plan"] = time.perf_counter() - start

    start = time.perf_counter()
    preprocessor = build_preprocessor(plan.config)
    pre = PreprocessedDataset(
        DecathlonDataset(folder), preprocessor, cache_dir=out_dir / "cache", num_workers=args.workers
    )
    timings["preprocess"] = time.perf_counter() - start
    timings["total"] = timings["fingerprint"] + timings["plan"] + timings["preprocess"]

    shapes = {pre.case_ids[i]: list(pre[i]["data"].shape[1:]) for i in range(len(pre))}
    config = plan.config
    args_ = config["model"]["args"]
    prep = config["data"]["preprocessing"]
    summary = {
        "spatial_dims": config["data"]["spatial_dims"],
        "target_spacing": prep["target_spacing"],
        "median_shape": plan.summary.get("resampled_median_shape"),
        "patch_size": config["data"]["patch_size"],
        "batch_size": config["training"]["batch_size"],
        "num_stages": len(args_["strides"]),
        "strides": args_["strides"],
        "kernel_sizes": args_["kernel_sizes"],
        "features": args_["features"],
        "normalization": prep["normalization"],
        "ct_stats": prep.get("ct_stats"),
        "resampling": {
            k: prep.get(k) for k in ("order_data", "order_seg", "order_z", "anisotropy_threshold")
        },
    }
    return {
        "timings": timings,
        "import_s": import_s,
        "plan": summary,
        "reasons": plan.reasons,
        "output": {"shapes": shapes, "bytes": _folder_bytes(pre.folder)},
    }


# -- 3. nnU-Net v2 ------------------------------------------------------------------------------------
def ensure_nnunet_venv(venv: Path, python: str) -> Path:
    """The nnU-Net virtual environment at ``venv``, created and installed when it lacks nnunetv2
    ``NNUNET_VERSION``. Returns its ``bin`` folder."""
    bin_dir = venv / "bin"
    check = "import importlib.metadata as m; print(m.version('nnunetv2'), m.version('torch'))"
    if (bin_dir / "python").exists():
        got = subprocess.run([str(bin_dir / "python"), "-c", check], capture_output=True, text=True)
        if got.returncode == 0 and got.stdout.split()[:1] == [NNUNET_VERSION]:
            return bin_dir
    print(f"creating nnU-Net's virtual environment in {venv} (a few minutes)", flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"nnunetv2=={NNUNET_VERSION}", f"torch=={TORCH_VERSION}"], check=True)
    got = subprocess.run([str(bin_dir / "python"), "-c", check], capture_output=True, text=True)
    if got.returncode != 0:
        raise RuntimeError(f"nnunetv2 is not importable in {venv} after installing it:\n{got.stderr}")
    return bin_dir


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        result = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(
            f"{' '.join(cmd)} failed with exit status {result.returncode} (log {log}):\n{tail}"
        )
    return elapsed


_SHAPES = """
import json, pickle, sys, pathlib
import blosc2
out = {}
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.b2nd")):
    if p.name.endswith("_seg.b2nd"):
        continue
    out[p.name[: -len(".b2nd")]] = list(blosc2.open(str(p), mode="r").shape[1:])
print(json.dumps(out))
"""


def _to_xyz(values: list[Any] | None, transpose: list[int]) -> list[Any] | None:
    """nnU-Net's per-axis values (SimpleITK order z, y, x, after ``transpose_forward``) in x, y, z.

    Three values map to three axes; two (a 2d configuration: the last two transposed axes) get
    ``None`` on the slice axis."""
    if values is None:
        return None
    values = list(values)
    out: list[Any] = [None, None, None]
    axes = transpose[-len(values) :]
    for v, axis in zip(values, axes):
        out[2 - axis] = v
    return out


def _nnunet_summary(plans: dict[str, Any], name: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    conf = plans["configurations"].get(name)
    if conf is None:
        return None
    tf = plans.get("transpose_forward", [0, 1, 2])
    arch = conf.get("architecture", {}).get("arch_kwargs", {})
    strides = arch.get("strides") or conf.get("pool_op_kernel_sizes")
    kernels = arch.get("kernel_sizes") or conf.get("conv_kernel_sizes")
    ct = fingerprint.get("foreground_intensity_properties_per_channel", {}).get("0", {})
    return {
        "spatial_dims": len(conf["patch_size"]),
        "target_spacing": _to_xyz(conf["spacing"], tf),
        "median_shape": _to_xyz(conf.get("median_image_size_in_voxels"), tf),
        "patch_size": _to_xyz(conf["patch_size"], tf),
        "batch_size": conf["batch_size"],
        "num_stages": len(strides) if strides else None,
        "strides": [_to_xyz(s, tf) for s in strides] if strides else None,
        "kernel_sizes": [_to_xyz(k, tf) for k in kernels] if kernels else None,
        "features": arch.get("features_per_stage"),
        "normalization": conf.get("normalization_schemes"),
        "use_mask_for_norm": conf.get("use_mask_for_norm"),
        "ct_stats": {
            "0": {k: ct.get(k) for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k in ct}
        },
        "resampling": {
            "data": conf.get("resampling_fn_data_kwargs"),
            "seg": conf.get("resampling_fn_seg_kwargs"),
        },
    }


def run_nnunet(dataset: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fingerprint, plan and preprocess the raw folder with nnU-Net v2's command-line tools.

    Returns:
        ``{"timings": {stage: seconds}, "startup_s", "plans": {"3d_fullres": summary, "2d": ...},
        "output": {"shapes", "bytes"}, "version"}``.
    """
    bin_dir = ensure_nnunet_venv(args.nnunet_venv, args.nnunet_python)
    root = work / "nnunet"
    if root.exists():
        shutil.rmtree(root)
    env = dict(os.environ)
    env.update(
        {
            "nnUNet_raw": str(Path(dataset["nnunet_raw"]).parent),
            "nnUNet_preprocessed": str(root / "preprocessed"),
            "nnUNet_results": str(root / "results"),
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    for key in ("nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True)
    did = str(args.dataset_id)
    w = str(args.workers)
    timings: dict[str, float] = {}
    startup = [
        _timed(
            [str(bin_dir / "python"), "-c", "import nnunetv2.experiment_planning.plan_and_preprocess_api"],
            env,
            root / "startup.log",
        )
        for _ in range(2)
    ]
    timings["fingerprint"] = _timed(
        [str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", did, "-np", w, "--clean", "--no_pbar"],
        env,
        root / "fingerprint.log",
    )
    plan_cmd = [str(bin_dir / "nnUNetv2_plan_experiment"), "-d", did]
    if args.nnunet_gpu_memory is not None:
        plan_cmd += ["-gpu_memory_target", str(args.nnunet_gpu_memory)]
    timings["plan"] = _timed(plan_cmd, env, root / "plan.log")
    configs = ["3d_fullres", *(["2d"] if args.nnunet_2d else [])]
    for c in configs:
        timings[f"preprocess_{c}"] = _timed(
            [str(bin_dir / "nnUNetv2_preprocess"), "-d", did, "-c", c, "-np", w, "--no_pbar"],
            env,
            root / f"preprocess_{c}.log",
        )
    timings["preprocess"] = timings["preprocess_3d_fullres"]
    timings["total"] = timings["fingerprint"] + timings["plan"] + timings["preprocess"]

    pre_dir = root / "preprocessed" / Path(dataset["nnunet_raw"]).name
    plans = json.loads((pre_dir / "nnUNetPlans.json").read_text())
    fingerprint = json.loads((pre_dir / "dataset_fingerprint.json").read_text())
    data_dir = pre_dir / "nnUNetPlans_3d_fullres"
    shapes = json.loads(
        subprocess.run(
            [str(bin_dir / "python"), "-c", _SHAPES, str(data_dir)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    shapes = {k: _to_xyz(v, plans.get("transpose_forward", [0, 1, 2])) for k, v in shapes.items()}
    summaries = {name: _nnunet_summary(plans, name, fingerprint) for name in plans["configurations"]}
    return {
        "version": NNUNET_VERSION,
        "timings": timings,
        "startup_s": min(startup),
        "plans": {k: v for k, v in summaries.items() if v is not None},
        "transpose_forward": plans.get("transpose_forward"),
        "output": {"shapes": shapes, "bytes": _folder_bytes(data_dir)},
    }


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# -- 4. report ----------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return (
            "x".join(_fmt(v) for v in value)
            if all(not isinstance(v, (list, dict)) for v in value)
            else (" ".join(_fmt(v) for v in value))
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _ct_text(stats: Any) -> str:
    if not stats:
        return "-"
    s = stats.get("0") or stats.get(0) or next(iter(stats.values()))
    lo = s.get("percentile_00_5", s.get("lower"))
    hi = s.get("percentile_99_5", s.get("upper"))
    return f"clip [{_fmt(lo)}, {_fmt(hi)}], mean {_fmt(s.get('mean'))}, std {_fmt(s.get('std'))}"


def plan_table(results: dict[str, Any]) -> str:
    """Both plans side by side, one row per choice, axes ``(x, y, z)``."""
    columns: list[tuple[str, dict[str, Any]]] = []
    if "delira" in results:
        columns.append(("Delira", results["delira"]["plan"]))
    for name, summary in results.get("nnunet", {}).get("plans", {}).items():
        columns.append((f"nnU-Net {name}", summary))
    rows = [
        ("spatial dims", lambda p: str(p["spatial_dims"])),
        ("target spacing (mm)", lambda p: _fmt([round(v, 3) if v else v for v in p["target_spacing"]])),
        ("median resampled shape", lambda p: _fmt(p.get("median_shape"))),
        ("patch size", lambda p: _fmt(p["patch_size"])),
        ("batch size", lambda p: str(p["batch_size"])),
        ("stages", lambda p: str(p["num_stages"])),
        ("strides per stage", lambda p: _fmt(p["strides"])),
        ("kernel sizes per stage", lambda p: _fmt(p["kernel_sizes"])),
        ("features per stage", lambda p: _fmt(p.get("features"))),
        ("normalization", lambda p: _fmt(p["normalization"])),
        ("CT statistics", lambda p: _ct_text(p.get("ct_stats"))),
    ]
    lines = []
    for label, get in rows:
        cells = []
        for _, plan in columns:
            try:
                cells.append(get(plan))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append([label, *cells])
    header = ["", *(name for name, _ in columns)]
    return _grid([header, *lines])


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net / Delira per stage, raw and with nnU-Net's Python + torch start-up subtracted."""
    if "delira" not in results or "nnunet" not in results:
        return {}
    d, n = results["delira"]["timings"], results["nnunet"]["timings"]
    startup = results["nnunet"]["startup_s"]
    out: dict[str, Any] = {}
    for stage in ("fingerprint", "plan", "preprocess", "total"):
        calls = 3 if stage == "total" else 1
        out[stage] = {
            "ratio": n[stage] / d[stage],
            "ratio_without_startup": max(0.0, n[stage] - calls * startup) / d[stage],
        }
    return out


def timing_table(results: dict[str, Any]) -> str:
    """Timings of both sides (wall seconds, seconds per case) and the ratio nnU-Net / Delira."""
    cases = len(results["dataset"]["cases"])
    rows = [["stage", "Delira s", "s/case", "nnU-Net s", "s/case", "nnU-Net/Delira", "(w/o start-up)"]]
    d = results.get("delira", {}).get("timings", {})
    n = results.get("nnunet", {}).get("timings", {})
    r = results.get("ratios", {})
    stages = ["fingerprint", "plan", "preprocess", "total"]
    if "preprocess_2d" in n:
        stages.insert(3, "preprocess_2d")
    for stage in stages:
        dv, nv = d.get(stage), n.get(stage)
        rows.append(
            [
                stage if stage != "preprocess" else "preprocess (3d)",
                f"{dv:.2f}" if dv is not None else "-",
                f"{dv / cases:.3f}" if dv is not None else "-",
                f"{nv:.2f}" if nv is not None else "-",
                f"{nv / cases:.3f}" if nv is not None else "-",
                f"{r[stage]['ratio']:.2f}" if stage in r else "-",
                f"{r[stage]['ratio_without_startup']:.2f}" if stage in r else "-",
            ]
        )
    return _grid(rows)


def output_check(results: dict[str, Any]) -> str | None:
    """How far apart the preprocessed shapes of the two sides are (voxels per axis)."""
    if "delira" not in results or "nnunet" not in results:
        return None
    ds, ns = results["delira"]["output"]["shapes"], results["nnunet"]["output"]["shapes"]
    common = sorted(set(ds) & set(ns))
    if not common:
        return "no case preprocessed by both sides"
    diff = np.array([[abs(a - b) for a, b in zip(ds[c], ns[c])] for c in common])
    dv = sum(int(np.prod(ds[c])) for c in common)
    nv = sum(int(np.prod(ns[c])) for c in common)
    return (
        f"preprocessed shapes, {len(common)} cases: max |Delira - nnU-Net| per axis (x, y, z) "
        f"{diff.max(axis=0).tolist()} voxels; total voxels Delira {dv}, nnU-Net {nv}; on disk Delira "
        f"{results['delira']['output']['bytes'] / 2**20:.0f} MiB, nnU-Net {results['nnunet']['output']['bytes'] / 2**20:.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 300, 60], metavar=("X", "Y", "Z"))
    parser.add_argument("--workers", type=int, default=2, help="worker processes/threads on both sides")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 cases of 64 x 64 x 20")
    parser.add_argument("--gpu-memory", type=float, default=8.0, help="GiB Delira plans for (nnU-Net's 8 GB)")
    parser.add_argument(
        "--nnunet-gpu-memory",
        type=float,
        default=None,
        help="nnU-Net's -gpu_memory_target (default: its own, 8)",
    )
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id (5xx)")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_VENV, help=f"default {DEFAULT_VENV}")
    parser.add_argument(
        "--nnunet-python", default=shutil.which("python3") or "python3", help="creates the venv"
    )
    parser.add_argument("--nnunet-2d", action="store_true", help="also preprocess nnU-Net's 2d configuration")
    parser.add_argument(
        "--nnunet-json", type=Path, help="take nnU-Net's results from this earlier result file"
    )
    parser.add_argument("--skip-delira", action="store_true")
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument(
        "--work-dir", type=Path, help="where data and outputs go (default: a temporary folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "plan_preprocess.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.shape = 4, [64, 64, 20]
    if args.cases < 2:
        parser.error(
            f"--cases must be at least 2 (nnU-Net and the planner need several cases), got {args.cases}"
        )

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-plan-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "gpu_memory_gib": args.gpu_memory,
        "load_average_before": os.getloadavg(),
    }
    try:
        dataset = write_datasets(work, args)
        results["dataset"] = dataset
        print(
            f"dataset: {len(dataset['cases'])} cases around {'x'.join(map(str, args.shape))} voxels in {work} "
            f"(generated in {dataset.get('generate_s', 0):.1f} s)",
            flush=True,
        )
        if args.nnunet_json is not None:
            earlier = json.loads(args.nnunet_json.read_text())
            if earlier.get("dataset", {}).get("params") != dataset["params"] or "nnunet" not in earlier:
                raise SystemExit(
                    f"{args.nnunet_json} holds no nnU-Net results for this dataset (params "
                    f"{dataset['params']}); run without --nnunet-json"
                )
            results["nnunet"] = earlier["nnunet"]
            results["nnunet_from"] = str(args.nnunet_json)
        elif not args.skip_nnunet:
            print("nnU-Net v2: fingerprint, plan, preprocess ...", flush=True)
            results["nnunet"] = run_nnunet(dataset, work, args)
        if not args.skip_delira:
            print("Delira: fingerprint, plan, preprocess ...", flush=True)
            results["delira"] = run_delira(dataset, work, args)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    results["ratios"] = ratios(results)

    print()
    print(plan_table(results))
    print()
    print(timing_table(results))
    if "nnunet" in results:
        print(f"nnU-Net's Python + torch start-up per command: {results['nnunet']['startup_s']:.2f} s")
    if "delira" in results:
        print(f"Delira's import time (not in its timings): {results['delira']['import_s']:.2f} s")
    check = output_check(results)
    if check:
        print(check)
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
