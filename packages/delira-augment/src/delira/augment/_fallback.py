"""The batchgenerators backend: the engine's operations in numpy and scipy.

Used when the compiled extension is missing or ``backend="batchgenerators"`` is asked for.
Resampling goes through batchgenerators' ``interpolate_img`` (scipy's ``map_coordinates``) at the
same coordinates the kernels compute, so for fixed parameters both backends agree to float
precision; random values (noise) come from numpy's generator, so they agree in distribution.
"""

from __future__ import annotations

import numpy as np

from delira.augment._program import OpKind, Program
from delira.augment._spec import ResampleSpec
from delira.augment.functional import elastic as _elastic


def _require_batchgenerators():
    try:
        from batchgenerators.augmentations.utils import interpolate_img
    except ImportError as exc:
        raise ImportError(
            "the batchgenerators backend needs batchgenerators and scipy: pip install 'delira-augment[fallback]' "
            f"({exc})"
        ) from exc
    return interpolate_img


def coordinates(affine: np.ndarray, out_shape: tuple[int, ...], elastic=None, sample: int = 0) -> np.ndarray:
    """Input coordinates ``(ndim, *out_shape)`` float64 of every output voxel of one sample."""
    sd = len(out_shape)
    grid = np.stack(np.meshgrid(*[np.arange(p, dtype=np.float64) for p in out_shape], indexing="ij"))
    a = affine[sample].astype(np.float32).astype(np.float64)
    coords = np.tensordot(a[:, :sd], grid, axes=(1, 0)) + a[:, sd].reshape((sd,) + (1,) * sd)
    if elastic is not None:
        one = _elastic.ElasticField(
            elastic.values[sample : sample + 1],
            elastic.origin[sample : sample + 1],
            elastic.spacing[sample : sample + 1],
        )
        coords += _elastic.evaluate(one, out_shape)[0]
    return coords


def resample(data: np.ndarray | None, seg: np.ndarray | None, spec: ResampleSpec):
    """The fused pass of ``spec`` with batchgenerators' ``interpolate_img``; same outputs as ``_C.resample``."""
    a = spec.fallback_args()
    out_shape, affine, elastic, program = a["out_shape"], a["affine"], a["elastic"], a["program"]
    order_data, mode_data, cval_data = a["order_data"], a["mode_data"], a["cval_data"]
    order_seg, mode_seg, cval_seg = a["order_seg"], a["mode_seg"], a["cval_seg"]
    interpolate_img = _require_batchgenerators()
    n = (data if data is not None else seg).shape[0]
    out_data = None if data is None else np.empty(data.shape[:2] + tuple(out_shape), dtype=data.dtype)
    out_seg = None if seg is None else np.empty(seg.shape[:2] + tuple(out_shape), dtype=seg.dtype)
    for i in range(n):
        coords = coordinates(affine, out_shape, elastic, i)
        if data is not None:
            for c in range(data.shape[1]):
                out_data[i, c] = interpolate_img(
                    data[i, c].astype(np.float64), coords, order_data, mode_data, cval_data
                )
        if seg is not None:
            for c in range(seg.shape[1]):
                out_seg[i, c] = interpolate_img(
                    seg[i, c], coords, order_seg, mode_seg, cval_seg, is_seg=order_seg == 1
                )
    if data is not None and program:
        out_data = run_program(out_data, program)
    return out_data, out_seg


def _stats(v: np.ndarray) -> dict:
    v64 = v.astype(np.float64)
    return {"mean": v64.mean(), "std": v64.std(), "min": v.min(), "max": v.max()}


def run_program(x: np.ndarray, program: Program) -> np.ndarray:
    """Apply ``program`` with numpy formulas (batchgenerators' definitions of each operation)."""
    out = np.array(x, dtype=x.dtype, copy=True, order="C")
    seeds = program.seeds if program.seeds is not None else np.zeros(program.n, dtype=np.uint64)
    for i in range(program.n):
        rng = np.random.default_rng(int(seeds[i]))
        for c in range(out.shape[1]):
            v = out[i, c].astype(np.float32)
            stats_at: dict[int, dict] = {}
            for j, op in enumerate(program.ops):
                if op.kind.needs_stats:
                    stats_at[j] = _stats(v)
                if not op.active[i]:
                    continue
                p = op.params[i]
                v = _apply(op.kind, p, v, stats_at.get(j), stats_at.get(op.ref), rng)
            out[i, c] = v
    return out


def _apply(
    kind: OpKind, p: np.ndarray, v: np.ndarray, s: dict | None, target: dict | None, rng
) -> np.ndarray:
    if kind == OpKind.NOISE:
        return (v + rng.normal(0.0, float(p[0]), v.shape)).astype(np.float32)
    if kind == OpKind.RICIAN:
        z = rng.normal(0.0, float(p[0]), (2, *v.shape))
        return np.sqrt((v + z[0]) ** 2 + z[1] ** 2).astype(np.float32)
    if kind == OpKind.SHIFT_MIN:
        return v - np.float32(s["min"])
    if kind == OpKind.MULTIPLY:
        return v * np.float32(p[0])
    if kind == OpKind.ADD:
        return v + np.float32(p[0])
    if kind == OpKind.CLIP:
        return np.clip(v, p[0], p[1])
    if kind == OpKind.CONTRAST:
        y = (v - np.float32(s["mean"])) * np.float32(p[0]) + np.float32(s["mean"])
        return np.clip(y, s["min"], s["max"]) if p[1] else y
    if kind == OpKind.GAMMA:
        invert = bool(p[1])
        x = -v if invert else v
        lo = -s["max"] if invert else s["min"]
        rng_ = (-s["min"] if invert else s["max"]) - lo + np.float32(1e-7)
        y = np.power(np.maximum((x - lo) / rng_, 0), np.float32(p[0])) * rng_ + lo
        return (-y if invert and not p[2] else y).astype(np.float32)
    if kind == OpKind.RESTORE_STATS:
        negate = bool(p[0])
        mean = -target["mean"] if negate else target["mean"]
        y = (v.astype(np.float64) - s["mean"]) * (target["std"] / (s["std"] + 1e-8)) + mean
        return (-y if negate else y).astype(np.float32)
    if kind == OpKind.ZSCORE:
        return ((v.astype(np.float64) - s["mean"]) / max(s["std"], float(p[0]))).astype(np.float32)
    if kind == OpKind.PERCENTILE_CLIP:
        lo, hi = np.percentile(v, [p[0], p[1]])
        return np.clip(v, np.float32(lo), np.float32(hi))
    raise ValueError(f"unknown op {kind}")


def gaussian_blur(x: np.ndarray, sigma: np.ndarray, truncate: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = np.array(x, copy=True, order="C")
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = gaussian_filter(
                x[i, c], sigma=[float(s) for s in sigma[i]], mode="reflect", truncate=truncate
            )
    return out
