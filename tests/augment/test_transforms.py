"""Transform classes: the batch-dict API, framework tensors, probabilities, composition, crops, backends."""

from __future__ import annotations

import numpy as np
import pytest

import delira.augment as da
from delira.augment import _extension
from delira.augment import functional as F


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return {
        "data": rng.standard_normal((6, 1, 20, 22, 24)).astype(np.float32),
        "seg": rng.integers(0, 3, (6, 1, 20, 22, 24)).astype(np.uint8),
        "case_id": [f"c{i}" for i in range(6)],
    }


def test_probability_zero_leaves_data_and_one_changes_every_sample(batch):
    for t in [
        da.GaussianNoise((0.1, 0.2), p=0.0),
        da.Gamma(p=0.0),
        da.Contrast(p=0.0),
        da.GaussianBlur(p=0.0),
    ]:
        np.testing.assert_array_equal(t(**batch)["data"], batch["data"])
    out = da.BrightnessMultiplicative((1.5, 2.0), p=1.0, seed=0)(**batch)["data"]
    ratio = out.reshape(6, -1)[:, 0] / batch["data"].reshape(6, -1)[:, 0]
    assert np.all((ratio >= 1.5 - 1e-6) & (ratio <= 2.0 + 1e-6))


def test_per_sample_probability_selects_about_p_of_the_samples():
    x = np.ones((400, 1, 4, 4, 4), np.float32)
    out = da.BrightnessMultiplicative((2.0, 2.0), p=0.3, seed=1)(data=x)["data"]
    changed = (out[:, 0, 0, 0, 0] == 2.0).mean()
    assert 0.22 < changed < 0.38


def test_gamma_draws_like_batchgenerators():
    g = da.Gamma((0.7, 1.5)).draw_gamma(np.random.default_rng(0), 20000)
    assert abs((g < 1).mean() - 0.5) < 0.02 and g.min() >= 0.7 and g.max() <= 1.5
    np.testing.assert_allclose(np.mean(g[g < 1]), 0.85, atol=0.01)


@pytest.mark.torch
def test_torch_tensors_in_and_out(batch):
    import torch

    t = da.Compose(
        [da.SpatialTransform((16, 16, 16), elastic_magnitude=(0, 2)), da.GaussianNoise(), da.Mirror()], seed=0
    )
    out = t(data=torch.from_numpy(batch["data"]), seg=torch.from_numpy(batch["seg"]))
    ref = da.Compose(
        [da.SpatialTransform((16, 16, 16), elastic_magnitude=(0, 2)), da.GaussianNoise(), da.Mirror()], seed=0
    )(data=batch["data"], seg=batch["seg"])
    assert isinstance(out["data"], torch.Tensor) and out["seg"].dtype == torch.uint8
    np.testing.assert_array_equal(out["data"].numpy(), ref["data"])
    np.testing.assert_array_equal(out["seg"].numpy(), ref["seg"])


@pytest.mark.tf
def test_tensorflow_tensors_in_and_out(batch):
    import tensorflow as tf

    t = da.Compose([da.SpatialTransform((16, 16, 16)), da.Gamma(), da.Mirror()], seed=0)
    out = t(data=tf.constant(batch["data"]), seg=tf.constant(batch["seg"]))
    ref = da.Compose([da.SpatialTransform((16, 16, 16)), da.Gamma(), da.Mirror()], seed=0)(
        data=batch["data"], seg=batch["seg"]
    )
    assert isinstance(out["data"], tf.Tensor)
    np.testing.assert_array_equal(out["data"].numpy(), ref["data"])


def test_random_apply_and_one_of_per_sample(batch):
    out = da.RandomApply(da.BrightnessMultiplicative((3.0, 3.0)), p=0.5, seed=2)(**batch)
    changed = ~np.isclose(out["data"], batch["data"]).all(axis=(1, 2, 3, 4))
    assert 0 < changed.sum() < 6
    np.testing.assert_allclose(out["data"][changed], batch["data"][changed] * 3.0, rtol=1e-6)
    assert out["case_id"] == batch["case_id"]
    out = da.OneOf([da.BrightnessMultiplicative((2.0, 2.0)), da.BrightnessAdditive(10.0, 0.0)], seed=3)(
        **batch
    )
    mult = np.isclose(out["data"], batch["data"] * 2.0).all(axis=(1, 2, 3, 4))
    add = np.isclose(out["data"], batch["data"] + 10.0).all(axis=(1, 2, 3, 4))
    assert np.all(mult ^ add) and mult.any() and add.any()
    with pytest.raises(ValueError, match="keep the shape"):
        da.OneOf([da.CenterCrop((8, 8, 8)), da.CenterCrop((10, 10, 10))], seed=0)(**batch)


def test_crops(batch):
    out = da.CenterCrop((10, 12, 14))(**batch)
    np.testing.assert_array_equal(out["data"], batch["data"][:, :, 5:15, 5:17, 5:19])
    np.testing.assert_array_equal(out["seg"], batch["seg"][:, :, 5:15, 5:17, 5:19])
    out = da.RandomCrop((10, 10, 10), seed=1)(**batch)
    for i in range(6):  # every patch is a sub-block of its input
        patch = out["data"][i, 0]
        found = np.argwhere(batch["data"][i, 0] == patch[0, 0, 0])[0]
        z, y, x = found
        np.testing.assert_array_equal(patch, batch["data"][i, 0, z : z + 10, y : y + 10, x : x + 10])
    padded = da.CenterCrop((24, 24, 24), pad_value=-9)(**batch)["data"]
    assert padded.shape == (6, 1, 24, 24, 24) and (padded[:, :, :2] == -9).all()
    with pytest.raises(ValueError, match="larger than the input"):
        da.RandomCrop((30, 10, 10), pad_if_needed=False)(**batch)


def test_foreground_crop_centres_on_foreground():
    seg = np.zeros((50, 1, 40, 40, 40), np.uint8)
    seg[:, :, 30:33, 5:8, 20:23] = 2  # a small object off-centre
    data = seg.astype(np.float32)
    out = da.ForegroundCrop((8, 8, 8), p_foreground=1.0, seed=0)(data=data, seg=seg)
    assert (out["seg"] == 2).any(axis=(1, 2, 3, 4)).all()
    rand = da.ForegroundCrop((8, 8, 8), p_foreground=0.0, seed=0)(data=data, seg=seg)
    assert (rand["seg"] == 2).any(axis=(1, 2, 3, 4)).mean() < 0.5
    locs = [{2: np.argwhere(seg[0, 0] == 2)}] * 50
    out2 = da.ForegroundCrop((8, 8, 8), p_foreground=1.0, seed=0)(data=data, seg=seg, class_locations=locs)
    assert (out2["seg"] == 2).any(axis=(1, 2, 3, 4)).all()


def test_fallback_equals_compiled_for_fixed_parameters(batch):
    patch = (16, 18, 20)
    rng = np.random.default_rng(4)
    a, lin = zip(
        *[
            F.transform_matrix(
                batch["data"].shape[2:],
                patch,
                rotation=rng.uniform(-0.5, 0.5, 3),
                scale=rng.uniform(0.8, 1.2),
                mirror=rng.random(3) < 0.5,
            )
            for _ in range(6)
        ]
    )
    field = F.elastic.random_field(rng, patch, np.full(6, 2.0), np.full(6, 7.0))
    prog = F.intensity.program_ops("multiply", 6, factor=1.3)
    prog.extend(F.intensity.program_ops("contrast", 6, factor=0.8))
    prog.extend(F.intensity.program_ops("gamma", 6, gamma=np.linspace(0.7, 1.5, 6)))
    kw = dict(affine=np.stack(a), linear=np.stack(lin), patch_size=patch, elastic=field, program=prog)
    cpu = F.spatial_transform(batch["data"], batch["seg"], backend="cpu", **kw)
    bg = F.spatial_transform(batch["data"], batch["seg"], backend="batchgenerators", **kw)
    np.testing.assert_allclose(cpu[0], bg[0], atol=1e-4)
    assert (cpu[1] != bg[1]).mean() < 1e-3  # nearest labels: only float32 rounding ties may differ


def test_fallback_gives_the_same_distributions(batch):
    pipe = lambda backend: da.Compose(  # noqa: E731
        [
            da.SpatialTransform((16, 16, 16), elastic_alpha=(0, 900), elastic_sigma=(9, 13)),
            da.GaussianNoise((0.1, 0.1)),
            da.Gamma(),
        ],
        seed=5,
        backend=backend,
    )
    cpu = pipe("cpu")(**batch)
    bg = pipe("batchgenerators")(**batch)
    residual_cpu = cpu["data"] - pipe("cpu")(**{**batch})["data"]
    assert np.abs(residual_cpu).max() == 0.0  # deterministic
    # same spatial and gamma parameters (same seed), independent noise: the difference is noise-sized
    diff = cpu["data"] - bg["data"]
    assert 0.05 < diff.std() < 0.25
    np.testing.assert_array_equal(cpu["seg"], bg["seg"])


def test_auto_backend_falls_back_with_one_warning(monkeypatch, batch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "IMPORT_ERROR", "simulated")
    monkeypatch.setattr(_extension, "_warned", False)
    t = da.Compose([da.SpatialTransform((12, 12, 12)), da.Gamma()], seed=0)
    with pytest.warns(RuntimeWarning, match="fallback"):
        out = t(**batch)
    assert out["data"].shape == (6, 1, 12, 12, 12)
    with pytest.raises(RuntimeError, match="backend='cpu' needs the compiled extension"):
        da.Gamma(backend="cpu")(**batch)


def test_preview_writes_a_png(tmp_path, batch):
    pytest.importorskip("matplotlib")
    path = da.preview(batch, da.SpatialTransform((16, 16, 16)), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: da.SpatialTransform((16, 16)), None, None),
        (lambda: da.SpatialTransform((0, 16, 16)), ValueError, "positive"),
        (lambda: da.SpatialTransform(rotation=(30, -30)), None, None),
        (lambda: da.SpatialTransform(scale=(0, 1)), ValueError, "scale"),
        (lambda: da.SpatialTransform(order_data=2), ValueError, "order_data=2"),
        (lambda: da.SpatialTransform(mode_data="wrap"), ValueError, "mode_data='wrap'"),
        (lambda: da.SpatialTransform(elastic_magnitude=(0, 1), elastic_alpha=(0, 1)), ValueError, "not both"),
        (lambda: da.GaussianNoise(p=1.5), ValueError, "probability"),
        (lambda: da.Gamma((float("nan"), 1)), ValueError, "finite"),
        (lambda: da.Compose([1]), TypeError, "not a transform"),
        (lambda: da.GaussianNoise(backend="gpu"), ValueError, "backend='gpu'"),
    ],
)
def test_bad_construction(make, error, match):
    if error is None:
        make()
        return
    with pytest.raises(error, match=match):
        make()


def test_bad_batches(batch):
    t = da.SpatialTransform((16, 16, 16))
    with pytest.raises(
        ValueError, match=r"seg has shape .* but data has shape .*same batch size and spatial shape"
    ):
        t(data=batch["data"], seg=batch["seg"][:, :, :10])
    with pytest.raises(ValueError, match=r"patch_size .* has 2 axes"):
        da.SpatialTransform((16, 16))(**batch)
    with pytest.raises(TypeError, match="segmentations must be uint8"):
        t(data=batch["data"], seg=batch["seg"].astype(np.float32))
    with pytest.raises(TypeError, match="images must be float32 or float64"):
        t(data=batch["data"].astype(np.int32))
    with pytest.raises(ValueError, match="has 3 axes but the data has 2 spatial axes"):
        t(data=batch["data"][:, 0])
    with pytest.raises(ValueError, match="empty"):
        t(data=batch["data"][:0])
    with pytest.raises(ValueError, match="rotation"):
        da.SpatialTransform((16, 16, 16), rotation=[(0, 1), (0, 1)])(**batch)


@pytest.mark.tf
def test_tensorflow_int64_labels_through_mirror_and_concat():
    """TensorFlow kernels need aligned buffers: outputs must be safe to feed to tf ops (tf.concat here)."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((2, 1, 8, 8, 8)).astype(np.float32))
    s = tf.constant(np.arange(2 * 512, dtype=np.int64).reshape(2, 1, 8, 8, 8))
    out = da.Mirror(axes=(2,), p_per_axis=1.0)(data=x, seg=s)
    assert out["seg"].dtype == tf.int64
    np.testing.assert_array_equal(out["seg"].numpy(), np.flip(s.numpy(), 4))
    np.testing.assert_array_equal(tf.concat([out["seg"], out["seg"]], 0).numpy()[:2], out["seg"].numpy())


@pytest.mark.torch
def test_workers_forked_after_use_do_not_hang(tmp_path):
    """torch's DataLoader forks its workers; the engine's threads must work in a forked child."""
    import subprocess
    import sys

    code = """
import numpy as np, torch
from torch.utils.data import DataLoader, Dataset
import delira.augment as da
aug = da.Compose([da.SpatialTransform((12, 12, 12)), da.Gamma()], seed=0)
da.set_num_threads(2)
aug(data=np.random.rand(2, 1, 16, 16, 16).astype(np.float32))  # the parent starts its threads first
class D(Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): return torch.zeros(1, 16, 16, 16) + i
loader = DataLoader(D(), batch_size=2, num_workers=2, multiprocessing_context="fork",
                    collate_fn=lambda s: aug(data=torch.stack(s))["data"])
print(sum(1 for _ in loader))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2"
