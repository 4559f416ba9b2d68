"""The ``delira`` command line: ``plan``, ``run``, ``aggregate``, ``predict`` and ``info``.

::

    delira plan DATASET_OR_CONFIG [-o plan.yaml] [--gpu-memory GiB | --device cpu] [--set KEY=VALUE]
    delira run [CONFIG] [--set training.epochs=5] [--run-dir DIR] [--fold K]
    delira run --resume DIR                  # continue an interrupted experiment
    delira run CONFIG --launcher local --jobs 2      # folds as parallel processes
    delira run CONFIG --launcher submitit [--no-wait] # folds as SLURM jobs (submitit)
    delira aggregate DIR                     # summarise folds run separately
    delira sweep CONFIG --param training.lr=log:1e-4:1e-2 --trials 20   # Optuna
    delira predict RUN_DIR --input scan.nii.gz --output seg.nii.gz
    delira predict RUN_DIR --input images/ --output predictions/ [--save-probabilities]
    delira info
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MEMBERS = ["delira-augment", "delira-data", "delira-io", "delira-models", "delira-training"]
BACKENDS = ["torch", "tensorflow"]


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def info(_: argparse.Namespace) -> int:
    """Print package versions, the installed backends and the augment extension's build."""
    print(f"python {platform.python_version()} ({sys.executable})")
    for dist in ["delira", *MEMBERS]:
        print(f"{dist:<18}{_version(dist)}")
    for backend in BACKENDS:
        dist = backend
        if backend == "tensorflow" and _version("tensorflow") == "not installed":
            dist = "tensorflow-cpu"
        print(f"{backend:<18}{_version(dist)}")
    try:
        augment = importlib.import_module("delira.augment")
    except ImportError as exc:
        print(f"delira.augment    not importable: {exc}")
    else:
        for key, value in augment.build_info().items():
            print(f"  augment.{key:<20}{value}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run (or resume) an experiment: k-fold cross-validation as the config says."""
    import time

    from delira.training.experiment import Experiment

    config = args.config
    run_dir = args.run_dir
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            print(
                f"error: {run_dir} has no config.yaml; pass the folder an earlier `delira run` wrote",
                file=sys.stderr,
            )
            return 2
        config = config or run_dir / "config.yaml"
    experiment = Experiment(config, run_dir=run_dir, overrides=args.set or [])
    cfg = experiment.config
    print(
        f"delira run: {cfg['name']} ({cfg['model']['name']}, {cfg['backend']}, {cfg['task']}), "
        f"{cfg['experiment']['folds']} fold(s), {cfg['training']['epochs']} epochs -> {experiment.run_dir}",
        flush=True,
    )
    start = time.perf_counter()
    folds = None if args.fold is None else [args.fold]
    launcher = args.launcher or cfg["launcher"]["name"]
    if launcher == "sequential" and args.jobs is None:
        summary = experiment.kfold(folds=folds)
    else:
        from delira.training.launcher import launch

        if launcher == "sequential":
            launcher = "local"  # --jobs N asks for parallel processes
        try:
            report = launch(experiment, launcher, jobs=args.jobs, wait=not args.no_wait, folds=folds)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.no_wait:
            return 0
        summary = report.summary
    print(f"finished in {time.perf_counter() - start:.0f} s; experiment folder: {experiment.run_dir}")
    from delira.training.distributed import get_rank

    # several processes (DDP, TF workers): rank 0 writes the summary, the others return None
    return 0 if summary is not None or args.fold is not None or get_rank() != 0 else 1


def aggregate(args: argparse.Namespace) -> int:
    """Summarise the finished folds of an experiment folder."""
    from delira.training.experiment import aggregate as _aggregate

    summary = _aggregate(args.run_dir)
    return 0 if not summary["missing"] else 1


def predict(args: argparse.Namespace) -> int:
    """Segment an image or a folder of images with the folds of an experiment, on their original grid."""
    from delira.training.prediction import predict as _predict

    written = _predict(
        args.run_dir,
        args.input,
        args.output,
        folds=args.folds,
        save_probabilities=args.save_probabilities,
        mirror=False if args.no_mirror else None,
        postprocess=False if args.no_postprocess else None,
        progress=not args.no_progress,
    )
    for out in written if len(written) <= 5 else written[:1]:
        print(f"wrote {out}")
    if len(written) > 5:
        print(f"wrote {len(written)} label files to {written[0].parent}")
    return 0


def sweep(args: argparse.Namespace) -> int:
    """Search hyperparameters with Optuna, one experiment folder per trial (delira.training.sweep)."""
    from delira.training.sweep import sweep as _sweep

    result = _sweep(
        args.config,
        args.param or [],
        args.trials,
        run_dir=args.run_dir,
        overrides=args.set or [],
        objective=args.objective,
        direction=args.direction,
        pruner=args.pruner,
        seed=args.seed,
    )
    best = result["best"]
    if best is None:
        print("no trial finished; see trials.csv for their states", file=sys.stderr)
        return 1
    print(f"best trial {best['number']}: {best['value']:.4f} with {best['params']} ({best['run_dir']})")
    return 0


def plan(args: argparse.Namespace) -> int:
    """Fingerprint a dataset and write a complete, commented config (see delira.training.planning)."""
    from delira.training.planning import run_plan

    return int(run_plan(args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``delira``."""
    parser = argparse.ArgumentParser(
        prog="delira", description="Delira: deep learning for medical image analysis"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="package versions, backends and the augment extension's build").set_defaults(
        func=info
    )

    from delira.training.planning import add_plan_arguments

    p = sub.add_parser(
        "plan",
        help="fingerprint an MSD folder and write a config (spacing, normalization, patch, network) with reasons",
        description="Plan an experiment the nnU-Net way: the dataset's fingerprint decides the target spacing, "
        "2D or 3D, the normalization per channel, the patch, batch and UNet topology within a memory budget, "
        "and the augmentation; the output is a YAML config that `delira run` trains as is.",
    )
    add_plan_arguments(p)
    p.set_defaults(func=plan)

    p = sub.add_parser(
        "sweep",
        help="search hyperparameters with Optuna (one experiment folder per trial, pruning per epoch)",
        description="Search config keys with Optuna: each trial runs the experiment with the trial's values; "
        "trials are pruned on the validation metric per epoch; the study lives in SWEEP_DIR/optuna.db, so "
        "running the same command again continues it.",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config file or shipped config name")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=KIND:SPEC",
        help="a searched key: log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or choice:A|B|C (repeatable)",
    )
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value for every trial"
    )
    p.add_argument("--run-dir", default=None, help="sweep folder (default: <experiment.output>/sweep-<name>)")
    p.add_argument(
        "--objective", default=None, help="summary figure to optimise (default: dice_mean / accuracy)"
    )
    p.add_argument("--direction", choices=("maximize", "minimize"), default=None)
    p.add_argument("--pruner", choices=("median", "none"), default="median")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.set_defaults(func=sweep)

    p = sub.add_parser(
        "run",
        help="run an experiment (k-fold cross-validation); no CONFIG: the built-in 3D UNet on phantoms",
        description="Run an experiment. CONFIG is a YAML file or a shipped config name "
        "(unet3d-phantom, unet3d-phantom-tf, resnet3d-phantom, dcgan-phantom, msd-folder).",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config file or shipped config name")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. training.epochs=5"
    )
    p.add_argument(
        "--run-dir", default=None, help="experiment folder (default: <experiment.output>/<name>-<timestamp>)"
    )
    p.add_argument("--fold", type=int, default=None, help="run only this fold (e.g. one per machine)")
    p.add_argument(
        "--launcher",
        choices=("sequential", "local", "submitit"),
        default=None,
        help="how the folds run (default: launcher.name of the config, sequential): local = parallel "
        "processes on this machine, submitit = one cluster job per fold (SLURM)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="local launcher: folds at a time (default: one per GPU or core)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="submitit: return after submitting (then `delira aggregate DIR`)",
    )
    p.add_argument("--resume", metavar="DIR", default=None, help="continue the experiment in DIR")
    p.set_defaults(func=run)

    p = sub.add_parser("aggregate", help="summarise the finished folds of an experiment folder")
    p.add_argument("run_dir", help="the experiment folder")
    p.set_defaults(func=aggregate)

    p = sub.add_parser("predict", help="segment an image with a trained experiment (folds ensembled)")
    p.add_argument("run_dir", help="the experiment folder")
    p.add_argument("--input", required=True, help="an input image (NIfTI, NRRD, ...) or a folder of images")
    p.add_argument(
        "--output",
        required=True,
        help="the output segmentation (same geometry as the input), or a folder for a folder of inputs",
    )
    p.add_argument("--folds", type=int, nargs="*", default=None, help="use only these folds")
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write <case>_probabilities.npz (class probabilities on the input's grid)",
    )
    p.add_argument("--no-mirror", action="store_true", help="no mirroring test-time augmentation")
    p.add_argument("--no-postprocess", action="store_true", help="do not apply the run's postprocessing.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``delira`` command."""
    from delira.data import DatasetError
    from delira.training.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
