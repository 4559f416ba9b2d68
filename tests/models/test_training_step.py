"""The trainer interface: prepare_batch, the default training_step, deep supervision and the
alternating DCGAN step, in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest


def tiny_unet(fw, **kwargs):
    return fw.build("unet", in_channels=2, num_classes=3, base_features=2, num_stages=3, **kwargs)


def seg_batch(n=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "data": rng.standard_normal((n, 2, size, size)),  # float64 on purpose
        "seg": rng.integers(0, 3, size=(n, 1, size, size)).astype(np.int32),
        "id": ["a", "b"][:n],
    }


def test_prepare_batch_converts_dtypes(fw):
    model = tiny_unet(fw)
    batch = model.prepare_batch(seg_batch())
    assert batch["id"] == ["a", "b"]  # non-array entries pass through
    dtype_name = (lambda t: t.dtype.name) if fw.name == "tf" else (lambda t: str(t.dtype))
    assert dtype_name(batch["data"]).endswith("float32")
    assert dtype_name(batch["seg"]).endswith("int64")
    assert tuple(batch["data"].shape) == (2, 2, 16, 16)
    if fw.name == "torch":
        assert batch["data"].device.type == "cpu"


def test_default_step_returns_float_losses_and_predictions(fw):
    fw.seed(0)
    model = tiny_unet(fw)
    before = fw.weights(model)
    losses = {**fw.losses("ce"), "ce2": fw.losses("ce")["ce"]}
    values, predictions = fw.step(model, seg_batch(), fw.optimizers(model, 1e-2), losses)
    assert set(values) == {"ce", "ce2", "total"}
    assert all(isinstance(v, float) for v in values.values())
    assert values["total"] == pytest.approx(values["ce"] + values["ce2"], rel=1e-5)
    assert values["ce"] == pytest.approx(values["ce2"], rel=1e-6)
    assert tuple(predictions.shape) == (2, 3, 16, 16)
    after = fw.weights(model)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after)), "a step must move every weight"


def test_step_errors_name_what_is_missing(fw):
    model = tiny_unet(fw)
    batch = model.prepare_batch(seg_batch())
    optimizers = fw.optimizers(model, 1e-3)
    with pytest.raises(KeyError, match=r"needs batch keys \['data', 'seg'\]; missing \['seg'\]"):
        model.training_step({"data": batch["data"]}, optimizers, fw.losses("ce"))
    with pytest.raises(ValueError, match="non-empty dict of loss callables"):
        model.training_step(batch, optimizers, {})
    two = {"a": optimizers["default"], "b": optimizers["default"]}
    with pytest.raises(ValueError, match="needs an optimizer under 'default'; got keys \\['a', 'b'\\]"):
        model.training_step(batch, two, fw.losses("ce"))


def softmax_ce(logits, target):
    """Reference cross-entropy in numpy: logits (N, K, *S), target (N, *S) -> mean over voxels."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    picked = np.take_along_axis(log_p, target[:, None], axis=1)
    return float(-picked.mean())


def test_deep_supervision_loss_is_the_weighted_sum(fw):
    fw.seed(0)
    model = fw.build(
        "unet", in_channels=2, num_classes=3, base_features=2, num_stages=4, deep_supervision=True
    )
    batch = seg_batch()
    outputs = fw.forward(model, batch["data"].astype(np.float32), training=False)
    assert [o.shape for o in outputs] == [(2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
    seg = batch["seg"][:, 0].astype(np.int64)
    # nnU-Net's weights: 1, 1/2 and 0 for the lowest resolution, normalised
    expected = (1.0 * softmax_ce(outputs[0], seg) + 0.5 * softmax_ce(outputs[1], seg[:, ::2, ::2])) / 1.5
    prepared = model.prepare_batch(batch)
    _, targets = model.split_batch(prepared)
    if fw.name == "torch":
        import torch

        preds = [torch.from_numpy(o) for o in outputs]
    else:
        preds = outputs
    values = model.compute_losses(preds, targets, fw.losses("ce"))
    assert float(values["ce"]) == pytest.approx(expected, rel=1e-5)
    # and the step itself: one float per loss, full-resolution predictions
    result, predictions = fw.step(model, batch, fw.optimizers(model, 1e-3), fw.losses("ce"))
    assert set(result) == {"ce"} and tuple(predictions.shape) == (2, 3, 16, 16)


@pytest.mark.tf
def test_traced_tf_step_equals_eager_step(tf_fw):
    losses = tf_fw.losses("ce")
    runs = []
    for eager in (True, False):
        tf_fw.seed(4)
        model = tiny_unet(tf_fw, norm="batch", deep_supervision=True)
        # plain SGD: its update is proportional to the gradient, so rounding differences between
        # traced and eager kernels stay small (Adam's first steps follow only the gradient's sign)
        optimizers = {"default": tf_fw.keras.optimizers.SGD(learning_rate=0.1)}
        history = [tf_fw.step(model, seg_batch(), optimizers, losses, eager=eager)[0]["ce"] for _ in range(3)]
        runs.append((history, tf_fw.weights(model), [np.asarray(v) for v in model.non_trainable_weights]))
    (h_eager, w_eager, s_eager), (h_graph, w_graph, s_graph) = runs
    np.testing.assert_allclose(h_graph, h_eager, rtol=1e-5)
    for a, b in zip(w_graph + s_graph, w_eager + s_eager):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def gan_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"data": np.tanh(2 * rng.standard_normal((n, 1, 16, 16))).astype(np.float32)}


def tiny_gan(fw, seed=0):
    fw.seed(seed)
    return fw.build(
        "dcgan", latent_dim=8, channels=1, image_size=16, generator_features=4, discriminator_features=4
    )


def test_dcgan_step_updates_both_networks(fw):
    model = tiny_gan(fw)
    g_before, d_before = fw.weights(model.generator), fw.weights(model.discriminator)
    optimizers = fw.optimizers(model, 1e-3, generator=model.generator, discriminator=model.discriminator)
    values, fake = fw.step(model, gan_batch(), optimizers, fw.losses("adversarial"))
    assert set(values) == {"discriminator", "generator"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in values.values())
    assert tuple(fake.shape) == (4, 1, 16, 16)
    for before, after in (
        (g_before, fw.weights(model.generator)),
        (d_before, fw.weights(model.discriminator)),
    ):
        assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def run_until(step, better, max_steps=100):
    """Call ``step()`` (returning a loss) until ``better(first, last)`` or ``max_steps``; the losses."""
    history = [step()]
    while len(history) < max_steps and not better(history[0], history[-1]):
        history.append(step())
    return history


def test_dcgan_step_trains_each_side_against_the_other(fw):
    losses = fw.losses("adversarial")
    model = tiny_gan(fw, seed=1)
    batch = gan_batch()

    def optimizers(g_lr, d_lr):
        return {
            "generator": fw.optimizers(model.generator, g_lr)["default"],
            "discriminator": fw.optimizers(model.discriminator, d_lr)["default"],
        }

    # generator frozen (lr 0): the discriminator learns to tell real from fake
    frozen = fw.weights(model.generator)
    opts = optimizers(0.0, 5e-3)
    d_losses = run_until(
        lambda: fw.step(model, batch, opts, losses)[0]["discriminator"], lambda a, b: b <= 0.1 * a
    )
    assert d_losses[-1] <= 0.1 * d_losses[0], d_losses
    assert all(np.array_equal(a, b) for a, b in zip(frozen, fw.weights(model.generator)))
    # then the discriminator frozen: the generator learns to fool it (its loss falls)
    frozen = fw.weights(model.discriminator)
    opts = optimizers(5e-3, 0.0)
    g_losses = run_until(
        lambda: fw.step(model, batch, opts, losses)[0]["generator"], lambda a, b: b <= 0.5 * a
    )
    assert g_losses[-1] <= 0.5 * g_losses[0], g_losses
    assert all(np.array_equal(a, b) for a, b in zip(frozen, fw.weights(model.discriminator)))


def test_dcgan_step_errors(fw):
    model = tiny_gan(fw)
    batch = model.prepare_batch(gan_batch())
    opt = fw.optimizers(model.generator, 1e-3)["default"]
    with pytest.raises(ValueError, match="needs an optimizer under 'discriminator'"):
        model.training_step(batch, {"generator": opt}, fw.losses("adversarial"))
    d_opt = fw.optimizers(model.discriminator, 1e-3)["default"]
    with pytest.raises(KeyError, match="missing \\['adversarial'\\]"):
        model.training_step(batch, {"generator": opt, "discriminator": d_opt}, fw.losses("bce"))


def test_step_takes_changing_input_sizes(fw):
    """A traced TF step generalises over shapes after a few sizes; every layer must cope with
    sizes unknown while tracing."""
    fw.seed(0)
    model = tiny_unet(fw, upsample="interpolate", deep_supervision=True)
    optimizers = fw.optimizers(model, 1e-3)
    for size in (16, 24, 32, 20):
        values, predictions = fw.step(model, seg_batch(size=size), optimizers, fw.losses("ce"))
        assert np.isfinite(values["ce"]) and tuple(predictions.shape) == (2, 3, size, size)
