"""The ``delira`` command line."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

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
        print(
            f"{backend:<18}{_version('tensorflow-cpu' if backend == 'tensorflow' and _version('tensorflow') == 'not installed' else backend)}"
        )
    try:
        augment = importlib.import_module("delira.augment")
    except ImportError as exc:
        print(f"delira.augment    not importable: {exc}")
    else:
        for key, value in augment.build_info().items():
            print(f"  augment.{key:<20}{value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="delira", description="Delira: deep learning for medical image analysis"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="package versions, backends and the augment extension's build").set_defaults(
        func=info
    )
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
