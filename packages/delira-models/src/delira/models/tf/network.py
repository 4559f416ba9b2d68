"""``AbstractNetwork`` for TensorFlow: a Keras 3 model with the interface the trainers use."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from delira.models._steps import require_keys, select_losses, select_optimizer

__all__ = ["AbstractNetwork", "check_backend", "to_tensor"]


def check_backend() -> None:
    """Raise ImportError unless Keras runs on TensorFlow (the steps use ``tf.GradientTape``)."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"delira.models.tf needs Keras on the TensorFlow backend; KERAS_BACKEND is {backend!r}; "
            "set KERAS_BACKEND=tensorflow before importing keras"
        )


def to_tensor(value: Any) -> Any:
    """Convert one batch entry to a tensor: floating arrays to float32, integer and bool arrays to
    int64; tensors are cast the same way; anything else is returned as it is."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return tf.convert_to_tensor(value.astype(np.float32, copy=False))
        if value.dtype.kind in "biu":
            return tf.convert_to_tensor(value.astype(np.int64, copy=False))
        return value
    if isinstance(value, tf.Tensor):
        if value.dtype.is_floating and value.dtype != tf.float32:
            return tf.cast(value, tf.float32)
        if value.dtype.is_integer and value.dtype != tf.int64:
            return tf.cast(value, tf.int64)
    return value


class AbstractNetwork(keras.Model):
    """Base of every Delira TensorFlow network (after delira's ``AbstractTfNetwork``), a Keras 3 model.

    A subclass implements ``call(inputs, training=None)`` and sets ``input_key`` / ``target_key``;
    it inherits:

    - ``prepare_batch(batch, device)``: numpy batch dict -> tensors (on ``device`` if given);
    - ``training_step(batch, optimizers, losses)``: one optimisation step under ``tf.GradientTape``,
      returning ``({loss name: float}, predictions)``; a GAN overrides it with its alternating step.

    Inputs and outputs are channels first, ``(N, C, *spatial)``, exactly as in
    ``delira.models.torch``; internally the layers run channels last (fast on CPU) and the network
    transposes at its input and output. Losses follow Keras' order, ``loss(targets, predictions)``,
    so ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` works as it is for
    ``(N, K)`` logits; for channels-first segmentation logits wrap it in
    ``delira.models.tf.losses.channels_first``. The step runs the network with ``training=True``.
    Weights exist from construction on: no build call or dummy input is needed.
    """

    input_key: str = "data"
    target_key: str | None = None

    @property
    def config(self) -> Any:
        """The validated constructor arguments (a dataclass from ``delira.models.configs``)."""
        return self._config

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (for ``keras.saving``)."""
        return self._config.as_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AbstractNetwork:
        """Rebuild from ``get_config()``."""
        return cls(**config)

    def num_parameters(self) -> int:
        """Number of trainable parameters (moving statistics of batch norm excluded)."""
        return int(sum(np.prod(w.shape) for w in self.trainable_weights))

    def prepare_batch(self, batch: Mapping[str, Any], device: str | None = None) -> dict[str, Any]:
        """Convert a numpy batch dict to tensors (see ``to_tensor``).

        Args:
            batch: e.g. ``{"data": (N, C, *spatial) float32, "label": (N,) int}``, channels first.
            device: a TensorFlow device name such as ``"/GPU:0"``; None lets TensorFlow place them.

        Returns:
            A new dict with the same keys: float32 / int64 tensors, other entries unchanged.
        """
        scope = tf.device(device) if device is not None else contextlib.nullcontext()
        with scope:
            return {key: to_tensor(value) for key, value in batch.items()}

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """The network input and the training target of a prepared batch:
        ``(batch[input_key], batch[target_key])``; subclasses reshape targets."""
        keys = (self.input_key,) if self.target_key is None else (self.input_key, self.target_key)
        require_keys(batch, keys, type(self).__name__)
        return batch[self.input_key], None if self.target_key is None else batch[self.target_key]

    def compute_losses(
        self, predictions: Any, targets: Any, losses: Mapping[str, Callable[..., Any]]
    ) -> dict[str, Any]:
        """Every loss on the predictions: ``{name: losses[name](targets, predictions)}`` (scalars)."""
        return {name: fn(targets, predictions) for name, fn in losses.items()}

    def main_output(self, predictions: Any) -> Any:
        """The prediction that metrics use (the full-resolution one where there are several)."""
        return predictions

    def training_step(
        self,
        batch: Mapping[str, Any],
        optimizers: Mapping[str, keras.optimizers.Optimizer],
        losses: Mapping[str, Callable[..., Any]],
    ) -> tuple[dict[str, float], Any]:
        """One optimisation step on a prepared batch.

        The step runs as a ``tf.function`` (traced once per optimizer, set of losses and input
        shape); set ``model.run_eagerly = True`` to run it eagerly, e.g. for debugging.

        Args:
            batch: the output of ``prepare_batch``.
            optimizers: ``{"default": keras optimizer}`` (a dict with one optimizer under any name works).
            losses: ``{name: loss(targets, predictions)}``; their sum is minimised.

        Returns:
            ``(loss values, predictions)``: a dict of Python floats, one per loss plus ``"total"``
            when there are several, and the predictions (e.g. ``(N, num_classes) float32``).
        """
        name = type(self).__name__
        optimizer = select_optimizer(optimizers, name)
        losses = select_losses(losses, name)
        inputs, targets = self.split_batch(batch)
        step = self._step_function(
            ("default", id(optimizer), *((k, id(fn)) for k, fn in losses.items())),
            lambda: self._default_step(optimizer, losses),
            [(optimizer, self.trainable_variables)],
        )
        values, total, predictions = step(inputs, targets)
        result = {key: float(value) for key, value in values.items()}
        if len(values) > 1:
            result["total"] = float(total)
        return result, predictions

    def _default_step(
        self, optimizer: keras.optimizers.Optimizer, losses: Mapping[str, Callable[..., Any]]
    ) -> Callable[[Any, Any], tuple[dict[str, Any], Any, Any]]:
        """The body of ``training_step`` for one optimizer and set of losses."""

        def step(inputs: Any, targets: Any) -> tuple[dict[str, Any], Any, Any]:
            variables = self.trainable_variables
            with tf.GradientTape() as tape:
                predictions = self(inputs, training=True)
                values = self.compute_losses(predictions, targets, losses)
                total = tf.add_n(list(values.values()))
                if self.losses:  # regularisation terms added by layers
                    total = total + tf.add_n(self.losses)
            optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
            return values, total, self.main_output(predictions)

        return step

    def _step_function(
        self,
        key: tuple[Any, ...],
        make: Callable[[], Callable[..., Any]],
        optimized: list[tuple[keras.optimizers.Optimizer, list[Any]]],
    ) -> Callable[..., Any]:
        """The step for ``key``, made by ``make()`` and wrapped in ``tf.function`` unless
        ``run_eagerly``. Each optimizer in ``optimized`` is built first for its variables, so that
        no variable is created while tracing."""
        if self.run_eagerly:
            return make()
        cache = self.__dict__.setdefault("_delira_steps", {})
        if key not in cache:
            for optimizer, variables in optimized:
                if not optimizer.built:
                    optimizer.build(variables)
            cache.clear()  # keep one traced step: a new optimizer or set of losses replaces it
            # autograph=False: the steps use no tensor-dependent Python control flow, and loss
            # callables are traced as they are
            cache[key] = tf.function(make(), reduce_retracing=True, autograph=False)
        return cache[key]
