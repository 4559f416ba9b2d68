"""delira.training.losses against numpy references written from the definitions, for both backends;
nnU-Net's deep-supervision weighting by hand; the config keys and the task's loss construction."""

from __future__ import annotations

import numpy as np
import pytest

from delira.training.config import ConfigError, load_config
from delira.training.losses import (
    DeepSupervisionLoss,
    check_loss_args,
    deep_supervision_weights,
    make_loss,
    segmentation_losses,
)


# --- numpy references -------------------------------------------------------------------------------
def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def onehot(y, k):
    return np.moveaxis(np.eye(k)[y], -1, 1)


def ref_ce(x, y, w=None):
    p = softmax(x.astype(np.float64))
    nll = -np.log(np.take_along_axis(p, y[:, None], axis=1)[:, 0])
    wy = np.ones_like(nll) if w is None else np.asarray(w, np.float64)[y]
    return float((wy * nll).sum() / wy.sum())


def ref_focal(x, y, gamma, alpha=None):
    k = x.shape[1]
    p = softmax(x.astype(np.float64))
    py = np.take_along_axis(p, y[:, None], axis=1)[:, 0]
    if alpha is None:
        a = np.ones(k)
    elif np.isscalar(alpha):
        a = np.array([1 - alpha] + [alpha] * (k - 1))
    else:
        a = np.asarray(alpha, np.float64)
    return float(np.mean(-a[y] * (1 - py) ** gamma * np.log(py)))


def ref_tversky(x, y, alpha, beta, smooth):
    k = x.shape[1]
    p, t = softmax(x.astype(np.float64))[:, 1:], onehot(y, k)[:, 1:]
    axes = (0, *range(2, p.ndim))
    tp = (p * t).sum(axes)
    fp = (p * (1 - t)).sum(axes)
    fn = ((1 - p) * t).sum(axes)
    return float(1 - np.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth)))


def ref_dice(x, y, smooth=1.0):
    k = x.shape[1]
    p, t = softmax(x.astype(np.float64))[:, 1:], onehot(y, k)[:, 1:]
    axes = (0, *range(2, p.ndim))
    return float(1 - np.mean((2 * (p * t).sum(axes) + smooth) / (p.sum(axes) + t.sum(axes) + smooth)))


def call(name, backend, x, y, **args):
    """The loss of ``backend`` on numpy inputs, as a float (each framework's argument order)."""
    fn = make_loss(name, backend, **args)
    if backend == "torch":
        import torch

        return float(fn(torch.from_numpy(x), torch.from_numpy(y)))
    import tensorflow as tf

    return float(fn(tf.constant(y), tf.constant(x)))


BACKENDS = [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]


def _case(shape):
    rng = np.random.default_rng(sum(shape))
    x = (2.0 * rng.normal(size=shape)).astype(np.float32)
    y = rng.integers(0, shape[1], size=(shape[0], *shape[2:])).astype(np.int64)
    return x, y


@pytest.fixture(params=[(2, 3, 4, 5), (1, 4, 3, 2, 3), (6, 3)], ids=["2d", "3d", "classification"])
def case(request):
    """Logits ``(N, K, *spatial)`` and labels ``(N, *spatial)`` (``(N, K)`` and ``(N,)``)."""
    return _case(request.param)


@pytest.fixture(params=[(2, 3, 4, 5), (1, 4, 3, 2, 3)], ids=["2d", "3d"])
def seg_case(request):
    return _case(request.param)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "torch":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("tensorflow")
    return request.param


def test_cross_entropy_with_class_weights(backend, case):
    x, y = case
    k = x.shape[1]
    assert call("ce", backend, x, y) == pytest.approx(ref_ce(x, y), rel=1e-5)
    weights = [0.2, 1.0, 3.0, 0.5][:k]
    assert call("ce", backend, x, y, class_weights=weights) == pytest.approx(ref_ce(x, y, weights), rel=1e-5)


def test_focal(backend, case):
    x, y = case
    k = x.shape[1]
    assert call("focal", backend, x, y, gamma=0.0) == pytest.approx(ref_ce(x, y), rel=1e-5)  # gamma 0: CE
    assert call("focal", backend, x, y) == pytest.approx(ref_focal(x, y, 2.0), rel=1e-5)
    assert call("focal", backend, x, y, gamma=1.5, alpha=0.25) == pytest.approx(
        ref_focal(x, y, 1.5, 0.25), rel=1e-5
    )
    alpha = [0.1, 0.6, 0.3, 0.9][:k]
    assert call("focal", backend, x, y, gamma=3.0, alpha=alpha) == pytest.approx(
        ref_focal(x, y, 3.0, alpha), rel=1e-5
    )


def test_tversky_and_dice(backend, seg_case):
    x, y = seg_case
    assert call("tversky", backend, x, y) == pytest.approx(ref_tversky(x, y, 0.3, 0.7, 1.0), rel=1e-5)
    assert call("tversky", backend, x, y, alpha=0.8, beta=0.1, smooth=0.0) == pytest.approx(
        ref_tversky(x, y, 0.8, 0.1, 0.0), rel=1e-5
    )
    assert call("dice", backend, x, y) == pytest.approx(ref_dice(x, y), rel=1e-5)
    # alpha = beta = 0.5 with smooth s is the soft Dice with smooth 2 s
    assert call("tversky", backend, x, y, alpha=0.5, beta=0.5, smooth=0.5) == pytest.approx(
        ref_dice(x, y, 1.0), rel=1e-5
    )


def test_labels_with_a_channel_axis(backend):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=(2, 1, 4, 4)).astype(np.int64)
    for name in ("ce", "focal", "tversky", "dice"):
        assert call(name, backend, x, y) == pytest.approx(call(name, backend, x, y[:, 0]), rel=1e-6)


@pytest.mark.torch
def test_gradients_are_finite_for_confident_predictions():
    torch = pytest.importorskip("torch")
    y = torch.tensor([[0, 1, 1]])
    for loss in (make_loss("focal", "torch", gamma=0.5), make_loss("tversky", "torch")):
        x = torch.tensor([[[30.0, -30.0, 0.0], [-30.0, 30.0, 0.0]]], requires_grad=True)  # (1, 2, 3)
        loss(x, y).backward()
        assert torch.isfinite(x.grad).all()


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="gamma"):
        make_loss("focal", "torch", gamma=-1)
    with pytest.raises(ValueError, match="alpha"):
        make_loss("focal", "torch", alpha=1.5)
    with pytest.raises(ValueError, match="unknown argument"):
        make_loss("tversky", "torch", gama=1)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("jaccard", "torch")
    with pytest.raises(ValueError, match="backend"):
        make_loss("ce", "jax")
    assert check_loss_args("ce", {"class_weights": [1, 2]}, num_classes=3)  # length checked
    assert not check_loss_args("ce", {"class_weights": [1, 2, 3]}, num_classes=3)
    with pytest.raises(ValueError, match="twice"):
        segmentation_losses("ce+ce")
    with pytest.raises(ValueError, match=r"not in training\.loss"):
        segmentation_losses("ce+dice", loss_args={"focal": {"gamma": 1}})


@pytest.mark.torch
def test_class_weights_must_match_the_logits():
    torch = pytest.importorskip("torch")
    loss = make_loss("ce", "torch", class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="3 classes"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))


# --- deep supervision -----------------------------------------------------------------------------
def test_deep_supervision_weights_as_nnunet():
    # nnU-Net: 1 / 2**k, the lowest resolution's set to 0, normalised
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(2) == pytest.approx([1.0, 0.0])
    assert deep_supervision_weights(1) == [1.0]
    with pytest.raises(ValueError, match="count"):
        deep_supervision_weights(0)


def _ds_case(rng):
    y = rng.integers(0, 3, size=(2, 8, 8)).astype(np.int64)
    outputs = [rng.normal(size=(2, 3, 8 // s, 8 // s)).astype(np.float32) for s in (1, 2, 4)]
    return outputs, y


def test_deep_supervision_loss_subsamples_and_weights(backend):
    rng = np.random.default_rng(2)
    outputs, y = _ds_case(rng)
    weights = deep_supervision_weights(3)
    expected = sum(w * ref_ce(o, y[:, :: 2**k, :: 2**k]) for k, (w, o) in enumerate(zip(weights, outputs)))
    for strides in (None, [(1, 1), (2, 2), (4, 4)]):
        loss = DeepSupervisionLoss(make_loss("ce", backend), backend, strides=strides)
        if backend == "torch":
            import torch

            value = loss([torch.from_numpy(o) for o in outputs], torch.from_numpy(y))
            single = loss(torch.from_numpy(outputs[0]), torch.from_numpy(y))
        else:
            import tensorflow as tf

            value = loss(tf.constant(y), [tf.constant(o) for o in outputs])
            single = loss(tf.constant(y), tf.constant(outputs[0]))
        assert float(value) == pytest.approx(expected, rel=1e-5)
        assert float(single) == pytest.approx(ref_ce(outputs[0], y), rel=1e-5)  # one output: the loss


def _ds_unet(backend):
    if backend == "torch":
        import torch

        from delira.models.torch import UNet

        torch.manual_seed(0)
        return UNet(spatial_dims=2, num_classes=3, features=(4, 8, 16), deep_supervision=True)
    import keras

    from delira.models.tf import UNet

    keras.utils.set_random_seed(0)
    net = UNet(spatial_dims=2, num_classes=3, features=(4, 8, 16), deep_supervision=True)
    net(np.zeros((1, 1, 8, 8), np.float32))
    return net


def test_trainers_give_deep_supervision_losses_every_output(backend):
    """The trainer's loss of a deep-supervision UNet with the task's losses is nnU-Net's weighted sum
    over the outputs (the lowest resolution left out), computed here from the network's outputs."""
    from delira.data import DataLoader

    rng = np.random.default_rng(3)
    cases = [
        {
            "data": rng.normal(size=(1, 8, 8)).astype(np.float32),
            "seg": rng.integers(0, 3, size=(1, 8, 8)).astype(np.int16),
        }
        for _ in range(2)
    ]
    loader = DataLoader(cases, batch_size=2)
    net = _ds_unet(backend)
    config = load_config(
        {
            "backend": backend,
            "model": {
                "name": "unet",
                "args": {
                    "spatial_dims": 2,
                    "num_classes": 3,
                    "features": [4, 8, 16],
                    "deep_supervision": True,
                },
            },
            "data": {"phantom": {"shape": [8, 8]}},
            "training": {"loss": "ce+tversky"},
        }
    )
    from delira.training.tasks import task_for

    losses = task_for(config).losses(backend)
    assert all(isinstance(f, DeepSupervisionLoss) for f in losses.values())
    if backend == "torch":
        import torch

        from delira.training import PyTorchNetworkTrainer

        trainer = PyTorchNetworkTrainer(net, losses, verbose=False)
        net.eval()
        with torch.no_grad():
            outputs = [o.numpy() for o in net(torch.from_numpy(next(iter(loader))["data"]))]
    else:
        from delira.training import TfNetworkTrainer

        trainer = TfNetworkTrainer(net, losses, verbose=False)
        outputs = [np.asarray(o) for o in net(next(iter(loader))["data"], training=False)]
    y = next(iter(loader))["seg"][:, 0].astype(np.int64)
    weights = deep_supervision_weights(len(outputs))
    assert len(outputs) == 2 and weights == pytest.approx([1.0, 0.0])
    expected = sum(
        w * (ref_ce(o, y[:, :: 2**k, :: 2**k]) + ref_tversky(o, y[:, :: 2**k, :: 2**k], 0.3, 0.7, 1.0))
        for k, (w, o) in enumerate(zip(weights, outputs))
    )
    assert trainer.evaluate(loader)["loss"] == pytest.approx(expected, rel=1e-5)


# --- the config and the tasks ------------------------------------------------------------------------
def test_config_accepts_and_checks_loss_keys():
    config = load_config(
        {
            "training": {
                "loss": "focal+tversky",
                "loss_args": {"focal": {"gamma": 1.0, "alpha": [0.2, 0.4, 0.4]}, "tversky": {"beta": 0.9}},
            }
        }
    )
    assert config["training"]["loss_args"]["focal"]["gamma"] == 1.0
    problems = {
        "training.loss_args.dice": {"training": {"loss": "ce", "loss_args": {"dice": {"smooth": 1}}}},
        "training.loss_args.focal.gamma": {
            "training": {"loss": "focal", "loss_args": {"focal": {"gamma": -2}}}
        },
        "training.loss_args.ce.class_weights": {"training": {"loss_args": {"ce": {"class_weights": [1, 2]}}}},
        "training.loss_args.tversky.gama": {
            "training": {"loss": "tversky", "loss_args": {"tversky": {"gama": 1}}}
        },
        "training.loss": {"training": {"loss": "ce+focal+dice"}},
    }
    for key, user in problems.items():
        with pytest.raises(ConfigError) as info:
            load_config(user)
        assert any(p.startswith(key) for p in info.value.problems), info.value.problems
    with pytest.raises(ConfigError, match="classification"):
        load_config(
            {
                "task": "classification",
                "model": {"name": "resnet18", "args": {"num_classes": 2}},
                "data": {"phantom": {"shape": [16, 16, 16]}},
                "training": {"loss_args": {"focal": {"gamma": 2}}},
            }
        )


@pytest.mark.torch
def test_tasks_build_the_configured_losses():
    torch = pytest.importorskip("torch")
    from delira.training.tasks import task_for

    seg = task_for(
        load_config(
            {"training": {"loss": "ce+tversky", "loss_args": {"ce": {"class_weights": [0.5, 1.0, 2.0]}}}}
        )
    )
    losses = seg.losses("torch")
    assert list(losses) == ["ce", "tversky"]
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 4, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=(2, 4, 4, 4))
    assert float(losses["ce"](torch.from_numpy(x), torch.from_numpy(y))) == pytest.approx(
        ref_ce(x, y, [0.5, 1.0, 2.0]), rel=1e-5
    )
    cls = task_for(
        load_config(
            {
                "task": "classification",
                "model": {"name": "resnet18", "args": {"num_classes": 2}},
                "data": {"phantom": {"shape": [16, 16, 16]}},
                "training": {"loss_args": {"ce": {"class_weights": [1.0, 4.0]}}},
            }
        )
    )
    z = rng.normal(size=(5, 2)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 1])
    value = float(cls.losses("torch")["ce"](torch.from_numpy(z), torch.from_numpy(labels)))
    assert value == pytest.approx(ref_ce(z, labels, [1.0, 4.0]), rel=1e-5)


def test_deep_supervision_trains_with_accumulation(backend):
    """The head of weight 0 gets no gradient; training (also accumulating) leaves it as it was."""
    from delira.data import DataLoader
    from delira.training.tasks import task_for

    rng = np.random.default_rng(5)
    cases = [
        {
            "data": rng.normal(size=(1, 8, 8)).astype(np.float32),
            "seg": rng.integers(0, 3, size=(1, 8, 8)).astype(np.int16),
        }
        for _ in range(4)
    ]
    config = load_config(
        {
            "backend": backend,
            "model": {
                "name": "unet",
                "args": {
                    "spatial_dims": 2,
                    "num_classes": 3,
                    "features": [4, 8, 16],
                    "deep_supervision": True,
                },
            },
            "data": {"phantom": {"shape": [8, 8]}},
        }
    )
    net = _ds_unet(backend)
    if backend == "torch":
        from delira.training import PyTorchNetworkTrainer as Trainer

        def head():
            return [p.detach().numpy().copy() for p in net.aux_heads[-1].parameters()]
    else:
        from delira.training import TfNetworkTrainer as Trainer

        def head():
            return [np.array(v.numpy()) for v in net.aux_heads[-1].weights]

    before = head()
    trainer = Trainer(net, task_for(config).losses(backend), grad_accumulation=2, verbose=False)
    history = trainer.fit(DataLoader(cases, batch_size=1), epochs=1)
    assert np.isfinite(history[0]["train_loss"])
    for a, b in zip(head(), before):
        np.testing.assert_array_equal(a, b)
