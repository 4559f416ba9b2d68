"""Each package builds a wheel on its own; delira-augment installs alone; `pip install .` installs all.

These build wheels and create virtual environments, so they are marked slow; CI runs them.
The compiled package is built CPU-only here (DELIRA_AUGMENT_CUDA=OFF through --config-settings) to
keep the run short: the CUDA build is covered by the development install and the C++ superbuild.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = ["augment", "data", "io", "models", "training"]

pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    build_dir = tmp_path_factory.mktemp("augment-build")
    for name in MEMBERS:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out)]
        if name == "augment":
            cmd += [
                "--config-settings=cmake.define.DELIRA_AUGMENT_CUDA=OFF",
                f"--config-settings=build-dir={build_dir}",
            ]
        _run([*cmd, str(ROOT / "packages" / f"delira-{name}")])
    return out


def test_every_package_builds_a_wheel_on_its_own(wheels):
    built = {p.name.split("-")[0] for p in wheels.glob("*.whl")}
    assert built == {f"delira_{m}" for m in MEMBERS}
    for whl in wheels.glob("*.whl"):
        names = zipfile.ZipFile(whl).namelist()
        assert "delira/__init__.py" not in names, f"{whl.name} ships delira/__init__.py"
        module = whl.name.split("-")[0].removeprefix("delira_")
        assert f"delira/{module}/py.typed" in names
        assert f"delira/{module}/__init__.py" in names


def _fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def test_augment_alone_installs_imports_and_pulls_no_framework(wheels, tmp_path):
    py = _fresh_venv(tmp_path / "venv")
    (whl,) = wheels.glob("delira_augment-*.whl")
    _run([py, "-m", "pip", "install", "--quiet", str(whl)])
    check = (
        "import sys, numpy as np, delira.augment as da\n"
        "x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)[:, ::-1]\n"
        "assert np.array_equal(da.flip(x, (0, 2)), np.flip(x, (0, 2)))\n"
        "info = da.build_info()\n"
        "assert info['compiled'] and not info['cuda_compiled'], info\n"
        "assert not {'torch', 'tensorflow'} & set(sys.modules)\n"
        "print('ok')\n"
    )
    assert _run([py, "-c", check], cwd=tmp_path).stdout.strip() == "ok"
    installed = _run([py, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    assert "torch" not in installed and "tensorflow" not in installed, installed
    assert "delira-augment==0.1.0" in installed


def test_training_alone_installs_what_the_default_job_imports(wheels, tmp_path):
    """``pip install delira-training`` (no meta-package, no extras) brings every delira package the
    default job imports: its config, its phantom dataset, the canonical augmentation (delira-augment),
    the loader, the planner's model registry and delira-io's checkpoint format; no framework."""
    py = _fresh_venv(tmp_path / "venv")
    # third-party dependencies from the registry first; the delira members only from the built wheels,
    # so that a release of the same name on the registry cannot stand in for the checkout's code
    _run([py, "-m", "pip", "install", "--quiet", "numpy", "pyyaml>=6", "scipy>=1.10", "tqdm>=4.60"])
    (whl,) = wheels.glob("delira_training-*.whl")
    _run([py, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels), str(whl)])
    check = (
        "import sys, numpy as np\n"
        "from delira.training.config import load_config\n"
        "from delira.training.builders import build_dataset, build_transforms\n"
        "from delira.data import DataLoader, collate\n"
        "import delira.augment, delira.io, delira.models.registry\n"
        "cfg = load_config(None, ['data.phantom.num_cases=2', 'data.phantom.shape=[16,16,16]'])\n"
        "ds = build_dataset(cfg)\n"
        "batch = collate([ds[0], ds[1]])\n"
        "tf = build_transforms(cfg, batch['data'].shape[2:], seed=0)\n"
        "out = tf(data=batch['data'], seg=batch['seg'])\n"
        "assert out['data'].shape == batch['data'].shape, out['data'].shape\n"
        "assert type(tf).__module__.startswith('delira.augment'), type(tf)\n"
        "assert delira.augment.build_info()['compiled']\n"
        "assert not {'torch', 'tensorflow'} & set(sys.modules)\n"
        "print('ok')\n"
    )
    assert _run([py, "-c", check], cwd=tmp_path).stdout.strip() == "ok"
    installed = _run([py, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    for member in ("augment", "data", "io", "models", "training"):
        assert f"delira-{member}==0.1.0" in installed, installed


def test_cpu_only_build_passes_the_cpu_flip_tests(wheels, tmp_path):
    py = _fresh_venv(tmp_path / "venv")
    (whl,) = wheels.glob("delira_augment-*.whl")
    _run([py, "-m", "pip", "install", "--quiet", str(whl), "pytest"])
    env = dict(os.environ, DELIRA_AUGMENT_CUDA="OFF")
    result = _run(
        [
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not torch and not tf",
            "--rootdir",
            str(tmp_path),
            str(ROOT / "tests" / "augment" / "test_flip.py"),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert " passed" in result.stdout


def test_meta_package_installs_all_five_from_the_checkout(tmp_path):
    py = _fresh_venv(tmp_path / "venv")
    env = dict(os.environ, DELIRA_AUGMENT_CUDA="OFF")
    _run([py, "-m", "pip", "install", "--quiet", str(ROOT)], env=env, cwd=tmp_path)
    code = (
        "import delira.augment, delira.data, delira.io, delira.models, delira.training\n"
        "from importlib.metadata import version\n"
        "print(' '.join(version(n) for n in ['delira', 'delira-augment', 'delira-data', 'delira-io',"
        " 'delira-models', 'delira-training']))\n"
    )
    assert _run([py, "-c", code], cwd=tmp_path).stdout.split() == ["0.1.0"] * 6


def test_meta_package_release_metadata_uses_compatible_ranges(tmp_path):
    env = dict(os.environ, DELIRA_RELEASE="1")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        env=env,
    )
    (whl,) = tmp_path.glob("delira-*.whl")
    meta = zipfile.ZipFile(whl).read("delira-0.1.0.dist-info/METADATA").decode()
    from packaging.requirements import Requirement

    requires = [
        Requirement(line.split(": ", 1)[1]) for line in meta.splitlines() if line.startswith("Requires-Dist")
    ]
    base = {r.name: str(r.specifier) for r in requires if r.marker is None}
    for name in ("delira-augment", "delira-data", "delira-io", "delira-models", "delira-training"):
        assert base[name] == "<0.2,>=0.1", base
    for extra in ("torch", "tf"):
        forwarded = {
            r.name: r.extras for r in requires if r.marker is not None and r.marker.evaluate({"extra": extra})
        }
        assert extra in forwarded["delira-models"] and extra in forwarded["delira-training"], forwarded
    assert all(r.url is None for r in requires), "a release build must not reference local folders"


def test_cuda_on_without_compiler_says_how_to_fix(tmp_path):
    cmake = Path(sys.executable).parent / "cmake"
    cmake = str(cmake) if cmake.exists() else "cmake"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DELIRA_AUGMENT_CUDA": "ON"}
    result = subprocess.run(
        [cmake, "-S", str(ROOT / "packages" / "delira-augment"), "-B", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert "DELIRA_AUGMENT_CUDA=ON but no CUDA compiler was found" in text
    assert "DELIRA_AUGMENT_CUDA=OFF" in text and "CUDACXX" in text
