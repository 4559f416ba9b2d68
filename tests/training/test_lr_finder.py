"""The learning-rate finder: its pieces against hand-computed values, and find_lr on a tiny problem
(suggestion in the decreasing part of the curve, every state restored bit-exactly) in both trainers."""

from __future__ import annotations

import numpy as np
import pytest

from delira.training.lr_finder import find_lr, lr_sweep, smooth_losses, suggest_lr

BACKENDS = [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]


def test_sweep_and_smoothing_by_hand():
    np.testing.assert_allclose(lr_sweep(1e-4, 1.0, 5), [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-12)
    # a_k = 0.5 a_{k-1} + 0.5 x_k, reported as a_k / (1 - 0.5 ** (k + 1))
    x = [4.0, 2.0, 1.0]
    a0 = 2.0
    a1 = 0.5 * a0 + 1.0
    a2 = 0.5 * a1 + 0.5
    np.testing.assert_allclose(smooth_losses(x, 0.5), [a0 / 0.5, a1 / 0.75, a2 / 0.875])
    np.testing.assert_allclose(smooth_losses(x, 0.0), x)


def test_suggestion_at_the_steepest_descent():
    lrs = np.logspace(-6, 0, 61)
    # falls fastest where log10(lr) = -3 (tanh is steepest at 0), flat at both ends
    loss = 1.0 - np.tanh(2.0 * (np.log10(lrs) + 3.0))
    lr, index = suggest_lr(lrs, loss, skip_start=5, skip_end=1)
    assert index == 30 and lr == pytest.approx(1e-3)
    # skipped points never win, non-finite ones are left out
    loss2 = loss.copy()
    loss2[:3] = [5.0, -5.0, np.nan]
    assert suggest_lr(lrs, loss2, skip_start=3)[1] == 30
    assert suggest_lr(lrs[:4], loss[:4], skip_start=3) == (None, None)


def cases(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        data = rng.normal(size=(1, size, size)).astype(np.float32)
        out.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return out


def make_trainer(backend):
    from delira.training.losses import make_loss

    if backend == "torch":
        torch = pytest.importorskip("torch")
        from delira.models.torch import UNet
        from delira.training import PyTorchNetworkTrainer

        torch.manual_seed(0)
        net = UNet(spatial_dims=2, num_classes=2, features=(4, 8), norm="batch")
        return PyTorchNetworkTrainer(
            net,
            {"ce": make_loss("ce", "torch")},
            optimizer="sgd",
            lr=0.05,
            optimizer_kwargs={"momentum": 0.9},
            verbose=False,
        )
    keras = pytest.importorskip("keras")
    from delira.models.tf import UNet
    from delira.training import TfNetworkTrainer

    keras.utils.set_random_seed(0)
    net = UNet(spatial_dims=2, num_classes=2, features=(4, 8), norm="batch")
    net(np.zeros((1, 1, 8, 8), np.float32))
    return TfNetworkTrainer(
        net,
        {"ce": make_loss("ce", "tf")},
        optimizer="sgd",
        lr=0.05,
        optimizer_kwargs={"momentum": 0.9},
        verbose=False,
    )


def snapshot(trainer):
    """Every weight and optimizer value as numpy copies, plus the numpy / torch RNG states."""
    out = {"numpy_rng": np.random.get_state()[1].copy()}  # noqa: NPY002
    if trainer.framework == "torch":
        import torch

        trainer._setup()
        out.update({f"w/{k}": v.numpy().copy() for k, v in trainer.network.state_dict().items()})
        state = trainer.optimizer.state_dict()
        out["opt/lr"] = np.array(state["param_groups"][0]["lr"])
        for i, s in state["state"].items():
            out.update({f"opt/{i}/{k}": np.array(torch.as_tensor(v).numpy()) for k, v in s.items()})
        out["torch_rng"] = torch.get_rng_state().numpy().copy()
        return out
    trainer._setup()
    out.update({f"w/{i}": np.array(v.numpy()) for i, v in enumerate(trainer.network.weights)})
    out.update({f"opt/{i}": np.array(v.numpy()) for i, v in enumerate(trainer.optimizer.variables)})
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_find_lr_on_a_tiny_problem(backend, tmp_path):
    from delira.data import DataLoader

    trainer = make_trainer(backend)
    loader = DataLoader(cases(8), batch_size=4, shuffle=True, seed=1)
    trainer.fit(loader, epochs=1)  # some optimizer state (momentum) to restore
    before = snapshot(trainer)
    result = find_lr(
        trainer, loader, min_lr=1e-4, max_lr=50.0, num_iterations=50, skip_start=5, plot=tmp_path / "lr.png"
    )
    after = snapshot(trainer)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert trainer.get_lr() == pytest.approx(0.05)

    assert result.suggestion is not None and len(result.lrs) == len(result.losses) == len(result.smoothed)
    np.testing.assert_allclose(result.lrs, lr_sweep(1e-4, 50.0, 50)[: len(result.lrs)])
    # the suggestion lies where the smoothed loss decreases: before its minimum, below the start
    lowest = int(np.nanargmin(result.smoothed))
    assert 5 <= result.index < lowest
    assert result.smoothed[result.index] < result.smoothed[0]
    assert result.smoothed[result.index + 1] < result.smoothed[result.index - 1]
    assert result.diverged or len(result.lrs) == 50  # stopping early means the loss diverged
    if result.plot is not None:  # matplotlib installed
        assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the trainer trains on afterwards as if find_lr had not run
    reference = make_trainer(backend)
    reference.fit(loader, epochs=1)
    h_ref = reference.fit(loader, epochs=2)
    h = trainer.fit(loader, epochs=2)
    assert h == h_ref


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        find_lr(None, [], min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="num_iterations"):
        find_lr(None, [], num_iterations=1)
    with pytest.raises(ValueError, match="smoothing"):
        find_lr(None, [], smoothing=1.0)
    with pytest.raises(ValueError, match="diverge_factor"):
        find_lr(None, [], diverge_factor=0.5)
