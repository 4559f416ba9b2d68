"""Fold launchers: the folds of a cross-validation run one after the other, as parallel processes
on this machine, or as cluster jobs through submitit (SLURM).

Every launcher works on one experiment folder: the main process writes what the folds share
(:meth:`~delira.training.experiment.Experiment.prepare`: ``config.yaml``, ``splits.json``, the
preprocessing state), then each fold trains in its own process (``python -m
delira.training.launcher RUN_DIR FOLD``), resuming from ``fold_<k>/checkpoints/last.safetensors``
when it ran before, and the main process writes the summary once every fold has finished
(:func:`~delira.training.experiment.aggregate`). Starting the same command again runs only the
unfinished folds.

::

    delira run CONFIG --launcher local --jobs 2          # 2 folds at a time on this machine
    delira run CONFIG --launcher submitit                # one SLURM job per fold (a job array)
    delira run CONFIG --launcher submitit --no-wait      # print the job ids and return
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delira.training.config import ConfigError
from delira.training.experiment import Experiment, aggregate

__all__ = ["FoldJob", "LaunchReport", "launch", "local_slots"]

LAUNCHERS = ("sequential", "local", "submitit")


@dataclass
class LaunchReport:
    """What a launch did.

    Attributes:
        run_dir: the experiment folder.
        folds: the folds this launch started (the unfinished ones).
        summary: the summary (:func:`~delira.training.experiment.aggregate`) once every fold has
            finished, else None.
        job_ids: the cluster job ids (submitit), or the local process ids.
        failed: ``{fold: reason}`` of the folds that did not finish.
        jobs: submitit's ``Job`` objects (``job.result()``, ``job.cancel()``, ``job.state``).
    """

    run_dir: Path
    folds: list[int]
    summary: dict[str, Any] | None = None
    job_ids: list[str] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    jobs: list[Any] = field(default_factory=list, repr=False)


def launch(
    experiment: Experiment,
    launcher: str | None = None,
    jobs: int | None = None,
    wait: bool = True,
    folds: Sequence[int] | None = None,
) -> LaunchReport:
    """Run the unfinished folds of ``experiment`` with a launcher, then summarise.

    Args:
        experiment: the experiment (its ``launcher`` config section gives the defaults).
        launcher: ``"sequential"``, ``"local"`` or ``"submitit"``; None: ``launcher.name``.
        jobs: ``local``: folds at a time (None: ``launcher.jobs``, else :func:`local_slots`).
        wait: ``submitit``: wait for the jobs and summarise (False: return after submitting).
        folds: only these folds (default every unfinished one).

    Returns:
        A :class:`LaunchReport`; ``summary`` is set when every fold of the run has finished.

    Raises:
        ConfigError: an unknown launcher, or submitit missing (naming the extra to install).
        RuntimeError: folds failed (their logs are named; running the same command again
            resumes them).
    """
    cfg = experiment.config["launcher"]
    name = launcher or cfg["name"]
    if name not in LAUNCHERS:
        raise ConfigError([f"launcher {name!r} is unknown; use one of {', '.join(LAUNCHERS)}"])
    from delira.training.distributed import ClusterEnvironment

    env = ClusterEnvironment.detect()
    if env.is_distributed and name != "sequential":
        raise ConfigError(
            [
                f"this process is rank {env.rank} of {env.world_size} ({env.source}): all ranks train each fold "
                "together; use --launcher sequential (or --fold K) inside torchrun / srun"
            ]
        )
    if jobs is not None and jobs < 1:
        raise ConfigError([f"--jobs {jobs}: give at least 1 (folds at a time)"])
    if name == "submitit":
        _import_submitit()  # fail before the run folder is written
    data, splits = experiment.prepare()
    todo = experiment.unfinished_folds(splits)
    if folds is not None:
        wanted = [int(k) for k in folds]
        bad = [k for k in wanted if not 0 <= k < len(splits)]
        if bad:
            raise ValueError(
                f"folds {bad} do not exist; {experiment.run_dir / 'splits.json'} has 0..{len(splits) - 1}"
            )
        todo = [k for k in todo if k in wanted]
    report = LaunchReport(experiment.run_dir, todo)
    if name == "sequential":
        experiment.fit_folds(data, splits, todo)
    elif name == "local":
        _run_local(experiment, todo, jobs if jobs is not None else cfg["jobs"], report)
    else:
        _run_submitit(experiment, todo, wait, report)
        if not wait:
            return report
    if report.failed:
        lines = "\n".join(f"  fold {k}: {why}" for k, why in sorted(report.failed.items()))
        raise RuntimeError(
            f"{len(report.failed)} fold(s) of {experiment.run_dir} did not finish:\n{lines}\n"
            "Run the same command again (or `delira run --resume DIR --launcher ...`): finished folds are "
            "kept and the others resume from their last checkpoint."
        )
    if not experiment.unfinished_folds(splits):
        report.summary = aggregate(experiment.run_dir, quiet=not experiment.verbose)
    return report


# --- local processes ---------------------------------------------------------------------------
def local_slots(config: Mapping[str, Any], jobs: int | None = None) -> list[dict[str, str]]:
    """The process slots of the local launcher: one per GPU when ``training.device`` is ``cuda``
    (each slot trains on its own ``cuda:<i>``), else ``jobs`` (default: one per CPU core) CPU
    slots that share the cores evenly.

    Returns:
        One dict per slot: ``{"device": training.device, "threads": str(CPU threads)}``.
    """
    device = str(config["training"]["device"])
    cores = os.cpu_count() or 1
    every_gpu = device == "cuda" if config["backend"] == "torch" else device.upper() in ("GPU", "/GPU")
    gpus = _gpu_count(config) if every_gpu else 0
    if every_gpu and gpus == 0:
        raise ConfigError(
            [
                f"training.device: {device!r} but no GPU is visible; set training.device: cpu or check the driver"
            ]
        )
    if gpus > 0:
        n = jobs or gpus
        if n > gpus:
            raise ConfigError(
                [
                    f"launcher.jobs: {n} processes but only {gpus} GPU(s) are visible; set launcher.jobs <= {gpus}"
                ]
            )
        names = [f"cuda:{i}" if config["backend"] == "torch" else f"/GPU:{i}" for i in range(n)]
        return [{"device": d, "threads": str(max(1, cores // n))} for d in names]
    # one named GPU (cuda:1, /GPU:0): the folds share it, one at a time unless asked
    n = jobs or (cores if device.lower().startswith("cpu") else 1)
    return [{"device": device, "threads": str(max(1, cores // n))} for _ in range(n)]


def _gpu_count(config: Mapping[str, Any]) -> int:
    if config["backend"] == "torch":
        import torch

        return torch.cuda.device_count()
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def fold_command(run_dir: Path, fold: int, overrides: Sequence[str] = ()) -> list[str]:
    """The command that trains fold ``fold`` of ``run_dir`` in a process of its own."""
    command = [sys.executable, "-m", "delira.training.launcher", str(run_dir), str(fold)]
    for item in overrides:
        command += ["--set", item]
    return command


def _run_local(experiment: Experiment, folds: list[int], jobs: int | None, report: LaunchReport) -> None:
    slots = local_slots(experiment.config, jobs)
    free = list(range(len(slots)))
    pending = list(folds)
    running: dict[int, tuple[subprocess.Popen, int, Any, float]] = {}
    log = experiment._log
    log(f"local launcher: {len(folds)} fold(s), {len(slots)} at a time ({slots[0]['device']})")
    try:
        while pending or running:
            while pending and free:
                k, slot = pending.pop(0), free.pop(0)
                fold_dir = experiment.run_dir / f"fold_{k}"
                fold_dir.mkdir(parents=True, exist_ok=True)
                out = open(fold_dir / "launcher.log", "ab")
                env = dict(os.environ)
                threads = slots[slot]["threads"]
                env.update(
                    OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, DELIRA_AUGMENT_NUM_THREADS=threads
                )
                env.setdefault("PYTHONUNBUFFERED", "1")
                overrides = [f"training.device={slots[slot]['device']}"]
                process = subprocess.Popen(
                    fold_command(experiment.run_dir, k, overrides),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                report.job_ids.append(str(process.pid))
                running[k] = (process, slot, out, time.perf_counter())
                log(
                    f"fold {k}: started (pid {process.pid}, {slots[slot]['device']}, log {fold_dir / 'launcher.log'})"
                )
            time.sleep(0.2)
            for k, (process, slot, out, started) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                out.close()
                free.append(slot)
                del running[k]
                seconds = time.perf_counter() - started
                if code == 0:
                    log(f"fold {k}: finished in {seconds:.0f} s")
                else:
                    tail = _tail(experiment.run_dir / f"fold_{k}" / "launcher.log")
                    report.failed[k] = (
                        f"exit code {code}; see {experiment.run_dir / f'fold_{k}' / 'launcher.log'}{tail}"
                    )
    except BaseException:
        for process, *_ in running.values():  # Ctrl-C: stop the folds; they resume later
            process.terminate()
        for process, _, out, _ in running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            out.close()
        raise


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "".join(f"\n      {line}" for line in text[-lines:])


# --- submitit ----------------------------------------------------------------------------------
def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(
            [
                "launcher submitit needs the submitit package: pip install 'delira-training[cluster]' "
                f"(or pip install submitit), or use --launcher local ({exc})"
            ]
        ) from exc
    return submitit


class FoldJob:
    """One fold as a submitit job: ``FoldJob(run_dir)(fold)`` trains fold ``fold`` of ``run_dir``
    (resuming from its last checkpoint) and returns its ``result.json``. Pre-empted or timed-out
    jobs are requeued by submitit (:meth:`checkpoint`) and resume where the last epoch ended."""

    def __init__(
        self, run_dir: str | os.PathLike[str], overrides: Sequence[str] = (), threads: int | None = None
    ) -> None:
        self.run_dir = str(run_dir)
        self.overrides = list(overrides)
        self.threads = threads

    def __call__(self, fold: int) -> dict[str, Any]:
        return train_fold(self.run_dir, fold, self.overrides, threads=self.threads)

    def checkpoint(self, fold: int) -> Any:
        """Called by submitit on pre-emption or timeout: requeue the same fold (the trainer's
        last checkpoint is the state it resumes from)."""
        import submitit

        return submitit.helpers.DelayedSubmission(FoldJob(self.run_dir, self.overrides, self.threads), fold)


def _executor(experiment: Experiment) -> Any:
    submitit = _import_submitit()
    cfg = experiment.config["launcher"]
    cluster = cfg["cluster"] or ("slurm" if shutil.which("sbatch") else "local")
    folder = experiment.run_dir / "jobs" / "%j"
    executor = submitit.AutoExecutor(
        folder=folder,
        cluster=cluster,
        slurm_max_num_timeout=cfg["max_requeues"],
        local_max_num_timeout=cfg["max_requeues"],
    )
    params: dict[str, Any] = {
        "name": f"delira-{experiment.config['name']}",
        "timeout_min": cfg["time_min"],
        "cpus_per_task": cfg["cpus_per_fold"],
        "gpus_per_node": cfg["gpus_per_fold"],
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if cfg["mem_gb"] is not None:
        params["mem_gb"] = cfg["mem_gb"]
    if cfg["partition"]:
        params["slurm_partition"] = cfg["partition"]
    if cfg["account"]:
        params["slurm_account"] = cfg["account"]
    if cfg["slurm_options"]:
        params["slurm_additional_parameters"] = {str(k): v for k, v in cfg["slurm_options"].items()}
    executor.update_parameters(**params)
    return executor


def _run_submitit(experiment: Experiment, folds: list[int], wait: bool, report: LaunchReport) -> None:
    if not folds:
        return
    executor = _executor(experiment)
    threads = experiment.config["launcher"]["cpus_per_fold"]
    submitted = executor.map_array(FoldJob(experiment.run_dir, threads=threads), folds)
    report.jobs = list(submitted)
    report.job_ids = [str(job.job_id) for job in submitted]
    log = experiment._log
    log(
        f"submitit ({executor.cluster}): folds {folds} as jobs {', '.join(report.job_ids)}; logs in "
        f"{experiment.run_dir / 'jobs'}"
    )
    if not wait:
        print(
            f"submitted folds {folds} of {experiment.run_dir} as jobs {' '.join(report.job_ids)}; when they "
            f"have finished: delira aggregate {experiment.run_dir}",
            flush=True,
        )
        return
    for k, job in zip(folds, submitted):
        try:
            job.result()
            log(f"fold {k}: finished (job {job.job_id})")
        except Exception as exc:  # submitit raises its own errors with the job's stderr
            report.failed[k] = (
                f"job {job.job_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
            )


# --- one fold in this process ------------------------------------------------------------------
def train_fold(
    run_dir: str | os.PathLike[str], fold: int, overrides: Sequence[str] = (), threads: int | None = None
) -> dict[str, Any]:
    """Train (or resume) fold ``fold`` of the prepared experiment folder ``run_dir`` in this process.

    ``overrides`` may set only the keys that may differ between machines (``training.device``,
    ``training.workers``, ``launcher.*``); ``threads``: the CPU threads of torch and
    delira.augment in this process (a cluster job's cores). Returns the fold's ``result.json``.
    """
    run_dir = Path(run_dir)
    if threads:
        _use_threads(int(threads))
    if not (run_dir / "splits.json").exists():
        raise FileNotFoundError(
            f"{run_dir} has no splits.json: a fold job needs a prepared experiment folder "
            "(delira.training.launcher.launch or `delira run` writes it)"
        )
    experiment = Experiment(run_dir / "config.yaml", run_dir=run_dir, overrides=overrides)
    data, splits = experiment.prepare()
    (result,) = experiment.fit_folds(data, splits, [int(fold)])
    return result


def _use_threads(n: int) -> None:
    os.environ.update(OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n), DELIRA_AUGMENT_NUM_THREADS=str(n))
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    try:
        import delira.augment as da

        da.set_num_threads(n)
    except ImportError:
        pass


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m delira.training.launcher",
        description="train one fold of a prepared experiment folder",
    )
    parser.add_argument("run_dir")
    parser.add_argument("fold", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    train_fold(args.run_dir, args.fold, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
