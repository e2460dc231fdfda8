#!/usr/bin/env bash
# The one command for a GPU machine (no network needed):
#
#   bash benchmarks/run_gpu_suite.sh
#
# 1. builds the CUDA extension in place (jemfast._C from csrc/),
# 2. runs the whole test suite with the GPU tests enabled,
# 3. runs every benchmarks/bench_*.py (discovered, so new benchmarks are included),
# 4. leaves the JSON results and a log in benchmarks/results/<device-slug>/ and,
#    when $OUT is set, copies every results file this run wrote there (the log
#    last, once complete).
#
# Each phase has a time budget so the whole suite stays under 10 minutes; a
# failing phase is logged and the later phases still run. Benchmarks share what
# is left after the build and the tests in proportion to their weight (the
# sampler and trainer benchmarks run the paper's model for 50 SGLD steps); the
# long ones write their JSON after each part, so a time limit keeps what was
# measured. The exit status is non-zero when the build, the tests or any
# benchmark failed.
#
# Environment: PYTHON (interpreter, default python), MAX_JOBS (build
# parallelism), SUITE_TESTS (pytest targets, default tests), OUT (copy target),
# JEMFAST_WHEELS (folder of wheels, default .whl: when it holds any, they are
# installed first, without network, into a private folder put on PYTHONPATH;
# benchmarks/fetch_offline_wheels.sh makes it on a machine that has a registry).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"  # Triton 3.9+ warns when unset; 1 is the default

TOTAL_BUDGET_S=570     # hard stop for the benchmarks, safely under 10 minutes
BUILD_BUDGET_S=240
TEST_BUDGET_S=210
MIN_BENCH_S=30

SLUG="$("$PYTHON" -c 'import sys; sys.path.insert(0, "benchmarks"); import common; print(common.device_slug())')"
RESULTS="$ROOT/benchmarks/results/${SLUG:-unknown-device}"
mkdir -p "$RESULTS"
LOG="$RESULTS/suite-$(date -u +%Y%m%dT%H%M%SZ).log"
STAMP="$(mktemp)"  # results files newer than this were written by this run

phase() { echo; echo "=== $* ($(date -u +%H:%M:%S), ${SECONDS}s elapsed) ==="; }

bench_weight() {
  case "$(basename "$1")" in
    bench_sampler.py) echo 4 ;;
    bench_trainer.py) echo 3 ;;
    *) echo 1 ;;
  esac
}

suite() {
  local status=0

  local wheels="${JEMFAST_WHEELS:-$ROOT/.whl}"
  if compgen -G "$wheels/*.whl" >/dev/null; then
    phase "install wheels from $wheels"
    local site="${TMPDIR:-/tmp}/jemfast-suite-site"
    # Only what the interpreter lacks: the image's own copies stay in charge.
    mapfile -t missing < <("$PYTHON" - "$wheels" <<'PY'
import importlib.metadata as md, pathlib, re, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = re.split(r"-\d", wheel.name, maxsplit=1)[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(wheel)
PY
)
    if ((${#missing[@]} == 0)); then
      echo "every wheel's package is already installed"
    elif "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "${missing[@]}"; then
      export PYTHONPATH="$PYTHONPATH:$site"
      printf 'installed %s\n' "${missing[@]##*/}"
    else
      echo "WHEEL INSTALL FAILED"
      status=1
    fi
  elif ! "$PYTHON" -c 'import librosa, soundfile, nvtx' 2>/dev/null; then
    echo "WARNING: librosa, soundfile or nvtx is missing and no wheels were found in $wheels:"
    echo "         the data tests and bench_features cannot run (see benchmarks/fetch_offline_wheels.sh)"
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
  if JEMFAST_BUILD_CUDA=1 MAX_JOBS="${MAX_JOBS:-8}" timeout -k 10 "$BUILD_BUDGET_S" "$PYTHON" setup.py build_ext --inplace; then
    "$PYTHON" -c 'from jemfast.backends import cuda_ext; assert cuda_ext.is_available(), cuda_ext.unavailable_reason(); print("jemfast._C imports")' || status=1
  else
    echo "BUILD FAILED (or ran past ${BUILD_BUDGET_S}s)"
    status=1
  fi

  phase "tests"
  # A module that cannot be imported (a missing optional package) must not stop the
  # GPU tests from running: it is reported as an error and the rest goes on.
  local pytest_args=(-q -rs -p no:cacheprovider --continue-on-collection-errors)
  if "$PYTHON" -c 'import xdist' 2>/dev/null; then
    pytest_args+=(-n 4)
  fi
  if ! timeout -k 10 "$TEST_BUDGET_S" "$PYTHON" -m pytest "${pytest_args[@]}" ${SUITE_TESTS:-tests}; then
    echo "TESTS FAILED (or ran past ${TEST_BUDGET_S}s)"
    status=1
  fi

  phase "benchmarks"
  local benches weight_left=0 bench
  mapfile -t benches < <(ls benchmarks/bench_*.py 2>/dev/null | sort)
  for bench in "${benches[@]}"; do weight_left=$((weight_left + $(bench_weight "$bench"))); done
  for bench in "${benches[@]}"; do
    local weight left budget
    weight=$(bench_weight "$bench")
    left=$((TOTAL_BUDGET_S - SECONDS))
    if ((left < MIN_BENCH_S)); then
      echo "SKIPPED $bench: only ${left}s of the suite's budget left"
      status=1
      weight_left=$((weight_left - weight))
      continue
    fi
    budget=$((left * weight / weight_left))
    ((budget < MIN_BENCH_S)) && budget=$MIN_BENCH_S
    echo "--- $bench (budget ${budget}s)"
    if ! timeout -k 10 "$budget" "$PYTHON" "$bench"; then
      echo "BENCHMARK FAILED: $bench (or ran past ${budget}s)"
      status=1
    fi
    weight_left=$((weight_left - weight))
  done

  phase "done, status $status"
  return "$status"
}

suite 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}

if [[ -n "${OUT:-}" ]]; then
  # Every results file this run wrote (bench_features also writes the host CPU's
  # folder), then the finished log.
  (cd "$ROOT/benchmarks" && find results -type f -newer "$STAMP" ! -name "$(basename "$LOG")" -print0 |
    xargs -0 -r cp --parents -t "$OUT")
  mkdir -p "$OUT/results/${SLUG:-unknown-device}"
  cp "$LOG" "$OUT/results/${SLUG:-unknown-device}/"
  echo "copied this run's results and log to $OUT/results/"
fi
rm -f "$STAMP"
exit "$status"
