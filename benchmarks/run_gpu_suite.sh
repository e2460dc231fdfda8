#!/usr/bin/env bash
# The one command for a GPU machine (no network and no package registry needed):
#
#   bash benchmarks/run_gpu_suite.sh            # on the GPU machine: done in under 8 minutes
#   bash benchmarks/run_gpu_suite.sh --dry-run  # on any machine, in well under a minute
#
# It prints its plan (phase, command, budget), then runs the phases in this order,
# each under `timeout -k` with its own budget, all under one global deadline
# (DEADLINE_S = 440 s from the start: a phase gets at most what is left, so the
# script ends by about 450 s, plus the copying):
#
# 0. wheels (60 s): when $JEMFAST_WHEELS (default .whl) holds wheels, those whose
#    package the interpreter lacks are installed, without network, into a private
#    folder put on PYTHONPATH (benchmarks/fetch_offline_wheels.sh makes that folder
#    on a machine that has a registry);
# 1. build (150 s): CUDA_HOME from jemfast/_cuda_home.py (the resolver setup.py and
#    the tests use), then `setup.py build_ext --inplace` (jemfast._C from csrc/) and
#    an import check;
# 2. tests (120 s): `pytest -m gpu` only, the tests that need a CUDA device
#    (tests/conftest.py marks them), the most important files first, one line per
#    test, `-rA --tb=short --durations=15`, streamed to the log as they run; at its
#    limit pytest gets SIGINT, so it still prints the failures and the summary so far;
# 3. benchmarks, by priority: bench_sampler, bench_trainer, bench_sgld_update,
#    bench_energy, bench_features, then any other benchmarks/bench_*.py except
#    bench_calibration.py (a 45-minute CPU benchmark). Each gets a share of the time
#    left by weight (sampler 4, trainer 3, the others 1), at least MIN_BENCH_S, or is
#    skipped; the benchmarks write their JSON after each measured part, so a time
#    limit keeps what was measured.
#
# Results: the JSON files and a log in benchmarks/results/<device-slug>/. When $OUT is
# set, every results file this run wrote is copied there (as $OUT/results/...) after
# each phase, whether it passed, failed or was killed, and the log last, once complete.
# The exit status is non-zero when any phase failed, ran past its budget or was
# skipped for lack of time; the log ends with a table of every phase's outcome.
#
# --dry-run (for a machine without a GPU): the same plan, order, budget bookkeeping
# and copying, with the budgets scaled down and each phase replaced by a short
# stand-in: the build by a one-second stand-in (CUDA_HOME is still resolved), the
# tests by `pytest -m gpu --collect-only -q` (it lists the GPU tests), each benchmark
# by a command that writes a small results file; bench_trainer's stand-in overruns
# its budget on purpose, to show a killed phase reported, its file kept and the later
# phases still run (that one expected timeout does not fail the dry run). Results go
# to a temporary folder, removed at the end, instead of benchmarks/results/.
#
# Environment: PYTHON (interpreter, default python3), MAX_JOBS (build parallelism,
# default the CPU count), SUITE_TESTS (pytest targets, default every tests/test_*.py,
# most important first), SUITE_PYTEST_ARGS (extra pytest arguments, e.g. "-n 4"),
# OUT (copy target), JEMFAST_WHEELS (folder of wheels, default .whl).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"  # Triton 3.9+ warns when unset; 1 is the default

# Budgets in seconds. The dry run scales them down; its phases are stand-ins.
if ((DRY_RUN)); then
  DEADLINE_S=75 WHEELS_BUDGET_S=10 BUILD_BUDGET_S=10 TEST_BUDGET_S=45
  MIN_BENCH_S=1 BENCH_CAP_S=3 KILL_GRACE_S=1
else
  DEADLINE_S=440 WHEELS_BUDGET_S=60 BUILD_BUDGET_S=150 TEST_BUDGET_S=120
  MIN_BENCH_S=20 BENCH_CAP_S=$DEADLINE_S KILL_GRACE_S=10
fi
BENCH_PRIORITY=(bench_sampler.py bench_trainer.py bench_sgld_update.py bench_energy.py bench_features.py)
BENCH_EXCLUDE=(bench_calibration.py)  # a CPU benchmark of about 45 minutes
TEST_PRIORITY=(test_train_trainer_gpu.py test_sampling_sampler.py test_cuda_graphs.py test_ops_sgld.py
  test_ops_energy.py test_ops_philox.py test_sampling_buffer.py test_csrc.py)
DRY_OVERRUN_BENCH=bench_trainer.py  # the dry run's stand-in that is killed at its budget

START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
time_left() { echo $((DEADLINE_S - $(elapsed))); }

SLUG="$(timeout -k 5 60 "$PYTHON" -c 'import sys; sys.path.insert(0, "benchmarks"); import common; print(common.device_slug())' 2>/dev/null)"
SLUG="${SLUG:-unknown-device}"
if ((DRY_RUN)); then
  RESULTS_PARENT="$(mktemp -d)"  # holds results/<slug>/, like benchmarks/
else
  RESULTS_PARENT="$ROOT/benchmarks"
fi
mkdir -p "$RESULTS_PARENT/results/$SLUG"
LOG_REL="results/$SLUG/suite$( ((DRY_RUN)) && echo -dry-run)-$(date -u +%Y%m%dT%H%M%SZ).log"
LOG="$RESULTS_PARENT/$LOG_REL"
STAMP="$(mktemp)"  # results files newer than this were written by this run

# Every results file this run wrote, then the log (a snapshot until the final call).
copy_out() {
  [[ -n "${OUT:-}" ]] || return 0
  mkdir -p "$OUT/$(dirname "$LOG_REL")"
  (cd "$RESULTS_PARENT" && find results -type f -newer "$STAMP" ! -path "$LOG_REL" -print0 |
    xargs -0 -r cp --parents -t "$OUT")
  [[ -f "$LOG" ]] && cp "$LOG" "$OUT/$LOG_REL"
  return 0
}

cleanup() {
  rm -f "$STAMP"
  if ((DRY_RUN)); then rm -rf "$RESULTS_PARENT"; fi
}
trap 'copy_out; cleanup; exit 143' TERM
trap 'copy_out; cleanup; exit 130' INT

header() { echo; echo "=== $* ($(date -u +%H:%M:%S), $(elapsed)s elapsed, $(time_left)s to the deadline) ==="; }

# The benchmarks to run, by priority.
discover_benches() {
  local b seen=" "
  for b in "${BENCH_PRIORITY[@]}"; do
    [[ -f "benchmarks/$b" ]] && echo "$b" && seen+="$b "
  done
  for b in $(cd benchmarks && ls bench_*.py 2>/dev/null | sort); do
    [[ "$seen" == *" $b "* || " ${BENCH_EXCLUDE[*]} " == *" $b "* ]] || echo "$b"
  done
}

bench_weight() {
  case "$1" in
    bench_sampler.py) echo 4 ;;
    bench_trainer.py) echo 3 ;;
    *) echo 1 ;;
  esac
}

# pytest targets: the important files first (pytest keeps the order of its arguments).
test_targets() {
  if [[ -n "${SUITE_TESTS:-}" ]]; then
    echo "$SUITE_TESTS" | tr ' ' '\n'
    return
  fi
  local t
  for t in "${TEST_PRIORITY[@]}"; do [[ -f "tests/$t" ]] && echo "tests/$t"; done
  for t in $(ls tests/test_*.py | sort); do
    [[ " ${TEST_PRIORITY[*]} " == *" ${t#tests/} "* ]] || echo "$t"
  done
}

mapfile -t BENCHES < <(discover_benches)
mapfile -t TEST_TARGETS < <(test_targets)
read -r -a EXTRA_PYTEST_ARGS <<<"${SUITE_PYTEST_ARGS:-}"
BUILD_CMD=(env JEMFAST_BUILD_CUDA=1 "MAX_JOBS=${MAX_JOBS:-$(nproc)}" "$PYTHON" setup.py build_ext --inplace)
# pytest.main behind a SIGINT handler: a process started in the background of a
# non-interactive shell inherits SIGINT ignored, and then the timeout's SIGINT
# would not make pytest print its summary.
PYTEST_WITH_SIGINT=("$PYTHON" -c
  'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(pytest.main(sys.argv[1:]))')
TEST_ARGS=(-m gpu -v -rA --tb=short --durations=15 -p no:cacheprovider --continue-on-collection-errors
  "${EXTRA_PYTEST_ARGS[@]}")
DRY_TEST_ARGS=(-m gpu --collect-only -q -p no:cacheprovider --continue-on-collection-errors)
if ((DRY_RUN)); then TEST_ARGS=("${DRY_TEST_ARGS[@]}"); fi
TEST_CMD=("${PYTEST_WITH_SIGINT[@]}" "${TEST_ARGS[@]}" "${TEST_TARGETS[@]}")

# What a dry-run benchmark does: writes a small results file, then sleeps.
STANDIN_BENCH='mkdir -p "$(dirname "$1")" && printf "[{\"stand_in_for\": \"%s\"}]\n" "$3" >"$1" && echo "wrote $1" && sleep "$2"'

print_plan() {
  header "plan$( ((DRY_RUN)) && echo ' (dry run: budgets scaled down, phases replaced by stand-ins)')"
  printf '%-22s %-34s %s\n' PHASE BUDGET COMMAND
  printf '%-22s %-34s %s\n' wheels "${WHEELS_BUDGET_S}s" \
    "$( ((DRY_RUN)) && echo 'list the wheels that would be installed' || echo "pip install --no-index --target <private folder> <wheels in ${JEMFAST_WHEELS:-$ROOT/.whl} the interpreter lacks>")"
  printf '%-22s %-34s %s\n' build "${BUILD_BUDGET_S}s" \
    "CUDA_HOME=\$($PYTHON jemfast/_cuda_home.py) $( ((DRY_RUN)) && echo "stand-in (sleep 1) for: ")${BUILD_CMD[*]}"
  printf '%-22s %-34s %s\n' tests "${TEST_BUDGET_S}s (SIGINT at the limit)" \
    "pytest ${TEST_ARGS[*]} ${TEST_TARGETS[*]:0:3} ... (${#TEST_TARGETS[@]} files)"
  local b total=0
  for b in "${BENCHES[@]}"; do total=$((total + $(bench_weight "$b"))); done
  for b in "${BENCHES[@]}"; do
    printf '%-22s %-34s %s\n' "$b" "$(bench_weight "$b")/$total of what is left, ${MIN_BENCH_S}-${BENCH_CAP_S}s" \
      "$( ((DRY_RUN)) && echo "stand-in: write a results file$([[ $b == "$DRY_OVERRUN_BENCH" ]] && echo ', then overrun the budget') (for: $PYTHON benchmarks/$b)" || echo "$PYTHON benchmarks/$b")"
  done
  echo "excluded: ${BENCH_EXCLUDE[*]}; global deadline ${DEADLINE_S}s, kill grace ${KILL_GRACE_S}s; log: $LOG_REL"
}

SUMMARY=()
STATUS=0

# run_phase NAME BUDGET [--signal SIG] [--show TEXT] [--expect-timeout] -- COMMAND...
# Runs COMMAND under `timeout` with BUDGET cut to what is left before the deadline
# (TEXT, when given, is what the log shows for it); records the outcome, and copies
# the results written so far to $OUT.
run_phase() {
  local name=$1 budget=$2 signal=TERM expect_timeout=0 show=""
  shift 2
  while [[ $# -gt 0 && $1 != -- ]]; do
    case $1 in
      --signal) signal=$2; shift 2 ;;
      --show) show=$2; shift 2 ;;
      --expect-timeout) expect_timeout=1; shift ;;
      *) echo "run_phase: bad option $1" >&2; return 2 ;;
    esac
  done
  shift
  [[ -n "$show" ]] || show="$*"
  local left
  left=$(time_left)
  if ((left < 1)); then
    echo ">>> $name SKIPPED: the deadline has passed"
    SUMMARY+=("$(printf '%-22s %-10s %s' "$name" SKIPPED "no time left")")
    STATUS=1
    return 1
  fi
  ((budget > left)) && budget=$left
  echo ">>> $name (budget ${budget}s): $show"
  local t0 rc took outcome
  t0=$(date +%s)
  timeout -s "$signal" -k "$KILL_GRACE_S" "$budget" "$@"
  rc=$?
  took=$(($(date +%s) - t0))
  if ((rc == 124 || (rc == 137 && took >= budget))); then
    if ((expect_timeout)); then
      outcome="TIMEOUT"
      echo ">>> $name TIMED OUT after ${took}s (budget ${budget}s), killed as expected: this stand-in overruns on purpose"
    else
      outcome="TIMEOUT"
      echo ">>> $name TIMED OUT after ${took}s (budget ${budget}s): killed; what it wrote is kept"
      STATUS=1
    fi
  elif ((rc != 0)); then
    outcome="FAILED"
    echo ">>> $name FAILED with exit status $rc after ${took}s"
    STATUS=1
  else
    outcome="ok"
    echo ">>> $name ok in ${took}s"
  fi
  SUMMARY+=("$(printf '%-22s %-10s %4ss of %4ss (exit %s)%s' "$name" "$outcome" "$took" "$budget" "$rc" \
    "$( ((expect_timeout)) && echo ', expected')")")
  copy_out
  return "$rc"
}

phase_wheels() {
  local wheels="${JEMFAST_WHEELS:-$ROOT/.whl}" missing
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    if ! "$PYTHON" -c 'import librosa, soundfile, nvtx' 2>/dev/null; then
      echo "WARNING: librosa, soundfile or nvtx is missing and no wheels were found in $wheels:"
      echo "         test_data_features and bench_features cannot run (see benchmarks/fetch_offline_wheels.sh)"
    fi
    echo "no wheels in $wheels"
    return 0
  fi
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
  elif ((DRY_RUN)); then
    printf 'would install %s\n' "${missing[@]##*/}"
  else
    local site="${TMPDIR:-/tmp}/jemfast-suite-site"
    if run_phase wheels "$WHEELS_BUDGET_S" -- "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$site" "${missing[@]}"; then
      export PYTHONPATH="$PYTHONPATH:$site"
      printf 'installed %s\n' "${missing[@]##*/}"
    fi
  fi
}

phase_environment() {
  timeout -k 5 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null ||
    echo "nvidia-smi unavailable"
  local cuda_home
  if cuda_home="$("$PYTHON" jemfast/_cuda_home.py --explain)"; then
    export CUDA_HOME="$cuda_home"
    export PATH="$CUDA_HOME/bin:$PATH"
    echo "CUDA_HOME=$CUDA_HOME"
    timeout -k 5 30 "$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -n 2
  else
    echo "no CUDA toolkit found: the build will fail"
  fi
  timeout -k 5 60 "$PYTHON" - <<'PY'
import json, sys
sys.path.insert(0, "benchmarks")
import common
print(json.dumps(common.environment(), indent=2))
PY
}

phase_build() {
  if ((DRY_RUN)); then
    run_phase build "$BUILD_BUDGET_S" --show "stand-in (sleep 1) for: ${BUILD_CMD[*]}" -- sleep 1
    return
  fi
  if run_phase build "$BUILD_BUDGET_S" -- "${BUILD_CMD[@]}"; then
    run_phase "import jemfast._C" 60 -- "$PYTHON" -c \
      'from jemfast.backends import cuda_ext; assert cuda_ext.is_available(), cuda_ext.unavailable_reason(); print("jemfast._C imports")'
  fi
}

phase_tests() {
  if ((DRY_RUN)); then
    echo "the GPU tests that \`pytest -m gpu\` selects:"
    run_phase tests "$TEST_BUDGET_S" --show "pytest ${TEST_ARGS[*]} <${#TEST_TARGETS[@]} files>" -- "${TEST_CMD[@]}"
  else
    # SIGINT, not SIGTERM: an interrupted pytest still prints its failures and summary.
    run_phase tests "$TEST_BUDGET_S" --signal INT --show "pytest ${TEST_ARGS[*]} ${TEST_TARGETS[*]}" \
      -- "${TEST_CMD[@]}"
    (($? == 5)) && echo ">>> tests: \`pytest -m gpu\` selected no tests"
  fi
}

phase_benchmarks() {
  local bench weight_left=0 weight left budget
  for bench in "${BENCHES[@]}"; do weight_left=$((weight_left + $(bench_weight "$bench"))); done
  for bench in "${BENCHES[@]}"; do
    weight=$(bench_weight "$bench")
    left=$(time_left)
    if ((left < MIN_BENCH_S)); then
      echo ">>> $bench SKIPPED: only ${left}s left before the deadline"
      SUMMARY+=("$(printf '%-22s %-10s %s' "$bench" SKIPPED "${left}s left")")
      STATUS=1
    else
      budget=$((left * weight / weight_left))
      ((budget < MIN_BENCH_S)) && budget=$MIN_BENCH_S
      ((budget > BENCH_CAP_S)) && budget=$BENCH_CAP_S
      if ((DRY_RUN)); then
        local file="$RESULTS_PARENT/results/$SLUG/dry-run-${bench%.py}.json"
        if [[ "$bench" == "$DRY_OVERRUN_BENCH" ]]; then
          run_phase "$bench" "$budget" --expect-timeout \
            --show "stand-in for $PYTHON benchmarks/$bench: writes ${file##*/}, then sleeps 600s" \
            -- bash -c "$STANDIN_BENCH" _ "$file" 600 "$bench"
        else
          run_phase "$bench" "$budget" --show "stand-in for $PYTHON benchmarks/$bench: writes ${file##*/}" \
            -- bash -c "$STANDIN_BENCH" _ "$file" 0 "$bench"
        fi
      else
        run_phase "$bench" "$budget" -- "$PYTHON" "benchmarks/$bench"
      fi
    fi
    weight_left=$((weight_left - weight))
  done
}

suite() {
  print_plan
  header "wheels"
  phase_wheels
  header "environment"
  phase_environment
  header "build jemfast._C"
  phase_build
  header "tests: pytest -m gpu"
  phase_tests
  header "benchmarks"
  phase_benchmarks
  header "summary"
  printf '%s\n' "${SUMMARY[@]}"
  echo "done in $(elapsed)s, status $STATUS"
  return "$STATUS"
}

suite 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}

copy_out  # every results file, then the finished log last
[[ -n "${OUT:-}" ]] && echo "copied this run's results and log to $OUT/results/"
cleanup
exit "$status"
