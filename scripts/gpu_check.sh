#!/usr/bin/env bash
# GPU validation of delira-augment on a machine with an NVIDIA GPU (H100/H200): build with CUDA, run the
# `cuda` tests, compute-sanitizer memcheck on a small batch, the GPU benchmark; results as files under
# $OUT (default gpu-results/). Fits in 10 minutes. Usage: OUT=dir bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
status=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

echo "== build (DELIRA_AUGMENT_CUDA=ON)"
if ! DELIRA_AUGMENT_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip install --no-build-isolation --no-deps \
    ./packages/delira-augment > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "build failed"; exit 1
fi
"$PY" -c "import json, delira.augment as da; print(json.dumps(da.build_info()))" | tee "$OUT/build_info.json"

echo "== cuda tests"
if "$PY" -c "import pytest" 2>/dev/null; then
  "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/augment/test_engine_cuda.py tests/augment/test_flip_cuda.py \
    --junitxml="$OUT/cuda-tests.xml" > "$OUT/cuda-tests.log" 2>&1 || status=1
  tail -15 "$OUT/cuda-tests.log"
else
  echo "pytest missing: skipped" | tee "$OUT/cuda-tests.log"
fi

echo "== compute-sanitizer memcheck"
if command -v compute-sanitizer > /dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" scripts/gpu_memcheck_case.py > "$OUT/memcheck.log" 2>&1 \
    || status=1
  tail -5 "$OUT/memcheck.log"
else
  echo "compute-sanitizer not found" | tee "$OUT/memcheck.log"
fi

echo "== GPU benchmark"
"$PY" benchmarks/augment/gpu_bench.py --json "$OUT/gpu_bench.json" | tee "$OUT/gpu_bench.txt" || status=1
exit $status
