"""Calibration figures are written as non-empty PNG and PDF files; bad input is rejected."""

import json

import numpy as np
import pytest

from jemfast.calibration import (
    Predictions,
    compare_reliability,
    confidence_histogram,
    reliability_diagram,
    training_curves,
)
from jemfast.train.run_log import read_epoch_records

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF"}


def assert_image(path, suffix):
    data = path.read_bytes()
    assert len(data) > 1000, f"{path} has only {len(data)} bytes"
    assert data.startswith(MAGIC[suffix]), f"{path} does not start with the {suffix} signature"


def predictions(n=300, c=4, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c)) * scale + 2.0 * np.eye(c)[labels]
    return Predictions(logits.astype(np.float32), labels)


def write_log(path, lines):
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_reliability_diagram_and_confidence_histogram(tmp_path, suffix):
    preds = predictions()
    out = reliability_diagram(preds.labels, logits=preds.logits, path=tmp_path / f"rel{suffix}", title="softmax")
    assert out == tmp_path / f"rel{suffix}"
    assert_image(out, suffix)
    probs = np.exp(preds.logits - preds.logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    out = confidence_histogram(preds.labels, probs=probs, path=tmp_path / "sub" / f"hist{suffix}", n_bins=10)
    assert_image(out, suffix)


def test_plots_of_edge_cases(tmp_path):
    # All correct with confidence 1.0, and a single example: empty bins and empty groups must not break.
    probs = np.eye(3)[[0, 1, 2]]
    assert_image(reliability_diagram(np.array([0, 1, 2]), probs=probs, path=tmp_path / "a.png"), ".png")
    assert_image(confidence_histogram(np.array([0, 1, 2]), probs=probs, path=tmp_path / "b.png"), ".png")
    one = np.array([[0.3, 0.7]])
    assert_image(reliability_diagram(np.array([0]), probs=one, path=tmp_path / "c.png", n_bins=5), ".png")


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_training_curves_from_a_run_log(tmp_path, suffix):
    log = write_log(
        tmp_path / "metrics.jsonl",
        [
            {"kind": "config", "lr": 0.1},
            {"kind": "step", "step": 1, "loss": 2.3},
            {"kind": "epoch", "epoch": 2, "val_acc": 70.0, "val_nll": 0.9, "val_ece": 8.0, "train_ce": 1.0, "lr": 0.1},
            "",
            {"kind": "epoch", "epoch": 1, "val_acc": 50.0, "val_nll": 1.4, "val_ece": 12.0, "train_ce": 1.6, "lr": 0.1},
            {"kind": "epoch", "epoch": 3, "val_acc": 80.0, "val_nll": 0.55, "val_ece": 4.5, "train_ce": 0.7, "lr": 0.1},
            # epoch 3 again: the run was killed before its checkpoint and resumed; the last record counts
            {"kind": "epoch", "epoch": 3, "val_acc": 81.2, "val_nll": 0.52, "val_ece": 4.1, "train_ce": 0.6, "lr": 0.1},
        ],
    )
    records = read_epoch_records(log)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val_acc"] == 81.2
    assert_image(training_curves(log, tmp_path / f"curves{suffix}"), suffix)


def test_training_curves_errors(tmp_path):
    only_steps = write_log(tmp_path / "steps.jsonl", [{"kind": "step", "step": 1, "loss": 2.0}])
    with pytest.raises(ValueError, match='no records with "kind": "epoch"'):
        training_curves(only_steps, tmp_path / "x.png")
    broken = write_log(tmp_path / "broken.jsonl", [{"kind": "epoch", "epoch": 1}, "{not json"])
    with pytest.raises(ValueError, match=r"broken.jsonl:2 is not valid JSON"):
        training_curves(broken, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_compare_reliability_from_objects_and_files(tmp_path, suffix):
    softmax = predictions(seed=1, scale=4.0)
    energy = predictions(seed=2, scale=1.0)
    assert_image(compare_reliability(softmax, energy, tmp_path / f"cmp{suffix}"), suffix)
    paths = softmax.save(tmp_path / "s.npz"), energy.save(tmp_path / "e.npz")
    assert_image(compare_reliability(*paths, tmp_path / f"cmp_files{suffix}", n_bins=10), suffix)


def test_bad_input(tmp_path):
    preds = predictions()
    with pytest.raises(ValueError, match=r"must end in one of \('.png', '.pdf'\)"):
        reliability_diagram(preds.labels, logits=preds.logits, path=tmp_path / "rel.jpg")
    with pytest.raises(ValueError, match="exactly one of logits= or probs="):
        confidence_histogram(preds.labels, path=tmp_path / "h.png")
    with pytest.raises(ValueError, match="labels has 299 entries"):
        reliability_diagram(preds.labels[:-1], logits=preds.logits, path=tmp_path / "rel.png")
    with pytest.raises(TypeError, match="softmax_preds must be a Predictions"):
        compare_reliability((preds.labels, preds.logits), preds, tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []
