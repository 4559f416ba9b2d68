"""Learning-rate schedules against their closed forms and torch's own schedulers, in both trainers;
the linear warm-up on top of named and framework schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from delira.training.callbacks import Callback
from delira.training.config import load_config
from delira.training.schedules import (
    LinearWarmup,
    check_schedule_args,
    onecycle_lr,
    poly_lr,
    schedule_lr,
    warmup_factor,
)

BACKENDS = [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]


def cases(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        data = rng.normal(size=(1, size, size)).astype(np.float32)
        out.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return out


def make_trainer(backend, **kwargs):
    from delira.training.losses import make_loss

    kwargs.setdefault("verbose", False)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        from delira.models.torch import UNet
        from delira.training import PyTorchNetworkTrainer

        torch.manual_seed(0)
        net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
        return PyTorchNetworkTrainer(net, {"ce": make_loss("ce", "torch")}, **kwargs)
    keras = pytest.importorskip("keras")
    from delira.models.tf import UNet
    from delira.training import TfNetworkTrainer

    keras.utils.set_random_seed(0)
    net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
    return TfNetworkTrainer(net, {"ce": make_loss("ce", "tf")}, **kwargs)


class LrRecorder(Callback):
    """The learning rate each training iteration runs with (after the callbacks before it)."""

    def __init__(self):
        self.lrs = []

    def on_iteration_begin(self, trainer, iteration):
        self.lrs.append(trainer.get_lr())


def loader(n=12, batch=4):
    from delira.data import DataLoader

    return DataLoader(cases(n), batch_size=batch, shuffle=True, seed=1)


# --- closed forms ------------------------------------------------------------------------------------
@pytest.mark.torch
def test_poly_equals_torch_polynomial_lr():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=7, power=0.9)
    reference = []
    for _ in range(7):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [poly_lr(0.01, e, 7) for e in range(7)] == pytest.approx(reference, rel=1e-12)
    # nnU-Net's form, by hand
    assert schedule_lr("poly", 0.01, 3, 10) == pytest.approx(0.01 * 0.7**0.9)
    assert schedule_lr("poly", 0.01, 3, 10, exponent=2.0) == pytest.approx(0.01 * 0.49)


@pytest.mark.torch
@pytest.mark.parametrize(("total", "pct", "div", "final"), [(40, 0.3, 25.0, 1e4), (13, 0.25, 10.0, 100.0)])
def test_onecycle_equals_torch_onecycle_lr(total, pct, div, final):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=0.1,
        total_steps=total,
        pct_start=pct,
        div_factor=div,
        final_div_factor=final,
        cycle_momentum=False,
    )
    reference = []
    for _ in range(total):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [onecycle_lr(0.1, s, total, pct, div, final) for s in range(total)]
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-15)


def test_cosine_step_and_warmup_closed_forms():
    assert schedule_lr("cosine", 0.1, 2, 8) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule_lr("step", 0.1, 5, 9) == pytest.approx(0.1 * 0.1)  # step_size 3: 5 // 3 = 1
    assert schedule_lr("step", 0.1, 5, 9, step_size=2, gamma=0.5) == pytest.approx(0.1 * 0.5**2)
    # 2 warm-up epochs of 4 iterations: (g + 1) / 8, then 1
    assert [warmup_factor(2, e, i, 4) for e in range(3) for i in range(4)] == pytest.approx(
        [1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8, 1.0, 1.0, 1.0, 1.0, 1.0]
    )
    assert [warmup_factor(4, e, 0, None) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="exponent"):
        check_schedule_args("cosine", {"exponent": 2})
    with pytest.raises(ValueError, match="pct_start"):
        check_schedule_args("onecycle", {"pct_start": 1.5})
    with pytest.raises(ValueError, match="unknown schedule"):
        check_schedule_args("linear", {})
    with pytest.raises(ValueError, match="epochs"):
        LinearWarmup(0)
    from delira.training.trainer_base import BaseNetworkTrainer

    with pytest.raises(ValueError, match="do not apply"):
        BaseNetworkTrainer(None, {"l": abs}, scheduler="poly", scheduler_kwargs={"gamma": 0.5})


# --- in the trainers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_poly_per_epoch_and_onecycle_per_iteration(backend):
    rec = LrRecorder()
    trainer = make_trainer(backend, lr=0.02, scheduler="poly", callbacks=[rec])
    history = trainer.fit(loader(), epochs=3)  # 3 iterations per epoch
    expected = [0.02 * (1 - e / 3) ** 0.9 for e in range(3)]
    assert [h["lr"] for h in history] == pytest.approx(expected, rel=1e-6)
    assert rec.lrs == pytest.approx(np.repeat(expected, 3), rel=1e-6)

    rec = LrRecorder()
    trainer = make_trainer(backend, lr=0.02, scheduler="onecycle", callbacks=[rec])
    trainer.fit(loader(), epochs=3)
    assert rec.lrs == pytest.approx([onecycle_lr(0.02, s, 9) for s in range(9)], rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_warmup_on_top_of_a_named_schedule(backend):
    rec = LrRecorder()
    trainer = make_trainer(backend, lr=0.02, scheduler="poly", callbacks=[LinearWarmup(1.5), rec])
    history = trainer.fit(loader(), epochs=3)
    n = 3
    expected = [
        0.02 * (1 - e / 3) ** 0.9 * min(1.0, (e * n + i + 1) / (1.5 * n)) for e in range(3) for i in range(n)
    ]
    assert rec.lrs == pytest.approx(expected, rel=1e-6)
    assert [h["lr"] for h in history] == pytest.approx(expected[::n], rel=1e-6)  # the first iteration's
    assert trainer.get_lr() == pytest.approx(0.02 * (1 - 2 / 3) ** 0.9, rel=1e-6)  # the schedule's, unscaled


@pytest.mark.torch
def test_warmup_leaves_a_torch_scheduler_exact():
    """The warm-up puts the schedule's rate back after each iteration, so a chainable torch scheduler
    (StepLR multiplies the current rate) ends where it would without warm-up."""
    torch = pytest.importorskip("torch")
    rec = LrRecorder()

    def schedule(opt):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    trainer = make_trainer("torch", lr=0.04, scheduler=schedule, callbacks=[LinearWarmup(2), rec])
    trainer.fit(loader(), epochs=4)
    expected = [0.04 * 0.5**e * min(1.0, (e * 3 + i + 1) / 6) for e in range(4) for i in range(3)]
    assert rec.lrs == pytest.approx(expected, rel=1e-9)
    assert trainer.get_lr() == pytest.approx(0.04 * 0.5**4)


def test_config_schedules_and_warmup_reach_the_trainer():
    from delira.training.tasks import task_for

    config = load_config({"training": {"schedule": "onecycle", "warmup_epochs": 0.5, "ema_decay": 0.99}})
    callbacks = task_for(config).callbacks(None, 0)
    assert isinstance(callbacks[0], LinearWarmup) and callbacks[0].epochs == 0.5
    assert type(callbacks[1]).__name__ == "ModelEMA" and callbacks[1].decay == 0.99
    assert task_for(load_config(None)).callbacks(None, 0) == []
    from delira.training.config import ConfigError

    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config({"training": {"warmup_epochs": -1}})
    with pytest.raises(ConfigError, match="ema_decay"):
        load_config({"training": {"ema_decay": 1.5}})
    with pytest.raises(ConfigError, match="schedule"):
        load_config({"training": {"schedule": "linear"}})


class Unsized:
    """Batches without a length (a generator per epoch)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        yield from self.batches


@pytest.mark.torch
def test_onecycle_and_warmup_per_epoch_without_a_length():
    batches = list(loader())
    rec = LrRecorder()
    trainer = make_trainer("torch", lr=0.02, scheduler="onecycle", callbacks=[LinearWarmup(2), rec])
    trainer.fit(Unsized(batches), epochs=3)
    assert trainer.iterations_per_epoch is None
    expected = [onecycle_lr(0.02, e, 3) * min(1.0, (e + 1) / 2) for e in range(3) for _ in batches]
    assert rec.lrs == pytest.approx(expected, rel=1e-9)
