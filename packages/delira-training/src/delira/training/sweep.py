"""Hyperparameter sweeps on Optuna: each trial is a full :class:`~delira.training.experiment.Experiment`
run folder, trials are pruned on the validation metric per epoch, and the sweep keeps its state in
a local SQLite file so that starting it again continues it.

::

    delira sweep unet3d-phantom --param training.lr=log:1e-4:1e-2 --param training.batch_size=int:2:4 \\
        --trials 20 [--objective dice_mean] [--pruner median|none] [--run-dir runs/sweep-lr]

A parameter is ``KEY=KIND:SPEC`` with KIND one of

- ``log:LOW:HIGH``: a float drawn log-uniformly in ``[LOW, HIGH]`` (learning rates, weight decay);
- ``float:LOW:HIGH`` and ``int:LOW:HIGH``: uniform (bounds included);
- ``choice:A|B|C``: one of the YAML values ``A``, ``B``, ``C`` (e.g. ``choice:[8,16]|[16,32]``).

The sweep folder holds ``optuna.db`` (the study), one ``trial_<n>/`` experiment folder per trial,
``trials.csv`` (number, state, objective, parameters, folder), ``sweep.json`` (the best trial) and
``trials.png`` (objective per trial and the best so far; with matplotlib).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from delira.training.callbacks import Callback
from delira.training.config import ConfigError, load_config

__all__ = ["Param", "PruningCallback", "parse_param", "sweep"]

#: the summary figure a sweep optimises by task, and whether larger is better
_OBJECTIVES = {"segmentation": ("dice_mean", "maximize"), "classification": ("accuracy", "maximize")}
_KINDS = ("log", "float", "int", "choice")


@dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` is ``log``, ``float``, ``int`` or ``choice``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value of this parameter for an Optuna ``trial``."""
        if self.kind == "log":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        # Optuna stores choices as str/int/float/bool/None; lists go in as their YAML text
        index = trial.suggest_categorical(
            self.key, [yaml.safe_dump(c, default_flow_style=True).strip() for c in self.choices]
        )
        return yaml.safe_load(index)


def parse_param(text: str) -> Param:
    """``"training.lr=log:1e-4:1e-2"`` as a :class:`Param`.

    Raises:
        ConfigError: the text does not follow ``KEY=KIND:SPEC`` (the message shows the forms).
    """
    forms = "KEY=log:LOW:HIGH, KEY=float:LOW:HIGH, KEY=int:LOW:HIGH or KEY=choice:A|B|C"
    key, sep, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    if not sep or not key.strip() or kind not in _KINDS or not rest:
        raise ConfigError([f"--param {text!r}: write {forms}"])
    key = key.strip()
    if kind == "choice":
        choices = tuple(yaml.safe_load(part) for part in rest.split("|"))
        if len(choices) < 2:
            raise ConfigError([f"--param {text!r}: a choice needs at least two values separated by |"])
        return Param(key, kind, choices=choices)
    bounds = rest.split(":")
    try:
        low, high = (float(b) for b in bounds)
    except ValueError:
        raise ConfigError([f"--param {text!r}: LOW and HIGH must be numbers ({forms})"]) from None
    if not low < high:
        raise ConfigError([f"--param {text!r}: LOW must be below HIGH"])
    if kind == "log" and low <= 0:
        raise ConfigError([f"--param {text!r}: a log range needs LOW > 0"])
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError([f"--param {text!r}: int bounds must be whole numbers"])
    return Param(key, kind, low, high)


class PruningCallback(Callback):
    """Reports ``monitor`` to an Optuna trial after every validated epoch and stops the trial
    (``optuna.TrialPruned``) when the pruner says so. ``offset`` shifts the step (the epochs of
    the folds before this one), so every trial reports the same steps."""

    def __init__(self, trial: Any, monitor: str, offset: int = 0) -> None:
        self.trial, self.monitor, self.offset = trial, monitor, offset

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.trial.report(float(value), self.offset + epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} ({self.monitor} = {value:.4g})")


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError(
            [
                f"delira sweep needs Optuna: pip install 'delira-training[sweep]' (or pip install optuna) ({exc})"
            ]
        ) from exc
    return optuna


def sweep(
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
    params: Sequence[str | Param],
    trials: int,
    run_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    objective: str | None = None,
    direction: str | None = None,
    pruner: str = "median",
    seed: int = 0,
    initial: Sequence[Mapping[str, Any]] = (),
    verbose: bool = True,
) -> dict[str, Any]:
    """Search ``params`` over ``trials`` trials of the experiment ``config``.

    Args:
        config: as for :class:`~delira.training.experiment.Experiment`.
        params: ``"KEY=KIND:SPEC"`` strings (see the module doc) or :class:`Param` objects.
        trials: the number of finished trials the study should hold (a rerun continues up to it).
        run_dir: the sweep folder (default ``<experiment.output>/sweep-<name>``).
        overrides: ``--set`` strings applied to every trial.
        objective: the summary figure to optimise (its fold mean; default ``dice_mean`` for
            segmentation, ``accuracy`` for classification).
        direction: ``"maximize"`` or ``"minimize"`` (default: the objective's own).
        pruner: ``"median"`` (Optuna's MedianPruner on the validation metric per epoch, after
            one full trial and the first epoch) or ``"none"``.
        seed: the sampler's seed (TPE).
        initial: values to try first, one mapping ``{key: value}`` per trial (e.g. the config's
            own values as a baseline; Optuna's ``enqueue_trial``, skipped when already tried).

    Returns:
        ``{"best": {"number", "value", "params", "run_dir"} | None, "trials": [rows of trials.csv]}``.

    Raises:
        ConfigError: a bad parameter, a key the config does not have, a value the config refuses,
            or Optuna missing.
    """
    optuna = _import_optuna()
    from delira.training.experiment import Experiment, _write_csv, _write_json
    from delira.training.tasks import task_for

    base = load_config(config, overrides)
    space = [p if isinstance(p, Param) else parse_param(p) for p in params]
    if not space:
        raise ConfigError(["delira sweep: give at least one --param KEY=KIND:SPEC"])
    for p in space:  # each key must exist and take the range's values before any trial runs
        for value in _corners(p):
            load_config(base, [f"{p.key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    task = base["task"]
    if objective is None:
        if task not in _OBJECTIVES:
            raise ConfigError(
                [f"delira sweep: task {task!r} has no default objective; pass --objective FIGURE"]
            )
        objective, default_direction = _OBJECTIVES[task]
    else:
        default_direction = "minimize" if "loss" in objective or objective.startswith("hd95") else "maximize"
    direction = direction or default_direction
    if direction not in ("maximize", "minimize"):
        raise ConfigError([f"--direction {direction!r}: use maximize or minimize"])
    monitor, _ = task_for(base).monitor()
    folder = (
        Path(run_dir) if run_dir is not None else Path(base["experiment"]["output"]) / f"sweep-{base['name']}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(folder / 'optuna.db').resolve()}"
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
        "none": optuna.pruners.NopPruner,
    }
    if pruner not in pruners:
        raise ConfigError([f"--pruner {pruner!r}: use median or none"])
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=base["name"],
        storage=storage,
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruners[pruner](),
    )
    epochs = base["training"]["epochs"]
    by_key = {p.key: p for p in space}
    for values in initial:
        unknown = sorted(set(values) - set(by_key))
        if unknown:
            raise ConfigError([f"initial values {unknown} are not searched; searched keys: {sorted(by_key)}"])
        study.enqueue_trial(
            {
                k: yaml.safe_dump(v, default_flow_style=True).strip() if by_key[k].kind == "choice" else v
                for k, v in values.items()
            },
            skip_if_exists=True,
        )

    def run_trial(trial: Any) -> float:
        values = {p.key: p.suggest(trial) for p in space}
        sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in values.items()]
        trial_dir = folder / f"trial_{trial.number:03d}"
        trial.set_user_attr("run_dir", str(trial_dir))
        experiment = Experiment(
            base,
            run_dir=trial_dir,
            overrides=sets,
            verbose=verbose,
            callbacks=[lambda fold: PruningCallback(trial, monitor, offset=fold * epochs)],
        )
        summary = experiment.kfold()
        if summary is None or objective not in summary["mean"]:
            known = sorted(summary["mean"]) if summary else []
            raise ConfigError(
                [f"--objective {objective!r} is not a figure of the summary; use one of {known}"]
            )
        value = float(summary["mean"][objective])
        if math.isnan(value):
            raise optuna.TrialPruned(f"{objective} is NaN")
        return value

    done = sum(t.state.is_finished() for t in study.trials)
    remaining = max(0, trials - done)
    if verbose:
        print(f"delira sweep: {done} trial(s) in {storage}, running {remaining} more", flush=True)
    if remaining:
        # a failing trial (e.g. a NaN loss at a large learning rate) is recorded and the sweep goes on;
        # configuration errors stop it
        study.optimize(
            run_trial, n_trials=remaining, catch=(ArithmeticError, RuntimeError, FloatingPointError)
        )
    return _write_results(study, folder, space, objective, _write_csv, _write_json)


def _corners(p: Param) -> list[Any]:
    if p.kind == "choice":
        return list(p.choices)
    if p.kind == "int":
        return [int(p.low), int(p.high)]
    return [p.low, p.high]


def _write_results(
    study: Any, folder: Path, space: Sequence[Param], objective: str, write_csv: Any, write_json: Any
) -> dict[str, Any]:
    rows = []
    for t in study.trials:
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name.lower(),
            objective: "" if t.value is None else t.value,
        }
        for p in space:
            value = t.params.get(p.key, "")
            row[p.key] = yaml.safe_load(value) if p.kind == "choice" and isinstance(value, str) else value
        row["epochs_reported"] = len(t.intermediate_values)
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        rows.append(row)
    write_csv(folder / "trials.csv", rows, first=["number", "state", objective])
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = None
    if completed:
        b = study.best_trial
        best = {
            "number": b.number,
            "value": b.value,
            "params": {p.key: rows[b.number][p.key] for p in space},
            "run_dir": b.user_attrs.get("run_dir", ""),
        }
    write_json(
        folder / "sweep.json",
        {
            "objective": objective,
            "direction": study.direction.name.lower(),
            "best": best,
            "trials": len(rows),
        },
    )
    _plot(folder / "trials.png", rows, objective, study.direction.name.lower())
    return {"best": best, "trials": rows}


def _plot(path: Path, rows: list[dict[str, Any]], objective: str, direction: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from delira.io import atomic_write

    done = [(r["number"], float(r[objective])) for r in rows if r["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if done:
        numbers, values = zip(*done)
        ax.plot(numbers, values, "o", label="trial")
        pick = max if direction == "maximize" else min
        best = [pick(values[: i + 1]) for i in range(len(values))]
        ax.step(numbers, best, where="post", label="best so far")
    pruned = [r["number"] for r in rows if r["state"] == "pruned"]
    for n in pruned:
        ax.axvline(n, color="0.8", lw=0.8)
    ax.set_xlabel("trial (grey: pruned)")
    ax.set_ylabel(objective)
    ax.legend(loc="best")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
