"""build_info(), thread settings and the errors for CUDA inputs without a usable GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

import delira.augment as da
from delira.augment import _cuda, _extension


def test_build_info_keys_and_types():
    info = da.build_info()
    for key in ("version", "cuda_compiled", "cuda_version", "openmp", "num_threads"):
        assert key in info
    assert info["version"] == da.__version__ == "0.1.0"
    assert info["compiled"] is True, info["import_error"]
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1
    assert isinstance(info["openmp"], bool)
    if info["cuda_compiled"]:
        major, minor = info["cuda_version"].split(".")
        assert int(major) >= 11 and int(minor) >= 0
    else:
        assert info["cuda_version"] is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA compiler on this machine")
def test_auto_build_compiles_cuda_where_nvcc_exists():
    if os.environ.get("DELIRA_AUGMENT_CUDA", "AUTO").upper() == "OFF":
        pytest.skip("built with DELIRA_AUGMENT_CUDA=OFF")
    assert da.build_info()["cuda_compiled"] is True


def test_thread_count_defaults_to_environment_variable():
    code = "import delira.augment as da; print(da.get_num_threads(), da.build_info()['num_threads'])"
    env = dict(os.environ, DELIRA_AUGMENT_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "3"]


def test_bad_thread_environment_variable_warns_and_uses_default():
    code = "import delira.augment as da; print(da.get_num_threads())"
    env = dict(os.environ, DELIRA_AUGMENT_NUM_THREADS="many")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "DELIRA_AUGMENT_NUM_THREADS='many' is not a positive integer" in out.stderr
    assert int(out.stdout) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_values(n):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        da.set_num_threads(n)


def test_cuda_input_on_cpu_only_build_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(_extension, "_C", SimpleNamespace(cuda_device_count=lambda: (0, "x")))
    with pytest.raises(RuntimeError, match=r"built without CUDA.*DELIRA_AUGMENT_CUDA=ON.*x\.cpu\(\)"):
        _cuda.require_cuda("flip")


def test_cuda_input_without_gpu_says_so(monkeypatch):
    fake = SimpleNamespace(
        flip_cuda=None, cuda_device_count=lambda: (0, "no CUDA-capable device is detected")
    )
    monkeypatch.setattr(_extension, "_C", fake)
    with pytest.raises(
        RuntimeError, match=r"no GPU is visible.*no CUDA-capable device is detected.*nvidia-smi"
    ):
        _cuda.require_cuda("flip")


def test_real_extension_reports_missing_gpu_or_counts_devices():
    count, error = _extension._C.cuda_device_count()
    assert count >= 0
    if count == 0:
        assert error  # a reason is always given
