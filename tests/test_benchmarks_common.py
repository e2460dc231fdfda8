"""benchmarks/common.py: how results files grow (appended runs, runs rewritten as they progress)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402


def test_write_results_appends_one_run_per_call(tmp_path):
    path = common.write_results("demo", [{"a": 1}], "cpu", results_dir=tmp_path)
    common.write_results("demo", [{"a": 2}], "cpu", results_dir=tmp_path)
    runs = json.loads(path.read_text())
    assert [r["records"] for r in runs] == [[{"a": 1}], [{"a": 2}]]
    assert runs[0]["environment"]["device_type"] == "cpu"
    assert path.parent.name == common.device_slug("cpu")


def test_run_results_rewrites_its_own_run_in_place(tmp_path):
    earlier = common.write_results("demo", [{"old": True}], "cpu", results_dir=tmp_path)
    run = common.RunResults("demo", "cpu", results_dir=tmp_path)
    run.add([{"part": 1}])
    assert json.loads(earlier.read_text())[-1]["records"] == [{"part": 1}], "the first part is on disk at once"
    run.add([{"part": 2}])
    runs = json.loads(earlier.read_text())
    assert len(runs) == 2, "one run per RunResults, however many parts"
    assert runs[0]["records"] == [{"old": True}]
    assert runs[1]["records"] == [{"part": 1}, {"part": 2}]


def test_result_names_are_plain_file_stems(tmp_path):
    with pytest.raises(ValueError, match="plain file stem"):
        common.write_results("../escape", [], "cpu", results_dir=tmp_path)
    with pytest.raises(ValueError, match="plain file stem"):
        common.RunResults("a/b", "cpu", results_dir=tmp_path)
