"""Prediction files and the calibration report (the paper's Tables 2 and 3)."""

import json

import numpy as np
import pytest
import torch

from jemfast.calibration import (
    REPORT_ROWS,
    Predictions,
    TemperatureScaling,
    compare_models,
    evaluate_logits,
    load_calibrator,
    report_tasks,
    write_report,
)

SUBSETS = np.array(["1s", "3s", "full"])


def split(n, c, temperature, seed, with_subsets=True):
    """Predictions whose logits are ``temperature`` times too confident."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(size=(n, c)) * 2.0
    p = np.exp(calibrated - calibrated.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.minimum((p.cumsum(1) < rng.random(n)[:, None]).sum(1), c - 1)
    subsets = SUBSETS[rng.integers(0, 3, size=n)] if with_subsets else None
    return Predictions((calibrated * temperature).astype(np.float32), labels, subsets)


# ---- Predictions ------------------------------------------------------------------------------


def test_predictions_round_trip(tmp_path):
    preds = split(50, 3, 1.0, seed=0)
    path = preds.save(tmp_path / "dev.npz")
    with np.load(path, allow_pickle=False) as data:
        assert data["logits"].dtype == np.float32 and data["logits"].shape == (50, 3)
        assert data["labels"].dtype == np.int64 and data["subsets"].dtype.kind == "U"
    loaded = Predictions.load(path)
    np.testing.assert_array_equal(loaded.logits, preds.logits)
    np.testing.assert_array_equal(loaded.labels, preds.labels)
    np.testing.assert_array_equal(loaded.subsets, preds.subsets)
    no_subsets = Predictions(preds.logits, preds.labels)
    assert Predictions.load(no_subsets.save(tmp_path / "plain")).subsets is None
    assert (tmp_path / "plain.npz").exists()


def test_predictions_subset_selection():
    preds = split(60, 3, 1.0, seed=1)
    assert set(preds.subset_names()) == {"1s", "3s", "full"}
    one = preds.subset("3s")
    mask = preds.subsets == "3s"
    assert len(one) == mask.sum() > 0
    np.testing.assert_array_equal(one.logits, preds.logits[mask])
    np.testing.assert_array_equal(one.labels, preds.labels[mask])
    with pytest.raises(ValueError, match=r"no subset named '10s'; available: \['"):
        preds.subset("10s")
    with pytest.raises(ValueError, match="have no subsets"):
        Predictions(preds.logits, preds.labels).subset("1s")


def test_predictions_accept_torch_and_reject_bad_input():
    preds = Predictions(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), ["a", "b", "a", "b"])
    assert preds.logits.dtype == np.float32 and preds.labels.dtype == np.int64 and preds.n_classes == 3
    with pytest.raises(ValueError, match="labels has 3 entries but logits has 4 rows"):
        Predictions(np.zeros((4, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels\[0\] = 3 is out of range"):
        Predictions(np.zeros((1, 3)), np.array([3]))
    with pytest.raises(ValueError, match=r"logits\[0, 2\] = nan"):
        Predictions(np.array([[0.0, 1.0, np.nan]]), np.array([0]))
    with pytest.raises(ValueError, match=r"subsets must have shape \(2,\)"):
        Predictions(np.zeros((2, 3)), np.array([0, 1]), np.array(["a"]))
    with pytest.raises(TypeError, match="subsets must hold strings"):
        Predictions(np.zeros((2, 3)), np.array([0, 1]), np.array([1, 2]))


def test_loading_a_file_without_labels_is_an_error(tmp_path):
    np.savez(tmp_path / "bad.npz", logits=np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"lacks the arrays \['labels'\]"):
        Predictions.load(tmp_path / "bad.npz")


# ---- compare_models and the report -------------------------------------------------------------


def model_splits():
    """An overconfident softmax model and a better-calibrated energy model."""
    return dict(
        softmax_dev=split(2000, 5, 3.0, seed=10),
        softmax_test=split(2000, 5, 3.0, seed=11),
        energy_dev=split(2000, 5, 1.2, seed=12),
        energy_test=split(2000, 5, 1.2, seed=13),
    )


def test_compare_models_rows(tmp_path):
    s = model_splits()
    rows = compare_models(**s, n_bins=15, calibrator_dir=tmp_path / "cal")
    assert len(rows) == 5 * 4  # five methods, "all" and three subsets
    assert [r["method"] for r in rows if r["subset"] == "all"] == list(REPORT_ROWS)
    assert rows[0]["subset"] == "all" and sorted(r["subset"] for r in rows[1:4]) == ["1s", "3s", "full"]
    by = {(r["method"], r["subset"]): r for r in rows}
    # Uncalibrated rows are exactly the metrics of the test predictions.
    expected = evaluate_logits(s["softmax_test"].labels, s["softmax_test"].logits)
    for key in ("ece", "acc", "nll"):
        assert by[("softmax", "all")][key] == expected[key]
    sub = s["energy_test"].subset("1s")
    assert by[("energy", "1s")]["nll"] == evaluate_logits(sub.labels, sub.logits)["nll"]
    assert by[("energy", "1s")]["n"] == len(sub)
    # The TS row applies the temperature fitted on the dev split.
    ts = TemperatureScaling().fit(s["softmax_dev"].logits, s["softmax_dev"].labels)
    calibrated = evaluate_logits(s["softmax_test"].labels, ts.transform(s["softmax_test"].logits.astype(np.float64)))
    assert abs(by[("softmax + TS", "all")]["nll"] - calibrated["nll"]) < 1e-12
    assert abs(load_calibrator(tmp_path / "cal" / "softmax_ts.json").temperature - ts.temperature) < 1e-12
    # On overconfident logits both calibrators cut NLL and ECE, and leave accuracy of TS unchanged.
    for method in ("softmax + TS", "softmax + LS"):
        assert by[(method, "all")]["nll"] < by[("softmax", "all")]["nll"]
        assert by[(method, "all")]["ece"] < by[("softmax", "all")]["ece"]
    assert by[("softmax + TS", "all")]["acc"] == by[("softmax", "all")]["acc"]


def test_compare_models_accepts_paths_and_checks_class_counts(tmp_path):
    s = model_splits()
    paths = {k: v.save(tmp_path / f"{k}.npz") for k, v in s.items()}
    rows = compare_models(**paths)
    assert rows == compare_models(**s)
    s["energy_test"] = Predictions(np.zeros((3, 4)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="energy_dev has 5 classes but energy_test has 4"):
        compare_models(**s)


def test_write_report(tmp_path):
    rows = compare_models(**model_splits())
    md_path, json_path = write_report(rows, tmp_path / "report", title="Emotion")
    assert md_path.name == "calibration.md" and json_path.name == "calibration.json"
    data = json.loads(json_path.read_text())
    assert data["title"] == "Emotion" and data["rows"] == rows
    md = md_path.read_text()
    assert md.startswith("# Emotion")
    assert "| Method | ECE (%) | ACC (%) | NLL |" in md
    for method in REPORT_ROWS:
        assert f"| {method} |" in md
    assert "## Subset: 1s" in md and "**" in md
    first = next(r for r in rows if r["method"] == "softmax" and r["subset"] == "all")
    assert f"| softmax | {first['ece']:.2f} | {first['acc']:.2f} | {first['nll']:.3f} |" in md


def test_report_tasks_writes_one_table_for_several_tasks(tmp_path):
    runs = {"age": model_splits(), "language": {k: v for k, v in model_splits().items()}}
    md_path, json_path = report_tasks(runs, tmp_path)
    rows = json.loads(json_path.read_text())["rows"]
    assert {r["task"] for r in rows} == {"age", "language"}
    assert len(rows) == 2 * 5 * 4
    md = md_path.read_text()
    assert "| Method | age ECE (%) | age ACC (%) | age NLL | language ECE (%) |" in md
    assert (tmp_path / "calibrators" / "language" / "energy_ts.json").exists()


def test_report_bad_input(tmp_path):
    with pytest.raises(ValueError, match="rows is empty"):
        write_report([], tmp_path)
    with pytest.raises(ValueError, match=r"rows\[0\] lacks the keys \['nll'\]"):
        write_report([{"method": "softmax", "ece": 1.0, "acc": 2.0}], tmp_path)
    splits = model_splits()
    del splits["energy_dev"]
    with pytest.raises(ValueError, match=r"run 'age' lacks \['energy_dev'\]"):
        report_tasks({"ok": model_splits(), "age": splits}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="softmax_dev must be a Predictions"):
        compare_models(None, *list(model_splits().values())[1:])


def test_bootstrap_intervals_on_request(tmp_path):
    s = model_splits()
    rows = compare_models(**s, n_bootstrap=30, seed=3)
    assert all(0 <= r["ece_low"] < r["ece_high"] <= 100 for r in rows)
    # Resampling inflates a small ECE, so only the large, uncalibrated one must lie inside its interval.
    softmax = next(r for r in rows if r["method"] == "softmax" and r["subset"] == "all")
    assert softmax["ece_low"] <= softmax["ece"] <= softmax["ece_high"]
    assert "ece_low" not in compare_models(**s)[0]
    md_path, _ = write_report(rows, tmp_path)
    first = rows[0]
    assert f"{first['ece']:.2f} [{first['ece_low']:.2f}, {first['ece_high']:.2f}]" in md_path.read_text()
    with pytest.raises(ValueError, match="n_bootstrap must be an int >= 0, got -1"):
        compare_models(**s, n_bootstrap=-1)
