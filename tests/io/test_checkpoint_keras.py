"""Checkpoints of Keras 3 models (TensorFlow backend): exact resume, stable keys, mismatches."""

from __future__ import annotations

import numpy as np
import pytest

from delira.io import CheckpointError, CheckpointMismatchError, load_checkpoint, save_checkpoint
from delira.io._keras_backend import canonical_keys

pytestmark = pytest.mark.tf


def test_canonical_keys_by_hand():
    paths = [
        "sequential_3/dense_7/kernel",
        "sequential_3/dense_7/bias",
        "seed_generator_2/seed_generator_state",
        "sequential_3/dense_8/kernel",
        "sequential_3/block/conv/kernel",
        "sequential_3/block_1/conv/kernel",
        "sequential_3/dense_8/variable",
        "sequential_3/dense_8/variable",  # two unnamed variables of one layer
    ]
    assert canonical_keys(paths) == [
        "sequential/dense/kernel",
        "sequential/dense/bias",
        "seed_generator/seed_generator_state",
        "sequential/dense_1/kernel",
        "sequential/block/conv/kernel",
        "sequential/block_1/conv/kernel",
        "sequential/dense_1/variable",
        "sequential/dense_1/variable_1",
    ]


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("these tests use Keras' TensorFlow backend")
    return keras


def _model(keras, hidden=8):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )


def _compiled(keras, hidden=8):
    model = _model(keras, hidden)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


_DATA = np.random.default_rng(0).random((32, 6)).astype("float32")


def _train(model, epochs):
    """One fit call per epoch on a numpy-shuffled order (Keras' own shuffle is not checkpointable)."""
    x, y = _DATA[:, :4], _DATA[:, 4:]
    for _ in range(epochs):
        order = np.random.permutation(len(x))  # noqa: NPY002 (the global RNG the checkpoint restores)
        model.fit(x[order], y[order], batch_size=8, epochs=1, shuffle=False, verbose=0)


def _resumed(keras, path, restore_rng):
    keras.utils.set_random_seed(0)
    model = _compiled(keras)
    _train(model, 2)
    save_checkpoint(path, model, model.optimizer, epoch=2)
    keras.utils.set_random_seed(123)  # other seeds and other initial weights
    model = _compiled(keras)
    assert load_checkpoint(path, model, model.optimizer, restore_rng=restore_rng).epoch == 2
    _train(model, 2)
    return model


def test_resume_gives_the_same_weights_as_training_straight(keras, tmp_path):
    keras.utils.set_random_seed(0)
    straight = _compiled(keras)
    _train(straight, 4)
    resumed = _resumed(keras, tmp_path / "k.safetensors", restore_rng=True)
    assert len(straight.variables) == len(resumed.variables) == 9  # incl. BN statistics and dropout seed
    for a, b in zip(straight.variables, resumed.variables):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=a.path)
    for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=a.path)
    # sensitive: without the RNG states the data order differs and so do the weights
    diverged = _resumed(keras, tmp_path / "k.safetensors", restore_rng=False)
    assert not np.array_equal(np.asarray(diverged.variables[0]), np.asarray(straight.variables[0]))


def test_fresh_optimizer_is_built_before_loading(keras, tmp_path):
    keras.utils.set_random_seed(0)
    model = _compiled(keras)
    _train(model, 1)
    save_checkpoint(tmp_path / "k.safetensors", model, {"adam": model.optimizer})
    fresh = _model(keras)
    optimizer = keras.optimizers.Adam(0.01)  # never stepped: no slot variables yet
    load_checkpoint(tmp_path / "k.safetensors", fresh, {"adam": optimizer})
    assert int(np.asarray(optimizer.iterations)) == int(np.asarray(model.optimizer.iterations)) == 4
    for a, b in zip(model.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_mismatched_model_lists_the_keys(keras, tmp_path):
    save_checkpoint(tmp_path / "k.safetensors", _model(keras, hidden=8))
    other = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(16), keras.layers.Dense(2), keras.layers.Dense(3)]
    )
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(tmp_path / "k.safetensors", other)
    error = info.value
    assert error.mismatched["sequential/dense/kernel"] == ((4, 8), (4, 16))
    assert error.mismatched["sequential/dense_1/kernel"] == ((8, 2), (16, 2))
    assert set(error.missing) == {"sequential/dense_2/kernel", "sequential/dense_2/bias"}
    assert "seed_generator/seed_generator_state" in error.unexpected
    assert "sequential/batch_normalization/moving_mean" in error.unexpected
    assert "'sequential/dense/kernel' is [4, 8] in the checkpoint, [4, 16] in the model" in str(error)


def test_unbuilt_model_is_refused_with_a_fix(keras, tmp_path):
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(CheckpointError, match=r"no weights yet; build it first"):
        save_checkpoint(tmp_path / "k.safetensors", unbuilt)


@pytest.mark.torch
def test_torch_checkpoint_cannot_load_into_keras(keras, tmp_path):
    torch = pytest.importorskip("torch")
    save_checkpoint(tmp_path / "t.safetensors", torch.nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match="holds a torch model but the model given is a keras model"):
        load_checkpoint(tmp_path / "t.safetensors", _model(keras))


def test_tensorflow_and_keras_global_generators_are_restored(keras, tmp_path):
    import tensorflow as tf

    model = _model(keras)
    keras.random.normal((2,))  # creates Keras' global SeedGenerator
    save_checkpoint(tmp_path / "k.safetensors", model)
    expected = (tf.random.get_global_generator().normal((3,)).numpy(), np.asarray(keras.random.normal((3,))))
    tf.random.get_global_generator().normal((5,))
    keras.random.normal((5,))
    load_checkpoint(tmp_path / "k.safetensors", model)
    got = (tf.random.get_global_generator().normal((3,)).numpy(), np.asarray(keras.random.normal((3,))))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
