#!/usr/bin/env bash
# GPU check of delira-augment on a fresh machine with an NVIDIA GPU (H100/H200, python3 with torch,
# cupy, jax with its CUDA plugin (the DLPack tests), pytest, hypothesis, scipy, numpy, pybind11,
# scikit-build-core and cmake installed). It passes only when every step ran and passed; it cannot
# pass having tested nothing:
#
#   preflight  a GPU (nvidia-smi), nvcc, ninja, compute-sanitizer and the Python modules, all up front;
#              prints nvcc --version, the driver and the GPUs
#   build      pip install --no-build-isolation --no-deps ./packages/delira-augment with CUDA ON, for
#              CMAKE_CUDA_ARCHITECTURES=90 only, ptxas -v in the log
#   device     the built extension has CUDA and sees the GPU (cuda_device_count() > 0)
#   registers  ptxas registers/stack/spills of every kernel; fails when a fused kernel spills or exceeds
#              its register budget (order 0/1: 128, order 3: 200)
#   tests      pytest -m cuda tests/augment; fails on any failure or error, on any skipped test (JUnit
#              XML) and when nothing ran
#   memcheck   compute-sanitizer memcheck on scripts/gpu_memcheck_case.py (every CUDA entry point)
#   benchmark  benchmarks/augment/gpu_bench.py: batch 32 against the torch affine_grid/grid_sample
#              pipeline, and the CPU == CUDA same-seed check
#
# Every figure goes into one JSON, $OUT/gpu-check.json (OUT defaults to ./gpu-check-out), with the status
# of each step; the logs are kept in $OUT/logs. Each step has its own timeout and the whole run stays
# within GPU_CHECK_BUDGET_S seconds (default 470, under 8 minutes).
#
# Usage: [OUT=dir] [PYTHON=python3] [GPU_CHECK_BUDGET_S=470] bash scripts/gpu_check.sh
# `source scripts/gpu_check.sh` defines the functions without running anything (for the tests).
set -uo pipefail

PY="${PYTHON:-python3}"
REGISTER_BUDGET_LINEAR=128  # fused kernels of order 0 and 1
REGISTER_BUDGET_CUBIC=200   # fused kernels of order 3

log() { printf '%s\n' "$*"; }
now() { date +%s; }

# Locates a CUDA tool on PATH, else in $CUDA_HOME/bin or $CUDA_PATH/bin (when set), else in
# /usr/local/cuda/bin; prints its path.
find_tool() {
  local tool=$1 dir dirs=(/usr/local/cuda)
  [[ -n "${CUDA_HOME:-}${CUDA_PATH:-}" ]] && dirs=("${CUDA_HOME:-}" "${CUDA_PATH:-}")  # an explicit toolkit wins
  if command -v "$tool" > /dev/null 2>&1; then command -v "$tool"; return 0; fi
  for dir in "${dirs[@]}"; do
    if [[ -n "$dir" && -x "$dir/bin/$tool" ]]; then printf '%s\n' "$dir/bin/$tool"; return 0; fi
  done
  return 1
}

# Seconds a step may take: its own limit, capped by what is left of the run's budget.
step_limit() {
  local limit=$1 left=$((DEADLINE - $(now)))
  ((left < 1)) && left=1
  ((limit < left)) && left=$limit
  printf '%s\n' "$left"
}

# record NAME STATUS SECONDS DETAIL: one line of the steps table (tab-separated).
record() {
  local detail=${4:-}
  detail=${detail//$'\t'/ }
  detail=${detail//$'\n'/; }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$detail" >> "$PARTS/steps.tsv"
  log "   -> $1: $2 (${3}s)${detail:+ - $detail}"
  [[ "$2" == passed ]] || FAILED=1
}

# run_step NAME LIMIT LOGFILE CMD...: runs CMD with a timeout, output to LOGFILE; sets STEP_RC/STEP_S.
run_step() {
  local name=$1 limit t0
  limit=$(step_limit "$2")
  local logfile=$3
  shift 3
  log "== $name (limit ${limit}s)"
  t0=$(now)
  timeout --kill-after=10 "$limit" "$@" > "$logfile" 2>&1
  STEP_RC=$?
  STEP_S=$(($(now) - t0))
  if ((STEP_RC == 124 || STEP_RC == 137)); then
    log "   timed out after ${limit}s; last lines of $logfile:"
    tail -15 "$logfile"
  fi
}

# junit_counts FILE: JSON {tests, failures, errors, skipped, skipped_tests: [...], failed_tests: [...]}.
junit_counts() {
  "$PY" - "$1" << 'EOF'
import json, sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
cases = list(root.iter("testcase"))
out = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0, "skipped_tests": [], "failed_tests": []}
for case in cases:
    name = f"{case.get('classname', '')}::{case.get('name', '')}"
    for kind in ("failure", "error", "skipped"):
        for el in case.findall(kind):
            key = {"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]
            out[key] += 1
            entry = {"test": name, "message": (el.get("message") or "")[:300]}
            out["skipped_tests" if kind == "skipped" else "failed_tests"].append(entry)
print(json.dumps(out))
EOF
}

# ptxas_table LOG: JSON {kernels: [...], over_budget: [...]} from `ptxas -v` output in LOG.
ptxas_table() {
  "$PY" - "$1" "$REGISTER_BUDGET_LINEAR" "$REGISTER_BUDGET_CUBIC" << 'EOF'
import json, re, shutil, subprocess, sys

text = open(sys.argv[1], errors="replace").read()
budget_linear, budget_cubic = int(sys.argv[2]), int(sys.argv[3])
kernels, current = [], None
for line in text.splitlines():
    m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
    if m:
        current = {"mangled": m.group(1), "arch": m.group(2), "stack": 0, "spill_stores": 0, "spill_loads": 0}
        continue
    if current is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m:
        current["registers"] = int(m.group(1))
        kernels.append(current)
        current = None
if kernels and shutil.which("c++filt"):
    names = subprocess.run(["c++filt"], input="\n".join(k["mangled"] for k in kernels), capture_output=True, text=True).stdout.splitlines()
    for k, name in zip(kernels, names):
        name = re.sub(r"delira::cuda::\(anonymous namespace\)::", "", name).replace("void ", "")
        k["name"] = name.split("(")[0].replace("unsigned char", "uint8")
over = []
for k in kernels:
    k.setdefault("name", k["mangled"])
    m = re.search(r"fused_kernelI.*Li(\d)ELi(\d)EE", k["mangled"])
    if not m:
        continue
    k["ndim"], k["order"] = int(m.group(1)), int(m.group(2))
    k["budget"] = budget_cubic if k["order"] == 3 else budget_linear
    if k["registers"] > k["budget"] or k["spill_stores"] > 0:
        over.append(f"{k['name']} ({k['arch']}): {k['registers']} registers, {k['spill_stores']} B spilled; budget {k['budget']}, no spills")
print(json.dumps({"kernels": kernels, "fused_kernels": sum("ndim" in k for k in kernels), "over_budget": over}))
EOF
}

# tests_verdict COUNTS_JSON PYTEST_RC: prints what the cuda test run shows; fails unless every test ran
# and passed (no failure, no error, no skip, at least one test).
tests_verdict() {
  "$PY" - "$1" "$2" << 'EOF'
import json, sys

r, rc = json.load(open(sys.argv[1])), int(sys.argv[2])
problems = []
if r["tests"] == 0:
    problems.append("no cuda test ran")
if r["failures"] or r["errors"]:
    problems.append(f"{r['failures']} failed, {r['errors']} errors")
if r["skipped"]:
    first = r["skipped_tests"][0]
    problems.append(f"{r['skipped']} skipped, so not everything was tested (e.g. {first['test']}: {first['message']})")
if rc != 0 and not problems:
    problems.append(f"pytest exited with {rc}")
print("; ".join(problems) or f"{r['tests']} passed")
sys.exit(1 if problems else 0)
EOF
}

# registers_verdict TABLE_JSON: prints the fused kernels over budget; fails when there are any, or none
# were found in the ptxas output.
registers_verdict() {
  "$PY" - "$1" << 'EOF'
import json, sys

r = json.load(open(sys.argv[1]))
if not r["fused_kernels"]:
    print("no fused kernels in the ptxas output")
    sys.exit(1)
print("; ".join(r["over_budget"]) or f"{r['fused_kernels']} fused kernels within budget, no spills")
sys.exit(1 if r["over_budget"] else 0)
EOF
}

# memcheck_summary LOG: JSON {errors} from compute-sanitizer's "ERROR SUMMARY: N errors" (null if absent).
memcheck_summary() {
  "$PY" - "$1" << 'EOF'
import json, re, sys

m = re.findall(r"ERROR SUMMARY: (\d+) error", open(sys.argv[1], errors="replace").read())
print(json.dumps({"errors": int(m[-1]) if m else None}))
EOF
}

# Writes $OUT/gpu-check.json from the steps table and the parts; prints the verdict; exits.
finish() {
  local status=passed
  ((FAILED)) && status=failed
  if command -v "$PY" > /dev/null 2>&1; then
    "$PY" - "$PARTS" "$OUT/gpu-check.json" "$status" "$(($(now) - START))" << 'EOF'
import json, os, sys

parts, target, status, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
report = {"status": status, "seconds": seconds, "steps": [], "failures": []}
if os.path.exists(os.path.join(parts, "steps.tsv")):
    for line in open(os.path.join(parts, "steps.tsv")):
        name, state, secs, detail = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
        report["steps"].append({"name": name, "status": state, "seconds": int(secs or 0), "detail": detail})
        if state != "passed":
            report["failures"].append(f"{name}: {state}" + (f" - {detail}" if detail else ""))
for name in sorted(os.listdir(parts)):
    if name.endswith(".json"):
        try:
            report[name[:-5]] = json.load(open(os.path.join(parts, name)))
        except ValueError as exc:
            report[name[:-5]] = {"unreadable": str(exc)}
bench = report.get("benchmark", {})
if "goal" in bench:
    report["goal"] = bench["goal"]
with open(target, "w") as f:
    json.dump(report, f, indent=2)
EOF
  else
    printf '{"status": "%s", "failures": ["python (%s) not found"]}\n' "$status" "$PY" > "$OUT/gpu-check.json"
  fi
  rm -rf "$PARTS"
  log "== $status in $(($(now) - START))s; figures in $OUT/gpu-check.json, logs in $OUT/logs"
  if [[ -f "$OUT/gpu-check.json" ]] && command -v "$PY" > /dev/null 2>&1; then
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); [print('   FAILED', f) for f in r['failures']]; g=r.get('goal'); g and print('   goal:', json.dumps(g))" "$OUT/gpu-check.json"
  fi
  [[ "$status" == passed ]]
  exit $?
}

preflight() {
  local t0 problems=() missing gpus
  t0=$(now)
  log "== preflight"
  if ! command -v nvidia-smi > /dev/null 2>&1; then
    problems+=("no CUDA device: nvidia-smi is not on PATH (no NVIDIA driver installed)")
  elif ! gpus=$(timeout 30 nvidia-smi -L 2>&1) || ! grep -q "^GPU " <<< "$gpus"; then
    problems+=("no CUDA device: nvidia-smi -L lists no GPU ($(head -1 <<< "$gpus"))")
  else
    log "$gpus"
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
      > "$LOGS/driver.txt" 2>&1
    log "driver: $(head -1 "$LOGS/driver.txt")"
  fi
  NVCC=$(find_tool nvcc) || problems+=("nvcc not found (put the CUDA toolkit's bin on PATH or set CUDA_HOME)")
  NINJA=$(find_tool ninja) || problems+=("ninja not found (pip install ninja, or apt-get install ninja-build)")
  SANITIZER=$(find_tool compute-sanitizer) || problems+=("compute-sanitizer not found (it ships with the CUDA toolkit: \$CUDA_HOME/bin)")
  if [[ -n "${NVCC:-}" ]]; then
    export CUDACXX="$NVCC"
    "$NVCC" --version > "$LOGS/nvcc.txt" 2>&1
    log "$(cat "$LOGS/nvcc.txt")"
  fi
  if ! command -v "$PY" > /dev/null 2>&1; then
    problems+=("python not found: $PY (set PYTHON=...)")
  else
    missing=$("$PY" -c "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))" \
      torch cupy jax pytest hypothesis scipy numpy pybind11 scikit_build_core 2>&1) || missing="(python failed: $missing)"
    [[ -n "$missing" ]] && problems+=("Python modules missing for $PY: $missing")
  fi
  "$PY" - "$PARTS/environment.json" "$LOGS" "${NVCC:-}" "${NINJA:-}" "${SANITIZER:-}" << 'EOF' 2> /dev/null
import json, os, platform, sys

target, logs, nvcc, ninja, sanitizer = sys.argv[1:6]
def read(name):
    path = os.path.join(logs, name)
    return open(path).read().strip() if os.path.exists(path) else None
env = {"python": sys.version.split()[0], "platform": platform.platform(), "nvcc": read("nvcc.txt"),
       "gpus_driver": read("driver.txt"), "tools": {"nvcc": nvcc, "ninja": ninja, "compute-sanitizer": sanitizer}}
from importlib import metadata
for dist in ("torch", "cupy-cuda12x", "cupy-cuda13x", "cupy", "jax", "jaxlib", "numpy", "scipy", "pytest"):
    try:
        env.setdefault("packages", {})[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:  # the module check above reports what is missing
        pass
json.dump(env, open(target, "w"))
EOF
  if ((${#problems[@]})); then
    local p detail
    for p in "${problems[@]}"; do log "   $p"; done
    detail=$(printf '%s; ' "${problems[@]}")
    record preflight failed $(($(now) - t0)) "${detail%; }"
    finish
  fi
  record preflight passed $(($(now) - t0))
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
  OUT="${OUT:-gpu-check-out}"
  BUDGET="${GPU_CHECK_BUDGET_S:-470}"
  START=$(now)
  DEADLINE=$((START + BUDGET))
  FAILED=0
  LOGS="$OUT/logs"
  mkdir -p "$LOGS" || exit 2
  PARTS=$(mktemp -d)
  rm -f "$OUT/gpu-check.json"
  unset DELIRA_AUGMENT_EXTENSION  # the installed extension, not a development build

  preflight

  # Build: CUDA required, sm_90 only, ptxas register report in the log.
  run_step build 240 "$LOGS/build.log" env DELIRA_AUGMENT_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip install -v --no-build-isolation --no-deps \
    --config-settings=cmake.define.DELIRA_AUGMENT_CUDA=ON \
    --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
    --config-settings=cmake.define.CMAKE_CUDA_FLAGS=-Xptxas=-v \
    --config-settings=build.verbose=true \
    ./packages/delira-augment
  if ((STEP_RC != 0)); then
    tail -40 "$LOGS/build.log"
    record build failed "$STEP_S" "pip install exited with $STEP_RC (see logs/build.log)"
    finish
  fi
  record build passed "$STEP_S"

  # The installed extension has CUDA and sees a device (also catches a driver too old for the static cudart).
  run_step device 60 "$LOGS/device.log" "$PY" -c "
import json, sys
import delira.augment as da
from delira.augment import _extension
info = da.build_info()
count, error = _extension._C.cuda_device_count() if _extension._C is not None else (0, 'no extension')
info['cuda_device_count'], info['cuda_device_error'] = count, error
json.dump(info, open(sys.argv[1], 'w'))
print(json.dumps(info))
sys.exit(0 if info['cuda_compiled'] and count > 0 else 1)" "$PARTS/build_info.json"
  if ((STEP_RC != 0)); then
    cat "$LOGS/device.log"
    record device failed "$STEP_S" "the installed extension has no CUDA or sees no device: $(tail -1 "$LOGS/device.log")"
    finish
  fi
  record device passed "$STEP_S" "$(tail -1 "$LOGS/device.log")"

  # Register table from the build log (or from a direct sm_90 compile when the log has none).
  local t0=$(now) regs_log="$LOGS/build.log"
  if ! grep -q "Used [0-9]* registers" "$LOGS/build.log"; then
    regs_log="$LOGS/ptxas.log"
    timeout "$(step_limit 120)" "$NVCC" -std=c++17 -arch=sm_90 -Xptxas -v -I packages/delira-augment/csrc \
      -c packages/delira-augment/csrc/cuda/engine_cuda.cu -o "$PARTS/engine_cuda.o" > "$regs_log" 2>&1
  fi
  local verdict
  if ptxas_table "$regs_log" > "$PARTS/registers.json" 2> "$LOGS/registers.log"; then
    if verdict=$(registers_verdict "$PARTS/registers.json"); then
      record registers passed $(($(now) - t0)) "$verdict"
    else
      record registers failed $(($(now) - t0)) "$verdict"
    fi
  else
    record registers failed $(($(now) - t0)) "could not read $regs_log (logs/registers.log)"
  fi

  # The cuda tests: every one must run (a skip means something was not tested).
  run_step tests 150 "$LOGS/cuda-tests.log" "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/augment \
    --junitxml="$LOGS/cuda-tests.xml"
  tail -5 "$LOGS/cuda-tests.log"
  local tests_rc=$STEP_RC tests_s=$STEP_S
  if [[ -f "$LOGS/cuda-tests.xml" ]] && junit_counts "$LOGS/cuda-tests.xml" > "$PARTS/cuda_tests.json"; then
    if verdict=$(tests_verdict "$PARTS/cuda_tests.json" "$tests_rc"); then
      record tests passed "$tests_s" "$verdict"
    else
      record tests failed "$tests_s" "$verdict"
    fi
  else
    record tests failed "$tests_s" "pytest exited with $tests_rc and wrote no JUnit XML (logs/cuda-tests.log)"
  fi

  # compute-sanitizer memcheck; torch's caching allocator off so that every tensor is its own allocation.
  run_step memcheck 180 "$LOGS/memcheck.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$SANITIZER" --tool memcheck --error-exitcode 3 --report-api-errors no "$PY" scripts/gpu_memcheck_case.py
  tail -3 "$LOGS/memcheck.log"
  memcheck_summary "$LOGS/memcheck.log" > "$PARTS/memcheck.json"
  if ((STEP_RC == 0)) && grep -q "memcheck case ran" "$LOGS/memcheck.log"; then
    record memcheck passed "$STEP_S" "$(cat "$PARTS/memcheck.json")"
  else
    record memcheck failed "$STEP_S" "exit $STEP_RC $(cat "$PARTS/memcheck.json") (logs/memcheck.log)"
  fi

  # Benchmark against the torch pipeline, and the CPU == CUDA same-seed check.
  run_step benchmark 150 "$LOGS/benchmark.log" "$PY" benchmarks/augment/gpu_bench.py --batch 32 --parity \
    --json "$PARTS/benchmark.json"
  cat "$LOGS/benchmark.log"
  if ((STEP_RC == 0)); then
    record benchmark passed "$STEP_S"
  else
    record benchmark failed "$STEP_S" "gpu_bench.py exited with $STEP_RC (logs/benchmark.log)"
  fi
  finish
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
