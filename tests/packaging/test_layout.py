"""The monorepo layout: five packages in one PEP 420 namespace, each installed from this checkout."""

from __future__ import annotations

import importlib
import json
from importlib.metadata import distribution
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = ["augment", "data", "io", "models", "training"]


@pytest.mark.parametrize("name", MEMBERS)
def test_member_layout(name):
    pkg = ROOT / "packages" / f"delira-{name}"
    for f in ("pyproject.toml", "README.md", "CHANGELOG.md", f"src/delira/{name}/py.typed"):
        assert (pkg / f).is_file(), f"packages/delira-{name}/{f} is missing"
    assert not (pkg / "src" / "delira" / "__init__.py").exists(), "delira/ must stay a PEP 420 namespace"
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"delira-{name}"


@pytest.mark.parametrize("name", MEMBERS)
def test_version_comes_from_installed_metadata(name):
    module = importlib.import_module(f"delira.{name}")
    pyproject = tomllib.loads((ROOT / "packages" / f"delira-{name}" / "pyproject.toml").read_text())
    assert module.__version__ == pyproject["project"]["version"] == distribution(f"delira-{name}").version


def test_delira_is_a_namespace_package():
    import delira

    assert getattr(delira, "__file__", None) is None
    assert len(list(delira.__path__)) >= len(MEMBERS)


@pytest.mark.parametrize("name", MEMBERS)
def test_members_are_installed_from_this_checkout(name):
    """The dagster-style guard: a member taken from a registry instead of packages/ fails here."""
    direct_url = distribution(f"delira-{name}").read_text("direct_url.json")
    assert direct_url, f"delira-{name} was not installed from a local folder (pip list --exclude-editable)"
    url = json.loads(direct_url)["url"]
    assert url == (ROOT / "packages" / f"delira-{name}").as_uri(), url


def test_meta_package_ranges_cover_member_versions():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = meta["tool"]["delira"]["members"]
    assert sorted(members) == sorted(f"delira-{m}" for m in MEMBERS)
    from packaging.specifiers import SpecifierSet

    for name, spec in members.items():
        version = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())["project"][
            "version"
        ]
        assert version in SpecifierSet(spec), f"{name} {version} is outside the meta-package range {spec}"


def test_importing_members_does_not_import_frameworks():
    import subprocess
    import sys

    code = (
        "import sys, delira.augment, delira.data, delira.io, delira.models, delira.training;"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
