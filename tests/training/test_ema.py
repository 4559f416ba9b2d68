"""ModelEMA against a numpy recurrence over the weights after every optimizer step, in both trainers:
validation on the average, the average in the checkpoints and after fit, and an exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from delira.training.callbacks import Callback, ModelEMA

BACKENDS = [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]


def cases(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        data = rng.normal(size=(1, size, size)).astype(np.float32)
        out.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return out


def loaders():
    from delira.data import DataLoader

    return DataLoader(cases(8), batch_size=4, shuffle=True, seed=1), DataLoader(
        cases(4, seed=5), batch_size=2
    )


def make_trainer(backend, seed=0, **kwargs):
    from delira.training.losses import make_loss

    kwargs.setdefault("verbose", False)
    kwargs.setdefault("optimizer", "sgd")
    kwargs.setdefault("lr", 0.2)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        from delira.models.torch import UNet
        from delira.training import PyTorchNetworkTrainer

        torch.manual_seed(seed)
        net = UNet(spatial_dims=2, num_classes=2, features=(4, 8), norm="batch")
        return PyTorchNetworkTrainer(net, {"ce": make_loss("ce", "torch")}, **kwargs)
    keras = pytest.importorskip("keras")
    from delira.models.tf import UNet
    from delira.training import TfNetworkTrainer

    keras.utils.set_random_seed(seed)
    net = UNet(spatial_dims=2, num_classes=2, features=(4, 8), norm="batch")
    net(np.zeros((1, 1, 8, 8), np.float32))
    return TfNetworkTrainer(net, {"ce": make_loss("ce", "tf")}, **kwargs)


def float_weights(trainer):
    """The network's floating-point weights by name, float64 numpy (what ModelEMA averages)."""
    if trainer.framework == "torch":
        return {
            k: v.detach().double().numpy().copy()
            for k, v in trainer.network.state_dict().items()
            if v.is_floating_point()
        }
    floats = [v for v in trainer.network.weights if "float" in str(v.dtype)]
    return {f"{i}/{v.name}": np.asarray(v.numpy(), np.float64) for i, v in enumerate(floats)}


class StepRecorder(Callback):
    """The weights at the start and after every optimizer step."""

    def __init__(self):
        self.start, self.after_steps, self._step = None, [], 0

    def on_train_begin(self, trainer):
        self.start = float_weights(trainer)

    def on_iteration_end(self, trainer, iteration, logs):
        if trainer.global_step != self._step:
            self._step = trainer.global_step
            self.after_steps.append(float_weights(trainer))


def reference_average(start, steps, decay):
    average = {k: v.copy() for k, v in start.items()}
    for weights in steps:
        for k in average:
            average[k] = decay * average[k] + (1 - decay) * weights[k]
    return average


def assert_close(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_average_follows_the_recurrence_and_is_validated(backend):
    train, val = loaders()
    rec, ema = StepRecorder(), ModelEMA(decay=0.7)
    trainer = make_trainer(backend, callbacks=[rec, ema], grad_accumulation=1)
    history = trainer.fit(train, val, epochs=3)
    assert len(rec.after_steps) == 6 == ema.updates == trainer.global_step
    expected = reference_average(rec.start, rec.after_steps, 0.7)
    # after fit the network holds the average
    assert_close(float_weights(trainer), expected, atol=2e-6)
    assert_close({k: v.astype(np.float64) for k, v in ema.averaged_weights().items()}, expected, atol=2e-6)
    # the last validation ran on the average: evaluate() on the network now gives the same loss ...
    assert trainer.evaluate(val)["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-6)
    # ... and it is not the loss of the training weights
    averaged = float_weights(trainer)
    raw = rec.after_steps[-1]
    assert max(np.abs(averaged[k] - raw[k]).max() for k in raw) > 1e-3


@pytest.mark.torch
def test_one_update_per_optimizer_step_with_accumulation():
    train, _ = loaders()
    rec, ema = StepRecorder(), ModelEMA(decay=0.5)
    trainer = make_trainer("torch", callbacks=[rec, ema], grad_accumulation=2)
    trainer.fit(train, epochs=2)  # 2 iterations per epoch: one step each
    assert trainer.global_step == 2 == ema.updates == len(rec.after_steps)
    assert_close(float_weights(trainer), reference_average(rec.start, rec.after_steps, 0.5), atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoints_hold_the_average_and_resume_exactly(backend, tmp_path):
    from delira.io import load_checkpoint, read_checkpoint_info

    train, val = loaders()
    straight_ema = ModelEMA(0.6)
    straight = make_trainer(backend, callbacks=[straight_ema])
    h_straight = straight.fit(train, val, epochs=4)

    first_ema = ModelEMA(0.6)
    first = make_trainer(backend, callbacks=[first_ema], save_dir=tmp_path)
    first.fit(train, val, epochs=2)
    last = tmp_path / "checkpoints" / "last.safetensors"
    # the file's model weights are the average (what prediction loads) ...
    fresh = make_trainer(backend, seed=7)
    fresh._setup()
    load_checkpoint(last, fresh.network, restore_rng=False)
    assert_close(float_weights(fresh), float_weights(first), atol=0)
    # ... and the training weights are in the callback's state
    state = read_checkpoint_info(last).extra["callbacks"]["ModelEMA:0"]
    assert state["updates"] == 4 and len(state["training_weights"]) == len(state["names"])

    resumed_ema = ModelEMA(0.6)
    resumed = make_trainer(backend, seed=3, callbacks=[resumed_ema], save_dir=tmp_path)
    h_resumed = resumed.fit(train, val, epochs=4, resume_from="last")
    assert h_resumed == h_straight
    assert_close(float_weights(resumed), float_weights(straight), atol=0)  # the averages
    access = resumed_ema._access(resumed)
    held = dict(zip(access.names, access.to_numpy(resumed_ema._held)))
    straight_held = dict(zip(access.names, access.to_numpy(straight_ema._held)))
    assert_close(held, straight_held, atol=0)  # the training weights


def test_decay_is_checked():
    for bad in (0, 1, 1.5, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="decay"):
            ModelEMA(bad)
