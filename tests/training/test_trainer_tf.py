"""TfNetworkTrainer against hand-written GradientTape loops, on a learnable synthetic task."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from delira.training import metrics
from delira.training.callbacks import Callback

pytestmark = pytest.mark.tf


def make_net(seed: int = 0):
    import keras

    from delira.models.tf import UNet

    keras.utils.set_random_seed(seed)
    return UNet(spatial_dims=3, num_classes=2, features=(4, 8))


def ce():
    import keras

    from delira.models.tf import channels_first

    return channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def make_trainer(net, **kwargs):
    from delira.training import TfNetworkTrainer

    kwargs.setdefault("verbose", False)
    return TfNetworkTrainer(net, {"ce": ce()}, **kwargs)


def hand_loop(net, loader, epochs, optimizer, accumulate=1, clip=None):
    """The reference: a plain GradientTape loop over the same batches."""
    import tensorflow as tf

    loss_fn = ce()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        batches = list(loader)
        acc = None
        for i, batch in enumerate(batches):
            x = tf.constant(batch["data"])
            y = tf.constant(batch["seg"][:, 0].astype(np.int64))
            with tf.GradientTape() as tape:
                loss = loss_fn(y, net(x, training=True)) / accumulate
            grads = tape.gradient(loss, net.trainable_variables)
            acc = grads if acc is None else [a + g for a, g in zip(acc, grads)]
            if (i + 1) % accumulate == 0 or i == len(batches) - 1:
                if clip is not None:
                    acc, _ = tf.clip_by_global_norm(acc, clip)
                optimizer.apply_gradients(zip(acc, net.trainable_variables))
                acc = None
    return net


def assert_same_weights(a, b, atol=0.0):
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(va), np.asarray(vb), atol=atol, rtol=0, err_msg=va.path)


def test_learns_threshold_task(threshold_loaders):
    train, val = threshold_loaders
    trainer = make_trainer(make_net(), lr=2e-2, metrics={"dice": metrics.segmentation_metric("dice", 2)})
    history = trainer.fit(train, val, epochs=10)
    assert history[-1]["val_dice"] > 0.85
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]


@pytest.mark.parametrize(("accumulate", "clip", "batch_size"), [(1, None, 4), (2, 0.05, 2)])
def test_equals_hand_written_loop(accumulate, clip, batch_size, make_cases):
    import keras

    from delira.data import DataLoader

    cases = make_cases(8)
    trainer = make_trainer(make_net(), optimizer="sgd", lr=0.1, grad_accumulation=accumulate, grad_clip=clip)
    trainer.fit(DataLoader(cases, batch_size=batch_size, shuffle=True, seed=1), epochs=2)
    reference = make_net()
    loader = DataLoader(cases, batch_size=batch_size, shuffle=True, seed=1)
    hand_loop(reference, loader, 2, keras.optimizers.SGD(learning_rate=0.1), accumulate, clip)
    assert_same_weights(trainer.network, reference, atol=1e-5)


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_training = epoch >= self.epoch


def test_resume_equals_uninterrupted_run(tmp_path, make_cases):
    from delira.data import DataLoader

    cases = make_cases(8)
    kwargs = dict(lr=1e-2, scheduler="cosine")
    straight = make_trainer(make_net(), **kwargs)
    h_straight = straight.fit(DataLoader(cases, batch_size=4, shuffle=True, seed=2), epochs=4)
    first = make_trainer(make_net(), save_dir=tmp_path, callbacks=[StopAfter(1)], **kwargs)
    assert len(first.fit(DataLoader(cases, batch_size=4, shuffle=True, seed=2), epochs=4)) == 2
    resumed = make_trainer(make_net(seed=9), save_dir=tmp_path, **kwargs)
    h_resumed = resumed.fit(
        DataLoader(cases, batch_size=4, shuffle=True, seed=2), epochs=4, resume_from="last"
    )
    assert_same_weights(resumed.network, straight.network)
    assert h_resumed == h_straight
    assert [h["lr"] for h in h_straight] == pytest.approx(
        [1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    )


def test_keras_schedule_and_nan(threshold_loaders):
    import keras

    from delira.training import NonFiniteLossError, TfNetworkTrainer

    train, _ = threshold_loaders
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=4, decay_rate=0.5)
    trainer = make_trainer(make_net(), scheduler=schedule)
    history = trainer.fit(train, epochs=2)  # 4 iterations per epoch
    assert [h["lr"] for h in history] == pytest.approx([0.01, 0.005])

    def bad(y, p):
        return ce()(y, p) * float("nan")

    with pytest.raises(NonFiniteLossError, match=r"epoch 0 .*iteration 0"):
        TfNetworkTrainer(make_net(), {"ce": bad}, verbose=False).fit(train, epochs=1)


def test_mixed_precision_policy_must_match():
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        make_trainer(make_net(), precision="bf16").fit([{"data": np.zeros((1, 1, 8, 8, 8), np.float32)}])


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from delira.data import DataLoader
    from delira.models.tf import UNet, channels_first
    from delira.training import TfNetworkTrainer

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(8):
        d = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
        cases.append({"data": d, "seg": (d > 0).astype(np.int16)})
    loss = channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def build():
        keras.utils.set_random_seed(0)
        return UNet(spatial_dims=3, num_classes=2, features=(4, 8))

    strategy = tf.distribute.MirroredStrategy(["/CPU:0", "/CPU:1"])
    with strategy.scope():
        mirrored = build()
    TfNetworkTrainer(mirrored, {"ce": loss}, optimizer="sgd", lr=0.1, strategy=strategy, verbose=False).fit(
        DataLoader(cases, batch_size=4, shuffle=True, seed=1), epochs=2)
    single = build()
    TfNetworkTrainer(single, {"ce": loss}, optimizer="sgd", lr=0.1, verbose=False).fit(
        DataLoader(cases, batch_size=4, shuffle=True, seed=1), epochs=2)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(mirrored.weights, single.weights))
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(mirrored.weights, build().weights))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "diff": diff, "moved": moved}))
    """
)


def test_mirrored_strategy_two_cpu_devices_equals_single_device():
    import json

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3  # it trained
    # the same samples split over two replicas: the summed half-batch gradients equal the batch gradient
    assert result["diff"] < 1e-5


def test_bf16_policy_and_device_transforms(threshold_loaders):
    import keras

    train, val = threshold_loaders
    seen = []

    def transform(rng, **batch):
        assert isinstance(batch["data"], np.ndarray)  # on the CPU: numpy (see trainer_tf)
        assert batch["seg"].dtype == np.int64  # prepared: int64 like the tensors
        seen.append(rng.integers(1 << 30))
        return {**batch, "data": batch["data"] * 1.0}

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = make_net()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    trainer = make_trainer(net, lr=2e-2, precision="bf16", device_transforms=[transform])
    history = trainer.fit(train, val, epochs=3)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert seen[:4] == [np.random.default_rng([0, 0, i, 0]).integers(1 << 30) for i in range(4)]


MULTI_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # configured by TF_CONFIG
    import keras
    from delira.data import DataLoader
    from delira.models.tf import UNet, channels_first
    from delira.training import TfNetworkTrainer

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(8):
        d = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
        cases.append({"data": d, "seg": (d > 0).astype(np.int16)})
    loss = channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = UNet(spatial_dims=3, num_classes=2, features=(4, 8))
    trainer = TfNetworkTrainer(
        net, {"ce": loss}, optimizer="sgd", lr=0.1, strategy=strategy, verbose=False, save_dir=sys.argv[2]
    )
    trainer.fit(DataLoader(cases, batch_size=4, shuffle=True, seed=1), epochs=2)
    np.savez(sys.argv[1], *[np.asarray(w) for w in net.weights])
    print(json.dumps({"rank": trainer.rank, "replicas": trainer.replicas}))
    """
)


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_strategy_through_tf_config(tmp_path, make_cases):
    import json

    from delira.data import DataLoader

    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(config)}
        args = [sys.executable, "-c", MULTI_WORKER, str(tmp_path / f"w{index}.npz"), str(tmp_path / "run")]
        procs.append(
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["rank"] for o in outputs] == [0, 1] and outputs[0]["replicas"] == 2
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    single = make_net()
    trainer = make_trainer(single, optimizer="sgd", lr=0.1)
    trainer.fit(DataLoader(make_cases(8), batch_size=4, shuffle=True, seed=1), epochs=2)
    for i, weight in enumerate(single.weights):
        np.testing.assert_array_equal(w0[f"arr_{i}"], w1[f"arr_{i}"])
        np.testing.assert_allclose(w0[f"arr_{i}"], np.asarray(weight), atol=1e-5, rtol=0)
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1  # the chief logs, worker 1 does not


def test_fp16_loss_scaling_2d(make_cases):
    """float16 on the CPU (TensorFlow has no float16 3D pooling kernel there, so 2D)."""
    import keras

    from delira.data import DataLoader
    from delira.models.tf import UNet

    cases = [{k: v[:, 0] for k, v in c.items()} for c in make_cases(8)]  # (1, 8, 8) slices
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    trainer = make_trainer(net, lr=2e-2, precision="16")
    history = trainer.fit(DataLoader(cases, batch_size=4), DataLoader(cases[:4], batch_size=4), epochs=3)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_delira_augment_device_transform_equals_flipped_data(make_cases):
    import keras

    import delira.augment as da
    from delira.data import DataLoader

    cases = make_cases(8)
    mirror = da.Mirror(axes=(2,), p_per_axis=1.0)  # spatial axis 2 of every sample
    trainer = make_trainer(make_net(), optimizer="sgd", lr=0.1, device_transforms=[mirror])
    trainer.fit(DataLoader(cases, batch_size=4), epochs=1)
    flipped = [{k: np.ascontiguousarray(np.flip(v, 3)) for k, v in c.items()} for c in cases]
    reference = make_net()
    hand_loop(reference, DataLoader(flipped, batch_size=4), 1, keras.optimizers.SGD(learning_rate=0.1))
    assert_same_weights(trainer.network, reference, atol=1e-5)


# --- one optimizer per parameter group (the DCGAN) -------------------------------------------------
def make_gan(seed: int = 0):
    import keras

    from delira.models.tf import DCGAN

    keras.utils.set_random_seed(seed)
    return DCGAN(
        spatial_dims=2,
        latent_dim=8,
        channels=1,
        image_size=16,
        generator_features=8,
        discriminator_features=8,
    )


def gan_batches():
    data = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    return [{"data": data[:4]}, {"data": data[4:]}]


def gan_losses():
    import keras

    return {"adversarial": keras.losses.BinaryCrossentropy(from_logits=True)}


def test_dcgan_gets_one_optimizer_per_group_and_equals_its_own_step(tmp_path):
    import keras

    from delira.training import TfNetworkTrainer

    net = make_gan()
    g_before = [v.numpy() for v in net.generator.trainable_variables]
    d_before = [v.numpy() for v in net.discriminator.trainable_variables]
    trainer = TfNetworkTrainer(net, gan_losses(), lr=1e-3, save_dir=tmp_path, verbose=False)
    history = trainer.fit(gan_batches(), epochs=2)
    assert list(trainer.optimizers) == ["generator", "discriminator"]
    assert trainer.optimizer is trainer.optimizers["generator"]
    # Adam over a group: iterations and learning rate, then two slots per variable of that group only
    for name, module in (("generator", net.generator), ("discriminator", net.discriminator)):
        assert len(trainer.optimizers[name].variables) == 2 + 2 * len(module.trainable_variables)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(g_before, net.generator.trainable_variables))
    assert any(
        not np.array_equal(a, b.numpy()) for a, b in zip(d_before, net.discriminator.trainable_variables)
    )
    assert np.isfinite([h["train_loss"] for h in history]).all()

    # the reference: the network's own step with two hand-made Adam optimizers on the same batches
    reference = make_gan()
    optimizers = {"generator": keras.optimizers.Adam(1e-3), "discriminator": keras.optimizers.Adam(1e-3)}
    losses = gan_losses()
    keras.utils.set_random_seed(0)  # what fit does first (seed=0)
    for _ in range(2):
        for batch in gan_batches():
            reference.training_step(reference.prepare_batch(batch), optimizers, losses)
    assert_same_weights(trainer.network, reference, atol=1e-6)

    from safetensors import safe_open

    with safe_open(str(tmp_path / "checkpoints" / "last.safetensors"), "np") as f:
        keys = list(f.keys())
    assert any("optimizer_generator" in k for k in keys) and any("optimizer_discriminator" in k for k in keys)


def test_set_lr_and_schedules_reach_every_group():
    from delira.training import TfNetworkTrainer

    trainer = TfNetworkTrainer(
        make_gan(),
        gan_losses(),
        lr=1e-3,
        scheduler="step",
        verbose=False,
        scheduler_kwargs={"step_size": 1, "gamma": 0.5},
    )
    history = trainer.fit(gan_batches(), epochs=2)
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 5e-4])
    for opt in trainer.optimizers.values():
        assert float(np.asarray(opt.learning_rate)) == pytest.approx(5e-4)
    trainer.set_lr(0.25)
    assert trainer.get_lr() == pytest.approx(0.25)
    assert [float(np.asarray(o.learning_rate)) for o in trainer.optimizers.values()] == pytest.approx(
        [0.25] * 2
    )


def test_gan_resume_equals_uninterrupted_run(tmp_path):
    from delira.training import TfNetworkTrainer

    straight = TfNetworkTrainer(make_gan(), gan_losses(), lr=1e-3, verbose=False)
    h_straight = straight.fit(gan_batches(), epochs=2)
    first = TfNetworkTrainer(
        make_gan(), gan_losses(), lr=1e-3, save_dir=tmp_path, callbacks=[StopAfter(0)], verbose=False
    )
    assert len(first.fit(gan_batches(), epochs=2)) == 1
    resumed = TfNetworkTrainer(make_gan(seed=5), gan_losses(), lr=1e-3, save_dir=tmp_path, verbose=False)
    h_resumed = resumed.fit(gan_batches(), epochs=2, resume_from="last")
    assert h_resumed == h_straight
    assert_same_weights(resumed.network, straight.network)
    for name in ("generator", "discriminator"):
        for a, b in zip(resumed.optimizers[name].variables, straight.optimizers[name].variables):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name}: {a.path}")


def test_groups_with_the_default_step_and_built_optimizers_are_refused():
    import keras

    from delira.models.tf import UNet
    from delira.training import TfNetworkTrainer

    class Grouped(UNet):
        def optimizer_groups(self):
            half = len(self.trainable_variables) // 2
            return {"a": self.trainable_variables[:half], "b": self.trainable_variables[half:]}

    keras.utils.set_random_seed(0)
    with pytest.raises(ValueError, match=r"optimizer groups \['a', 'b'\] but uses the default training step"):
        make_trainer(Grouped(spatial_dims=3, num_classes=2, features=(4, 8))).fit(gan_batches(), epochs=1)
    built = keras.optimizers.Adam(1e-3)
    built.build(make_gan().generator.trainable_variables)
    with pytest.raises(ValueError, match="already built, so it cannot be copied for the parameter group"):
        TfNetworkTrainer(make_gan(), gan_losses(), optimizer=built, verbose=False).fit(
            gan_batches(), epochs=1
        )
    # an unbuilt instance serves the first group and a copy of it the second
    trainer = TfNetworkTrainer(make_gan(), gan_losses(), optimizer=keras.optimizers.SGD(0.01), verbose=False)
    trainer.fit(gan_batches(), epochs=1)
    assert [type(o).__name__ for o in trainer.optimizers.values()] == ["SGD", "SGD"]
    assert trainer.optimizers["discriminator"] is not trainer.optimizers["generator"]
