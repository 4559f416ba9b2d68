"""MR artefacts (bias field, motion, ghosting, spike) against TorchIO's deterministic transforms.

Every functional op is compared with TorchIO 1.2's ``BiasField``, ``Ghosting``, ``Spike`` and ``Motion``
given the same explicit parameters, on a small volume wrapped as a ``tio.ScalarImage`` with an identity
affine (TorchIO's image axes are then the array axes). Convention differences, handled in the tests:

- TorchIO's 2D images are ``(C, X, Y, 1)``: its bias field then has only the terms without a power of
  the third axis (delira's 2D terms), its spike positions have a third coordinate that lands on the
  one plane, and its FFT over the size-1 axis is the identity.
- Spike positions are fractions of the k-space extent (0.5 is the centre) in both.
- Motion: TorchIO builds SimpleITK Euler transforms in LPS about ``shape / 2``; the tests convert each
  into the voxel-index map delira's :func:`motion` takes, with SimpleITK's own index/point maps.
  Interpolation is linear in both (TorchIO's default); outside the image both use the channel's
  minimum. The volume has a constant margin, so the resamplers' different border rules do not matter.

Tolerances: TorchIO computes in float32/complex64 like delira for float32 input; the FFT ops and
motion agree to a few float32 ulps of the image range (atol 1e-5), the bias field to 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

import delira.augment as da
from delira.augment.functional import mr as F

tio = pytest.importorskip("torchio")
torch = pytest.importorskip("torch")


def _tio(transform, image: np.ndarray) -> np.ndarray:
    """TorchIO's ``transform`` on ``image`` ``(C, *spatial)`` (a 2D image gets TorchIO's trailing axis)."""
    arr = image if image.ndim == 4 else image[..., None]
    subject = tio.Subject(im=tio.ScalarImage(tensor=torch.from_numpy(arr.copy()), affine=np.eye(4)))
    out = transform(subject)["im"].data.numpy()
    return out if image.ndim == 4 else out[..., 0]


def _volume(shape, channels=2, seed=0) -> np.ndarray:
    """``(1, C, *shape)`` float32: smooth structure inside a margin of a constant background 0.5."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    centre = ((np.asarray(shape) - 1) / 2).reshape((-1,) + (1,) * len(shape))
    width = (np.asarray(shape) / 8).reshape(centre.shape)
    blob = np.exp(-(((grid - centre) / width) ** 2).sum(0))
    out = [
        0.5 + blob * (1 + 0.3 * np.sin(grid[0] * (c + 1)) + 0.1 * rng.random(shape)) for c in range(channels)
    ]
    return np.stack(out)[None].astype(np.float32)


# --- bias field ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("shape", [(7, 8, 9), (10, 11)])
def test_bias_field_matches_torchio(order, shape):
    rng = np.random.default_rng(order)
    x = rng.random((2, 2, *shape)).astype(np.float32) + 0.5
    exps = F.bias_field_exponents(order, len(shape))
    coef = rng.uniform(-0.5, 0.5, (2, len(exps)))
    out = F.bias_field(x, coef, order)
    assert out.dtype == np.float32 and out.shape == x.shape
    exps3 = F.bias_field_exponents(order, 3)
    for i in range(2):
        # TorchIO's coefficients are its 3D terms; delira's 2D terms are those without a third power.
        c3 = coef[i] if len(shape) == 3 else [coef[i][exps.index(e[:2])] if e[2] == 0 else 0.0 for e in exps3]
        ref = _tio(tio.BiasField(coefficients=list(c3), order=order), x[i])
        np.testing.assert_allclose(out[i], ref, rtol=1e-6)


def test_bias_field_terms_and_range():
    assert len(F.bias_field_exponents(3, 3)) == 20 and len(F.bias_field_exponents(3, 2)) == 10
    np.testing.assert_array_equal(F.bias_field_coordinates(5), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(F.bias_field_coordinates(4), [-1, -1 / 3, 1 / 3, 1])
    # Hand case, order 1 in 2D: terms (0,0), (0,1), (1,0): exp(a + b * y + c * x).
    x = np.ones((1, 1, 3, 5))
    out = F.bias_field(x, [0.1, 0.2, -0.3], 1)
    yy, xx = np.meshgrid([-1, 0, 1], [-1, -0.5, 0, 0.5, 1], indexing="ij")
    np.testing.assert_allclose(out[0, 0], np.exp(0.1 + 0.2 * xx - 0.3 * yy))


# --- ghosting ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("restore", [None, 0.0, 0.3])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ghosting_matches_torchio_3d(axis, restore):
    x = _volume((12, 13, 14))[0]
    for num_ghosts, intensity in [(3, 0.7), (1, 0.4), (5, 1.3), (0, 0.7), (4, 0.0)]:
        ref = _tio(tio.Ghosting(num_ghosts=num_ghosts, axis=axis, intensity=intensity, restore=restore), x)
        out = F.ghosting(x[None], num_ghosts, axis, intensity, restore)[0]
        np.testing.assert_allclose(out, ref, atol=1e-5)
        if num_ghosts and intensity:
            assert np.abs(out - x).max() > 1e-2  # the artefact is visible
        else:
            np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("axis", [0, 1])
def test_ghosting_matches_torchio_2d_and_per_sample(axis):
    x = np.concatenate([_volume((16, 15), seed=s) for s in range(3)])
    params = ([2, 4, 6], [axis, 1 - axis, axis], [0.5, 0.8, 1.0], [None, 0.25, 0.5])
    out = F.ghosting(x, *params)
    for i in range(3):
        ref = _tio(tio.Ghosting(*(p[i] for p in params)), x[i])
        np.testing.assert_allclose(out[i], ref, atol=1e-5)


# --- spike ---------------------------------------------------------------------------------------------
def test_spike_matches_torchio_3d():
    rng = np.random.default_rng(3)
    x = _volume((10, 11, 12))
    for positions, intensity in [
        (rng.random((1, 3)), 1.5),
        (rng.random((3, 3)), -2.0),
        (np.array([[0.5] * 3]), 1),
    ]:
        ref = _tio(tio.Spike(spikes_positions=positions, intensity=intensity), x[0])
        out = F.spike(x, [positions], intensity)
        np.testing.assert_allclose(out[0], ref, atol=1e-5)
        assert np.abs(out - x).max() > 1e-2


def test_spike_sequence_of_maxima_matches_torchio():
    """Spikes that lower the maximum (negative, at the centre) or hit a frequency and its mirror: every
    spike measures the spectrum's maximum after the ones before it."""
    x = _volume((10, 11, 12), channels=1)
    shape = np.array([10, 11, 12])
    k = np.array([2, 7, 3])  # a shifted index and its mirror 2 (shape // 2) - k
    pair = (np.stack([k, 2 * (shape // 2) - k]) + 0.5) / shape
    centre = np.full((2, 3), 0.5)
    for positions, intensity in [
        (centre, -0.5),
        (centre, -1.0),
        (pair, 0.7),
        (np.vstack([pair, centre]), -0.8),
    ]:
        ref = _tio(tio.Spike(spikes_positions=positions, intensity=intensity), x[0])
        np.testing.assert_allclose(F.spike(x, [positions], intensity)[0], ref, atol=1e-5)


def test_spike_matches_torchio_2d_and_no_spikes():
    rng = np.random.default_rng(4)
    x = np.concatenate([_volume((14, 9), seed=s) for s in range(2)])
    pos = [rng.random((2, 3)), rng.random((1, 3))]  # TorchIO's third coordinate lands on its one plane
    out = F.spike(x, [p[:, :2] for p in pos], [2.0, 0.5])
    for i in range(2):
        np.testing.assert_allclose(out[i], _tio(tio.Spike(pos[i], [2.0, 0.5][i]), x[i]), atol=1e-5)
    np.testing.assert_array_equal(F.spike(x, [np.zeros((0, 2)), pos[0][:, :2]], [1.0, 0.0]), x)


# --- motion --------------------------------------------------------------------------------------------
def _torchio_motion_matrices(transform, image: np.ndarray) -> np.ndarray:
    """TorchIO's rigid transforms of ``transform`` (tio.Motion) as voxel-index maps ``(T, 3, 4)``."""
    from torchio.data.io import nib_to_sitk

    sitk_image = nib_to_sitk(torch.from_numpy(image[:1]), np.eye(4), force_3d=True)
    moves = transform.get_rigid_transforms(transform.degrees, transform.translation, sitk_image)[1:]
    mats = []
    for move in moves:
        points = [np.zeros(3), *np.eye(3)]
        mapped = [
            np.array(
                sitk_image.TransformPhysicalPointToContinuousIndex(
                    move.TransformPoint(sitk_image.TransformContinuousIndexToPhysicalPoint(p.tolist()))
                )
            )
            for p in points
        ]
        linear = np.stack([m - mapped[0] for m in mapped[1:]], axis=1)
        mats.append(np.concatenate([linear, mapped[0][:, None]], axis=1))
    return np.array(mats)


@pytest.mark.parametrize(
    "times",
    [np.array([0.3, 0.62]), np.array([0.1, 0.4]), np.array([0.55, 0.8])],  # centre from moves 1, 2, 0
)
def test_motion_matches_torchio_3d(times):
    x = _volume((16, 17, 18))[0]
    degrees = np.array([[3.0, -2.0, 4.0], [-5.0, 2.0, 1.0]])
    translation = np.array([[1.0, -0.5, 0.7], [-1.0, 0.3, 0.2]])
    transform = tio.Motion(
        degrees=degrees, translation=translation, times=times, image_interpolation="linear"
    )
    ref = _tio(transform, x)
    out = F.motion(x[None], _torchio_motion_matrices(transform, x), times, order=1)[0]
    assert np.abs(out - x).max() > 0.05  # the artefact is visible
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_motion_2d_against_scipy_and_numpy_fft():
    """2D (TorchIO has no 2D split): one move at t = 0.7, the columns from floor(0.7 W) on from the moved copy."""
    ndi = pytest.importorskip("scipy.ndimage")
    x = _volume((14, 15))
    mats = F.motion_matrices([12.0], [[1.5, -2.0]], (14, 15))
    out = F.motion(x, mats, [0.7])
    lo = x.min(axis=(2, 3), keepdims=True)
    moved = np.stack(
        [ndi.affine_transform(c - m, mats[0], order=1, cval=0.0) + m for c, m in zip(x[0], lo[0])]
    )

    def kspace(a):
        return np.fft.fftshift(np.fft.fftn(a, axes=(1, 2)), axes=(1, 2))

    spec = kspace(x[0].astype(np.float64))
    cut = int(np.floor(15 * 0.7))
    spec[..., cut:] = kspace(moved)[..., cut:]
    ref = np.fft.ifftn(np.fft.ifftshift(spec, axes=(1, 2)), axes=(1, 2)).real
    np.testing.assert_allclose(out[0], ref, atol=1e-4)


def test_motion_matrices_by_hand():
    rng = np.random.default_rng(5)
    img = rng.random((1, 1, 9, 9)).astype(np.float32)
    turn = F.motion_matrices([90.0], [[0.0, 0.0]], (9, 9))[0]
    np.testing.assert_allclose(
        da.functional.affine_resample(img, turn)[0, 0], np.rot90(img[0, 0], -1), atol=1e-5
    )
    shift = F.motion_matrices([0.0], [[2.0, -1.0]], (9, 9))[0]
    np.testing.assert_allclose(shift, [[1, 0, 2], [0, 1, -1]], atol=1e-12)  # out[o] = x[o + t]
    still = np.tile(np.concatenate([np.eye(3), np.zeros((3, 1))], 1), (2, 1, 1))
    vol = _volume((8, 9, 10))
    np.testing.assert_allclose(F.motion(vol, still, [0.3, 0.6]), vol, atol=1e-5)  # no movement


# --- random classes ------------------------------------------------------------------------------------
CLASSES = [
    lambda **k: da.BiasField(**k),
    lambda **k: da.Motion(degrees=8, translation=2, **k),
    lambda **k: da.Ghosting(restore=(0.1, 0.3), **k),
    lambda **k: da.Spike(num_spikes=(1, 3), intensity=(0.5, 1.0), **k),
]
IDS = ["bias_field", "motion", "ghosting", "spike"]


@pytest.mark.parametrize("make", CLASSES, ids=IDS)
@pytest.mark.parametrize("shape", [(10, 11, 12), (16, 15)])
def test_random_classes_seed_p_and_per_sample(make, shape):
    sample = _volume(shape)
    x = np.repeat(sample, 4, axis=0)
    seg = np.zeros((4, 1, *shape), np.int16)
    a = make(seed=3)(data=x.copy(), seg=seg)
    b = make(seed=3)(data=x.copy(), seg=seg)
    np.testing.assert_array_equal(a["data"], b["data"])  # same seed, same output
    assert a["data"].dtype == np.float32 and a["seg"] is seg
    for i in range(4):
        assert np.abs(a["data"][i] - x[i]).max() > 1e-3
    for i in range(1, 4):  # identical samples, different draws
        assert np.abs(a["data"][i] - a["data"][0]).max() > 1e-4
    np.testing.assert_array_equal(make(p=0.0, seed=3)(data=x.copy())["data"], x)
    c = make(seed=4)(data=x.copy())
    assert np.abs(c["data"] - a["data"]).max() > 1e-4  # another seed, other draws
    # p = 0.5: the samples left out are unchanged; the others got the artefact.
    part = make(p=0.5, seed=0)(data=np.repeat(sample, 8, axis=0))["data"]
    same = [np.array_equal(part[i], sample[0]) for i in range(8)]
    assert 0 < sum(same) < 8
    # torch CPU tensors in, torch out, the same values as numpy with the same seed.
    t = make(seed=3)(data=torch.from_numpy(x.copy()))["data"]
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), a["data"])


def test_random_draws_follow_torchio_ranges():
    rng = np.random.default_rng(0)
    g = da.Ghosting(num_ghosts=(2, 3), axes=(0, 1, 2), intensity=0.5, restore=None).draw(rng, 400, (8, 8))
    assert set(g["num_ghosts"]) == {2, 3} and set(g["axis"]) == {0, 1}  # axis 2 dropped in 2D
    assert g["intensity"].min() >= 0 and g["intensity"].max() <= 0.5 and np.isnan(g["restore"]).all()
    s = da.Spike(num_spikes=2, intensity=2).draw(rng, 400, (8, 8, 8))
    assert {len(p) for p in s["positions"]} == {0, 1, 2} and s["intensity"].min() < 0 < s["intensity"].max()
    m = da.Motion(num_transforms=3).draw(rng, 50, (8, 8, 8))
    step = 0.25
    assert np.all(np.abs(m["times"] - step * np.arange(1, 4)) <= 0.3 * step + 1e-12)
    assert m["matrices"].shape == (50, 3, 3, 4)


# --- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: da.BiasField(coefficients=-1), ValueError, "must be >= 0"),
        (lambda: da.BiasField(order=-1), ValueError, "order"),
        (lambda: da.BiasField(order=1.5), ValueError, "order"),
        (lambda: da.Motion(num_transforms=0), ValueError, "num_transforms"),
        (lambda: da.Motion(degrees=(5, 1)), ValueError, "larger than max"),
        (lambda: da.Motion(order=2), ValueError, "order"),
        (lambda: da.Ghosting(num_ghosts=(1.5, 2)), TypeError, "ints"),
        (lambda: da.Ghosting(axes=(3,)), ValueError, "axes"),
        (lambda: da.Ghosting(intensity=(-1, 1)), ValueError, "intensity"),
        (lambda: da.Ghosting(restore=(0.5, 2)), ValueError, "restore"),
        (lambda: da.Spike(num_spikes=-1), ValueError, "num_spikes"),
        (lambda: da.Spike(intensity="big"), TypeError, "intensity"),
        (lambda: da.Spike(p=2), ValueError, "probability"),
    ],
)
def test_bad_parameters_raise_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_functional_input_raises():
    x = _volume((8, 9))
    with pytest.raises(ValueError, match="terms"):
        F.bias_field(x, np.zeros(4), 3)
    with pytest.raises(ValueError, match="spatial axes"):
        F.ghosting(x, 2, 2, 0.5)
    with pytest.raises(ValueError, match="restore"):
        F.ghosting(x, 2, 0, 0.5, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.spike(x, [np.array([[0.5, 1.0]])], 1.0)
    with pytest.raises(ValueError, match="one"):
        F.spike(x, [], 1.0)
    with pytest.raises(ValueError, match="increase"):
        F.motion(x, np.zeros((2, 2, 3)), [0.6, 0.3])
    with pytest.raises(ValueError, match="matrices"):
        F.motion(x, np.zeros((2, 3, 4)), [0.3, 0.6])
    with pytest.raises(TypeError, match="float32"):
        F.spike(x.astype(np.int32), [np.zeros((1, 2))], 1.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.ghosting(x[0], 2, 0, 0.5)
    with pytest.raises(ValueError, match="axes 0 or 1"):
        da.Ghosting(axes=2)(data=x)


# --- CUDA inputs (torch, cupy): on the device, the same values as the host ----------------------------
def _ops(nd):
    rng = np.random.default_rng(6)
    return {
        "bias_field": lambda a: F.bias_field(a, rng.uniform(-0.5, 0.5, (2, 20 if nd == 3 else 10)), 3),
        "ghosting": lambda a: F.ghosting(a, [3, 5], [0, 1], [0.6, 0.9], [None, 0.3]),
        "spike": lambda a: F.spike(a, [np.array([[0.2] * nd, [0.7] * nd]), np.zeros((0, nd))], [1.5, 2.0]),
        "motion": lambda a: F.motion(
            a,
            F.motion_matrices(np.full((2, 1 if nd == 2 else 3), 4.0), np.ones((2, nd)), a.shape[2:]),
            [0.3, 0.6],
        ),
    }


@pytest.mark.cuda
@pytest.mark.parametrize("op", IDS)
@pytest.mark.parametrize("shape", [(10, 11, 12), (16, 15)])
def test_cuda_torch_and_cupy_match_host(op, shape):
    host = np.concatenate([_volume(shape, seed=s) for s in range(2)])
    ref = _ops(len(shape))[op](host)
    t = torch.from_numpy(host).cuda()
    out = _ops(len(shape))[op](t)
    assert out.is_cuda and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=2e-4)
    cupy = pytest.importorskip("cupy")
    out = _ops(len(shape))[op](cupy.asarray(host))
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), ref, atol=2e-4)


@pytest.mark.cuda
def test_cuda_random_class_keeps_the_device():
    x = torch.from_numpy(np.repeat(_volume((10, 11, 12)), 3, axis=0)).cuda()
    for make in CLASSES:
        out = make(seed=1, p=0.5)(data=x)["data"]
        assert out.is_cuda
        np.testing.assert_allclose(
            out.cpu().numpy(), make(seed=1, p=0.5)(data=x.cpu())["data"].numpy(), atol=2e-4
        )


@pytest.mark.parametrize("op", IDS)
@pytest.mark.parametrize("shape", [(10, 11, 12), (16, 15)])
def test_torch_code_path_on_cpu_tensors(op, shape, monkeypatch):
    """The code path of torch CUDA tensors (torch.fft, torch.einsum, tensor indexing), run on CPU tensors."""
    host = np.concatenate([_volume(shape, seed=s) for s in range(2)])
    ref = _ops(len(shape))[op](host)
    monkeypatch.setattr(F, "_as_array", lambda x, name="x": (x, "torch", lambda out: out))
    out = _ops(len(shape))[op](torch.from_numpy(host.copy()))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-5)
