"""Register budget of the fused CUDA kernels, from ``nvcc -Xptxas -v`` (no GPU needed).

Compiles csrc/cuda/engine_cuda.cu for sm_90 only (about a minute on two cores, hence ``slow``) and reads
the ptxas report with scripts/gpu_check.sh's parser, which applies the same budget on the GPU machine:
fused kernels of order 0/1 within 128 registers, order 3 within 200, none spilling. Before the fused
kernel was templated on the label type, the canonical one (float data, int16 labels, 3D, linear) took
242 registers (one 256-thread block per SM); the budget keeps that from creeping back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "packages" / "delira-augment" / "csrc"
_TOOLKIT_NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
NVCC = shutil.which("nvcc") or (str(_TOOLKIT_NVCC) if _TOOLKIT_NVCC.exists() else None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (the CUDA toolkit's bin is not on PATH)"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed"),
]


@pytest.fixture(scope="module")
def register_table(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("ptxas")
    source = str(CSRC / "cuda" / "engine_cuda.cu")
    command = [NVCC, "-std=c++17", "-arch=sm_90", "-Xptxas", "-v", "-I", str(CSRC), "-c", source]
    compile_ = subprocess.run(
        [*command, "-o", str(work / "engine_cuda.o")], capture_output=True, text=True, timeout=600
    )
    assert compile_.returncode == 0, compile_.stderr[-3000:]
    (work / "ptxas.log").write_text(compile_.stdout + compile_.stderr)
    script = f'source "{ROOT / "scripts" / "gpu_check.sh"}"; ptxas_table "$1"'
    env = {**os.environ, "PYTHON": sys.executable}
    table = subprocess.run(
        ["bash", "-c", script, "gpu_check", str(work / "ptxas.log")], env=env, capture_output=True, text=True
    )
    assert table.returncode == 0, table.stderr
    return json.loads(table.stdout)


def test_every_fused_kernel_is_within_its_register_budget(register_table):
    fused = [k for k in register_table["kernels"] if "ndim" in k]
    # float32/float64 data x (no seg, 4 label types) x 2D/3D x orders 0, 1, 3
    assert len(fused) == 2 * 5 * 2 * 3
    assert register_table["over_budget"] == []


def test_the_canonical_kernel_fits_two_blocks_per_sm(register_table):
    (canonical,) = [
        k for k in register_table["kernels"] if "fused_kernelIfsLi3ELi1E" in k["mangled"]
    ]  # float data, int16 (short) labels, 3D, order 1
    assert canonical["registers"] <= 128 and canonical["spill_stores"] == 0
