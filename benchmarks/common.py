"""Shared benchmark helpers: environment description, timing, JSON results.

Benchmarks are scripts (``python benchmarks/bench_<op>.py``); they import this
module as ``common`` (the script's folder is first on ``sys.path``).

* :func:`environment` - device name, torch / triton / CUDA / Python versions, date.
* :func:`timeit` - milliseconds (median, p20, p80): ``triton.testing.do_bench`` on
  GPU, ``torch.utils.benchmark`` on CPU.
* :func:`write_results` - appends one run to ``benchmarks/results/<device-slug>/<name>.json``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def ensure_repo_importable() -> None:
    """Put the checkout first on ``sys.path`` so ``import jemfast`` works without installing."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str | None = None) -> str:
    """Human-readable device name, e.g. ``NVIDIA H100 80GB HBM3`` or the CPU model."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model_name() or platform.processor() or platform.machine() or "cpu"


def _cpu_model_name() -> str | None:
    """The CPU's marketing name from /proc/cpuinfo (Linux), with the core count."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        return None
    return None


def device_slug(device: torch.device | str | None = None) -> str:
    """File-system friendly device name, e.g. ``nvidia-h100-80gb-hbm3`` (the results folder)."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return slug or "unknown-device"


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Device and software versions recorded with every result."""
    device = torch.device(device) if device is not None else default_device()
    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        import triton

        triton_version = triton.__version__
    info: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["sm_count"] = props.multi_processor_count
        info["capability"] = f"{props.major}.{props.minor}"
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def timeit(fn: Callable[[], Any], device: torch.device | str | None = None, *, min_run_time_s: float = 0.2) -> dict:
    """Time ``fn()``; returns ``{"median_ms", "p20_ms", "p80_ms"}``.

    On CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed between runs).
    On CPU: ``torch.utils.benchmark.Timer.blocked_autorange`` for at least
    ``min_run_time_s`` seconds; the quantiles are over its measured blocks.
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        from triton.testing import do_bench

        median, p20, p80 = do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        return {"median_ms": float(median), "p20_ms": float(p20), "p80_ms": float(p80)}
    from torch.utils import benchmark

    measurement = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time_s)
    times = torch.tensor(measurement.times, dtype=torch.float64) * 1e3
    return {
        "median_ms": float(times.median()),
        "p20_ms": float(torch.quantile(times, 0.2)),
        "p80_ms": float(torch.quantile(times, 0.8)),
    }


def gbytes_per_s(num_bytes: float, ms: float) -> float:
    """Throughput in GB/s (10**9 bytes per second) of ``num_bytes`` moved in ``ms`` milliseconds."""
    return num_bytes / (ms * 1e-3) / 1e9


def _results_path(name: str, device, results_dir: Path | None) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"result name must be a plain file stem (letters, digits, _ . -), got {name!r}")
    folder = (results_dir or RESULTS_DIR) / device_slug(device)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.json"


def _read_runs(path: Path) -> list:
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    return runs if isinstance(runs, list) else [runs]


def write_results(
    name: str, records: list[dict], device: torch.device | str | None = None, results_dir: Path | None = None
) -> Path:
    """Append one run (environment + ``records``) to ``<results_dir>/<device-slug>/<name>.json``.

    The file holds a JSON list of runs, oldest first; a missing or unreadable
    file starts a new list. Returns the path written.
    """
    path = _results_path(name, device, results_dir)
    runs = _read_runs(path)
    runs.append({"environment": environment(device), "records": records})
    path.write_text(json.dumps(runs, indent=2) + "\n")
    return path


class RunResults:
    """One run's records, written out again after every :meth:`add`.

    For benchmarks with several long parts: a run stopped by a time limit keeps
    what it had measured. The run is appended to the file at the first add and
    replaced in place afterwards.
    """

    def __init__(self, name: str, device: torch.device | str | None = None, results_dir: Path | None = None):
        self.path = _results_path(name, device, results_dir)
        self.device = device
        self.records: list[dict] = []
        self._index: int | None = None

    def add(self, records: list[dict]) -> Path:
        self.records.extend(records)
        runs = _read_runs(self.path)
        run = {"environment": environment(self.device), "records": self.records}
        if self._index is None or self._index >= len(runs):
            runs.append(run)
            self._index = len(runs) - 1
        else:
            runs[self._index] = run
        self.path.write_text(json.dumps(runs, indent=2) + "\n")
        return self.path


def available_backends(device: torch.device, skip: tuple[str, ...] = ()) -> list[str]:
    """jemfast backends that can run on ``device`` (Triton only on GPU: on CPU it would be interpreted)."""
    ensure_repo_importable()
    from jemfast.backends import BACKENDS, unavailable_reason

    names = [n for n in BACKENDS if n not in skip and unavailable_reason(n, device) is None]
    return [n for n in names if device.type == "cuda" or n != "triton"]
