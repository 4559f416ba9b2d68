"""``TfNetworkTrainer``: the training loop for ``delira.models.tf`` (Keras 3) networks, with
Keras mixed precision, gradient accumulation and clipping, and ``tf.distribute`` strategies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from delira.training.distributed import ClusterEnvironment
from delira.training.trainer_base import BaseNetworkTrainer

__all__ = ["TfNetworkTrainer"]

_POLICIES = {"32": "float32", "bf16": "mixed_bfloat16", "16": "mixed_float16"}


def _tf_device(device: str) -> str:
    name = str(device).lower()
    if name == "cpu":
        return "/CPU:0"
    if name.startswith(("cuda", "gpu")):
        index = name.split(":")[1] if ":" in name else "0"
        return f"/GPU:{index}"
    return str(device)


class TfNetworkTrainer(BaseNetworkTrainer):
    """Trains a ``delira.models.tf`` network; arguments as in
    :class:`~delira.training.trainer_base.BaseNetworkTrainer`, with these TensorFlow specifics:

    - ``optimizer``: ``"adam"``, ``"adamw"``, ``"sgd"`` (``keras.optimizers``) or a Keras optimizer
      (then ``lr`` and ``optimizer_kwargs`` are ignored);
    - ``scheduler``: ``"cosine"``, ``"step"``, ``"poly"``, ``"onecycle"``
      (:mod:`delira.training.schedules`), a ``keras.optimizers.schedules.LearningRateSchedule``
      (per optimizer iteration; needs a named optimizer) or a callable ``fn(epoch) -> lr`` applied at
      the start of each epoch;
    - ``precision``: ``"bf16"`` / ``"16"`` need the network built under the matching Keras policy
      (``keras.mixed_precision.set_global_policy("mixed_bfloat16")`` / ``"mixed_float16"`` before
      constructing it); ``"16"`` wraps the optimizer in a ``LossScaleOptimizer``;
    - ``strategy``: a ``tf.distribute`` strategy (``MirroredStrategy``, or
      ``MultiWorkerMirroredStrategy`` configured through ``TF_CONFIG``); build the network under
      ``strategy.scope()``. Each batch is split evenly over the replicas (its size must be a
      multiple of ``strategy.num_replicas_in_sync``) and the gradients are summed by the optimizer.
      Only the chief (task 0) logs and saves checkpoints. Under ``srun`` or ``torchrun``
      (several processes, :meth:`~delira.training.distributed.ClusterEnvironment.detect`)
      :func:`~delira.training.distributed.tf_multi_worker_strategy` builds ``TF_CONFIG`` from the
      same variables as the PyTorch trainer and returns the ``MultiWorkerMirroredStrategy``; the
      trainer refuses any other strategy there. Every worker loads the whole batch and trains on
      its replica's slice of it, so together the workers see each sample of the batch once.

    - ``device_transforms``: on a GPU they get the prepared tensors; on the CPU numpy arrays
      (float32 / int64), converted back to tensors afterwards.

    The step runs as one ``tf.function`` (traced once per input shape).

    Networks that override ``training_step`` (e.g. ``delira.models.tf.DCGAN`` with its alternating
    step) are trained by calling their ``training_step``; mixed precision, accumulation and
    clipping then do not apply. A network with ``optimizer_groups() -> {name: [variables]}`` gets
    one optimizer per group (same kind, learning rate, arguments and schedule), built over the
    group's variables, in ``self.optimizers`` (``self.optimizer`` is the first) and passed to its
    ``training_step`` by name; :meth:`set_lr` and the schedules set every group's learning rate,
    and checkpoints hold each as ``optimizer_<name>``.
    """

    framework = "keras"
    targets_first = True

    def __init__(
        self, network: Any, losses: Mapping[str, Any], *args: Any, strategy: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(network, losses, *args, **kwargs)
        self.strategy = strategy
        self.optimizers: dict[str, Any] = {}

    def _setup(self) -> None:
        if self.optimizer is not None:
            return
        net = self.network
        if not hasattr(net, "split_batch") or not hasattr(net, "compute_losses"):
            raise TypeError(
                f"TfNetworkTrainer needs a delira.models.tf network (prepare_batch, split_batch, compute_losses); "
                f"got {type(net).__name__}; subclass delira.models.tf.AbstractNetwork"
            )
        policy = getattr(getattr(net, "dtype_policy", None), "name", "float32")
        if policy != _POLICIES[self.precision]:
            raise ValueError(
                f"precision={self.precision!r} needs the network built under the Keras dtype policy "
                f"{_POLICIES[self.precision]!r}, but it was built under {policy!r}; call "
                f"keras.mixed_precision.set_global_policy({_POLICIES[self.precision]!r}) before constructing it"
            )
        self.strategy = self.strategy or tf.distribute.get_strategy()
        env = ClusterEnvironment.detect()
        if env.is_distributed and not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise ValueError(
                f"this process is rank {env.rank} of {env.world_size} ({env.source}), but the trainer's strategy "
                f"is {type(self.strategy).__name__}, so every process would train a model of its own; create "
                "strategy = delira.training.distributed.tf_multi_worker_strategy() first thing in the script, "
                "build the network under strategy.scope() and pass strategy=strategy"
            )
        self.replicas = int(self.strategy.num_replicas_in_sync)
        resolver = getattr(self.strategy, "cluster_resolver", None)
        task_id = getattr(resolver, "task_id", 0) if resolver is not None else 0
        self.rank = int(task_id or 0)
        from delira.models.tf import AbstractNetwork

        self._custom_step = type(net).training_step is not AbstractNetwork.training_step
        complex_step = self.grad_accumulation > 1 or self.grad_clip is not None
        if self._custom_step and (self.precision != "32" or complex_step):
            raise ValueError(
                f"{type(net).__name__} has its own training_step, which the trainer calls as it is; "
                "precision, grad_accumulation and grad_clip do not apply to it; leave them at their defaults"
            )
        if complex_step and (self.replicas > 1 or self.precision == "16"):
            raise ValueError(
                "grad_accumulation and grad_clip are not supported together with a multi-replica strategy or "
                "precision='16' in TfNetworkTrainer 0.1; use one replica and precision '32' or 'bf16'"
            )
        self.tf_device = _tf_device(self.device)
        learning_rate: Any = self.lr
        schedule = self.scheduler_spec
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            if not isinstance(self.optimizer_spec, str):
                raise ValueError(
                    "a Keras LearningRateSchedule needs a named optimizer ('adam', 'adamw', 'sgd')"
                )
            learning_rate = schedule
        # A network with several parameter groups (a GAN's generator and discriminator) names them in
        # optimizer_groups(); each gets an optimizer of its own, passed to its training_step by name.
        groups = dict(net.optimizer_groups()) if hasattr(net, "optimizer_groups") else {}
        if len(groups) > 1 and not self._custom_step:
            raise ValueError(
                f"{type(net).__name__} declares the optimizer groups {sorted(groups)} but uses the default "
                "training step, which has one optimizer; override training_step to use optimizers by "
                "group name, or return one group from optimizer_groups()"
            )
        if not groups or not self._custom_step:  # the default step optimises every trainable variable
            groups = {"default": list(net.trainable_variables)}
        # whether a given optimizer instance came built (then it cannot be copied for further groups)
        given_built = (
            isinstance(self.optimizer_spec, keras.optimizers.Optimizer) and self.optimizer_spec.built
        )
        with self.strategy.scope():
            self.optimizers = {
                name: self._make_optimizer(learning_rate, index, name, list(variables), given_built)
                for index, (name, variables) in enumerate(groups.items())
            }
            self.optimizer = next(iter(self.optimizers.values()))
            if complex_step:
                self._accumulated = [
                    tf.Variable(tf.zeros_like(v), trainable=False) for v in net.trainable_variables
                ]
        if callable(schedule) and not isinstance(
            schedule, (str, keras.optimizers.schedules.LearningRateSchedule)
        ):
            self.set_lr(float(schedule(0)))
        self._step_fn = None
        self._eval_fn = None
        self._loss_factors: dict[str, float] = {}

    def _make_optimizer(
        self, learning_rate: Any, index: int, group: str, variables: list[Any], given_built: bool
    ) -> Any:
        """A Keras optimizer for the parameter group ``group`` (its ``index``-th), built over
        ``variables``: the named optimizer with ``lr`` (or the Keras schedule) and
        ``optimizer_kwargs``; a given Keras optimizer instance serves the first group and fresh copies of
        it (``from_config(get_config())``) the others."""
        spec = self.optimizer_spec
        if isinstance(spec, str):
            cls = {
                "adam": keras.optimizers.Adam,
                "adamw": keras.optimizers.AdamW,
                "sgd": keras.optimizers.SGD,
            }
            optimizer = cls[spec.lower()](learning_rate=learning_rate, **self.optimizer_kwargs)
        elif isinstance(spec, keras.optimizers.Optimizer):
            if index == 0:
                optimizer = spec
            elif given_built:
                raise ValueError(
                    f"the Keras optimizer given is already built, so it cannot be copied for the parameter "
                    f"group {group!r}; pass an unbuilt optimizer or a name ('adam', 'adamw', 'sgd')"
                )
            else:
                optimizer = type(spec).from_config(spec.get_config())
        else:
            raise TypeError(f"optimizer must be a name or a keras optimizer, got {type(spec).__name__}")
        if self.precision == "16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        if not optimizer.built:
            optimizer.build(variables)
        return optimizer

    def _probe_loss_scaling(self, inputs: Any, targets: Any) -> dict[str, float]:
        """Per loss, the factor that undoes a division by the number of replicas made inside the
        loss: ``keras.losses.Loss`` objects divide by ``num_replicas_in_sync`` in a replica context
        (``Model.fit`` relies on that), plain functions do not. Each loss is called once outside and
        once inside ``strategy.run`` on the same tensors and the ratio (1 or the replica count) kept."""
        net = self.network
        predictions = net(inputs, training=False)
        factors = {}
        for name, fn in self.losses.items():
            outside = float(fn(targets, predictions))
            inside = self.strategy.experimental_local_results(
                self.strategy.run(lambda f=fn: f(targets, predictions))
            )[0]
            inside = float(inside)
            factors[name] = float(round(outside / inside)) if inside != 0 and outside != 0 else 1.0
        return factors

    # --- steps -----------------------------------------------------------------------------------
    def _gradients(self, inputs: Any, targets: Any) -> tuple[dict[str, Any], Any, list[Any]]:
        net = self.network
        variables = net.trainable_variables
        with tf.GradientTape() as tape:
            predictions = net(inputs, training=True)
            values = self._compute_losses(predictions, targets)
            values = {k: tf.cast(v, tf.float32) * self._loss_factors.get(k, 1.0) for k, v in values.items()}
            total = tf.add_n(list(values.values()))
            if net.losses:
                total = total + tf.add_n([tf.cast(x, tf.float32) for x in net.losses])
            scaled = total / float(self.grad_accumulation * self.replicas)
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(scaled)
        return values, total, tape.gradient(scaled, variables)

    def _build_step(self) -> Any:
        variables = self.network.trainable_variables
        if self.grad_accumulation == 1 and self.grad_clip is None:

            def replica_step(inputs: Any, targets: Any) -> tuple[dict[str, Any], Any]:
                values, total, grads = self._gradients(inputs, targets)
                # variables without a gradient (e.g. a deep-supervision head of loss weight 0) are left out
                pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
                self.optimizer.apply_gradients(pairs)
                return values, total

            if self.replicas == 1:
                return tf.function(replica_step, reduce_retracing=True, autograph=False)

            def distributed_step(inputs: Any, targets: Any) -> tuple[dict[str, Any], Any]:
                values, total = self.strategy.run(replica_step, args=(inputs, targets))
                mean = tf.distribute.ReduceOp.MEAN
                return (
                    {k: self.strategy.reduce(mean, v, axis=None) for k, v in values.items()},
                    self.strategy.reduce(mean, total, axis=None),
                )

            return tf.function(distributed_step, reduce_retracing=True, autograph=False)

        def accumulate(inputs: Any, targets: Any) -> tuple[dict[str, Any], Any]:
            values, total, grads = self._gradients(inputs, targets)
            for slot, grad in zip(self._accumulated, grads):
                if grad is not None:  # no gradient: nothing to add (a head of loss weight 0)
                    slot.assign_add(grad)
            return values, total

        def apply() -> None:
            grads = [tf.identity(slot) for slot in self._accumulated]
            if self.grad_clip is not None:
                grads, _ = tf.clip_by_global_norm(grads, float(self.grad_clip))
            self.optimizer.apply_gradients(zip(grads, variables))
            for slot in self._accumulated:
                slot.assign(tf.zeros_like(slot))

        self._apply_fn = tf.function(apply, autograph=False)
        return tf.function(accumulate, reduce_retracing=True, autograph=False)

    def _split(self, value: Any) -> Any:
        """A per-replica value of the batch entry ``value`` split evenly along axis 0."""
        n = int(value.shape[0])
        if n % self.replicas:
            raise ValueError(
                f"a batch of {n} samples cannot be split evenly over {self.replicas} replicas; use a batch size "
                f"that is a multiple of {self.replicas} (and drop_last=True)"
            )
        size = n // self.replicas
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: value[ctx.replica_id_in_sync_group * size : (ctx.replica_id_in_sync_group + 1) * size]
        )

    def _train_step(
        self, batch: Mapping[str, Any], step_now: bool, context: tuple[int, int]
    ) -> dict[str, float]:
        net = self.network
        prepared = net.prepare_batch(batch, self.tf_device)
        if self.device_transforms:
            if "CPU" in self.tf_device.upper():
                # on the CPU the transforms get numpy views of the tensors: delira-augment 0.1's
                # TensorFlow path makes unaligned int64 tensors that abort tf.concat (seg batches)
                prepared = {k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in prepared.items()}
            prepared = net.prepare_batch(self._prepare_transforms(prepared, context), self.tf_device)
        if self._custom_step:
            values, _ = net.training_step(prepared, self.optimizers, self.losses)
            values = dict(values)
            values["loss"] = values.get("total", sum(values.values()))
            return values
        inputs, targets = net.split_batch(prepared)
        if self._step_fn is None:
            self._step_fn = self._build_step()
        if self.replicas > 1:
            if not self._loss_factors:
                self._loss_factors = self._probe_loss_scaling(inputs, targets)
            inputs, targets = self._split(inputs), self._split(targets)
        values, total = self._step_fn(inputs, targets)
        if (self.grad_accumulation > 1 or self.grad_clip is not None) and step_now:
            self._apply_fn()
        result = {k: float(v) for k, v in values.items()}
        result["loss"] = float(total)
        return result

    def _eval_step(self, batch: Mapping[str, Any]) -> tuple[float, np.ndarray]:
        net = self.network
        prepared = net.prepare_batch(batch, self.tf_device)
        inputs, targets = net.split_batch(prepared)
        if self._eval_fn is None:

            def evaluate(inputs: Any, targets: Any) -> tuple[Any, Any]:
                predictions = net(inputs, training=False)
                values = self._compute_losses(predictions, targets)
                total = tf.add_n([tf.cast(v, tf.float32) for v in values.values()])
                return total, tf.cast(net.main_output(predictions), tf.float32)

            self._eval_fn = tf.function(evaluate, reduce_retracing=True, autograph=False)
        total, main = self._eval_fn(inputs, targets)
        return float(total), main.numpy()

    # --- several workers -------------------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every worker of a ``MultiWorkerMirroredStrategy`` gets here (one collective
        all-reduce of a scalar over the replicas); nothing under any other strategy. Every worker must
        call it: code around the trainer uses it where the chief writes files (a fold's
        ``result.json``) that the other workers read afterwards. ``fit`` ends with one."""
        strategy = self.strategy
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        if getattr(self, "_barrier_fn", None) is None:

            def count() -> Any:
                ones = strategy.run(lambda: tf.ones([], tf.float32))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

            self._barrier_fn = tf.function(count, autograph=False)
        float(self._barrier_fn())

    def _barrier(self) -> None:
        self.barrier()

    # --- learning rate and schedules ---------------------------------------------------------------
    @staticmethod
    def _inner(opt: Any) -> Any:
        return opt.inner_optimizer if isinstance(opt, keras.optimizers.LossScaleOptimizer) else opt

    def _inner_optimizer(self) -> Any:
        return self._inner(self.optimizer)

    def get_lr(self) -> float:
        """The learning rate of the (first) optimizer."""
        return float(np.asarray(self._inner_optimizer().learning_rate))

    def set_lr(self, value: float) -> None:
        """Set the learning rate of every optimizer (one per parameter group)."""
        inner = [self._inner(opt) for opt in self.optimizers.values()]
        if any(isinstance(o._learning_rate, keras.optimizers.schedules.LearningRateSchedule) for o in inner):
            raise ValueError(
                "the optimizer follows a Keras LearningRateSchedule; its learning rate cannot be set"
            )
        for opt in inner:
            opt.learning_rate = float(value)

    def _epoch_end_schedule(self) -> None:
        schedule = self.scheduler_spec
        if callable(schedule) and not isinstance(
            schedule, (str, keras.optimizers.schedules.LearningRateSchedule)
        ):
            self.set_lr(float(schedule(self.epoch + 1)))

    # --- checkpoints -----------------------------------------------------------------------------
    def _checkpoint_objects(self) -> tuple[Any, Any]:
        if len(self.optimizers) > 1:  # one entry per parameter group, named as the torch trainer does
            return self.network, {f"optimizer_{name}": opt for name, opt in self.optimizers.items()}
        return self.network, {"optimizer": self.optimizer}
