"""``Experiment``: cross-validated training from a config, written to one experiment folder.

The folder (``experiment.output/<name>-<timestamp>`` unless given) holds::

    config.yaml            the resolved configuration
    splits.json            the folds (delira.data format), reused on resume
    augmentation.png       a preview of the training augmentation (with matplotlib)
    fold_<k>/              the trainer's checkpoints/{best,last}.safetensors, metrics.csv,
                           tensorboard/, curves.png; then result.json (the fold's figures) and
                           cases.csv (per-case figures) once the fold is finished
    preprocessing.json     fitted preprocessing statistics (MSD data), used by prediction
    fold_<k>/validation/   the fold's validation predictions on the original grid (.npz)
    summary.json/.csv      per-fold figures, their mean and (population, ddof=0) std
    postprocessing.json    the postprocessing decided on all folds' validation predictions

A fold is finished when its ``result.json`` exists (written atomically, last): a rerun skips it.
An unfinished fold continues from ``checkpoints/last.safetensors``. Folds can run apart
(``folds=[k]``, e.g. one per machine) and :func:`aggregate` summarises them afterwards.
The config-to-objects builders live in :mod:`delira.training.builders`, what depends on the task
(losses, metrics, monitor, loaders, evaluation) in :mod:`delira.training.tasks`, prediction in
:mod:`delira.training.prediction`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from delira.io import atomic_write
from delira.training.augmentation import describe_transforms
from delira.training.builders import (
    _eval_mode,
    _trainer_class,
    build_dataset,
    build_network,
    build_transforms,
)
from delira.training.config import ConfigError, dump_config, load_config
from delira.training.prediction import (
    POSTPROCESSING_FILE,
    load_run_networks,
    predict,
    predict_file,
    save_preprocessing_state,
)
from delira.training.tasks import _mean_std, task_for

__all__ = [
    "Experiment",
    "aggregate",
    "build_dataset",
    "build_network",
    "build_transforms",
    "format_table",
    "load_run_networks",
    "predict",
    "predict_file",
]


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (delira-io's atomic write: unique temporary name, fsync, replace)."""
    text = json.dumps(obj, indent=2, default=_json_default)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> None:
    """Write ``rows`` (dicts) as CSV atomically; columns: ``first``, then the other keys in order."""
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})

    atomic_write(Path(path), write)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return value


def format_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], label: str = "fold") -> str:
    """A plain-text table: one row per ``rows`` entry (``label`` column first), numbers to 4 places."""
    header = [label, *keys]
    body = [
        [str(r.get(label, ""))]
        + [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(b) for b in body)])


_PER_CLASS = re.compile(r"^(dice|hd95|nsd)_class_\d+$")


def _decide_postprocessing(run_dir: Path) -> Any:
    """Decide nnU-Net's largest-component rule on every fold's saved validation predictions and write
    ``postprocessing.json``; None when the run saved none (not a segmentation run)."""
    files = sorted(run_dir.glob("fold_*/validation/*.npz"))
    if not files:
        return None
    from delira.training.postprocessing import decide_postprocessing

    cases = []
    for f in files:
        with np.load(f) as z:
            cases.append((z["pred"], z["ref"]))
    task = task_for(load_config(run_dir / "config.yaml"))
    # the labels the predictions hold (a region run: the labels its regions paint)
    classes = sorted(set(getattr(task, "label_values", range(1, task.num_classes))))
    rule = decide_postprocessing(cases, classes)
    rule.save(run_dir / POSTPROCESSING_FILE)
    return rule


def aggregate(run_dir: str | os.PathLike[str], quiet: bool = False) -> dict[str, Any]:
    """Summarise the finished folds of ``run_dir``: ``summary.json`` and ``summary.csv``.

    Reads every ``fold_<k>/result.json``; for every numeric figure of the folds it computes the
    mean and the population standard deviation (``numpy.std``, ddof=0; NaN figures left out) over
    the folds. Prints the table unless ``quiet``. Segmentation runs: decides the postprocessing
    (keep the largest connected component of a class where that improves its mean validation Dice
    over all folds, as nnU-Net does) and writes ``postprocessing.json``, which ``delira predict``
    applies.

    Returns:
        ``{"folds": [{"fold": k, <figure>: float, ...}], "mean": {...}, "std": {...},
        "missing": [k, ...]}`` (``missing``: folds of ``splits.json`` without a result).

    Raises:
        FileNotFoundError: no finished fold in ``run_dir``.
    """
    run_dir = Path(run_dir)
    results = []
    for path in sorted(run_dir.glob("fold_*/result.json"), key=lambda p: int(p.parent.name.split("_")[1])):
        results.append(json.loads(path.read_text()))
    if not results:
        raise FileNotFoundError(
            f"{run_dir} holds no finished fold (fold_<k>/result.json); run the folds first with "
            f"`delira run --resume {run_dir}` (or `--fold k` per machine)"
        )
    rows = [{"fold": r["fold"], **r["metrics"]} for r in results]
    keys = [k for k in rows[0] if k != "fold"]
    mean, std = _mean_std(rows, keys)
    expected: list[int] = []
    if (run_dir / "splits.json").exists():
        expected = list(range(len(json.loads((run_dir / "splits.json").read_text())["folds"])))
    missing = [k for k in expected if k not in {r["fold"] for r in results}]
    summary = {"folds": rows, "mean": mean, "std": std, "missing": missing}
    rule = _decide_postprocessing(run_dir)
    if rule is not None:
        summary["postprocessing"] = rule.to_dict()
    _write_json(run_dir / "summary.json", summary)
    _write_csv(
        run_dir / "summary.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}], first=["fold"]
    )
    if (run_dir / MLFLOW_FILE).exists() and not missing:
        _finish_mlflow_parent(run_dir, mean, std)
    if not quiet:
        shown = [k for k in keys if not _PER_CLASS.match(k)] or keys
        print(format_table([*rows, {"fold": "mean", **mean}, {"fold": "std", **std}], shown))
        if rule is not None:
            kept = rule.largest_component_classes
            print(
                f"postprocessing ({run_dir / POSTPROCESSING_FILE}): "
                + (
                    f"keep the largest component of classes {kept}"
                    if kept
                    else "none improves the validation Dice"
                )
            )
        if missing:
            print(f"folds not finished yet: {missing} (the mean and std cover the finished ones)")
        print(f"summary: {run_dir / 'summary.json'}")
    return summary


def _is_main_process() -> bool:
    """Rank 0 of a torchrun / SLURM job, or a single process."""
    from delira.training.distributed import ClusterEnvironment

    return ClusterEnvironment.detect().is_main_process


# --- TensorFlow on several workers (backend: tf under torchrun / srun) ----------------------------
_TF_STRATEGY: Any = None  # the process's MultiWorkerMirroredStrategy: TensorFlow allows one, made first


def _tf_multi_worker_strategy(config: Mapping[str, Any]) -> Any:
    """The ``tf.distribute.MultiWorkerMirroredStrategy`` of a ``backend: tf`` run in a job of several
    processes (torchrun's or SLURM's variables, :meth:`ClusterEnvironment.detect
    <delira.training.distributed.ClusterEnvironment.detect>`), made once per process by
    :func:`~delira.training.distributed.tf_multi_worker_strategy`; None for torch or one process.

    TensorFlow needs the strategy before it runs any operation, so the Experiment makes it when it
    is constructed (``delira run`` constructs it first thing); a script that ran TensorFlow code
    before gets the RuntimeError below. Worker ``k`` listens at ``MASTER_PORT + 1 + local rank``
    under torchrun (whose rendezvous store holds ``MASTER_PORT``), at ``MASTER_PORT + local rank``
    under SLURM; a ``TF_CONFIG`` already set is used as it is.

    Raises:
        ConfigError: ``training.batch_size`` is not a multiple of the number of workers (every worker
            trains on an equal slice of each batch), checked before the strategy is made.
        RuntimeError: TensorFlow ran operations in this process before the strategy was made.
    """
    global _TF_STRATEGY
    if config["backend"] != "tf":
        return None
    from delira.training.distributed import ClusterEnvironment, tf_multi_worker_strategy

    env = ClusterEnvironment.detect()
    if not env.is_distributed:
        return None
    batch, workers = int(config["training"]["batch_size"]), env.world_size
    if batch % workers:
        below, above = batch // workers * workers, (batch // workers + 1) * workers
        choices = f"{below} or {above}" if below else str(above)
        raise ConfigError(
            [
                f"training.batch_size: {batch} is not a multiple of the {workers} TensorFlow workers of this "
                f"job ({env.source}, WORLD_SIZE / SLURM_NTASKS {workers}): each worker trains on an equal "
                f"slice of every batch; set training.batch_size to {choices} (--set training.batch_size="
                f"{above})"
            ]
        )
    if _TF_STRATEGY is None:
        try:
            _tf_worker_devices(str(config["training"]["device"]), env)
            _TF_STRATEGY = tf_multi_worker_strategy(env)  # under torchrun: ports above MASTER_PORT
        except RuntimeError as exc:
            raise RuntimeError(
                f"cannot create TensorFlow's MultiWorkerMirroredStrategy for rank {env.rank} of {workers} "
                f"({exc}); TensorFlow must not run anything before it: construct the Experiment (or call "
                "delira.training.distributed.tf_multi_worker_strategy()) first thing in the process"
            ) from exc
    return _TF_STRATEGY


def _tf_worker_devices(device: str, env: Any) -> None:
    """The GPUs a TensorFlow worker may use, set before the strategy is made (the strategy puts a
    replica on every visible GPU): none when ``training.device`` is the CPU; with a GPU device, a
    worker that sees every GPU of its node (``torchrun``, or ``srun`` without ``--gpus-per-task``)
    keeps GPU ``local rank`` only, which it then calls ``/GPU:0``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    if "GPU" not in device.upper() and not device.lower().startswith("cuda"):
        tf.config.set_visible_devices([], "GPU")
    elif env.local_world_size > 1 and len(gpus) >= env.local_world_size:
        tf.config.set_visible_devices(gpus[env.local_rank], "GPU")


def _shared_stamp(stamp: str, environ: Mapping[str, str] | None = None) -> str:
    """The default run folder's suffix for a torch job of several processes, the same on every
    rank without communication (the process group starts later, in the trainer): the SLURM job
    (``slurm<SLURM_JOB_ID>``, ``slurm<array job>_<task>`` in an array, so a requeued job finds
    its folder again) or torchrun's rendezvous id (``torchrun-<TORCHELASTIC_RUN_ID>``). ``stamp``
    (the local time) in a single process. Each rank's own clock could name different folders,
    and ranks other than 0 read rank 0's ``result.json`` from theirs.

    Raises:
        ConfigError: several processes but neither id is set (the variables set by hand): the run
            folder has to be given.
    """
    from delira.training.distributed import ClusterEnvironment

    env = os.environ if environ is None else environ
    cluster = ClusterEnvironment.detect(dict(env))
    if not cluster.is_distributed:
        return stamp
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return f"slurm{env['SLURM_JOB_ID']}"
    run_id = env.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}"
    raise ConfigError(
        [
            f"this process is rank {cluster.rank} of {cluster.world_size} ({cluster.source} variables) and no run "
            "folder is given; every rank needs the same one: pass --run-dir DIR (Experiment(run_dir=DIR)) on "
            "every rank, or start the job with torchrun or srun, whose job id names it"
        ]
    )


def _chief_stamp(strategy: Any, stamp: str) -> str:
    """The chief's ``YYYYmmdd-HHMMSS`` ``stamp`` on every worker (one all-reduce: the chief adds
    its stamp as a number, the others 0), so that every worker picks the same default run folder."""
    import tensorflow as tf

    from delira.training.distributed import get_rank

    mine = float(stamp.replace("-", "")) if get_rank() == 0 else 0.0  # 14 digits: exact in float64
    total = strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(mine, tf.float64)), axis=None
    )
    digits = f"{int(float(total)):014d}"
    return f"{digits[:8]}-{digits[8:]}"


def weights_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of named arrays: for every key in sorted order its UTF-8 name, ``dtype.str``, shape
    and C-order bytes. Of a Keras network's checkpoint tensors (``model/<key>`` in a
    ``.safetensors`` checkpoint, the prefix removed) it is the digest that TensorFlow workers print
    after each fold."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        digest.update(key.encode())
        digest.update(f"|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


#: the MLflow run of an experiment folder (and of each fold folder): store, experiment and run id
MLFLOW_FILE = "mlflow.json"


def _finish_mlflow_parent(run_dir: Path, mean: Mapping[str, float], std: Mapping[str, float]) -> None:
    """Log the summary's mean and std to the experiment's MLflow run, its files as artifacts, and end it."""
    from delira.training.loggers import EXPERIMENT_ARTIFACTS, MLflowLogger

    info = json.loads((run_dir / MLFLOW_FILE).read_text())
    parent = MLflowLogger(
        info["tracking_uri"],
        info["experiment"],
        run_id=info["run_id"],
        artifacts_dir=run_dir,
        artifacts=EXPERIMENT_ARTIFACTS,
        finish_on_close=False,
    )
    figures = {f"mean_{k}": v for k, v in mean.items()} | {f"std_{k}": v for k, v in std.items()}
    parent.log_metrics({k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}, 0)
    parent.finish()


# --- the experiment -------------------------------------------------------------------------------
class Experiment:
    """Train and evaluate a model from a configuration, in a cross-validation scheme.

    Args:
        config: a path to a YAML file, a mapping, the name of a shipped config or None (the
            built-in default: a small 3D UNet on synthetic phantoms).
        run_dir: the experiment folder; default ``<experiment.output>/<name>-<UTC timestamp>``.
            An existing folder with a ``config.yaml`` is resumed (its config must match).
        overrides: ``"a.b=value"`` strings applied on top of the config.
        verbose: progress bars and the printed summary.
        callbacks: extra trainer callbacks, as factories ``fold -> Callback`` called when each
            fold's trainer is built (e.g. a sweep's pruning callback), after the task's own.

    Example::

        exp = Experiment("unet3d-phantom.yaml", overrides=["training.epochs=5"])
        summary = exp.kfold(exp.dataset(), n_splits=3)
        summary["mean"]["dice_mean"]
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        overrides: Sequence[str] = (),
        verbose: bool = True,
        callbacks: Sequence[Callable[[int], Any]] = (),
    ) -> None:
        self.config = load_config(config, overrides)
        #: ``backend: tf`` in a job of several processes: the MultiWorkerMirroredStrategy every fold
        #: trains under (made here, before TensorFlow runs anything); else None
        self.tf_strategy = _tf_multi_worker_strategy(self.config)
        self.callback_factories = list(callbacks)
        if run_dir is None:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
            if self.tf_strategy is not None:  # the same folder on every worker
                stamp = _chief_stamp(self.tf_strategy, stamp)
            else:  # torch DDP ranks: a name every rank derives alike
                stamp = _shared_stamp(stamp)
            run_dir = Path(self.config["experiment"]["output"]) / f"{self.config['name']}-{stamp}"
        self.run_dir = Path(run_dir)
        self.verbose = verbose
        #: the task strategy (:mod:`delira.training.tasks`): losses, metrics, loaders, evaluation
        self.task = task_for(self.config)
        self._check_resumed_config()

    def _check_resumed_config(self) -> None:
        path = self.run_dir / "config.yaml"
        if path.exists():
            saved = load_config(path)
            diff = [d for d in _differences(saved, self.config) if not d.startswith(_MACHINE_KEYS)]
            if diff:
                raise ValueError(
                    f"{self.run_dir} was started with another configuration (differences: {', '.join(diff)}); "
                    f"resume it with its own config (`delira run --resume {self.run_dir}`) or choose a new folder"
                )

    def _log(self, text: str) -> None:
        if self.verbose and _is_main_process():
            print(text, flush=True)

    # -- data ---------------------------------------------------------------------------------------
    def dataset(self) -> Any:
        """The dataset of the config (see :func:`build_dataset`)."""
        return build_dataset(self.config)

    def _loaders(self, train: Any, val: Any, fold: int) -> tuple[Any, Any]:
        """The fold's train and validation loaders (:meth:`delira.training.tasks.Task.loaders`)."""
        return self.task.loaders(train, val, fold)

    def _trainer(self, save_dir: Path | None, fold: int, device_transforms: Sequence[Any] = ()) -> Any:
        from delira.training.seed import seed_everything

        cfg, t = self.config, self.config["training"]
        monitor, mode = self.task.monitor()
        seed = self.task.fold_seed(fold)
        # the initial weights depend on the seed only (the trainer seeds again when fit starts)
        seed_everything(seed, frameworks=("torch",) if cfg["backend"] == "torch" else ("tensorflow",))
        strategy = self.tf_strategy
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            network = build_network(cfg)  # TF workers: variables mirrored, initial values from the chief
        kwargs = {"weight_decay": t["weight_decay"]} if t["weight_decay"] else None
        return _trainer_class(cfg["backend"])(
            network,
            losses=self.task.losses(cfg["backend"]),
            optimizer=t["optimizer"],
            lr=t["lr"],
            optimizer_kwargs=kwargs,
            scheduler=t["schedule"],
            scheduler_kwargs=dict(t["schedule_args"]) or None,
            metrics=self.task.training_metrics(),
            callbacks=[
                *self.task.callbacks(save_dir, fold),
                *(make(fold) for make in self.callback_factories),
            ],
            device=t["device"],
            precision=t["precision"],
            grad_clip=t["grad_clip"],
            val_every=t["val_every"],
            monitor=monitor,
            mode=mode,
            save_dir=save_dir,
            seed=seed,
            verbose=self.verbose,
            device_transforms=list(device_transforms),
            loggers=self._fold_loggers(save_dir, fold),
            **({} if strategy is None else {"strategy": strategy}),
        )

    # -- experiment tracking (logging.mlflow / logging.wandb) -----------------------------------------
    def _mlflow_parent(self) -> dict[str, str] | None:
        """The experiment's MLflow run (``run_dir/mlflow.json``: store, experiment, run id), created
        once (rank 0) before any fold so that fold runs, in any process, nest under it."""
        if not self.config["logging"]["mlflow"]["enabled"]:
            return None
        path = self.run_dir / MLFLOW_FILE
        if path.exists():
            return json.loads(path.read_text())
        from delira.training.distributed import get_rank
        from delira.training.loggers import EXPERIMENT_ARTIFACTS, MLflowLogger

        if get_rank() != 0:
            return None
        cfg = self.config["logging"]["mlflow"]
        uri = cfg["tracking_uri"] or str((Path(self.config["experiment"]["output"]) / "mlruns").resolve())
        name = cfg["experiment"] or self.config["name"]
        parent = MLflowLogger(
            uri,
            name,
            run_name=self.run_dir.name,
            params=self.config,
            tags={"run_dir": str(self.run_dir.resolve())},
            artifacts_dir=self.run_dir,
            artifacts=EXPERIMENT_ARTIFACTS,
            finish_on_close=False,
        )
        info = {"tracking_uri": parent.tracking_uri, "experiment": name, "run_id": parent.run_id}
        _write_json(path, info)
        return info

    def _fold_loggers(self, save_dir: Path | None, fold: int) -> list[Any]:
        """The tracking loggers of one fold's trainer (rank 0 only): an MLflow run nested under the
        experiment's (continued when the fold resumes) and a W&B run in the run folder's group."""
        cfg = self.config["logging"]
        if save_dir is None or not (cfg["mlflow"]["enabled"] or cfg["wandb"]["enabled"]):
            return []
        from delira.training.distributed import get_rank

        if get_rank() != 0:
            return []
        loggers: list[Any] = []
        if cfg["mlflow"]["enabled"]:
            from delira.training.loggers import MLflowLogger

            parent = self._mlflow_parent()
            assert parent is not None
            own = save_dir / MLFLOW_FILE
            logger = MLflowLogger(
                parent["tracking_uri"],
                parent["experiment"],
                run_name=f"{self.run_dir.name}/{save_dir.name}",
                params=self.config,
                tags={"fold": fold},
                parent_run_id=parent["run_id"],
                run_id=json.loads(own.read_text())["run_id"] if own.exists() else None,
                artifacts_dir=save_dir,
                finish_on_close=False,
            )
            _write_json(own, {**parent, "run_id": logger.run_id, "parent_run_id": parent["run_id"]})
            loggers.append(logger)
        if cfg["wandb"]["enabled"]:
            from delira.training.loggers import WandbLogger

            w = cfg["wandb"]
            loggers.append(
                WandbLogger(
                    w["project"],
                    f"{self.run_dir.name}-{save_dir.name}",
                    params=self.config,
                    group=self.run_dir.name,
                    job_type="fold",
                    entity=w["entity"],
                    save_dir=self.run_dir,
                    offline=w["offline"],
                    artifacts_dir=save_dir,
                    finish_on_close=False,
                )
            )
        return loggers

    # -- evaluation ---------------------------------------------------------------------------------
    def _evaluate(
        self, networks: Sequence[Any], data: Any, trainer: Any = None, save_dir: Path | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Figures of ``networks`` (an ensemble) on every case of ``data``: ``(means, per-case rows)``
        (:meth:`delira.training.tasks.Task.evaluate`)."""
        return self.task.evaluate(networks, data, trainer, save_dir=save_dir)

    # -- the public API -----------------------------------------------------------------------------
    def _prepare_folder(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.yaml").exists():
            dump_config(self.config, self.run_dir / "config.yaml")

    def _fit(self, train: Any, val: Any, save_dir: Path, fold: int, test: Any = None) -> dict[str, Any]:
        """Train one model into ``save_dir`` (resuming from its last checkpoint) and evaluate it."""
        result_path = save_dir / "result.json"
        if result_path.exists():
            self._log(f"{save_dir.name}: finished earlier, skipped")
            return json.loads(result_path.read_text())
        save_dir.mkdir(parents=True, exist_ok=True)
        last = save_dir / "checkpoints" / "last.safetensors"
        if last.exists():
            from delira.io import read_checkpoint_info

            self._log(f"{save_dir.name}: resuming after epoch {read_checkpoint_info(last).epoch}")
        trainer = self._trainer(save_dir, fold, self.task.device_transforms(train, fold))
        train_loader, val_loader = self._loaders(train, val, fold)
        try:
            history = trainer.fit(
                train_loader, val_loader, epochs=self.config["training"]["epochs"], resume_from="last"
            )
        finally:  # persistent workers and the training cache (data.cache_rate) end with the training
            self.task.close_loaders(train_loader, val_loader)
        from delira.training.distributed import barrier

        if self.tf_strategy is not None:
            self._report_weights(trainer, fold)
        # TF workers wait in a collective of their strategy, torch's DDP ranks in its process group
        wait = getattr(trainer, "barrier", barrier)
        if not trainer.is_main_process:  # DDP / TF workers: rank 0 evaluates and writes result.json
            wait()
            return json.loads(result_path.read_text())
        tracking = [lg for lg in trainer.extra_loggers if hasattr(lg, "finish")]
        try:
            result = self._finish_fold(trainer, history, train, val, test, save_dir, fold)
        except BaseException as exc:
            for logger in tracking:
                logger.finish("KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED")
            raise
        finally:
            wait()
        for logger in tracking:  # after result.json: the fold's files go up as artifacts
            logger.finish()
        return result

    def _report_weights(self, trainer: Any, fold: int) -> None:
        """TensorFlow on several workers: print this worker's :func:`weights_digest` of the trained
        network to stderr (every worker prints the same; rank 0's equals that of the fold's
        ``last.safetensors``)."""
        from delira.io._keras_backend import model_tensors
        from delira.training.distributed import ClusterEnvironment

        env = ClusterEnvironment.detect()
        digest = weights_digest(model_tensors(trainer.network))
        print(
            f"delira: fold {fold} worker {env.rank} of {env.world_size} ({trainer.replicas} replicas): "
            f"weights sha256 {digest}",
            file=sys.stderr,
            flush=True,
        )

    def _finish_fold(
        self,
        trainer: Any,
        history: list[dict[str, Any]],
        train: Any,
        val: Any,
        test: Any,
        save_dir: Path,
        fold: int,
    ) -> dict[str, Any]:
        """Evaluate the fold's best checkpoint and write ``cases.csv`` and, last, ``result.json``."""
        result_path = save_dir / "result.json"
        best = save_dir / "checkpoints" / "best.safetensors"
        if best.exists():
            trainer.load_checkpoint(best)
        _eval_mode(trainer.network, self.config["backend"])
        eval_data = test if test is not None else val
        metrics, rows = (
            self._evaluate([trainer.network], eval_data, trainer, save_dir=save_dir)
            if eval_data is not None
            else ({}, [])
        )
        monitor, mode = self.task.monitor()
        scored = [h for h in history if monitor in h]
        best_epoch = None
        if scored:
            pick = max if mode == "max" else min
            best_epoch = int(pick(scored, key=lambda h: h[monitor])["epoch"])
        result = {
            "fold": fold,
            "metrics": metrics,
            "epochs": len(history),
            "best_epoch": best_epoch,
            "train_cases": len(train),
            "eval_cases": 0 if eval_data is None else len(eval_data),
        }
        if rows:
            _write_csv(save_dir / "cases.csv", rows, first=["case_id"])
        _write_json(result_path, result)  # last: marks the fold finished
        return result

    def run(self, train: Any, val: Any = None, name: str = "run") -> dict[str, Any]:
        """Train one model on ``train`` (checkpoints chosen on ``val``) into ``run_dir/<name>``.

        Args:
            train, val: datasets (``__len__``, ``__getitem__`` -> sample dicts).
            name: the sub-folder.

        Returns:
            ``{"fold": 0, "metrics": {...}, "epochs": int, "best_epoch": int | None, ...}``, the
            metrics measured on ``val`` with the best checkpoint.
        """
        self._prepare_folder()
        return self._fit(train, val, self.run_dir / name, 0)

    def test(self, data: Any, folds: Sequence[int] | None = None) -> dict[str, Any]:
        """Evaluate the ensemble of the folds' best networks (softmax averaged) on ``data``.

        Writes ``test.json`` (means) and ``test_cases.csv`` (per case) into the experiment folder.

        Returns:
            ``{"metrics": {...}, "cases": [...], "folds": int}``.
        """
        _, networks = load_run_networks(self.run_dir, folds)
        metrics, rows = self._evaluate(networks, data)
        out = {"metrics": metrics, "cases": rows, "folds": len(networks)}
        _write_json(self.run_dir / "test.json", {"metrics": metrics, "folds": len(networks)})
        if rows:
            _write_csv(self.run_dir / "test_cases.csv", rows, first=["case_id"])
        self._log(format_table([{"set": "test", **metrics}], list(metrics), label="set"))
        return out

    def splits(
        self,
        data: Any,
        n_splits: int,
        stratify_key: str | None = None,
        group_key: str | None = None,
        val_fraction: float | None = None,
        seed: int = 0,
    ) -> Any:
        """The folds of ``data`` (``splits.json`` of the folder when it exists, else drawn and saved).

        ``n_splits >= 2``: k-fold (:func:`delira.data.group_kfold_split` with ``group_key``, else
        :func:`~delira.data.stratified_kfold_split` with ``stratify_key``, else
        :func:`~delira.data.kfold_split`); fold ``k`` trains on the other folds and is validated
        (checkpoint choice and the reported figures) on its own cases. With ``val_fraction`` a share
        of the training cases is held out for the checkpoint choice
        (:func:`~delira.data.holdout_validation`, grouped or stratified the same way) and the fold's
        cases become its ``test`` set, on which the figures are reported. ``n_splits < 2``: one
        train/val split (:func:`~delira.data.train_val_split`, ``val_fraction`` default 0.2,
        grouped or stratified the same way).
        """
        from delira.data import (
            case_ids_of,
            group_kfold_split,
            holdout_validation,
            kfold_split,
            load_splits,
            stratified_kfold_split,
            train_val_split,
        )

        ids = [str(c) for c in case_ids_of(data)]
        path = self.run_dir / "splits.json"
        if path.exists():
            splits = load_splits(path)
            splits.check_covers(ids)
            return splits
        groups = [data[i][group_key] for i in range(len(data))] if group_key else None
        labels = None
        if stratify_key and groups is None:  # a grouped split is not stratified (as the k-fold)
            known = getattr(data, "labels", None) if stratify_key == "label" else None
            labels = list(known) if known is not None else [data[i][stratify_key] for i in range(len(data))]
        if n_splits < 2:
            splits = train_val_split(ids, val_fraction or 0.2, seed, labels=labels, groups=groups)
        else:
            if groups is not None:
                splits = group_kfold_split(ids, groups, n_splits=n_splits, seed=seed)
            elif labels is not None:
                splits = stratified_kfold_split(ids, labels, n_splits=n_splits, seed=seed)
            else:
                splits = kfold_split(ids, n_splits=n_splits, seed=seed)
            if val_fraction:
                splits = holdout_validation(
                    splits,
                    val_fraction,
                    seed,
                    labels=dict(zip(ids, labels)) if labels is not None else None,
                    groups=dict(zip(ids, groups)) if groups is not None else None,
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        splits.save(path)
        return splits

    def prepare(
        self,
        data: Any = None,
        n_splits: int | None = None,
        stratify_key: str | None = None,
        group_key: str | None = None,
        val_fraction: float | None = None,
        seed: int | None = None,
    ) -> tuple[Any, Any]:
        """Everything the folds share, written once before any fold trains: the run folder with
        ``config.yaml``, ``splits.json`` (read back when it exists), the fitted preprocessing state
        and the augmentation preview. The arguments default to the ``experiment`` section.

        Returns:
            ``(data, splits)``: the dataset (default :meth:`dataset`) and its
            :class:`~delira.data.Splits`.
        """
        exp = self.config["experiment"]
        data = self.dataset() if data is None else data
        self._prepare_folder()
        self._mlflow_parent()
        splits = self.splits(
            data,
            exp["folds"] if n_splits is None else n_splits,
            stratify_key if stratify_key is not None else exp["stratify_key"],
            group_key if group_key is not None else exp["group_key"],
            val_fraction if val_fraction is not None else exp["val_fraction"],
            exp["seed"] if seed is None else seed,
        )
        if _is_main_process():  # DDP: the other ranks read what rank 0 wrote
            self._save_preprocessing(data)
            self._preview(data)
        return data, splits

    def unfinished_folds(self, splits: Any) -> list[int]:
        """The folds of ``splits`` without a ``fold_<k>/result.json`` (not started, or interrupted)."""
        return [k for k in range(len(splits)) if not (self.run_dir / f"fold_{k}" / "result.json").exists()]

    def fit_folds(self, data: Any, splits: Any, folds: Sequence[int]) -> list[dict[str, Any]]:
        """Train and evaluate the folds ``folds`` of ``splits`` in this process (each resumes from
        its last checkpoint; finished ones are read back). Returns their results."""
        from delira.data import Subset

        results = []
        for k in folds:
            if not 0 <= k < len(splits):
                raise ValueError(
                    f"fold {k} does not exist; {self.run_dir / 'splits.json'} has folds 0..{len(splits) - 1}"
                )
            fold = splits[k]
            self._log(f"fold {k}/{len(splits)}: {len(fold.train)} training, {len(fold.val)} validation cases")
            train = Subset.from_case_ids(data, fold.train)
            val = Subset.from_case_ids(data, fold.val)
            test = Subset.from_case_ids(data, fold.test) if fold.test else None
            results.append(self._fit(train, val, self.run_dir / f"fold_{k}", k, test=test))
        return results

    def kfold(
        self,
        data: Any = None,
        n_splits: int | None = None,
        stratify_key: str | None = None,
        group_key: str | None = None,
        val_fraction: float | None = None,
        seed: int | None = None,
        folds: Sequence[int] | None = None,
    ) -> dict[str, Any] | None:
        """K-fold cross-validation: train and evaluate every fold in this process, then summarise
        (:func:`delira.training.launcher.launch` runs the folds in parallel processes or as cluster
        jobs instead).

        Args:
            data: the dataset (default: the config's, :meth:`dataset`).
            n_splits, stratify_key, group_key, val_fraction, seed: the splitting (see
                :meth:`splits`); defaults from the ``experiment`` section of the config.
            folds: run only these folds (e.g. ``[2]`` on one of several machines); the summary
                is written once every fold of ``splits.json`` is finished (else call
                :func:`aggregate` later).

        Returns:
            The summary (see :func:`aggregate`), or None while folds are missing.
        """
        data, splits = self.prepare(data, n_splits, stratify_key, group_key, val_fraction, seed)
        self.fit_folds(data, splits, range(len(splits)) if folds is None else folds)
        done = len(splits) - len(self.unfinished_folds(splits))
        if done < len(splits):
            self._log(
                f"finished folds: {done} of {len(splits)}; run `delira aggregate {self.run_dir}` once all are done"
            )
            return None
        if not _is_main_process():
            return None
        return aggregate(self.run_dir, quiet=not self.verbose)

    def _save_preprocessing(self, data: Any) -> None:
        """``preprocessing.json``: the statistics the preprocessing fitted (prediction reuses them)."""
        preprocessor = getattr(data, "preprocessor", None)
        if preprocessor is not None and hasattr(preprocessor, "params"):
            save_preprocessing_state(self.run_dir, preprocessor)

    def predict(
        self,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        folds: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> list[Path]:
        """Segment an image file or a folder of images with this run's folds, on their original
        geometry (see :func:`delira.training.prediction.predict` for the options).

        Returns:
            The label files written.
        """
        return predict(self.run_dir, input_path, output_path, folds, **kwargs)

    def _preview(self, data: Any) -> None:
        """``augmentation.png``: a few training samples before and after the augmentation (needs
        matplotlib), titled with the preset or the list of transforms (``data.transforms``)."""
        path = self.run_dir / "augmentation.png"
        transforms = self.config["data"]["transforms"]
        if path.exists() or transforms in ("none", []) or self.config["data"]["patch_size"]:
            return
        try:
            import matplotlib  # noqa: F401

            import delira.augment as da
            from delira.data import collate
        except ImportError:
            return
        batch = collate([data[i] for i in range(min(2, len(data)))])
        batch = {k: v for k, v in batch.items() if k in ("data", "seg")}
        try:
            transform = build_transforms(self.config, batch["data"].shape[2:])
            if transform is None:  # e.g. mirror with no mirror axes
                return
            title = f"data.transforms: {describe_transforms(self.config, transform)}"
            da.preview(batch, transform, path, title=title)
        except Exception as exc:  # a preview must never stop a run
            print(f"note: no augmentation preview ({exc})", file=sys.stderr)


# Keys that may differ between the machines running the folds of one experiment.
_MACHINE_KEYS = ("training.device:", "training.workers:", "launcher.", "logging.")


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping) and key != "args":
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out
