"""``PyTorchNetworkTrainer``: the training loop for ``delira.models.torch`` networks, with mixed
precision, gradient accumulation and clipping, and DistributedDataParallel under ``torchrun`` or
SLURM's ``srun``."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from delira.training.distributed import ClusterEnvironment, init_torch_distributed, torch_distributed_active
from delira.training.trainer_base import BaseNetworkTrainer

__all__ = ["PyTorchNetworkTrainer"]

_AUTOCAST = {"bf16": torch.bfloat16, "16": torch.float16}


class PyTorchNetworkTrainer(BaseNetworkTrainer):
    """Trains a ``delira.models.torch`` network; arguments as in
    :class:`~delira.training.trainer_base.BaseNetworkTrainer`, with these PyTorch specifics:

    - ``optimizer``: ``"adam"``, ``"adamw"``, ``"sgd"`` (``torch.optim``) or a callable
      ``fn(parameters) -> torch.optim.Optimizer``;
    - ``scheduler``: ``"cosine"``, ``"step"``, ``"poly"``, ``"onecycle"``
      (:mod:`delira.training.schedules`), or a callable ``fn(optimizer) -> scheduler`` whose
      ``step()`` is called at the end of every epoch (``torch.optim.lr_scheduler``; a
      ``ReduceLROnPlateau`` gets the monitored value); its state is saved in checkpoints;
    - ``precision``: ``"bf16"`` / ``"16"`` run the forward pass and the losses under
      ``torch.autocast``; ``"16"`` scales the loss with a ``torch.amp.GradScaler``;
    - distributed: when :meth:`~delira.training.distributed.ClusterEnvironment.detect` finds several
      processes (started by ``torchrun``, or by ``srun`` under SLURM) or a process group runs, the
      process group is started (gloo on the CPU, nccl on CUDA; ``cuda`` becomes
      ``cuda:<local rank>``), the network is wrapped in ``DistributedDataParallel``, each rank trains
      on its share of every epoch (:func:`~delira.training.distributed.shard_loader`), losses and
      metrics are averaged over the ranks, and only rank 0 logs and saves checkpoints (see
      ``docs/distributed.md``).

    Networks that override ``training_step`` (e.g. a GAN with its alternating step) are trained by
    calling their ``training_step``; mixed precision, accumulation and clipping then do not apply.
    """

    framework = "torch"

    def _setup(self) -> None:
        if self.optimizer is not None:
            return
        net = self.network
        if not hasattr(net, "split_batch") or not hasattr(net, "compute_losses"):
            raise TypeError(
                f"PyTorchNetworkTrainer needs a delira.models.torch network (prepare_batch, split_batch, "
                f"compute_losses); got {type(net).__name__}; subclass delira.models.torch.AbstractNetwork"
            )
        device = str(self.device)
        env = ClusterEnvironment.detect()
        if env.is_distributed or torch_distributed_active():
            if device.startswith("cuda") and ":" not in device:
                device = f"cuda:{env.local_rank}"
            self.rank, self.world_size = init_torch_distributed(device, env)
        self.torch_device = torch.device(device)
        net.to(self.torch_device)
        self.model: torch.nn.Module = net
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.torch_device.index] if self.torch_device.type == "cuda" else None
            self.model = DistributedDataParallel(net, device_ids=ids)
        from delira.models.torch import AbstractNetwork

        self._custom_step = type(net).training_step is not AbstractNetwork.training_step
        if self._custom_step and (self.precision != "32" or self.grad_accumulation > 1 or self.grad_clip):
            raise ValueError(
                f"{type(net).__name__} has its own training_step, which the trainer calls as it is; "
                "precision, grad_accumulation and grad_clip do not apply to it; leave them at their defaults"
            )
        spec = self.optimizer_spec

        def make_optimizer(parameters: Any) -> Any:
            if isinstance(spec, str):
                cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[
                    spec.lower()
                ]
                return cls(parameters, lr=self.lr, **self.optimizer_kwargs)
            if callable(spec):
                return spec(parameters)
            raise TypeError(
                f"optimizer must be a name or a callable(parameters) -> optimizer, got {type(spec).__name__}"
            )

        # A network with several parameter groups (a GAN's generator and discriminator) names them in
        # optimizer_groups(); each gets an optimizer of its own, passed to its training_step by name.
        groups = net.optimizer_groups() if hasattr(net, "optimizer_groups") else None
        if groups:
            self.optimizers = {name: make_optimizer(params) for name, params in groups.items()}
            self.optimizer = next(iter(self.optimizers.values()))
        else:
            self.optimizer = make_optimizer(net.parameters())
            self.optimizers = {"default": self.optimizer}
        self.schedulers: dict[str, Any] = {}
        if callable(self.scheduler_spec) and not isinstance(self.scheduler_spec, str):
            # one scheduler per optimizer: a GAN's discriminator follows the same schedule
            self.schedulers = {name: self.scheduler_spec(opt) for name, opt in self.optimizers.items()}
            self.scheduler = next(iter(self.schedulers.values()))
        self.scaler = torch.amp.GradScaler(self.torch_device.type) if self.precision == "16" else None
        self._autocast_dtype = _AUTOCAST.get(self.precision)

    # --- steps -----------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=self._autocast_dtype)

    def _train_step(
        self, batch: Mapping[str, Any], step_now: bool, context: tuple[int, int]
    ) -> dict[str, float]:
        net = self.network
        prepared = net.prepare_batch(batch, self.torch_device)
        if self.device_transforms:
            prepared = self._prepare_transforms(prepared, context)
        if self._custom_step:
            values, _ = net.training_step(prepared, self.optimizers, self.losses)
            values = dict(values)
            values["loss"] = values.get("total", sum(values.values()))
            return values
        inputs, targets = net.split_batch(prepared)
        sync = contextlib.nullcontext()
        if self.world_size > 1 and not step_now:
            sync = self.model.no_sync()  # accumulate locally, all-reduce on the stepping iteration
        with sync:
            with self._autocast():
                predictions = self.model(inputs)
                values = self._compute_losses(predictions, targets)
                total = next(iter(values.values())) if len(values) == 1 else sum(values.values())
            scaled = total / self.grad_accumulation if self.grad_accumulation > 1 else total
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        if step_now:
            if self.grad_clip is not None:
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        result = {name: float(value.detach()) for name, value in values.items()}
        result["loss"] = float(total.detach()) if len(values) > 1 else next(iter(result.values()))
        return result

    def _eval_step(self, batch: Mapping[str, Any]) -> tuple[float, np.ndarray]:
        net = self.network
        prepared = net.prepare_batch(batch, self.torch_device)
        with torch.no_grad(), self._autocast():
            inputs, targets = net.split_batch(prepared)
            predictions = net(inputs)
            total = sum(self._compute_losses(predictions, targets).values())
            main = net.main_output(predictions)
        return float(total), main.detach().float().cpu().numpy()

    def _set_train_mode(self, training: bool) -> None:
        self.network.train(training)

    # --- learning rate and schedules ---------------------------------------------------------------
    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, value: float) -> None:
        """Set the learning rate of every parameter group of every optimizer (all of a GAN's)."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = value

    def _epoch_end_schedule(self) -> None:
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                last = self.history[-1] if self.history else {}
                value = last.get(self.monitor)
                if value is not None:
                    scheduler.step(value)
            else:
                scheduler.step()

    # --- checkpoints and distribution ------------------------------------------------------------
    def _checkpoint_objects(self) -> tuple[Any, Any]:
        optimizers: dict[str, Any] = (
            {f"optimizer_{name}": opt for name, opt in self.optimizers.items()}
            if len(self.optimizers) > 1
            else {"optimizer": self.optimizer}
        )
        if len(self.schedulers) == 1:
            optimizers["scheduler"] = self.scheduler
        else:
            optimizers.update({f"scheduler_{name}": sch for name, sch in self.schedulers.items()})
        if self.scaler is not None:
            optimizers["grad_scaler"] = self.scaler
        return self.network, optimizers

    def _all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        if self.world_size <= 1:
            return values
        import torch.distributed as dist

        tensor = torch.from_numpy(values.astype(np.float64))
        if self.torch_device.type == "cuda":
            tensor = tensor.to(self.torch_device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()
