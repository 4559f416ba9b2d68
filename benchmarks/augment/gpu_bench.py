"""GPU benchmark: the canonical workload (BENCHMARK.md) on a batch of 32 on one GPU.

Delira's CUDA executor (one fused kernel per batch, torch CUDA tensors in and out) against the same
pipeline written with torch ``affine_grid`` / ``grid_sample`` and elementwise torch ops (the approach of
rising, kornia and MONAI), on the same card in one run. Reports ms/batch, output voxels/s and the ratio.

    python benchmarks/augment/gpu_bench.py [--batch 32] [--repeats 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np


def delira_pipeline(patch):
    from delira.augment.bench import delira_pipeline as canonical

    pipe = canonical(patch)
    pipe.override_backend = None  # the canonical pipeline pins backend="cpu"; let CUDA inputs pick the GPU
    for t in pipe.transforms:
        t.backend = "auto"
    pipe.backend = "auto"
    return pipe


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
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
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
        "delira (CUDA, fused)": timed(torch, lambda: pipe(data=data, seg=seg), args.repeats),
        "torch affine_grid/grid_sample": timed(
            torch, lambda: torch_pipeline(torch, data, seg, patch, gen), args.repeats
        ),
    }
    voxels = args.batch * args.patch**3
    results = {
        "device": torch.cuda.get_device_name(),
        "batch": args.batch,
        "input": args.size,
        "patch": args.patch,
        "build_info": da.build_info(),
        "engines": {},
    }
    for name, times in rows.items():
        ms = statistics.median(times)
        results["engines"][name] = {
            "ms_per_batch": ms,
            "output_voxels_per_s": voxels / (ms / 1000.0),
            "runs_ms": times,
        }
    base = results["engines"]["delira (CUDA, fused)"]["ms_per_batch"]
    print(
        f"{results['device']}: batch {args.batch} x 1x{args.size}^3 -> {args.patch}^3, median of {args.repeats}"
    )
    for name, r in results["engines"].items():
        r["x_slower_than_delira"] = r["ms_per_batch"] / base
        print(
            f"  {name:<32}{r['ms_per_batch']:>10.1f} ms/batch{r['output_voxels_per_s'] / 1e9:>10.2f} Gvox/s"
            f"{r['x_slower_than_delira']:>8.2f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
