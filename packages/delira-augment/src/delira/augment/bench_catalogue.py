"""Per-op benchmark of the augmentation catalogue (``delira-augment-bench --ops [NAME ...]``).

Every op of the catalogue beyond the canonical workload is timed on the same input as its peers'
implementation of the same operation (batchgeneratorsv2, batchgenerators, TorchIO, whichever is
installed), single-threaded, in one run. Input: ``batch`` samples of ``1 x size^3`` float32
(standard normal) and a segmentation with labels 0..2; the op is applied to every sample (p = 1)
with the parameters given in its case. Reported per op: median ms/sample of Delira and of each peer,
and the ratio peer / Delira (how many times faster Delira is).

A case is registered with :func:`case`: a name, the Delira factory and the peers' factories. A factory
takes the spatial shape and returns a callable ``fn(data, seg) -> None`` run on fresh copies of the
input (copying is not timed). A peer factory raises ``ImportError`` when the peer is not installed:
that peer is then reported as missing, not timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Factory = Callable[[tuple[int, ...]], Callable[[Any, Any], Any]]


@dataclass
class Case:
    name: str
    delira: Factory
    peers: dict[str, Factory] = field(default_factory=dict)
    note: str = ""


CASES: dict[str, Case] = {}


def case(name: str, delira: Factory, note: str = "", **peers: Factory) -> Case:
    """Register a benchmark case (``peers``: peer name -> factory)."""
    if name in CASES:
        raise ValueError(f"benchmark case {name!r} registered twice")
    CASES[name] = Case(name, delira, dict(peers), note)
    return CASES[name]


def _inputs(n: int, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 1, size, size, size), dtype=np.float32)
    seg = rng.integers(0, 3, (n, 1, size, size, size)).astype(np.int16)
    return data, seg


def _time(fn: Callable[[Any, Any], Any], data, seg, repeats: int) -> float:
    """Median ms of ``fn`` over ``repeats`` calls (after one warm-up) on fresh copies of the input."""
    times = []
    for i in range(repeats + 1):
        d, s = data.copy(), seg.copy()
        t0 = time.perf_counter()
        fn(d, s)
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_ops(
    names: list[str] | None, size: int, batch: int, repeats: int, peers: bool = True
) -> dict[str, Any]:
    """Time the named cases (all when ``names`` is empty or None); returns the results as a dict."""
    _load_cases()
    unknown = [n for n in names or [] if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(sorted(CASES))}")
    data, seg = _inputs(batch, size)
    shape = data.shape[2:]
    results: dict[str, Any] = {"size": size, "batch": batch, "repeats": repeats, "ops": {}}
    for name in names or sorted(CASES):
        c = CASES[name]
        row: dict[str, Any] = {"note": c.note}
        ms = _time(c.delira(shape), data, seg, repeats) / batch
        row["delira_ms_per_sample"] = ms
        row["peers"] = {}
        for peer, factory in c.peers.items() if peers else ():
            try:
                fn = factory(shape)
            except ImportError as exc:
                row["peers"][peer] = {"missing": str(exc)}
                continue
            pms = _time(fn, data, seg, repeats) / batch
            row["peers"][peer] = {"ms_per_sample": pms, "ratio": pms / ms if ms > 0 else float("inf")}
        results["ops"][name] = row
    return results


def print_ops(results: dict[str, Any]) -> None:
    print(
        f"catalogue ops on {results['batch']} x 1 x {results['size']}^3, one thread, "
        f"median of {results['repeats']} (ms/sample; ratio = peer / delira)"
    )
    for name, row in results["ops"].items():
        peers = []
        for peer, r in row["peers"].items():
            peers.append(
                f"{peer} missing"
                if "missing" in r
                else f"{peer} {r['ms_per_sample']:.1f} ({r['ratio']:.1f}x)"
            )
        print(f"  {name:<28} delira {row['delira_ms_per_sample']:8.1f}   " + "   ".join(peers))


def _load_cases() -> None:
    """Register the cases of every group (idempotent)."""
    if CASES:
        return
    _cases_intensity()
    _cases_filters()
    _cases_spatial()
    _cases_mr()


# Each group registers its cases in its own function below.


# --- group: intensity (Rician noise, contrast, inverted gamma, ...) ----------------------------------
def _cases_intensity() -> None:
    # Delira: the transform on the whole batch (one program run); batchgeneratorsv2: its transform on
    # every sample (C, *spatial) as a torch tensor. Same parameter ranges on both sides.
    import delira.augment as da

    def delira(make):
        def factory(shape):
            t = make()
            return lambda data, seg: t(rng=0, data=data)

        return factory

    def bgv2(module, name, **kwargs):
        def factory(shape):
            import importlib

            try:
                import torch

                cls = getattr(importlib.import_module(f"batchgeneratorsv2.transforms.{module}"), name)
            except ImportError as exc:
                raise ImportError(f"batchgeneratorsv2 is not installed ({exc})") from None
            torch.set_num_threads(1)
            t = cls(**kwargs)

            def fn(data, seg):
                for i in range(data.shape[0]):
                    t(image=torch.from_numpy(data[i]))

            return fn

        return factory

    case(
        "rician",
        delira(lambda: da.RicianNoise(std=(0.0, 0.1))),
        note="std (0, 0.1); shift by the minimum, Rician magnitude, rescaled to the input's mean/std",
        bgv2=bgv2("noise.rician", "RicianNoiseTransform", noise_variance=(0.0, 0.1)),
    )
    case(
        "rician_pointwise",
        delira(lambda: da.RicianNoise(std=(0.0, 0.1), retain_stats=False)),
        note="std (0, 0.1), the single pointwise op (no statistics); bgv2 as for 'rician'",
        bgv2=bgv2("noise.rician", "RicianNoiseTransform", noise_variance=(0.0, 0.1)),
    )
    case(
        "contrast_preserve_range",
        delira(lambda: da.Contrast(factor=(0.75, 1.25), preserve_range=True)),
        note="factor (0.75, 1.25) around the mean, clipped to the input range",
        bgv2=bgv2(
            "intensity.contrast",
            "ContrastTransform",
            contrast_range=(0.75, 1.25),
            preserve_range=True,
            synchronize_channels=False,
        ),
    )
    case(
        "gamma_inverted",
        delira(lambda: da.Gamma(gamma=(0.7, 1.5), invert=True, retain_stats=True)),
        note="gamma (0.7, 1.5) on the inverted image, statistics retained",
        bgv2=bgv2(
            "intensity.gamma",
            "GammaTransform",
            gamma=(0.7, 1.5),
            p_invert_image=1,
            synchronize_channels=False,
            p_per_channel=1,
            p_retain_stats=1,
        ),
    )


# --- group: filters (blur per sample, sharpening, median, low resolution per axis, local ops) -------
def _cases_filters() -> None:
    # Delira: the op on the whole batch; batchgeneratorsv2: its transform on every sample (C, *spatial)
    # as torch tensors, as its loaders call it. Same parameter ranges on both sides.
    import delira.augment as da

    def delira(make):
        def factory(shape):
            t = make()

            def fn(data, seg):
                t(rng=0, data=data)

            return fn

        return factory

    def bgv2(module, name, **kwargs):
        def factory(shape):
            import importlib

            try:
                import torch

                cls = getattr(importlib.import_module(f"batchgeneratorsv2.transforms.{module}"), name)
            except ImportError as exc:
                raise ImportError(f"batchgeneratorsv2 is not installed ({exc})") from None
            torch.set_num_threads(1)
            t = cls(**kwargs)

            def fn(data, seg):
                for i in range(data.shape[0]):
                    t(image=torch.from_numpy(data[i]))

            return fn

        return factory

    local = {"scale": (20.0, 60.0), "loc": (-0.5, 1.5)}  # weight maps of a few tens of voxels
    case(
        "lowres_per_axis",
        delira(lambda: da.SimulateLowResolution((0.5, 1.0), order_up=1, per_axis=True, per_channel=True)),
        note="zoom (0.5, 1) per axis and channel, nearest down, linear up (bgv2's modes)",
        bgv2=bgv2(
            "spatial.low_resolution",
            "SimulateLowResolutionTransform",
            scale=(0.5, 1.0),
            synchronize_channels=False,
            synchronize_axes=False,
            ignore_axes=None,
        ),
    )
    case(
        "local_gamma",
        delira(lambda: da.LocalGamma(gamma=(0.5, 1.0), **local)),
        note="Gaussian weight map (sigma 20-60 voxels), gamma (0.5, 1)",
        bgv2=bgv2("local.local_gamma", "LocalGammaTransform", gamma=(0.5, 1.0), **local),
    )
    case(
        "local_contrast",
        delira(lambda: da.LocalContrast(factor=(0.5, 1.5), **local)),
        note="Gaussian weight map (sigma 20-60 voxels), contrast (0.5, 1.5)",
        bgv2=bgv2("local.local_contrast", "LocalContrastTransform", new_contrast=(0.5, 1.5), **local),
    )
    case(
        "local_smoothing",
        delira(lambda: da.LocalSmoothing(sigma=(0.5, 1.5), strength=(0.5, 1.0), **local)),
        note="Gaussian weight map (sigma 20-60 voxels), blur sigma (0.5, 1.5), strength (0.5, 1)",
        bgv2=bgv2(
            "local.local_smoothing",
            "LocalSmoothingTransform",
            smoothing_strength=(0.5, 1.0),
            kernel_size=(0.5, 1.5),
            **local,
        ),
    )
    case(
        "brightness_gradient",
        delira(lambda: da.BrightnessGradient(max_strength=(0.5, 1.0), **local)),
        note="Gaussian weight map (sigma 20-60 voxels), mean-centred, strength (0.5, 1)",
        bgv2=bgv2(
            "local.brightness_gradient",
            "BrightnessGradientAdditiveTransform",
            max_strength=(0.5, 1.0),
            **local,
        ),
    )
    case(
        "sharpen",
        delira(lambda: da.Sharpen(strength=(0.1, 0.3))),
        note="strength (0.1, 0.3) per channel, 6-neighbour Laplacian, border replicated (numpy)",
        bgv2=bgv2("noise.sharpen", "SharpeningTransform", strength=(0.1, 0.3)),
    )
    case(
        "median",
        delira(lambda: da.MedianFilter(size=(3, 4))),
        note="cube size 3 or 4 per channel (scipy.ndimage.median_filter); bgv2's filter_size=(3, 5)",
        bgv2=bgv2("noise.median_filter", "MedianFilterTransform", filter_size=(3, 5)),
    )
    case(
        "blur_per_channel",
        delira(lambda: da.GaussianBlur(sigma=(0.5, 1.0), per_axis=True, per_channel=True)),
        note="sigma (0.5, 1) per channel and axis, separable, mode reflect",
        bgv2=bgv2(
            "noise.gaussian_blur",
            "GaussianBlurTransform",
            blur_sigma=(0.5, 1.0),
            synchronize_channels=False,
            synchronize_axes=False,
            p_per_channel=1,
        ),
    )


# --- group: spatial (90-degree rotations, transposes, blank rectangles, dummy 2D) -------------------
def _bgv2_dummy_2d(shape: tuple[int, ...]) -> Callable[[Any, Any], Any]:
    """nnU-Net v2's dummy-2D pipeline: slices folded into channels around bgv2's 2D SpatialTransform."""
    import math

    try:
        import torch
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
        from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
        from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
    except ImportError as exc:
        raise ImportError(f"batchgeneratorsv2 is not installed ({exc})") from None
    torch.set_num_threads(1)
    t = ComposeTransforms(
        [
            Convert3DTo2DTransform(),
            SpatialTransform(
                tuple(shape[1:]),
                patch_center_dist_from_border=0,
                random_crop=False,
                p_rotation=1,
                rotation=(-math.pi, math.pi),
                p_scaling=1,
                scaling=(0.7, 1.4),
                p_synchronize_scaling_across_axes=1,
                mode_seg="bilinear",
            ),
            Convert2DTo3DTransform(),
        ]
    )

    def fn(data: Any, seg: Any) -> None:
        outs = [
            t(image=torch.from_numpy(data[i]), segmentation=torch.from_numpy(seg[i]))
            for i in range(data.shape[0])
        ]
        torch.stack([o["image"] for o in outs]), torch.stack([o["segmentation"] for o in outs])  # collated

    return fn


def _cases_spatial() -> None:
    # Delira: the transform on the whole batch (data and seg; a new batch). batchgeneratorsv2: its
    # transform on every sample (C, *spatial) as torch tensors, then the samples stacked into a batch
    # as nnU-Net's loader does (torch.rot90 returns a transposed view, so the copy happens there).
    # Same parameters on both sides.
    def sizes(shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        return tuple((max(1, s // 10), max(2, s // 3)) for s in shape)  # nnU-Net's DA5 boxes

    def delira(make: Callable[[tuple[int, ...]], Any]) -> Factory:
        def factory(shape: tuple[int, ...]) -> Callable[[Any, Any], Any]:
            t = make(shape)
            return lambda data, seg: t(rng=0, data=data, seg=seg)

        return factory

    def bgv2(module: str, name: str, make_kwargs: Callable[[tuple[int, ...]], dict[str, Any]]) -> Factory:
        def factory(shape: tuple[int, ...]) -> Callable[[Any, Any], Any]:
            import importlib

            try:
                import torch

                cls = getattr(importlib.import_module(f"batchgeneratorsv2.transforms.{module}"), name)
            except ImportError as exc:
                raise ImportError(f"batchgeneratorsv2 is not installed ({exc})") from None
            torch.set_num_threads(1)
            t = cls(**make_kwargs(shape))

            def fn(data: Any, seg: Any) -> None:
                outs = [
                    t(image=torch.from_numpy(data[i]), segmentation=torch.from_numpy(seg[i]))
                    for i in range(data.shape[0])
                ]
                torch.stack([o["image"] for o in outs]), torch.stack([o["segmentation"] for o in outs])

            return fn

        return factory

    import delira.augment as da

    case(
        "rot90",
        delira(lambda shape: da.Rot90(num_rot=(1, 2, 3), axes=(0, 1, 2))),
        note="one random plane of 3, 1-3 quarter turns, data and seg",
        bgv2=bgv2(
            "spatial.rot90",
            "Rot90Transform",
            lambda shape: {
                "num_axis_combinations": 1,
                "num_rot_per_combination": (1, 2, 3),
                "allowed_axes": {0, 1, 2},
            },
        ),
    )
    case(
        "transpose",
        delira(lambda shape: da.TransposeAxes(axes=(0, 1, 2))),
        note="random permutation of the 3 axes, data and seg",
        bgv2=bgv2("spatial.transpose", "TransposeAxesTransform", lambda shape: {"allowed_axes": {0, 1, 2}}),
    )
    case(
        "blank_rectangles",
        delira(lambda shape: da.BlankRectangles(num_rectangles=(1, 5), size=sizes(shape), fill="mean")),
        note="1-4 boxes of size/10 to size/3 per axis, filled with their mean (data only)",
        bgv2=bgv2(
            "noise.blank_rectangle",
            "BlankRectangleTransform",
            lambda shape: {
                "rectangle_size": sizes(shape),
                "rectangle_value": lambda x: x.mean(),
                "num_rectangles": (1, 5),
            },
        ),
    )
    case(
        "dummy_2d",
        delira(
            lambda shape: da.SpatialTransform(
                None, dummy_2d_axis=0, rotation=(-180.0, 180.0), scale=(0.7, 1.4), order_seg=1
            )
        ),
        note="nnU-Net's dummy 2D: in-plane rotation (-180, 180) and scale (0.7, 1.4) on every slice, "
        "linear data, per-label linear seg",
        bgv2=_bgv2_dummy_2d,
    )


# --- group: mr (bias field, motion, ghosting, spike) -------------------------------------------------
def _cases_mr() -> None:
    # The same parameters on both sides (TorchIO's defaults; a single number d means (-d, d) or (0, d)).
    params = {
        "bias_field": ("BiasField", "RandomBiasField", {"coefficients": 0.5, "order": 3}, {}),
        "motion": (
            "Motion",
            "RandomMotion",
            {"degrees": 10, "translation": 10, "num_transforms": 2},
            {"image_interpolation": "linear"},
        ),
        "ghosting": (
            "Ghosting",
            "RandomGhosting",
            {"num_ghosts": (4, 10), "axes": (0, 1, 2), "intensity": (0.5, 1), "restore": 0.02},
            {},
        ),
        "spike": ("Spike", "RandomSpike", {"num_spikes": (1, 1), "intensity": (1, 3)}, {}),
    }
    notes = {
        "bias_field": "x * exp(polynomial of degree 3), 20 coefficients per sample",
        "motion": "2 rigid movements (compiled resampler), k-space of 3 positions combined (numpy.fft)",
        "ghosting": "every g-th k-space plane along one axis scaled, centre restored (numpy.fft)",
        "spike": "one spike in k-space (numpy.fft)",
    }

    def delira_factory(cls: str, kwargs: dict[str, Any]) -> Factory:
        def make(shape: tuple[int, ...]) -> Callable[[Any, Any], Any]:
            import delira.augment as da

            transform = getattr(da, cls)(p=1.0, seed=0, **kwargs)
            return lambda data, seg: transform(data=data, seg=seg)

        return make

    def torchio_factory(cls: str, kwargs: dict[str, Any]) -> Factory:
        def make(shape: tuple[int, ...]) -> Callable[[Any, Any], Any]:
            import numpy as np
            import torch
            import torchio as tio

            torch.set_num_threads(1)
            transform = getattr(tio, cls)(**kwargs)
            affine = np.eye(4)

            def fn(data: Any, seg: Any) -> None:
                for i in range(data.shape[0]):  # TorchIO transforms one subject (sample) at a time
                    image = tio.ScalarImage(tensor=torch.from_numpy(data[i]), affine=affine)
                    transform(tio.Subject(image=image))

            return fn

        return make

    for name, (ours, theirs, kwargs, extra) in params.items():
        case(
            name,
            delira_factory(ours, kwargs),
            note=notes[name],
            torchio=torchio_factory(theirs, {**kwargs, **extra}),
        )
