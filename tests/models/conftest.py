"""Shared pieces of the delira.models tests: small model configurations and one adapter per framework.

``fw`` runs each test that asks for it once per framework (marked ``torch`` / ``tf``, so a missing
framework skips with the reason). ``case`` runs it once per small model configuration in ``CASES``.
"""

from __future__ import annotations

import importlib.util
import os
import random
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Small configurations of every model: tiny widths, 16^3 / 32^2 inputs. "spatial" is the input size
# used with them; "input" says what the network takes.
CASES: dict[str, dict[str, Any]] = {
    "resnet18": {"name": "resnet18", "kwargs": {"in_channels": 2, "num_classes": 3, "width": 4}},
    "resnet34": {"name": "resnet34", "kwargs": {"in_channels": 2, "num_classes": 3, "width": 4}},
    "resnet50": {"name": "resnet50", "kwargs": {"in_channels": 2, "num_classes": 3, "width": 2}},
    "unet": {
        "name": "unet",
        "kwargs": {"in_channels": 2, "num_classes": 3, "base_features": 4, "num_stages": 3},
    },
    "unet_batch_residual_interpolate_ds": {
        "name": "unet",
        "kwargs": {
            "in_channels": 2,
            "num_classes": 3,
            "features": (4, 6, 8),
            "norm": "batch",
            "block": "residual",
            "upsample": "interpolate",
            "deep_supervision": True,
        },
    },
    "dcgan_generator": {
        "name": "dcgan_generator",
        "kwargs": {"latent_dim": 8, "out_channels": 2, "image_size": 16, "base_features": 4},
    },
    "dcgan_discriminator": {
        "name": "dcgan_discriminator",
        "kwargs": {"in_channels": 2, "image_size": 16, "base_features": 4},
    },
    "dcgan": {
        "name": "dcgan",
        "kwargs": {
            "latent_dim": 8,
            "channels": 2,
            "image_size": 16,
            "generator_features": 4,
            "discriminator_features": 4,
        },
    },
}

SPATIAL = {2: 32, 3: 16}  # input side length per spatial_dims


def case_input(case: dict[str, Any], spatial_dims: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """A float32 input for a case: latent vectors for generators, channels-first images otherwise."""
    rng = np.random.default_rng(seed)
    kwargs = case["kwargs"]
    if case["name"] in ("dcgan_generator", "dcgan"):
        return rng.standard_normal((n, kwargs["latent_dim"])).astype(np.float32)
    channels = kwargs.get("in_channels", kwargs.get("channels"))
    size = kwargs.get("image_size", SPATIAL[spatial_dims])
    return rng.standard_normal((n, channels, *[size] * spatial_dims)).astype(np.float32)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", list(CASES.values()), ids=list(CASES))


class TorchFramework:
    """The PyTorch side of a test, behind the same methods as ``TfFramework``."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def seed(self, seed: int) -> None:
        random.seed(seed)
        self.torch.manual_seed(seed)

    def build(self, name: str, **kwargs: Any) -> Any:
        from delira.models import get_model

        return get_model(name, backend="torch", **kwargs)

    def forward(self, model: Any, x: np.ndarray, training: bool = False) -> Any:
        model.train(training)
        with self.torch.no_grad():
            out = model(self.torch.from_numpy(x))
        return [o.numpy() for o in out] if isinstance(out, list) else out.numpy()

    def gradients(self, model: Any, x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
        """Gradients of a squared error against random targets, for every trainable weight."""
        model.train()
        model.zero_grad()
        out = model(self.torch.from_numpy(x))
        outputs = out if isinstance(out, list) else [out]
        gen = self.torch.Generator().manual_seed(seed)
        loss = sum(((o - self.torch.randn(o.shape, generator=gen)) ** 2).mean() for o in outputs)
        loss.backward()
        return {
            name: (None if p.grad is None else p.grad.numpy().copy())
            for name, p in model.named_parameters()
            if p.requires_grad
        }

    def num_parameters(self, model: Any) -> int:
        return sum(p.numel() for p in model.parameters())

    def optimizers(self, model: Any, lr: float, **groups: Any) -> dict[str, Any]:
        if groups:
            return {k: self.torch.optim.Adam(m.parameters(), lr=lr) for k, m in groups.items()}
        return {"default": self.torch.optim.Adam(model.parameters(), lr=lr)}

    def losses(self, kind: str) -> dict[str, Any]:
        nn = self.torch.nn
        if kind == "ce":
            return {"ce": nn.CrossEntropyLoss()}
        if kind == "mse":
            return {"mse": nn.MSELoss()}
        bce = nn.BCEWithLogitsLoss()
        if kind == "bce":
            return {"bce": lambda logits, labels: bce(logits, labels.float())}
        return {"adversarial": bce}

    def step(
        self, model: Any, batch: dict[str, np.ndarray], optimizers: Any, losses: Any, eager: bool = False
    ) -> tuple[dict, Any]:
        """``model.training_step`` on the prepared batch, in training mode (``eager`` is for TF)."""
        model.train()
        return model.training_step(model.prepare_batch(batch, "cpu"), optimizers, losses)

    def weights(self, model: Any) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in model.parameters()]


class TfFramework:
    """The TensorFlow / Keras side of a test."""

    name = "tf"

    def __init__(self) -> None:
        import keras
        import tensorflow as tf

        self.tf = tf
        self.keras = keras

    def seed(self, seed: int) -> None:
        self.keras.utils.set_random_seed(seed)

    def build(self, name: str, **kwargs: Any) -> Any:
        from delira.models import get_model

        return get_model(name, backend="tf", **kwargs)

    def forward(self, model: Any, x: np.ndarray, training: bool = False) -> Any:
        out = model(x, training=training)
        return [np.asarray(o) for o in out] if isinstance(out, list) else np.asarray(out)

    def gradients(self, model: Any, x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
        tf = self.tf
        rng = np.random.default_rng(seed)
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            outputs = out if isinstance(out, list) else [out]
            loss = tf.add_n(
                [
                    tf.reduce_mean((o - rng.standard_normal(tuple(o.shape)).astype(np.float32)) ** 2)
                    for o in outputs
                ]
            )
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        return {v.path: (None if g is None else np.asarray(g)) for v, g in zip(variables, grads)}

    def num_parameters(self, model: Any) -> int:
        return int(sum(np.prod(w.shape) for w in model.trainable_weights))

    def optimizers(self, model: Any, lr: float, **groups: Any) -> dict[str, Any]:
        if groups:
            return {k: self.keras.optimizers.Adam(learning_rate=lr) for k in groups}
        return {"default": self.keras.optimizers.Adam(learning_rate=lr)}

    def losses(self, kind: str) -> dict[str, Any]:
        losses = self.keras.losses
        if kind == "ce":
            from delira.models.tf import channels_first

            return {"ce": channels_first(losses.SparseCategoricalCrossentropy(from_logits=True))}
        if kind == "mse":
            return {"mse": losses.MeanSquaredError()}
        bce = losses.BinaryCrossentropy(from_logits=True)
        if kind == "bce":
            return {"bce": lambda labels, logits: bce(self.tf.cast(labels, self.tf.float32), logits)}
        return {"adversarial": bce}

    def step(
        self, model: Any, batch: dict[str, np.ndarray], optimizers: Any, losses: Any, eager: bool = False
    ) -> tuple[dict, Any]:
        """``model.training_step`` on the prepared batch; ``eager=True`` skips the ``tf.function``
        (cheaper than tracing a deep network for the few steps a test takes)."""
        model.run_eagerly = eager
        return model.training_step(model.prepare_batch(batch), optimizers, losses)

    def weights(self, model: Any) -> list[np.ndarray]:
        return [np.asarray(v).copy() for v in model.trainable_weights]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Run PyTorch single-threaded in these tests (tiny tensors: threads cost more than they
    give, on a shared machine), and restore the setting afterwards."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(
    params=[pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)],
    scope="session",
)
def fw(request: pytest.FixtureRequest) -> Any:
    """The framework adapter: ``TorchFramework()`` or ``TfFramework()``."""
    return TorchFramework() if request.param == "torch" else TfFramework()


@pytest.fixture(scope="session")
def torch_fw() -> TorchFramework:
    """The PyTorch adapter (for tests marked ``torch`` that need both frameworks)."""
    return TorchFramework()


@pytest.fixture(scope="session")
def tf_fw() -> TfFramework:
    """The TensorFlow adapter (for tests marked ``tf`` that need both frameworks)."""
    return TfFramework()


@pytest.fixture(scope="session")
def cases() -> dict[str, dict[str, Any]]:
    """``CASES``: the small configurations by name."""
    return CASES


@pytest.fixture(scope="session")
def make_input() -> Any:
    """``case_input(case, spatial_dims, n=2, seed=0)``: a test input for a case."""
    return case_input
