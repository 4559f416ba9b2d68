"""Learning-rate schedules of the trainers (framework-free closed forms) and the linear warm-up.

The named schedules (``scheduler=`` of both trainers, ``training.schedule`` in the config), with
``lr`` the trainer's learning rate, ``E`` the epochs of ``fit`` and ``e`` the 0-based epoch:

- ``cosine``: ``lr * (1 + cos(pi * e / E)) / 2``, per epoch.
- ``step``: ``lr * gamma ** (e // step_size)`` (``gamma`` 0.1, ``step_size`` a third of the
  epochs), per epoch.
- ``poly``: ``lr * (1 - e / E) ** exponent`` (``exponent`` 0.9), per epoch: nnU-Net's default
  (``PolyLRScheduler`` stepped once per epoch), equal to ``torch.optim.lr_scheduler.PolynomialLR``
  with ``total_iters=E, power=0.9``.
- ``onecycle``: Smith's one-cycle policy as ``torch.optim.lr_scheduler.OneCycleLR`` (two cosine
  phases, ``lr`` the peak): per optimizer iteration ``s`` of ``T = E * n`` (``n`` training
  iterations per epoch), from ``lr / div_factor`` up to ``lr`` over the first ``pct_start * T - 1``
  iterations, then down to ``lr / div_factor / final_div_factor`` at ``T - 1`` (``pct_start`` 0.3,
  ``div_factor`` 25, ``final_div_factor`` 1e4). One-cycle is defined per iteration, and stepped per
  epoch it would warm up in a handful of steps, so the trainers set it before every iteration when
  the loader has a length (per epoch, ``n = 1``, otherwise).

:class:`LinearWarmup` (a callback, ``training.warmup_epochs`` in the config) scales whatever
learning rate the schedule (named, a framework scheduler or none) set, before each iteration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from delira.training.callbacks import Callback

__all__ = [
    "PER_ITERATION",
    "SCHEDULES",
    "SCHEDULE_ARGUMENTS",
    "LinearWarmup",
    "check_schedule_args",
    "cosine_lr",
    "onecycle_lr",
    "poly_lr",
    "schedule_lr",
    "step_lr",
    "warmup_factor",
]

#: the named schedules and the arguments (``scheduler_kwargs``) each takes
SCHEDULE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "cosine": (),
    "step": ("step_size", "gamma"),
    "poly": ("exponent",),
    "onecycle": ("pct_start", "div_factor", "final_div_factor"),
}
SCHEDULES = tuple(SCHEDULE_ARGUMENTS)
#: the named schedules the trainers set before every iteration (the others: once per epoch)
PER_ITERATION = ("onecycle",)


def check_schedule_args(name: str, kwargs: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``kwargs`` are valid arguments of the named schedule ``name``."""
    if name not in SCHEDULE_ARGUMENTS:
        raise ValueError(f"unknown schedule {name!r}; use one of {list(SCHEDULES)}")
    allowed = SCHEDULE_ARGUMENTS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"scheduler_kwargs {unknown} do not apply to scheduler {name!r}; it takes "
            f"{', '.join(allowed) if allowed else 'none'}"
        )
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"scheduler_kwargs[{key!r}] must be a number, got {value!r}")
    checks = {
        "step_size": (lambda v: v >= 1 and float(v).is_integer(), "an integer >= 1"),
        "gamma": (lambda v: v > 0, "a number > 0"),
        "exponent": (lambda v: v > 0, "a number > 0"),
        "pct_start": (lambda v: 0 < v < 1, "a number in (0, 1)"),
        "div_factor": (lambda v: v > 0, "a number > 0"),
        "final_div_factor": (lambda v: v > 0, "a number > 0"),
    }
    for key, value in kwargs.items():
        ok, what = checks[key]
        if not ok(value):
            raise ValueError(f"scheduler_kwargs[{key!r}] must be {what}, got {value!r}")


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """``lr * (1 + cos(pi * epoch / epochs)) / 2``."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def step_lr(lr: float, epoch: int, epochs: int, step_size: int | None = None, gamma: float = 0.1) -> float:
    """``lr * gamma ** (epoch // step_size)``, ``step_size`` default ``max(1, epochs // 3)``."""
    size = int(step_size) if step_size is not None else max(1, epochs // 3)
    return lr * float(gamma) ** (epoch // size)


def poly_lr(lr: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """``lr * (1 - epoch / epochs) ** exponent`` (nnU-Net's poly schedule)."""
    return lr * max(0.0, 1.0 - epoch / epochs) ** float(exponent)


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def onecycle_lr(
    lr: float,
    step: int,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """The one-cycle learning rate at iteration ``step`` (0-based) of ``total_steps``, peak ``lr``
    (see the module docstring; ``torch.optim.lr_scheduler.OneCycleLR`` with ``anneal_strategy="cos"``,
    ``three_phase=False``)."""
    initial = lr / float(div_factor)
    final = initial / float(final_div_factor)
    up_end = float(pct_start) * total_steps - 1.0
    down_end = float(total_steps - 1)
    if step <= up_end:
        return _cos_anneal(initial, lr, step / up_end if up_end > 0 else 1.0)
    span = down_end - max(up_end, 0.0)
    pct = (step - max(up_end, 0.0)) / span if span > 0 else 1.0
    return _cos_anneal(lr, final, min(pct, 1.0))


def schedule_lr(
    name: str,
    lr: float,
    epoch: int,
    epochs: int,
    iteration: int = 0,
    iterations: int = 1,
    **kwargs: Any,
) -> float:
    """The learning rate of the named schedule ``name`` in iteration ``iteration`` (of
    ``iterations`` per epoch) of epoch ``epoch`` (of ``epochs``); only ``onecycle`` depends on the
    iteration. ``kwargs``: the schedule's arguments (:data:`SCHEDULE_ARGUMENTS`)."""
    check_schedule_args(name, kwargs)
    if name == "cosine":
        return cosine_lr(lr, epoch, epochs)
    if name == "step":
        return step_lr(lr, epoch, epochs, **kwargs)
    if name == "poly":
        return poly_lr(lr, epoch, epochs, **kwargs)
    n = max(1, int(iterations))
    return onecycle_lr(lr, epoch * n + int(iteration), epochs * n, **kwargs)


def warmup_factor(epochs: float, epoch: int, iteration: int = 0, iterations: int | None = None) -> float:
    """The linear warm-up factor of iteration ``iteration`` of epoch ``epoch``: with ``n``
    iterations per epoch and ``g = epoch * n + iteration``, ``min(1, (g + 1) / (epochs * n))``, so
    the first iteration trains at ``1 / (epochs * n)`` of the scheduled rate and the last of the
    warm-up at the full rate; ``iterations`` None (an unsized loader): ``min(1, (epoch + 1) /
    epochs)`` for the whole epoch."""
    if epochs <= 0:
        return 1.0
    if iterations is None:
        return min(1.0, (epoch + 1) / epochs)
    n = max(1, int(iterations))
    return min(1.0, (epoch * n + iteration + 1) / (epochs * n))


class LinearWarmup(Callback):
    """Linear learning-rate warm-up over the first ``epochs`` epochs, on top of any schedule.

    Before each training iteration the learning rate the schedule set (a named schedule, a
    framework scheduler, or the constant ``lr``) is multiplied by :func:`warmup_factor`, and after
    the iteration it is put back, so the schedule itself never sees the scaled value (a torch
    scheduler that scales the current rate stays exact). Per iteration where the loader has a
    length (``trainer.iterations_per_epoch``), otherwise per epoch. It keeps no state, so a resume
    (also mid-epoch) continues the warm-up exactly. Put it first in the callbacks when another
    callback reads the learning rate. Not with a Keras ``LearningRateSchedule`` (its rate cannot be
    set).

    Args:
        epochs: the warm-up length in epochs (> 0; fractions allowed, e.g. 0.5).
    """

    def __init__(self, epochs: float) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
            raise ValueError(f"LinearWarmup: epochs must be a number > 0 (e.g. 2), got {epochs!r}")
        self.epochs = float(epochs)
        self._scheduled: float | None = None

    def on_iteration_begin(self, trainer: Any, iteration: int) -> None:
        factor = warmup_factor(self.epochs, trainer.epoch, iteration, trainer.iterations_per_epoch)
        if factor >= 1.0:
            self._scheduled = None
            return
        self._scheduled = trainer.get_lr()
        trainer.set_lr(self._scheduled * factor)

    def on_iteration_end(self, trainer: Any, iteration: int, logs: dict[str, float]) -> None:
        if self._scheduled is not None:
            trainer.set_lr(self._scheduled)
            self._scheduled = None
