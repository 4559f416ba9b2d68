"""scripts/gpu_check.sh without a GPU: it must fail, clearly and early, when it cannot test anything,
and its parsers (JUnit skips, ptxas register table, memcheck summary) must read what the tools write.

The script runs with a hermetic PATH of fake tools (nvidia-smi, nvcc, ...) plus the few system commands
it uses, so the checks do not depend on what this machine has installed; nothing is built.
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
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

SYSTEM_COMMANDS = (
    "bash",
    "env",
    "date",
    "timeout",
    "dirname",
    "mkdir",
    "mktemp",
    "rm",
    "cat",
    "head",
    "tail",
)
SYSTEM_COMMANDS += ("grep", "mv", "nproc", "sleep")

GPU_LISTED = "#!/bin/sh\n[ \"$1\" = -L ] && echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)' || echo 'NVIDIA H200, 570.1, 143771 MiB, 9.0'\n"
NO_DRIVER = '#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n'
FAKE_NVCC = "#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n"
OK_TOOL = "#!/bin/sh\nexit 0\n"


def fake_path(tmp_path: Path, tools: dict[str, str]) -> Path:
    """A bin folder with the fake `tools` and links to the system commands the script needs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in SYSTEM_COMMANDS:
        real = shutil.which(name)
        if real is None:
            pytest.skip(f"{name} is not installed")
        (bindir / name).symlink_to(real)
    for name, body in tools.items():
        path = bindir / name
        path.write_text(body)
        path.chmod(0o755)
    return bindir


def run_check(tmp_path: Path, tools: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    bindir = fake_path(tmp_path, tools)
    out = tmp_path / "out"
    env = {
        "HOME": str(tmp_path),
        "PATH": str(bindir),
        "OUT": str(out),
        "PYTHON": sys.executable,
        "CUDA_HOME": str(tmp_path / "no-toolkit"),  # no toolkit to fall back on
        "GPU_CHECK_BUDGET_S": "60",
    }
    proc = subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    report = json.loads((out / "gpu-check.json").read_text())
    return proc, report


def test_the_script_is_valid_bash():
    subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_it_fails_in_the_preflight_and_says_so(tmp_path):
    tools = {"nvidia-smi": NO_DRIVER, "nvcc": FAKE_NVCC, "ninja": OK_TOOL, "compute-sanitizer": OK_TOOL}
    proc, report = run_check(tmp_path, tools)
    assert proc.returncode == 1
    assert "no CUDA device" in proc.stdout and "couldn't communicate with the NVIDIA driver" in proc.stdout
    assert report["status"] == "failed"
    assert [s["name"] for s in report["steps"]] == ["preflight"]  # nothing was built or run
    assert any("no CUDA device" in f for f in report["failures"])
    assert not (tmp_path / "out" / "logs" / "build.log").exists()
    assert "release 13.0" in proc.stdout  # nvcc --version is printed up front


def test_without_nvidia_smi_it_fails_and_says_there_is_no_driver(tmp_path):
    proc, report = run_check(tmp_path, {"nvcc": FAKE_NVCC, "ninja": OK_TOOL, "compute-sanitizer": OK_TOOL})
    assert proc.returncode == 1 and report["status"] == "failed"
    assert "nvidia-smi is not on PATH" in report["failures"][0]


def test_missing_tools_are_all_reported_before_anything_runs(tmp_path):
    proc, report = run_check(tmp_path, {"nvidia-smi": GPU_LISTED})
    assert proc.returncode == 1
    (failure,) = report["failures"]
    for tool in ("nvcc not found", "ninja not found", "compute-sanitizer not found"):
        assert tool in failure
    assert "no CUDA device" not in failure
    assert "NVIDIA H200, 570.1" in proc.stdout  # the driver line


# ---------------------------------------------------------------------------------------------
# The parsers, called through `source scripts/gpu_check.sh` (which runs nothing by itself).


def call(function: str, *args: str) -> subprocess.CompletedProcess:
    script = f'source "{SCRIPT}"; {function} "$@"'
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([BASH, "-c", script, "gpu_check", *args], env=env, capture_output=True, text=True)


def junit(tmp_path: Path, cases: list[str]) -> Path:
    path = tmp_path / "junit.xml"
    body = "".join(cases)
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{body}</testsuite></testsuites>'
    )
    return path


PASS = '<testcase classname="tests.augment.test_engine_cuda" name="test_a" time="0.1"/>'
SKIP = (
    '<testcase classname="tests.augment.test_engine_cuda" name="test_b" time="0">'
    '<skipped type="pytest.skip" message="no CUDA device (driver too old)"/></testcase>'
)
FAIL = '<testcase classname="t" name="test_c"><failure message="assert 1 == 2"/></testcase>'


def test_a_skipped_cuda_test_fails_the_check(tmp_path):
    counts = call("junit_counts", str(junit(tmp_path, [PASS, SKIP, PASS])))
    assert counts.returncode == 0, counts.stderr
    parsed = json.loads(counts.stdout)
    assert (parsed["tests"], parsed["skipped"], parsed["failures"]) == (3, 1, 0)
    (tmp_path / "counts.json").write_text(counts.stdout)
    verdict = call("tests_verdict", str(tmp_path / "counts.json"), "0")
    assert verdict.returncode == 1
    assert "1 skipped" in verdict.stdout and "driver too old" in verdict.stdout


@pytest.mark.parametrize(
    ("cases", "rc", "passes", "message"),
    [
        ([PASS, PASS], "0", True, "2 passed"),
        ([], "5", False, "no cuda test ran"),
        ([PASS, FAIL], "1", False, "1 failed"),
    ],
)
def test_the_test_verdict(tmp_path, cases, rc, passes, message):
    counts = call("junit_counts", str(junit(tmp_path, cases)))
    (tmp_path / "counts.json").write_text(counts.stdout)
    verdict = call("tests_verdict", str(tmp_path / "counts.json"), rc)
    assert (verdict.returncode == 0) == passes and message in verdict.stdout


def ptxas_log(registers: int, spills: int = 0) -> str:
    """ptxas -v output as nvcc 13 prints it for the canonical fused kernel and one other kernel."""
    fused = (
        "_ZN6delira4cuda47_GLOBAL__N__2a_14_engine_cuda_cu_12fused_kernelIfsLi3ELi1EEEvNS1_9FusedArgsIXT1_EEE"
    )
    stats = "_ZN6delira4cuda47_GLOBAL__N__2a_14_engine_cuda_cu_18chunk_stats_kernelIfEEvPKT_lllPNS_7MomentsE"
    return (
        f"ptxas info    : Compiling entry function '{fused}' for 'sm_90'\n"
        f"ptxas info    : Function properties for {fused}\n"
        f"    48 bytes stack frame, {spills} bytes spill stores, {spills} bytes spill loads\n"
        f"ptxas info    : Used {registers} registers, used 0 barriers, 48 bytes cumulative stack size\n"
        f"ptxas info    : Compiling entry function '{stats}' for 'sm_90'\n"
        f"ptxas info    : Function properties for {stats}\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 52 registers, used 1 barriers, 8192 bytes smem\n"
    )


@pytest.mark.parametrize(
    ("registers", "spills", "passes"),
    [(128, 0, True), (242, 0, False), (120, 16, False)],  # 242: the fused kernel before templating on labels
)
def test_the_register_table_and_budget(tmp_path, registers, spills, passes):
    log = tmp_path / "build.log"
    log.write_text("[12/15] Building CUDA object engine_cuda.cu.o\n" + ptxas_log(registers, spills))
    table = call("ptxas_table", str(log))
    assert table.returncode == 0, table.stderr
    parsed = json.loads(table.stdout)
    fused = [k for k in parsed["kernels"] if "ndim" in k]
    assert len(parsed["kernels"]) == 2 and len(fused) == 1
    assert (fused[0]["ndim"], fused[0]["order"], fused[0]["registers"]) == (3, 1, registers)
    assert fused[0]["spill_stores"] == spills and fused[0]["budget"] == 128
    (tmp_path / "table.json").write_text(table.stdout)
    assert (call("registers_verdict", str(tmp_path / "table.json")).returncode == 0) == passes


def test_a_log_without_fused_kernels_fails_the_register_step(tmp_path):
    (tmp_path / "build.log").write_text("nothing compiled\n")
    table = call("ptxas_table", str(tmp_path / "build.log"))
    (tmp_path / "table.json").write_text(table.stdout)
    verdict = call("registers_verdict", str(tmp_path / "table.json"))
    assert verdict.returncode == 1 and "no fused kernels" in verdict.stdout


@pytest.mark.parametrize(("text", "errors"), [("========= ERROR SUMMARY: 0 errors\n", 0), ("boom\n", None)])
def test_the_memcheck_summary(tmp_path, text, errors):
    (tmp_path / "memcheck.log").write_text("memcheck case ran\n" + text)
    summary = call("memcheck_summary", str(tmp_path / "memcheck.log"))
    assert json.loads(summary.stdout) == {"errors": errors}
