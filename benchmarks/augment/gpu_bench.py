"""GPU benchmark: the canonical workload (BENCHMARK.md) on a batch of 32 on one GPU.

Rows, on the same card in one run (torch CUDA tensors in and out):

- ``delira (CUDA, fused)``: the canonical Compose end to end: per-sample parameters drawn on the host
  at every call, then one fused kernel pass (resampling, elastic field, noise, brightness) and the
  statistics passes of gamma with retained statistics.
- ``delira fused pass (parameters drawn once)``: ``functional.spatial_transform`` with parameters drawn
  once: the GPU work plus the parameter upload, without the host-side drawing.
- ``torch affine_grid/grid_sample``: the same pipeline in plain torch (affine_grid + upsampled elastic
  offsets + grid_sample, then elementwise intensity ops; the approach of rising, kornia and MONAI).

Each call is synchronised (``ms_per_batch``, median); ``stream_ms_per_batch`` is the time between CUDA
events recorded around the call on the stream. Output voxels/s count the patch voxels of the batch.
``goal`` holds the headline figures: Gvox/s of delira and of the torch pipeline, and their ratio.

``--parity`` also runs the CPU == CUDA same-seed check: the canonical Compose with one seed on numpy
(CPU executor) and on torch CUDA tensors (CUDA executor), and the counter-based noise alone; it reports
the differences and fails (exit 1) beyond the tolerances.

    python benchmarks/augment/gpu_bench.py [--batch 32] [--repeats 10] [--parity] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np

# Tolerances of the parity check. The executors compute the same coordinates in the same order, so
# they differ by floating-point contraction (FMA) only: ~1 ulp of the coordinate (1e-5 voxels at 160),
# times the image gradient, amplified by gamma and the restored statistics; labels differ only where a
# coordinate lies within that distance of a nearest-neighbour tie.
DATA_TOLERANCE = 1e-3
LABEL_TOLERANCE = 1e-3  # fraction of label voxels
NOISE_TOLERANCE = 1e-5  # noise values of the same seed (standard normal)


def delira_pipeline(patch, seed: int = 0, backend: str = "auto"):
    """The canonical Compose (delira.augment.bench) with ``backend`` (it pins "cpu" itself)."""
    from delira.augment.bench import delira_pipeline as canonical

    pipe = canonical(patch, seed=seed)
    pipe.override_backend = None if backend == "auto" else backend
    for t in pipe.transforms:
        t.backend = backend
    pipe.backend = backend
    return pipe


def predrawn_pass(pipe, data, seg, seed: int = 0):
    """A function that runs the canonical fused pass with parameters drawn once (no host drawing per call)."""
    from delira.augment import functional as F
    from delira.augment._program import Program
    from delira.augment.transforms.spatial import Mirror

    spatial, *rest = pipe.transforms
    n, shape = int(data.shape[0]), tuple(int(s) for s in data.shape[2:])
    rng = np.random.default_rng(seed)
    affine, linear, field, patch = spatial.draw(rng, n, shape, None)
    program = Program(n)
    for t in rest:
        if not isinstance(t, Mirror):  # mirroring is part of the affine map: free in the pass
            program.extend(t.program(rng, n))

    def run():
        return F.spatial_transform(
            data,
            seg,
            affine=affine,
            linear=linear,
            patch_size=patch,
            elastic=field,
            order_data=spatial.order_data,
            order_seg=spatial.order_seg,
            program=program,
        )

    return run


def torch_pipeline(torch, data, seg, patch, gen):
    """The canonical workload in plain torch: affine_grid + elastic offsets + grid_sample, then intensity ops."""
    import torch.nn.functional as tf

    n = data.shape[0]
    size = data.shape[2]
    dev = data.device
    ang = (torch.rand(n, 3, generator=gen, device=dev) * 2 - 1) * math.radians(30)
    scale = 0.7 + torch.rand(n, generator=gen, device=dev) * 0.7
    c, s = torch.cos(ang), torch.sin(ang)
    one, zero = torch.ones(n, device=dev), torch.zeros(n, device=dev)
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).view(n, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).view(n, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).view(n, 3, 3)
    rot = rz @ ry @ rx * (scale * patch[0] / size).view(n, 1, 1)
    theta = torch.cat([rot, torch.zeros(n, 3, 1, device=dev)], 2)
    grid = tf.affine_grid(theta, (n, 1, *patch), align_corners=False)
    # elastic: coarse random offsets upsampled to the patch (rising / MONAI style), magnitude ~2 voxels
    coarse = torch.randn(n, 3, 8, 8, 8, generator=gen, device=dev) * (2.0 * 2 / size)
    grid = grid + tf.interpolate(coarse, size=patch, mode="trilinear", align_corners=False).permute(
        0, 2, 3, 4, 1
    )
    out = tf.grid_sample(data, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = tf.grid_sample(seg.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).to(
        seg.dtype
    )
    std = torch.rand(n, 1, 1, 1, 1, generator=gen, device=dev) * 0.1
    out = out + torch.randn(out.shape, generator=gen, device=dev) * std
    out = out * (0.75 + torch.rand(n, 1, 1, 1, 1, generator=gen, device=dev) * 0.5)
    gamma = 0.7 + torch.rand(n, 1, 1, 1, 1, generator=gen, device=dev) * 0.8
    flat = out.view(n, -1)
    mean, sd = flat.mean(1).view(n, 1, 1, 1, 1), flat.std(1).view(n, 1, 1, 1, 1)
    lo, hi = flat.amin(1).view(n, 1, 1, 1, 1), flat.amax(1).view(n, 1, 1, 1, 1)
    rng_ = hi - lo + 1e-7
    out = ((out - lo) / rng_).clamp_min(0) ** gamma * rng_ + lo
    flat = out.view(n, -1)
    out = (out - flat.mean(1).view(n, 1, 1, 1, 1)) / (flat.std(1).view(n, 1, 1, 1, 1) + 1e-8) * sd + mean
    flips = torch.rand(n, 3, generator=gen, device=dev) < 0.5
    for axis in range(3):
        sel = flips[:, axis].view(n, 1, 1, 1, 1)
        out = torch.where(sel, out.flip(2 + axis), out)
        lab = torch.where(sel, lab.flip(2 + axis), lab)
    return out, lab


def timed(torch, fn, repeats):
    """(wall ms, stream ms) per call, each call synchronised; one warm-up call first."""
    fn()
    torch.cuda.synchronize()
    wall, stream = [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - t0) * 1000.0)
        stream.append(start.elapsed_time(end))
    return wall, stream


def parity(torch, size: int, patch: int, batch: int, seed: int = 7) -> dict:
    """The canonical Compose with one seed on the CPU and on the GPU, and the noise alone."""
    from delira.augment import functional as F

    rng = np.random.default_rng(1)
    data = rng.standard_normal((batch, 1, size, size, size), dtype=np.float32)
    seg = rng.integers(0, 3, (batch, 1, size, size, size)).astype(np.int16)
    p3 = (patch,) * 3
    cpu = delira_pipeline(p3, seed, "cpu")(data=data, seg=seg)
    gpu = delira_pipeline(p3, seed, "auto")(
        data=torch.from_numpy(data).cuda(), seg=torch.from_numpy(seg).cuda()
    )
    diff = np.abs(gpu["data"].cpu().numpy() - cpu["data"])
    mismatch = float((gpu["seg"].cpu().numpy() != cpu["seg"]).mean())
    zeros = np.zeros((2, 1, 32, 32, 32), np.float32)
    noise = np.abs(
        F.gaussian_noise(torch.from_numpy(zeros).cuda(), 1.0, seed=seed).cpu().numpy()
        - F.gaussian_noise(zeros, 1.0, seed=seed)
    )
    out = {
        "batch": batch,
        "input": size,
        "patch": patch,
        "seed": seed,
        "data_max_abs_diff": float(diff.max()),
        "data_mean_abs_diff": float(diff.mean()),
        "label_mismatch_fraction": mismatch,
        "noise_max_abs_diff": float(noise.max()),
        "tolerances": {"data": DATA_TOLERANCE, "labels": LABEL_TOLERANCE, "noise": NOISE_TOLERANCE},
    }
    out["passed"] = bool(
        out["data_max_abs_diff"] <= DATA_TOLERANCE
        and mismatch <= LABEL_TOLERANCE
        and out["noise_max_abs_diff"] <= NOISE_TOLERANCE
    )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--parity", action="store_true", help="also run the CPU == CUDA same-seed check")
    parser.add_argument("--parity-batch", type=int, default=4)
    parser.add_argument("--parity-size", type=int, default=80)
    parser.add_argument("--parity-patch", type=int, default=64)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: the GPU benchmark needs an NVIDIA GPU")
        return 2
    import delira.augment as da

    patch = (args.patch,) * 3
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.standard_normal((args.batch, 1, *(args.size,) * 3), dtype=np.float32)).cuda()
    seg = torch.from_numpy(rng.integers(0, 3, (args.batch, 1, *(args.size,) * 3)).astype(np.int16)).cuda()
    pipe = delira_pipeline(patch)
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = {
        "delira (CUDA, fused)": lambda: pipe(data=data, seg=seg),
        "delira fused pass (parameters drawn once)": predrawn_pass(pipe, data, seg),
        "torch affine_grid/grid_sample": lambda: torch_pipeline(torch, data, seg, patch, gen),
    }
    voxels = args.batch * args.patch**3
    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "batch": args.batch,
        "input": args.size,
        "patch": args.patch,
        "repeats": args.repeats,
        "build_info": da.build_info(),
        "engines": {},
    }
    for name, fn in rows.items():
        wall, stream = timed(torch, fn, args.repeats)
        ms = statistics.median(wall)
        results["engines"][name] = {
            "ms_per_batch": ms,
            "stream_ms_per_batch": statistics.median(stream),
            "gvox_per_s": voxels / (ms / 1000.0) / 1e9,
            "runs_ms": wall,
        }
    e = results["engines"]
    torch_ms = e["torch affine_grid/grid_sample"]["ms_per_batch"]
    results["goal"] = {
        "delira_gvox_per_s": e["delira (CUDA, fused)"]["gvox_per_s"],
        "delira_pass_gvox_per_s": e["delira fused pass (parameters drawn once)"]["gvox_per_s"],
        "torch_gvox_per_s": e["torch affine_grid/grid_sample"]["gvox_per_s"],
        "delira_speedup_vs_torch": torch_ms / e["delira (CUDA, fused)"]["ms_per_batch"],
        "pass_speedup_vs_torch": torch_ms / e["delira fused pass (parameters drawn once)"]["ms_per_batch"],
    }
    print(
        f"{results['device']}: batch {args.batch} x 1x{args.size}^3 -> {args.patch}^3, median of {args.repeats}"
    )
    for name, r in e.items():
        print(
            f"  {name:<44}{r['ms_per_batch']:>9.2f} ms/batch (stream {r['stream_ms_per_batch']:>8.2f} ms)"
            f"{r['gvox_per_s']:>8.2f} Gvox/s{torch_ms / r['ms_per_batch']:>7.2f}x torch"
        )
    status = 0
    if args.parity:
        results["parity"] = parity(torch, args.parity_size, args.parity_patch, args.parity_batch)
        p = results["parity"]
        print(
            f"CPU == CUDA, same seed: data max |diff| {p['data_max_abs_diff']:.2e}, labels differ at "
            f"{p['label_mismatch_fraction']:.2e} of the voxels, noise max |diff| {p['noise_max_abs_diff']:.2e}: "
            + ("passed" if p["passed"] else "FAILED")
        )
        status = 0 if p["passed"] else 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(main())
