"""PyTorchNetworkTrainer against hand-written torch loops, on a learnable synthetic task."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest

from delira.training import metrics
from delira.training.callbacks import Callback, EarlyStopping

pytestmark = pytest.mark.torch


def make_net(seed: int = 0):
    import torch

    from delira.models.torch import UNet

    torch.manual_seed(seed)
    return UNet(spatial_dims=3, num_classes=2, features=(4, 8))


def make_trainer(net, **kwargs):
    import torch

    from delira.training import PyTorchNetworkTrainer

    kwargs.setdefault("verbose", False)
    return PyTorchNetworkTrainer(net, {"ce": torch.nn.CrossEntropyLoss()}, **kwargs)


def hand_loop(net, loader, epochs, optimizer, accumulate=1, clip=None):
    """The reference: a plain torch loop over the same batches."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        batches = list(loader)
        for i, batch in enumerate(batches):
            x = torch.from_numpy(batch["data"])
            y = torch.from_numpy(batch["seg"][:, 0].astype(np.int64))
            (loss_fn(net(x), y) / accumulate).backward()
            if (i + 1) % accumulate == 0 or i == len(batches) - 1:
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
                optimizer.step()
                optimizer.zero_grad()
    return net


def assert_same_weights(a, b, atol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_allclose(sa[key].numpy(), sb[key].numpy(), atol=atol, rtol=0, err_msg=key)


def test_learns_threshold_task(threshold_loaders):
    train, val = threshold_loaders
    trainer = make_trainer(make_net(), lr=2e-2, metrics={"dice": metrics.segmentation_metric("dice", 2)})
    history = trainer.fit(train, val, epochs=10)
    assert [h["epoch"] for h in history] == list(range(10))
    assert {"train_loss", "val_loss", "val_dice", "val_dice_class_1", "lr"} <= set(history[-1])
    assert history[-1]["val_dice"] > 0.85
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    # evaluate() agrees with a hand-computed Dice of the trained network
    import torch

    results = trainer.evaluate(val)
    batch = next(iter(val))
    with torch.no_grad():
        trainer.network.eval()
        pred = trainer.network(torch.from_numpy(batch["data"])).argmax(1).numpy()
    seg = batch["seg"][:, 0]
    reference = 2 * np.sum((pred == 1) & (seg == 1)) / (np.sum(pred == 1) + np.sum(seg == 1))
    assert results["dice"] == pytest.approx(reference)


@pytest.mark.parametrize(("accumulate", "clip", "batch_size"), [(1, None, 4), (2, None, 2), (1, 0.05, 4)])
def test_equals_hand_written_loop(accumulate, clip, batch_size, make_cases):
    import torch

    threshold_cases = make_cases
    from delira.data import DataLoader

    cases = threshold_cases(16)
    net = make_net()
    reference = copy.deepcopy(net)
    trainer = make_trainer(net, optimizer="sgd", lr=0.1, grad_accumulation=accumulate, grad_clip=clip)
    trainer.fit(DataLoader(cases, batch_size=batch_size, shuffle=True, seed=1), epochs=2)
    # accumulation of 2 batches of 2 == one batch of 4 (mean of equal-sized means)
    ref_loader = DataLoader(cases, batch_size=batch_size, shuffle=True, seed=1)
    hand_loop(reference, ref_loader, 2, torch.optim.SGD(reference.parameters(), lr=0.1), accumulate, clip)
    assert_same_weights(trainer.network, reference, atol=1e-6)
    if accumulate == 2:
        big = make_net()
        hand_loop(big, _pairs(cases), 2, torch.optim.SGD(big.parameters(), lr=0.1))
        assert_same_weights(trainer.network, big, atol=1e-5)


class _pairs:
    """Batches of 4 made of the trainer's consecutive batches of 2 (same order)."""

    def __init__(self, cases):
        from delira.data import DataLoader

        self.loader = DataLoader(cases, batch_size=2, shuffle=True, seed=1)

    def set_epoch(self, e):
        self.loader.set_epoch(e)

    def __iter__(self):
        batches = list(self.loader)
        for a, b in zip(batches[::2], batches[1::2]):
            yield {k: np.concatenate([a[k], b[k]]) for k in ("data", "seg")}


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, trainer):
        self.calls.append("train_begin")

    def on_train_end(self, trainer):
        self.calls.append("train_end")

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append(f"epoch_begin {epoch}")

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(f"epoch_end {epoch} {'val_loss' in logs}")

    def on_iteration_begin(self, trainer, iteration):
        self.calls.append(f"it_begin {iteration}")

    def on_iteration_end(self, trainer, iteration, logs):
        self.calls.append(f"it_end {iteration} {math.isfinite(logs['loss'])}")


def test_callbacks_fire_in_order(threshold_loaders, make_cases):
    threshold_cases = make_cases
    from delira.data import DataLoader

    train = DataLoader(threshold_cases(8), batch_size=4)
    _, val = threshold_loaders
    recorder = Recorder()
    make_trainer(make_net(), callbacks=[recorder], val_every=2).fit(train, val, epochs=3)
    expected = ["train_begin"]
    for epoch in range(3):
        expected.append(f"epoch_begin {epoch}")
        expected += ["it_begin 0", "it_end 0 True", "it_begin 1", "it_end 1 True"]
        expected.append(f"epoch_end {epoch} {epoch in (1, 2)}")  # every 2nd epoch and the last
    expected.append("train_end")
    assert recorder.calls == expected


def test_early_stopping(threshold_loaders):
    train, val = threshold_loaders
    # val_loss falls, so in mode "max" only epoch 0 counts as an improvement: stop after 1 + patience
    stopper = EarlyStopping(monitor="val_loss", mode="max", patience=2)
    history = make_trainer(make_net(), lr=2e-2, callbacks=[stopper]).fit(train, val, epochs=10)
    assert len(history) == 3 and stopper.stopped_epoch == 2


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_training = epoch >= self.epoch


class Snapshots(Callback):
    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, trainer, epoch, logs):
        self.weights[epoch] = {k: v.clone() for k, v in trainer.network.state_dict().items()}


def test_best_and_last_checkpoints(tmp_path, threshold_loaders):
    from delira.io import load_checkpoint, read_checkpoint_info

    train, val = threshold_loaders
    snapshots = Snapshots()
    trainer = make_trainer(
        make_net(),
        lr=5e-2,
        callbacks=[snapshots],
        save_dir=tmp_path,
        monitor="val_dice",
        mode="max",
        metrics={"dice": metrics.segmentation_metric("dice", 2)},
    )
    history = trainer.fit(train, val, epochs=4)
    best_epoch = int(np.argmax([h["val_dice"] for h in history]))
    assert read_checkpoint_info(tmp_path / "checkpoints" / "best.safetensors").epoch == best_epoch + 1
    assert read_checkpoint_info(tmp_path / "checkpoints" / "last.safetensors").epoch == 4
    for name, epoch in (("best", best_epoch), ("last", 3)):
        net = make_net(seed=5)
        load_checkpoint(tmp_path / "checkpoints" / f"{name}.safetensors", net)
        for key, value in net.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), snapshots.weights[epoch][key].numpy())
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([h["train_loss"] for h in history])
    assert (tmp_path / "curves.png").exists() and list((tmp_path / "tensorboard").iterdir())


@pytest.mark.parametrize("scheduler", ["cosine", "callable"])
def test_resume_equals_uninterrupted_run(tmp_path, scheduler, make_cases):
    import torch

    threshold_cases = make_cases
    from delira.data import DataLoader

    cases = threshold_cases(12)
    sched = (
        scheduler
        if scheduler == "cosine"
        else (lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    )
    kwargs = dict(lr=1e-2, scheduler=sched, metrics={"dice": metrics.segmentation_metric("dice", 2)})
    val = DataLoader(threshold_cases(4, seed=1), batch_size=4)
    straight = make_trainer(make_net(), **kwargs)
    h_straight = straight.fit(DataLoader(cases, batch_size=4, shuffle=True, seed=2), val, epochs=4)
    first = make_trainer(make_net(), save_dir=tmp_path, callbacks=[StopAfter(1)], **kwargs)  # "interrupted"
    assert len(first.fit(DataLoader(cases, batch_size=4, shuffle=True, seed=2), val, epochs=4)) == 2
    resumed = make_trainer(make_net(seed=9), save_dir=tmp_path, **kwargs)  # other init: overwritten
    h_resumed = resumed.fit(
        DataLoader(cases, batch_size=4, shuffle=True, seed=2), val, epochs=4, resume_from="last"
    )
    assert_same_weights(resumed.network, straight.network)
    assert h_resumed == h_straight
    with open(tmp_path / "metrics.csv") as handle:  # the CSV keeps the epochs before the resume
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2, 3]
    if scheduler == "callable":
        assert [h["lr"] for h in h_straight] == pytest.approx([1e-2, 5e-3, 2.5e-3, 1.25e-3])
    else:
        assert [h["lr"] for h in h_straight] == pytest.approx(
            [1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
        )


def test_nan_loss_names_epoch_and_iteration(threshold_loaders):
    import torch

    from delira.training import NonFiniteLossError, PyTorchNetworkTrainer

    train, _ = threshold_loaders
    calls = []

    def loss(pred, target):
        calls.append(1)
        value = torch.nn.functional.cross_entropy(pred, target)
        return value * float("nan") if len(calls) == 7 else value

    trainer = PyTorchNetworkTrainer(make_net(), {"ce": loss}, verbose=False)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 .*iteration 2"):
        trainer.fit(train, epochs=3)  # 4 iterations per epoch: call 7 is epoch 1, iteration 2


def test_metric_missing_key_is_named(threshold_loaders):
    train, val = threshold_loaders
    trainer = make_trainer(make_net(), metrics={"acc": metrics.classification_metric("accuracy")})
    with pytest.raises(KeyError, match="'label'"):
        trainer.fit(train, val, epochs=1)


def test_device_transforms_run_on_tensors_with_a_seeded_rng(threshold_loaders):
    import torch

    train, _ = threshold_loaders
    seen = []

    def transform(rng, **batch):
        assert isinstance(batch["data"], torch.Tensor)
        seen.append(rng.integers(1 << 30))
        return {**batch, "data": batch["data"] * 0.0}

    trainer = make_trainer(make_net(), device_transforms=[transform], lr=0.1)
    history = trainer.fit(train, epochs=1)
    # all-zero inputs: the network cannot do better than the class prior, ~log(2) at the start
    assert history[0]["train_loss"] > 0.6
    expected = [np.random.default_rng([0, 0, i, 0]).integers(1 << 30) for i in range(4)]
    assert seen == expected


def test_bf16_autocast_trains(threshold_loaders):
    train, val = threshold_loaders
    history = make_trainer(make_net(), lr=2e-2, precision="bf16").fit(train, val, epochs=3)
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="precision must be one of"):
        make_trainer(make_net(), precision="8")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_trainer(make_net(), optimizer="rmsprop")


def test_fp16_grad_scaler_and_plateau_scheduler(make_cases, capsys):
    import torch

    from delira.data import DataLoader

    train = DataLoader(make_cases(8), batch_size=4)
    val = DataLoader(make_cases(4, seed=1), batch_size=4)

    def plateau(opt):  # val_loss falls, so in mode "max" every epoch after the first is a plateau
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)

    trainer = make_trainer(
        make_net(), lr=2e-2, precision="16", grad_clip=1.0, scheduler=plateau, verbose=True
    )
    history = trainer.fit(train, val, epochs=3)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    assert [h["lr"] for h in history] == pytest.approx([2e-2, 2e-2, 1e-2])
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    err = capsys.readouterr().err  # the progress bar shows the loss and the epoch's metrics
    assert "loss=" in err and "val_loss=" in err and "epoch 3/3" in err


def test_loss_shape_error_names_both_shapes(make_cases):
    from delira.data import DataLoader

    cases = [{"data": c["data"], "seg": c["seg"][:, :4, :4, :4]} for c in make_cases(4)]
    with pytest.raises(ValueError, match=r"\(4, 2, 8, 8, 8\).*\(4, 4, 4, 4\)"):
        make_trainer(make_net()).fit(DataLoader(cases, batch_size=4), epochs=1)


def test_resume_last_without_checkpoint_starts_fresh(tmp_path, threshold_loaders):
    train, _ = threshold_loaders
    fresh = make_trainer(make_net(), save_dir=tmp_path).fit(train, epochs=2, resume_from="last")
    plain = make_trainer(make_net()).fit(train, epochs=2)
    assert fresh == plain
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_trainer(make_net()).fit(train, epochs=1, resume_from=tmp_path / "missing.safetensors")


def test_delira_augment_device_transform_equals_flipped_data(make_cases):
    import torch

    import delira.augment as da
    from delira.data import DataLoader

    cases = make_cases(8)
    # a mirror on spatial axis 0 of every sample == training on the flipped arrays
    trainer = make_trainer(
        make_net(), optimizer="sgd", lr=0.1, device_transforms=[da.Mirror(axes=(0,), p_per_axis=1.0)]
    )
    trainer.fit(DataLoader(cases, batch_size=4), epochs=1)
    flipped = [{k: np.ascontiguousarray(np.flip(v, 1)) for k, v in c.items()} for c in cases]
    reference = make_net()
    hand_loop(
        reference, DataLoader(flipped, batch_size=4), 1, torch.optim.SGD(reference.parameters(), lr=0.1)
    )
    assert_same_weights(trainer.network, reference, atol=1e-6)
