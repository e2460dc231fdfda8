"""The GPU suite, checked without a GPU: what `pytest -m gpu` selects,
`benchmarks/run_gpu_suite.sh --dry-run` (order, budgets, timeouts, copying to $OUT),
and the benchmarks keeping what they measured when a time limit stops them."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# Tests that need a CUDA device, one per mechanism that marks them gpu.
KNOWN_GPU_TESTS = [
    "tests/test_csrc.py::test_sgld_cuda_matches_reference",  # requires_cuda + the extension fixture
    "tests/test_ops_sgld.py::test_all_backends_agree_on_cuda",
    "tests/test_ops_energy.py::test_all_backends_agree_on_cuda",
    "tests/test_sampling_sampler.py::test_graph_and_eager_agree",
    "tests/test_sampling_sampler.py::test_graph_capture_on_a_device_that_is_not_current",  # needs two CUDA devices
    "tests/test_sampling_buffer.py::test_sample_and_write_capture_into_a_cuda_graph",
    "tests/test_calibration_ood.py::test_scores_on_cuda",
    "tests/test_cuda_graphs.py::test_graph_cache_replays_with_fresh_inputs_and_recaptures_on_a_new_key",
    "tests/test_train_trainer_gpu.py::test_captured_chain_survives_a_pinned_multiworker_loader",
]
# CPU tests whose names or parameters mention CUDA: they must stay out of the GPU run.
KNOWN_CPU_TESTS = [
    "tests/test_backends.py::test_module_provides_what_the_registry_says[cuda]",
    "tests/test_csrc.py::test_loader_reports_missing_extension",
    "tests/test_csrc.py::test_binding_syntax_against_torch_headers",
    "tests/test_gpu_suite.py::test_gpu_marker_selects_the_gpu_tests",
]


def _collect(*args: str, cwd: Path = REPO) -> tuple[list[str], str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    return ids, result.stdout


def _base(node_id: str) -> str:
    return node_id.split("[", 1)[0]


def test_gpu_marker_selects_the_gpu_tests():
    ids, out = _collect("-m", "gpu", "tests")
    selected = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", out)
    assert selected, out[-2000:]
    n_gpu, n_all, n_cpu = map(int, selected.groups())
    assert n_gpu == len(ids) and n_gpu + n_cpu == n_all
    assert 50 <= n_gpu < n_all / 2, f"{n_gpu} of {n_all} tests selected by -m gpu"
    bases = {_base(i) for i in ids}
    for name in KNOWN_GPU_TESTS:
        assert name in bases, f"{name} is not marked gpu"
    for name in KNOWN_CPU_TESTS:
        assert name not in ids and name not in bases, f"{name} is marked gpu"
    # Everything in tests/test_train_trainer_gpu.py is a GPU test.
    assert any(i.startswith("tests/test_train_trainer_gpu.py::") for i in ids)


def test_gpu_marker_marks_only_the_cuda_parameter_sets(tmp_path):
    """The conftest hook, on a synthetic test file: cuda parameters marked, CPU ones not."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    (tmp_path / "test_synthetic.py").write_text(
        textwrap.dedent(
            """
            import pytest, torch
            from conftest import requires_cuda

            @pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
            def test_device_strings(device): pass

            @pytest.mark.parametrize("dev", [torch.device("cpu"), torch.device("cuda", 0)], ids=["cpu", "cuda0"])
            def test_device_objects(dev): pass

            @pytest.mark.parametrize("backend", ["cpu", "cuda"])  # a backend name, not a device: unmarked
            def test_backend_names(backend): pass

            @pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
            def test_backend_marked_where_declared(backend): pass

            @requires_cuda
            def test_requires_cuda(): pass

            @pytest.mark.skipif(True, reason="needs two CUDA devices")
            def test_two_devices(): pass

            @pytest.mark.skipif(True, reason="nvcc is not on PATH")  # a toolkit, not a device
            def test_needs_nvcc(): pass

            @pytest.mark.skipif(True, reason="needs the CUDA toolkit")  # neither
            def test_needs_toolkit(): pass

            def test_plain(): pass
            """
        )
    )
    ids, _ = _collect("-m", "gpu", "test_synthetic.py", cwd=tmp_path)
    assert sorted(ids) == sorted(
        [
            "test_synthetic.py::test_device_strings[cuda]",
            "test_synthetic.py::test_device_strings[cuda:1]",
            "test_synthetic.py::test_device_objects[cuda0]",
            "test_synthetic.py::test_backend_marked_where_declared[cuda]",
            "test_synthetic.py::test_requires_cuda",
            "test_synthetic.py::test_two_devices",
        ]
    )
    cpu_ids, _ = _collect("-m", "not gpu", "test_synthetic.py", cwd=tmp_path)
    assert len(cpu_ids) == 8 and "test_synthetic.py::test_backend_names[cuda]" in cpu_ids


@pytest.mark.slow
def test_dry_run_orders_budgets_times_out_and_copies(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "OUT": str(out_dir), "PYTHON": sys.executable}
    env.pop("SUITE_TESTS", None)
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "run_gpu_suite.sh"), "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]

    # The plan comes first, then the phases in order, the benchmarks by priority.
    order = ["=== plan", "=== wheels", "=== environment", ">>> build (budget", ">>> tests (budget",
             ">>> bench_sampler.py (budget", ">>> bench_trainer.py (budget", ">>> bench_sgld_update.py (budget",
             ">>> bench_energy.py (budget", ">>> bench_features.py (budget", "=== summary"]  # fmt: skip
    positions = [out.find(marker) for marker in order]
    assert all(p >= 0 for p in positions), dict(zip(order, positions, strict=True))
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    assert "bench_calibration.py" not in out.split("=== wheels")[1], "the CPU calibration benchmark must not run"
    plan = out.split("=== wheels")[0]
    for phase in ("wheels", "build", "tests", "bench_sampler.py", "bench_features.py"):
        assert re.search(rf"^{re.escape(phase)}\s+\S+", plan, re.M), f"{phase} missing from the plan"
    assert "setup.py build_ext --inplace" in plan and "pytest -m gpu" in plan

    # The GPU tests are listed (the dry run's stand-in for the test phase is the collection).
    for name in KNOWN_GPU_TESTS:
        assert name in out, f"{name} not listed by the dry run"
    assert re.search(r"\d+/\d+ tests collected", out)
    assert "CUDA_HOME=" in out or "no CUDA toolkit found" in out

    # The overrunning stand-in is killed at its budget, reported, and later phases still run.
    killed = re.search(r">>> bench_trainer.py TIMED OUT after (\d+)s \(budget (\d+)s\)", out)
    assert killed, out[-3000:]
    assert int(killed.group(1)) <= int(killed.group(2)) + 2
    assert out.index(killed.group(0)) < out.index(">>> bench_sgld_update.py ok")
    for bench in ("bench_sampler.py", "bench_sgld_update.py", "bench_energy.py", "bench_features.py"):
        assert f">>> {bench} ok" in out
    summary = out.split("=== summary")[1]
    assert re.search(r"bench_trainer.py\s+TIMEOUT.*expected", summary)
    assert "status 0" in summary

    # Every results file (the killed one's too) and the complete log reach $OUT.
    copied = {p.name for p in out_dir.rglob("*") if p.is_file()}
    for bench in ("bench_sampler", "bench_trainer", "bench_sgld_update", "bench_energy", "bench_features"):
        assert f"dry-run-{bench}.json" in copied, copied
    logs = list(out_dir.rglob("suite-dry-run-*.log"))
    assert len(logs) == 1 and logs[0].parent.parent.name == "results"
    log = logs[0].read_text()
    assert "=== summary" in log and "status 0" in log and "bench_trainer.py TIMED OUT" in log


@pytest.mark.parametrize(
    "module, argv, name",
    [("bench_sgld_update", ["--sizes", "4", "6"], "sgld_update"), ("bench_energy", [], "energy")],
)
def test_benchmarks_write_their_results_after_each_case(module, argv, name, tmp_path, monkeypatch):
    """A benchmark stopped in its second case (as by the suite's timeout) has written the first."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    common = importlib.import_module("common")
    bench = importlib.import_module(module)
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    timing = {"median_ms": 1.0, "p20_ms": 1.0, "p80_ms": 1.0}
    monkeypatch.setattr(common, "timeit", lambda fn, device=None, **kw: dict(timing))
    case_name = "bench_size" if hasattr(bench, "bench_size") else "bench_shape"
    case = getattr(bench, case_name)
    calls = []

    def first_case_only(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt("stopped by the time limit")
        return case(*args, **kwargs)

    monkeypatch.setattr(bench, case_name, first_case_only)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    (path,) = tmp_path.rglob(f"{name}.json")
    runs = json.loads(path.read_text())
    assert len(runs) == 1 and runs[0]["environment"]["device_type"] == "cpu"
    records = runs[0]["records"]
    assert records, "nothing written before the stop"
    first = calls[0]
    if name == "sgld_update":
        assert {r["numel"] for r in records} == {first[0]}
    else:
        assert {(r["rows"], r["cols"]) for r in records} == {(first[0], first[1])}
