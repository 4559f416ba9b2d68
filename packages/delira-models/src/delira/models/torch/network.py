"""``AbstractNetwork`` for PyTorch: the interface the trainers use, with a default training step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from delira.models._steps import require_keys, select_losses, select_optimizer

__all__ = ["AbstractNetwork", "to_tensor"]


def to_tensor(value: Any, device: torch.device | str | None = None) -> Any:
    """Convert one batch entry to a tensor on ``device``.

    Floating arrays become float32 tensors, integer and bool arrays int64 tensors; tensors are moved
    to ``device`` (float64 ones cast to float32); anything else (ids, strings) is returned as it is.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        elif value.dtype.kind in "biu":
            value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.int64))
        else:
            return value
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.float64:
            value = value.float()
        return value.to(device) if device is not None else value
    return value


class AbstractNetwork(nn.Module):
    """Base of every Delira PyTorch network (after delira's ``AbstractPyTorchNetwork``).

    A subclass implements ``forward`` and sets ``input_key`` / ``target_key``; it inherits:

    - ``prepare_batch(batch, device)``: numpy batch dict -> tensors on ``device``;
    - ``training_step(batch, optimizers, losses)``: one optimisation step, returning
      ``({loss name: float}, predictions)``; a GAN overrides it with its alternating step.

    Batches are dicts of channels-first arrays: ``"data"`` ``(N, C, *spatial) float32``, ``"seg"``
    ``(N, 1, *spatial) int``, ``"label"`` ``(N,) int``. Losses follow PyTorch's order,
    ``loss(predictions, targets)``, so ``torch.nn.CrossEntropyLoss()`` works as it is.
    The step runs in the module's current mode: call ``model.train()`` first (trainers do).
    """

    input_key: str = "data"
    target_key: str | None = None

    @property
    def config(self) -> Any:
        """The validated constructor arguments (a dataclass from ``delira.models.configs``)."""
        return self._config

    def num_parameters(self) -> int:
        """Number of trainable parameters (the figure both frameworks agree on)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def prepare_batch(
        self, batch: Mapping[str, Any], device: torch.device | str | None = None
    ) -> dict[str, Any]:
        """Convert a numpy batch dict to tensors on ``device`` (see ``to_tensor``).

        Args:
            batch: e.g. ``{"data": (N, C, *spatial) float32, "seg": (N, 1, *spatial) int}``.
            device: a torch device or its name; None leaves tensors where they are (numpy: CPU).

        Returns:
            A new dict with the same keys: float32 / int64 tensors, other entries unchanged.
        """
        return {key: to_tensor(value, device) for key, value in batch.items()}

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, Any]:
        """The network input and the training target of a prepared batch.

        Returns:
            ``(batch[input_key], batch[target_key])``; subclasses reshape targets (UNet drops the
            channel axis of ``"seg"``).
        """
        keys = (self.input_key,) if self.target_key is None else (self.input_key, self.target_key)
        require_keys(batch, keys, type(self).__name__)
        return batch[self.input_key], None if self.target_key is None else batch[self.target_key]

    def compute_losses(
        self, predictions: Any, targets: Any, losses: Mapping[str, Callable[..., torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Every loss on the predictions: ``{name: losses[name](predictions, targets)}`` (scalars)."""
        return {name: fn(predictions, targets) for name, fn in losses.items()}

    def main_output(self, predictions: Any) -> torch.Tensor:
        """The prediction that metrics use (the full-resolution one where there are several)."""
        return predictions

    def training_step(
        self,
        batch: Mapping[str, Any],
        optimizers: Mapping[str, torch.optim.Optimizer],
        losses: Mapping[str, Callable[..., torch.Tensor]],
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One optimisation step on a prepared batch.

        Args:
            batch: the output of ``prepare_batch``.
            optimizers: ``{"default": optimizer}`` (a dict with one optimizer under any name works).
            losses: ``{name: loss(predictions, targets)}``; their sum is minimised.

        Returns:
            ``(loss values, predictions)``: a dict of Python floats, one per loss plus ``"total"``
            when there are several, and the detached predictions (e.g. ``(N, num_classes) float32``).
        """
        name = type(self).__name__
        optimizer = select_optimizer(optimizers, name)
        losses = select_losses(losses, name)
        inputs, targets = self.split_batch(batch)
        optimizer.zero_grad(set_to_none=True)
        predictions = self(inputs)
        values = self.compute_losses(predictions, targets, losses)
        total = sum(values.values())
        total.backward()
        optimizer.step()
        result = {key: float(value.detach()) for key, value in values.items()}
        if len(values) > 1:
            result["total"] = float(total.detach())
        return result, self.main_output(predictions).detach()
