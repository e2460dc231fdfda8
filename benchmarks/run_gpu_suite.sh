#!/usr/bin/env bash
# The one command for a GPU machine (no network needed):
#
#   bash benchmarks/run_gpu_suite.sh
#
# 1. builds the CUDA extension in place (jemfast._C from csrc/),
# 2. runs the whole test suite with the GPU tests enabled,
# 3. runs every benchmarks/bench_*.py (discovered, so new benchmarks are included),
# 4. leaves the JSON results and a log in benchmarks/results/<device-slug>/ and,
#    when $OUT is set, copies that folder there.
#
# Each phase has a time budget so the whole suite stays under 10 minutes; a
# failing phase is logged and the later phases still run. The exit status is
# non-zero when the build, the tests or any benchmark failed.
#
# Environment: PYTHON (interpreter, default python), MAX_JOBS (build
# parallelism), SUITE_TESTS (pytest targets, default tests), OUT (copy target),
# JEMFAST_WHEELS (folder of wheels, default .whl: when it holds any, they are
# installed first, without network, into a private folder put on PYTHONPATH;
# benchmarks/fetch_offline_wheels.sh makes it on a machine that has a registry).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

TOTAL_BUDGET_S=570     # hard stop for the benchmarks, safely under 10 minutes
BUILD_BUDGET_S=240
TEST_BUDGET_S=210
MIN_BENCH_S=30

SLUG="$("$PYTHON" -c 'import sys; sys.path.insert(0, "benchmarks"); import common; print(common.device_slug())')"
RESULTS="$ROOT/benchmarks/results/${SLUG:-unknown-device}"
mkdir -p "$RESULTS"
LOG="$RESULTS/suite-$(date -u +%Y%m%dT%H%M%SZ).log"
exec > >(tee -a "$LOG") 2>&1

status=0
phase() { echo; echo "=== $* ($(date -u +%H:%M:%S), ${SECONDS}s elapsed) ==="; }

WHEELS="${JEMFAST_WHEELS:-$ROOT/.whl}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  phase "install wheels from $WHEELS"
  SITE="${TMPDIR:-/tmp}/jemfast-suite-site"
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl; then
    export PYTHONPATH="$PYTHONPATH:$SITE"
  else
    echo "WHEEL INSTALL FAILED"
    status=1
  fi
fi

phase "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi unavailable"
nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc not on PATH"
"$PYTHON" - <<'PY'
import json, sys
sys.path.insert(0, "benchmarks")
import common
print(json.dumps(common.environment(), indent=2))
PY

phase "build jemfast._C"
if JEMFAST_BUILD_CUDA=1 MAX_JOBS="${MAX_JOBS:-8}" timeout "$BUILD_BUDGET_S" "$PYTHON" setup.py build_ext --inplace; then
  "$PYTHON" -c 'from jemfast.backends import cuda_ext; assert cuda_ext.is_available(), cuda_ext.unavailable_reason(); print("jemfast._C imports")' || status=1
else
  echo "BUILD FAILED (or ran past ${BUILD_BUDGET_S}s)"
  status=1
fi

phase "tests"
PYTEST_ARGS=(-q -rs -p no:cacheprovider)
if "$PYTHON" -c 'import xdist' 2>/dev/null; then
  PYTEST_ARGS+=(-n 4)
fi
if ! timeout "$TEST_BUDGET_S" "$PYTHON" -m pytest "${PYTEST_ARGS[@]}" ${SUITE_TESTS:-tests}; then
  echo "TESTS FAILED (or ran past ${TEST_BUDGET_S}s)"
  status=1
fi

phase "benchmarks"
mapfile -t BENCHES < <(ls benchmarks/bench_*.py 2>/dev/null | sort)
remaining_benches=${#BENCHES[@]}
for bench in "${BENCHES[@]}"; do
  left=$((TOTAL_BUDGET_S - SECONDS))
  if ((left < MIN_BENCH_S)); then
    echo "SKIPPED $bench: only ${left}s of the suite's budget left"
    status=1
    remaining_benches=$((remaining_benches - 1))
    continue
  fi
  budget=$((left / remaining_benches))
  ((budget < MIN_BENCH_S)) && budget=$MIN_BENCH_S
  echo "--- $bench (budget ${budget}s)"
  if ! timeout "$budget" "$PYTHON" "$bench"; then
    echo "BENCHMARK FAILED: $bench (or ran past ${budget}s)"
    status=1
  fi
  remaining_benches=$((remaining_benches - 1))
done

phase "done, status $status"
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT/results"
  cp -r "$RESULTS" "$OUT/results/"
  echo "copied $RESULTS to $OUT/results/"
fi
exit "$status"
