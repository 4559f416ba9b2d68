"""The canonical augmentation benchmark (``delira-augment-bench`` / ``python -m delira.augment.bench``).

Workload ("nnU-Net 3D", ../shared/design/BENCHMARK.md): per sample an image ``1 x 160^3`` float32
(standard normal) and a segmentation ``1 x 160^3`` with labels 0..2, cut to a ``128^3`` patch around
the centre after: rotation in [-30, 30] degrees about each axis, scaling in [0.7, 1.4], elastic
deformation (batchgenerators' alpha in [0, 900], sigma in [9, 13]), linear interpolation for the
image and nearest for the segmentation with constant border 0; then additive gaussian noise
(batchgenerators' noise_variance (0, 0.1)), multiplicative brightness in [0.75, 1.25], gamma in
[0.7, 1.5] retaining mean and std, and mirroring of each axis with p = 0.5. Every parameter is drawn
per sample.

Engines, in one process: Delira's compiled CPU engine (single-threaded and with all threads),
batchgenerators and batchgeneratorsv2 (when installed), single-threaded. The command re-runs itself
with ``OMP_NUM_THREADS=1`` (and the BLAS equivalents) so that the peers run on one thread; Delira's
own thread count is set explicitly. Reported: median ms/sample, output voxels/s, and the ratio
(peer time / Delira time, i.e. how many times faster Delira is).

``--ops`` times each op of the catalogue beside its peers (:mod:`delira.augment.bench_catalogue`).

``--profile`` times Delira's stages instead (parameter drawing, spec building, resampling of the
data, the elastic field, resampling of the segmentation, each intensity op and the statistics it
needs), each by difference between stage-restricted calls of the fused kernel with the same drawn
parameters, on one thread and on ``--threads`` threads; the next optimisation is chosen from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

ROTATION_DEG = (-30.0, 30.0)
SCALE = (0.7, 1.4)
ALPHA = (0.0, 900.0)
SIGMA = (9.0, 13.0)
NOISE = (0.0, 0.1)
BRIGHTNESS = (0.75, 1.25)
GAMMA = (0.7, 1.5)


def _inputs(n: int, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 1, size, size, size), dtype=np.float32)
    seg = rng.integers(0, 3, (n, 1, size, size, size)).astype(np.int16)
    return data, seg


def delira_pipeline(patch: tuple[int, ...], seed: int = 0):
    """The canonical workload as a delira.augment Compose (fused into one kernel pass)."""
    import delira.augment as da

    return da.Compose(
        [
            da.SpatialTransform(
                patch,
                rotation=ROTATION_DEG,
                scale=SCALE,
                elastic_alpha=ALPHA,
                elastic_sigma=SIGMA,
                order_data=1,
                order_seg=0,
                mode_data="constant",
                mode_seg="constant",
            ),
            da.GaussianNoise(std=NOISE),
            da.BrightnessMultiplicative(BRIGHTNESS),
            da.Gamma(GAMMA, retain_stats=True),
            da.Mirror((0, 1, 2), p_per_axis=0.5),
        ],
        seed=seed,
        backend="cpu",
    )


def batchgenerators_pipeline(patch: tuple[int, ...]):
    from batchgenerators.transforms.abstract_transforms import Compose
    from batchgenerators.transforms.color_transforms import BrightnessMultiplicativeTransform, GammaTransform
    from batchgenerators.transforms.noise_transforms import GaussianNoiseTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    rot = tuple(math.radians(a) for a in ROTATION_DEG)
    return Compose(
        [
            SpatialTransform(
                patch,
                patch_center_dist_from_border=None,
                do_elastic_deform=True,
                alpha=ALPHA,
                sigma=SIGMA,
                do_rotation=True,
                angle_x=rot,
                angle_y=rot,
                angle_z=rot,
                do_scale=True,
                scale=SCALE,
                border_mode_data="constant",
                border_cval_data=0,
                order_data=1,
                border_mode_seg="constant",
                border_cval_seg=0,
                order_seg=0,
                random_crop=False,
                p_el_per_sample=1,
                p_scale_per_sample=1,
                p_rot_per_sample=1,
            ),
            GaussianNoiseTransform(noise_variance=NOISE, p_per_sample=1),
            BrightnessMultiplicativeTransform(BRIGHTNESS, p_per_sample=1),
            GammaTransform(GAMMA, retain_stats=True, p_per_sample=1),
            MirrorTransform((0, 1, 2)),
        ]
    )


def batchgeneratorsv2_pipeline(patch: tuple[int, ...]):
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

    # batchgeneratorsv2's elastic field: blur width as a fraction of the patch edge and the displacement
    # in voxels; sigma 9..13 of 128 and about three times Delira's RMS magnitude at alpha 900.
    scale = (SIGMA[0] / patch[0], SIGMA[1] / patch[0])
    return ComposeTransforms(
        [
            SpatialTransform(
                patch,
                patch_center_dist_from_border=0,
                random_crop=False,
                p_elastic_deform=1,
                elastic_deform_scale=scale,
                elastic_deform_magnitude=(0.0, 6.5),
                p_rotation=1,
                rotation=tuple(math.radians(a) for a in ROTATION_DEG),
                p_scaling=1,
                scaling=SCALE,
                p_synchronize_scaling_across_axes=1,
                mode_seg="nearest",
            ),
            GaussianNoiseTransform(noise_variance=NOISE, p_per_channel=1, synchronize_channels=True),
            MultiplicativeBrightnessTransform(
                BGContrast(BRIGHTNESS), synchronize_channels=False, p_per_channel=1
            ),
            GammaTransform(
                BGContrast(GAMMA),
                p_invert_image=0,
                synchronize_channels=False,
                p_per_channel=1,
                p_retain_stats=1,
            ),
            MirrorTransform(allowed_axes=(0, 1, 2)),
        ]
    )


def _median_ms(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # warm-up (allocations, first-touch, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def run(size: int, patch: int, batch: int, repeats: int, peers: bool, threads: int) -> dict[str, Any]:
    import numpy as np

    import delira.augment as da

    data, seg = _inputs(batch, size)
    patch_t = (patch,) * 3
    voxels = patch**3
    engines: dict[str, Callable[[], Any]] = {}
    pipe = delira_pipeline(patch_t)
    engines["delira (1 thread)"] = lambda: pipe(data=data, seg=seg)
    if threads > 1:
        engines[f"delira ({threads} threads)"] = lambda: pipe(data=data, seg=seg)
    skipped: dict[str, str] = {}
    if peers:
        try:
            bg = batchgenerators_pipeline(patch_t)
            engines["batchgenerators"] = lambda: bg(data=data.copy(), seg=seg.copy())
        except ImportError as exc:
            skipped["batchgenerators"] = str(exc)
        try:
            import torch

            torch.set_num_threads(1)
            bg2 = batchgeneratorsv2_pipeline(patch_t)
            images = [torch.from_numpy(data[i].copy()) for i in range(batch)]
            segs = [torch.from_numpy(seg[i].copy()) for i in range(batch)]
            engines["batchgeneratorsv2"] = lambda: [
                bg2(image=images[i].clone(), segmentation=segs[i].clone()) for i in range(batch)
            ]
        except ImportError as exc:
            skipped["batchgeneratorsv2"] = str(exc)
    rows: dict[str, dict[str, Any]] = {}
    saved = da.get_num_threads()
    try:
        for name, fn in engines.items():
            da.set_num_threads(threads if name.startswith(f"delira ({threads} threads") else 1)
            times = _median_ms(fn, repeats)
            ms = statistics.median(times) / batch
            rows[name] = {
                "ms_per_sample": ms,
                "voxels_per_s": voxels / (ms / 1000.0),
                "runs_ms_per_sample": [t / batch for t in times],
            }
    finally:
        da.set_num_threads(saved)
    base = rows["delira (1 thread)"]["ms_per_sample"]
    for row in rows.values():
        row["ratio_vs_delira_1_thread"] = row["ms_per_sample"] / base
    info = da.build_info()
    return {
        "workload": {
            "input": [1, size, size, size],
            "patch": list(patch_t),
            "batch": batch,
            "repeats": repeats,
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "build_info": info,
        "engines": rows,
        "skipped": skipped,
    }


# --- --profile: time per stage --------------------------------------------------------------------
#
# The fused pass runs every stage in one kernel call, so the stages are timed by difference: the
# kernel is called with the same drawn parameters and stage-restricted specs (affine only; + elastic
# field; + seg; + each intensity op in turn), and each stage's time is the median over rounds of the
# difference to the configuration before it. A stats op (gamma, restore-stats, ...) is split into
# "statistics for <op>" (the op present but inactive: the pass before it accumulates the moments it
# would need, and the op's own pass runs without touching voxels) and the op itself. The
# configurations are timed in interleaved rounds, so load from other processes hits them alike.

_OP_NAMES = {
    "NOISE": "noise",
    "MULTIPLY": "brightness (multiply)",
    "ADD": "brightness (add)",
    "CLIP": "clip",
    "CONTRAST": "contrast",
    "GAMMA": "gamma",
    "RESTORE_STATS": "restore stats",
    "ZSCORE": "z-score",
    "PERCENTILE_CLIP": "percentile clip",
}


def _draw_fused(pipe, rng, n: int, shape: tuple[int, ...]):
    """Parameters of the fused group of ``pipe`` (spatial transform, intensity ops, mirroring), as Compose draws them."""
    import numpy as np

    from delira.augment._program import Program
    from delira.augment.transforms.compose import _flip_affine, _flip_field
    from delira.augment.transforms.spatial import Mirror

    spatial, *rest = pipe.members()
    affine, linear, field, patch = spatial.draw(rng, n, shape, None)
    program = Program(n)
    flags = np.zeros((n, len(shape)), dtype=bool)
    for t in rest:
        if isinstance(t, Mirror):
            flags ^= t.draw_flags(rng, n, len(shape))
        else:
            program.extend(t.program(rng, n))
    if field is not None and flags.any():
        field = _flip_field(field, flags, patch)
    return _flip_affine(affine, flags, patch), linear, field, patch, program


def _fused_spec(spatial, affine, linear, field, patch, program, elastic: bool = True):
    """The ResampleSpec that ``functional.spatial_transform`` builds for these parameters."""
    import numpy as np

    from delira.augment._spec import ResampleSpec
    from delira.augment.functional.elastic import ElasticField

    if field is not None and elastic:
        values = np.einsum(
            "nij,nj...->ni...", np.asarray(linear, np.float64), field.values.astype(np.float64)
        )
        field = ElasticField(values.astype(np.float32), field.origin, field.spacing)
    else:
        field = None
    return ResampleSpec.from_field(
        patch,
        affine,
        field,
        order_data=spatial.order_data,
        mode_data=spatial.mode_data,
        cval_data=spatial.cval_data,
        order_seg=spatial.order_seg,
        mode_seg=spatial.mode_seg,
        cval_seg=spatial.cval_seg,
        program=program,
    )


def _profile_configs(
    pipe, data, seg, rng
) -> tuple[list[tuple[str, str, Callable[[], Any]]], Callable[[], Any]]:
    """``[(stage, base, fn)]``: the stage's time is ``time(fn) - time(base's fn)`` (base "" for none)."""
    import copy

    import numpy as np

    from delira.augment import _engine
    from delira.augment._program import Op, Program

    n, shape = data.shape[0], tuple(data.shape[2:])
    spatial = pipe.members()[0]
    affine, linear, field, patch, program = _draw_fused(pipe, rng, n, shape)

    def call(spec, with_seg: bool = True):
        return lambda: _engine.resample(data, seg if with_seg else None, spec, "cpu")

    def restricted(ops) -> Program:
        return Program(n, list(ops), program.seeds)

    empty = Program(n, [], program.seeds)
    configs = [
        ("parameter drawing", "", lambda: _draw_fused(pipe, rng, n, shape)),
        ("spec building", "", lambda: _fused_spec(spatial, affine, linear, field, patch, program)),
        (
            "resample data (affine)",
            "",
            call(_fused_spec(spatial, affine, linear, field, patch, empty, False), False),
        ),
    ]
    last = "resample data (affine)"
    if field is not None:
        configs.append(
            ("elastic field", last, call(_fused_spec(spatial, affine, linear, field, patch, empty), False))
        )
        last = "elastic field"
    configs.append(("resample seg", last, call(_fused_spec(spatial, affine, linear, field, patch, empty))))
    last = "resample seg"
    ops: list[Op] = []
    for op in program.ops:
        name = _OP_NAMES.get(op.kind.name, op.kind.name.lower())
        if op.kind.needs_stats:
            idle = copy.copy(op)
            idle.active = np.zeros_like(op.active)
            stage = f"statistics for {name}"
            spec = _fused_spec(spatial, affine, linear, field, patch, restricted([*ops, idle]))
            configs.append((stage, last, call(spec)))
            last = stage
        ops.append(op)
        spec = _fused_spec(spatial, affine, linear, field, patch, restricted(ops))
        configs.append((name, last, call(spec)))
        last = name
    return configs, call(_fused_spec(spatial, affine, linear, field, patch, program))


def profile(size: int, patch: int, batch: int, repeats: int, threads: int) -> dict[str, Any]:
    """Median ms/sample of every stage of the canonical workload, on 1 thread (and ``threads``)."""
    import numpy as np

    import delira.augment as da

    data, seg = _inputs(batch, size)
    pipe = delira_pipeline((patch,) * 3)
    configs, kernel = _profile_configs(pipe, data, seg, np.random.default_rng(1))
    whole = lambda: pipe(data=data, seg=seg)  # noqa: E731
    timed = [(name, fn) for name, _, fn in configs] + [
        ("fused kernel call", kernel),
        ("whole pipeline", whole),
    ]
    columns: dict[str, dict[str, float]] = {}
    saved = da.get_num_threads()
    try:
        for t in sorted({1, threads}):
            da.set_num_threads(t)
            samples: dict[str, list[float]] = {name: [] for name, _ in timed}
            for _, fn in timed:
                fn()  # warm-up
            for _ in range(repeats):  # interleaved rounds
                for name, fn in timed:
                    start = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - start) * 1000.0 / batch)
            col: dict[str, float] = {}
            for name, base, _ in configs:
                own = samples[name]
                diffs = own if not base else [a - b for a, b in zip(own, samples[base])]
                col[name] = statistics.median(diffs)
            col["sum of stages"] = sum(col.values())
            col["fused kernel call"] = statistics.median(samples["fused kernel call"])
            col["whole pipeline"] = statistics.median(samples["whole pipeline"])
            columns[f"{t} thread{'s' if t > 1 else ''}"] = col
    finally:
        da.set_num_threads(saved)
    return {
        "workload": {
            "input": [1, size, size, size],
            "patch": [patch] * 3,
            "batch": batch,
            "repeats": repeats,
        },
        "build_info": da.build_info(),
        "stages_ms_per_sample": columns,
    }


def _print_profile(results: dict[str, Any]) -> None:
    w = results["workload"]
    info = results["build_info"]
    cols = results["stages_ms_per_sample"]
    print(
        f"profile of the canonical workload: input 1x{w['input'][1]}^3 -> patch {w['patch'][0]}^3, batch "
        f"{w['batch']}, median of {w['repeats']} interleaved rounds; delira-augment {info['version']} "
        f"({info.get('cpu_isa', '?')}); ms/sample, each stage timed by difference to the one before"
    )
    names = list(next(iter(cols.values())))
    print(f"  {'stage':<34}" + "".join(f"{c:>12}" for c in cols))
    for name in names:
        if name == "sum of stages":
            print("  " + "-" * (34 + 12 * len(cols)))
        print(f"  {name:<34}" + "".join(f"{col[name]:>12.2f}" for col in cols.values()))


def _print(results: dict[str, Any]) -> None:
    w = results["workload"]
    info = results["build_info"]
    print(
        f"canonical workload: input 1x{w['input'][1]}^3 -> patch {w['patch'][0]}^3, batch {w['batch']}, "
        f"median of {w['repeats']} runs; delira-augment {info['version']} ({info.get('cpu_isa', '?')}, "
        f"openmp={info['openmp']})"
    )
    print(f"  {'engine':<26}{'ms/sample':>12}{'Mvox/s':>10}{'x slower than delira (1 thread)':>34}")
    for name, r in results["engines"].items():
        print(
            f"  {name:<26}{r['ms_per_sample']:>12.1f}{r['voxels_per_s'] / 1e6:>10.1f}"
            f"{r['ratio_vs_delira_1_thread']:>34.2f}"
        )
    for name, why in results["skipped"].items():
        print(f"  {name}: skipped ({why})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="delira-augment-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="96^3 input, 64^3 patch, fewer repeats (a smoke run)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per engine (default 5, quick 2)"
    )
    parser.add_argument("--batch", type=int, default=2, help="samples per call (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads for Delira's multi-thread figure (default: all cores)",
    )
    parser.add_argument("--no-peers", action="store_true", help="time Delira only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time each stage of Delira's pipeline (parameter drawing, elastic field, resampling of data "
        "and seg, each intensity op and the statistics it needs) on 1 thread and --threads threads",
    )
    parser.add_argument(
        "--ops",
        nargs="*",
        metavar="NAME",
        default=None,
        help="time each op of the augmentation catalogue (or the named ones) beside its peers "
        "(batchgeneratorsv2, batchgenerators, TorchIO) on one thread; see delira.augment.bench_catalogue",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.batch < 1 or (args.repeats is not None and args.repeats < 1) or args.threads < 1:
        parser.error("--batch, --repeats and --threads must be >= 1")
    if os.environ.get("DELIRA_BENCH_CHILD") != "1":
        # Re-run with single-threaded numpy/BLAS/OpenMP so that the peers run on one thread.
        env = dict(os.environ, DELIRA_BENCH_CHILD="1", **dict.fromkeys(_THREAD_VARS, "1"))
        return subprocess.call(
            [sys.executable, "-m", "delira.augment.bench", *(argv or sys.argv[1:])], env=env
        )
    size, patch = (96, 64) if args.quick else (160, 128)
    repeats = args.repeats or (2 if args.quick else 5)
    if args.ops is not None:
        from delira.augment import bench_catalogue

        results = bench_catalogue.run_ops(
            args.ops, 64 if args.quick else 128, args.batch, repeats, not args.no_peers
        )
        bench_catalogue.print_ops(results)
    elif args.profile:
        results = profile(size, patch, args.batch, args.repeats or (3 if args.quick else 9), args.threads)
        _print_profile(results)
    else:
        results = run(size, patch, args.batch, repeats, not args.no_peers, args.threads)
        _print(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
