"""Per-channel draws of the fused intensity transforms (nnU-Net v2's ``synchronize_channels=False``).

References: batchgeneratorsv2's MultiplicativeBrightnessTransform / ContrastTransform / GammaTransform
given the same per-channel values through callables; the default draws replayed by hand from the seed
(the program the transforms built before ``per_channel`` existed); BGContrast's distribution; Compose
against its members applied one by one with the same random stream.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats as st

import delira.augment as da
from delira.augment import _engine
from delira.augment.functional import intensity as FI
from delira.augment.transforms.base import draw_factor

BACKENDS = ["cpu", "batchgenerators"]


def _torch():
    return pytest.importorskip("torch")


def _bgv2(module: str):
    return pytest.importorskip(f"batchgeneratorsv2.transforms.{module}")


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    smooth = ndi.gaussian_filter(rng.standard_normal((3, 3, 10, 12, 14)), (0, 0, 1.5, 1.5, 1.5))
    scale = np.array([1.0, 3.0, 0.5])[None, :, None, None, None]  # channels with different statistics
    return ((smooth * 4 + rng.standard_normal(smooth.shape) * 0.2 + 1) * scale).astype(np.float32)


def _replay(seed, n, c, bounds, *, per_channel=True, p=1.0, p_per_channel=1.0, bg=False):
    """The draws of a channelwise transform, by hand: sample flags, values, channel flags."""
    r = np.random.default_rng(seed)
    active = r.random(n) < p
    cols = c if per_channel else 1
    lo, hi = bounds
    if bg and lo < 1:
        below = r.random((n, cols)) < 0.5
        values = np.where(below, r.uniform(lo, 1, (n, cols)), r.uniform(max(lo, 1), hi, (n, cols)))
    else:
        values = r.uniform(lo, hi, (n, cols))
    values = np.broadcast_to(values, (n, c))
    keep = np.repeat(active[:, None], c, axis=1)
    if p_per_channel < 1:
        keep &= r.random((n, c)) < p_per_channel
    return values, keep


def _bg_transform(op, values):
    """batchgeneratorsv2's transform of ``op`` applying ``values[channel]`` to every channel."""

    def value(*args, channel=None, **kwargs):
        return float(values[channel])

    if op == "multiply":
        return _bgv2("intensity.brightness").MultiplicativeBrightnessTransform(value, False, 1)
    if op == "contrast":
        return _bgv2("intensity.contrast").ContrastTransform(value, True, False, 1)
    return _bgv2("intensity.gamma").GammaTransform(value, 0, False, 1, 1)


def _delira(op, **kwargs):
    if op == "multiply":
        return da.BrightnessMultiplicative(factor=(0.5, 2.0), **kwargs)
    if op == "contrast":
        return da.Contrast(factor=(0.5, 2.0), preserve_range=True, **kwargs)
    return da.Gamma(gamma=(0.5, 2.0), retain_stats=True, **kwargs)


def _reference(op, x, values, keep):
    torch = _torch()
    ref = x.copy()
    for i in range(x.shape[0]):
        kept = np.flatnonzero(keep[i])
        if kept.size:
            bg = _bg_transform(op, values[i][kept])
            ref[i, kept] = bg(image=torch.from_numpy(x[i, kept].copy()))["image"].numpy()
    return ref


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["multiply", "contrast", "gamma"])
@pytest.mark.parametrize("bg", [False, True])
def test_per_channel_equals_batchgeneratorsv2_with_the_same_values(image, op, backend, bg):
    n, c = image.shape[:2]
    values, keep = _replay(4, n, c, (0.5, 2.0), bg=bg)
    assert all(len(set(row)) == c for row in values)  # a value per channel
    sampling = {"sampling": "bg" if bg else "uniform"}
    out = _delira(op, per_channel=True, seed=4, backend=backend, **sampling)(data=image.copy())["data"]
    np.testing.assert_allclose(out, _reference(op, image, values, keep), atol=5e-5, rtol=1e-5)
    if op == "multiply":  # the channels of one sample got different factors
        ratios = (out / image).reshape(n, c, -1)
        np.testing.assert_allclose(ratios, np.broadcast_to(values[..., None], ratios.shape), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["multiply", "contrast", "gamma"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_p_per_channel_leaves_the_other_channels_unchanged(image, op, backend, per_channel):
    x = np.concatenate([image, image[::-1]])  # 6 samples: both kept and skipped channels
    n, c = x.shape[:2]
    values, keep = _replay(9, n, c, (0.5, 2.0), per_channel=per_channel, p=0.8, p_per_channel=0.5)
    assert keep.any() and not keep.all() and (~keep).any(axis=1).any()
    t = _delira(
        op, per_channel=per_channel, p=0.8, p_per_channel=0.5, sampling="uniform", seed=9, backend=backend
    )
    out = t(data=x.copy())["data"]
    np.testing.assert_array_equal(out[~keep], x[~keep])
    np.testing.assert_allclose(out, _reference(op, x, values, keep), atol=5e-5, rtol=1e-5)


def _old_program(name, seed, n, p):
    """The program each transform built before per_channel existed, drawn by hand in the same order."""
    r = np.random.default_rng(seed)
    active = r.random(n) < p
    if name == "multiply":
        prog = FI.program_ops("multiply", n, factor=r.uniform(0.75, 1.25, n))
    elif name == "add":
        prog = FI.program_ops("add", n, value=r.normal(0.0, 0.1, n))
    elif name == "contrast":
        prog = FI.program_ops("contrast", n, factor=r.uniform(0.75, 1.25, n), preserve_range=True)
    elif name == "gamma":
        below = r.random(n) < 0.5
        gamma = np.where(below, r.uniform(0.7, 1.0, n), r.uniform(1.0, 1.5, n))
        prog = FI.program_ops("gamma", n, gamma=gamma, invert=False, retain_stats=True)
    else:
        prog = FI.program_ops("noise", n, std=r.uniform(0.0, 0.1, n))
        prog.seeds = r.integers(0, 2**63, size=n, dtype=np.uint64)
    for o in prog.ops:
        o.active &= active
    return prog


DEFAULTS = {
    "multiply": da.BrightnessMultiplicative,
    "add": da.BrightnessAdditive,
    "contrast": da.Contrast,
    "gamma": da.Gamma,
    "noise": da.GaussianNoise,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_the_default_is_bit_identical_to_the_per_sample_program(image, name, backend):
    n = image.shape[0]
    expected = _engine.run_program(image.copy(), _old_program(name, 3, n, 0.7), backend)
    out = DEFAULTS[name](p=0.7, seed=3, backend=backend)(data=image.copy())["data"]
    np.testing.assert_array_equal(out, expected)
    one = np.ascontiguousarray(image[:, :1])  # per_channel on one channel: the same draws as the default
    default = DEFAULTS[name](p=0.7, seed=3, backend=backend)(data=one.copy())["data"]
    per = DEFAULTS[name](p=0.7, per_channel=True, seed=3, backend=backend)(data=one.copy())["data"]
    np.testing.assert_array_equal(per, default)


@pytest.mark.parametrize("name", ["noise", "add"])
def test_noise_and_additive_brightness_draw_per_channel(image, name):
    out = DEFAULTS[name](per_channel=True, seed=1)(data=image.copy())["data"]
    diff = (out - image).reshape(*image.shape[:2], -1)
    if name == "add":  # a constant shift per channel, different across channels
        np.testing.assert_allclose(diff, diff[..., :1] * np.ones_like(diff), atol=1e-5)
        assert all(len(np.unique(np.round(diff[i, :, 0], 6))) == image.shape[1] for i in range(len(diff)))
    else:  # the channels' noise levels come from their own stds, not one per sample
        r = np.random.default_rng(1)
        r.random(image.shape[0])
        std = r.uniform(0.0, 0.1, image.shape[:2])
        np.testing.assert_allclose(diff.std(axis=-1), std, rtol=0.15, atol=2e-3)


def test_non_contiguous_and_torch_inputs_equal_contiguous_numpy(image):
    t = lambda: da.Contrast(per_channel=True, p_per_channel=0.7, seed=2)  # noqa: E731
    ref = t()(data=image.copy())["data"]
    strided = np.ascontiguousarray(np.swapaxes(image, 0, 1)).swapaxes(0, 1)  # not C-contiguous
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(t()(data=strided)["data"], ref)
    torch = _torch()
    out = t()(data=torch.from_numpy(image.copy()))["data"]
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == image.shape
    np.testing.assert_array_equal(out.numpy(), ref)


def test_bg_sampling_follows_batchgeneratorsv2_bgcontrast():
    contrast = _bgv2("intensity.contrast")
    np.random.seed(0)  # noqa: NPY002 (BGContrast draws from the global numpy state)
    ref = np.array([contrast.BGContrast((0.7, 1.5))() for _ in range(4000)])
    ours = draw_factor(np.random.default_rng(1), (0.7, 1.5), 4000, "bg")
    assert st.ks_2samp(ours, ref).pvalue > 1e-3
    assert abs(np.mean(ours < 1) - 0.5) < 0.03 and ours.min() >= 0.7 and ours.max() <= 1.5
    uniform = draw_factor(np.random.default_rng(1), (0.7, 1.5), 4000, "uniform")
    assert abs(np.mean(uniform < 1) - 0.3 / 0.8) < 0.03


def test_bad_per_channel_arguments_are_refused():
    with pytest.raises(ValueError, match="p_per_channel"):
        da.Contrast(p_per_channel=1.5)
    with pytest.raises(ValueError, match="sampling"):
        da.BrightnessMultiplicative(sampling="gaussian")


def _spatial():
    return da.SpatialTransform((8, 9, 10), rotation=(-20, 20), scale=(0.9, 1.1), elastic_magnitude=(0, 2))


def _pipeline():
    return [
        _spatial(),
        da.BrightnessMultiplicative(factor=(0.7, 1.3), per_channel=True, sampling="bg"),
        da.Contrast(per_channel=True, p_per_channel=0.5),
        da.Gamma(),
        da.Gamma(per_channel=True, p=0.5),
        da.Mirror(),
        da.BrightnessAdditive(per_channel=True),
    ]


@pytest.mark.parametrize("channels", [1, 3])
def test_compose_equals_its_members_one_by_one(image, channels, monkeypatch):
    x = np.ascontiguousarray(image[:, :channels])
    seg = (x[:, :1] > 1).astype(np.uint8)
    fused = da.Compose(_pipeline(), seed=5)
    calls = []
    real = _engine.run_program
    monkeypatch.setattr(_engine, "run_program", lambda h, prog, b: calls.append(prog.n) or real(h, prog, b))
    out = fused(data=x.copy(), seg=seg.copy())
    monkeypatch.setattr(_engine, "run_program", real)
    # one channel: everything in the spatial pass. Three: after it, brightness + contrast as one
    # (N * C) program, gamma (per sample), gamma per channel, additive brightness per channel
    n = x.shape[0]
    assert calls == ([] if channels == 1 else [n * channels, n, n * channels, n * channels])
    rng = np.random.default_rng(5)
    ref = {"data": x.copy(), "seg": seg.copy()}
    for t in _pipeline():
        ref = t.apply(ref, rng)
    np.testing.assert_allclose(out["data"], ref["data"], atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(out["seg"], ref["seg"])
    plain = da.Compose(_pipeline(), seed=5, fuse=False)(data=x.copy(), seg=seg.copy())
    np.testing.assert_allclose(out["data"], plain["data"], atol=2e-5, rtol=1e-5)


# --- CUDA inputs (need a GPU; skipped here) -------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch", "cupy"])
def test_per_channel_on_cuda_equals_the_cpu_engine(framework, image):
    def to_gpu(a):
        if framework == "torch":
            return _torch().from_numpy(a.copy()).cuda()
        return pytest.importorskip("cupy").asarray(a)

    for make in (
        lambda: da.Gamma(per_channel=True, p_per_channel=0.7, seed=3),
        lambda: da.Compose(_pipeline(), seed=3),
    ):
        out = make()(data=to_gpu(image))["data"]
        assert type(out).__module__.split(".")[0] == framework
        host = out.cpu().numpy() if framework == "torch" else out.get()
        np.testing.assert_allclose(host, make()(data=image.copy())["data"], atol=2e-4, rtol=1e-4)
