"""Calibration metrics against hand-computed values, edge cases and bad input."""

import math

import numpy as np
import pytest
import torch

from jemfast.calibration import (
    accuracy,
    adaptive_ece,
    bin_indices,
    bootstrap_ci,
    brier_score,
    classwise_ece,
    evaluate_logits,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

# Four examples, two classes. Confidences 0.9, 0.6, 0.7, 0.8; the second is wrong.
PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
LABELS = np.array([0, 1, 1, 1])


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_accuracy_nll_brier_by_hand():
    assert accuracy(LABELS, probs=PROBS) == 0.75
    expected_nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4
    assert math.isclose(negative_log_likelihood(LABELS, probs=PROBS), expected_nll, rel_tol=1e-14)
    # Per row sum_k (p_k - onehot_k)^2: 0.02, 0.72, 0.18, 0.08.
    assert math.isclose(brier_score(LABELS, probs=PROBS), 0.25, rel_tol=1e-14)


def test_ece_left_closed_by_hand():
    # Edges 0, .2, .4, .6, .8, 1 with [lo, hi): 0.6 and 0.7 in [.6, .8), 0.8 and 0.9 in [.8, 1].
    # Bin [.6,.8): acc 0.5, conf 0.65; bin [.8,1]: acc 1, conf 0.85; both gaps 0.15, weights 1/2.
    assert math.isclose(expected_calibration_error(LABELS, probs=PROBS, n_bins=5), 0.15, rel_tol=1e-12)
    assert math.isclose(maximum_calibration_error(LABELS, probs=PROBS, n_bins=5), 0.15, rel_tol=1e-12)
    stats = reliability_bins(LABELS, probs=PROBS, n_bins=5)
    assert stats.count.tolist() == [0, 0, 0, 2, 2]
    assert np.isnan(stats.accuracy[:3]).all()
    np.testing.assert_allclose(stats.accuracy[3:], [0.5, 1.0])
    np.testing.assert_allclose(stats.confidence[3:], [0.65, 0.85])


def test_ece_right_closed_by_hand():
    # (lo, hi]: 0.6 in (.4,.6] (wrong, gap .6), 0.7 and 0.8 in (.6,.8] (acc 1, conf .75),
    # 0.9 in (.8,1] (gap .1): ECE = .25*.6 + .5*.25 + .25*.1 = 0.3; MCE = 0.6.
    ece = expected_calibration_error(LABELS, probs=PROBS, n_bins=5, right_closed=True)
    assert math.isclose(ece, 0.3, rel_tol=1e-12)
    mce = maximum_calibration_error(LABELS, probs=PROBS, n_bins=5, right_closed=True)
    assert math.isclose(mce, 0.6, rel_tol=1e-12)


def test_adaptive_ece_by_hand():
    # Two equal-mass bins of sorted confidences: {0.6 wrong, 0.7} and {0.8, 0.9}: gaps 0.15 each.
    assert math.isclose(adaptive_ece(LABELS, probs=PROBS, n_bins=2), 0.15, rel_tol=1e-12)
    # Four bins of one example: gaps 0.6, 0.3, 0.2, 0.1 in sorted order, mean 0.3.
    assert math.isclose(adaptive_ece(LABELS, probs=PROBS, n_bins=4), 0.3, rel_tol=1e-12)
    # More bins than examples: one example per bin, same as above.
    assert math.isclose(adaptive_ece(LABELS, probs=PROBS, n_bins=15), 0.3, rel_tol=1e-12)


def test_classwise_ece_by_hand():
    # Class 0: p = .9,.6,.3,.2 vs [1,0,0,0]: bins [.2,.4) {.3,.2} gap .25 (w .5), [.6,.8) gap .6,
    # [.8,1] gap .1 (w .25 each) -> .3.  Class 1: p = .1,.4,.7,.8 vs [0,1,1,1]: gaps .1,.6,.3,.2
    # (w .25 each) -> .3.  Mean 0.3.
    assert math.isclose(classwise_ece(LABELS, probs=PROBS, n_bins=5), 0.3, rel_tol=1e-12)


def test_classwise_ece_counts_an_absent_class():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    labels = np.array([0, 1])
    # Classes 0 and 1: gaps .3 and .2 at weight 1/2 -> .25 each; class 2 (never a label):
    # both 0.1 lie on the edge 0.1 of [.1,.2), gap .1 at weight 1 -> .1.  Mean 0.2.
    assert math.isclose(classwise_ece(labels, probs=probs, n_bins=10), 0.2, rel_tol=1e-12)


def test_all_correct_with_confidence_exactly_one():
    probs = np.eye(3)[[0, 1, 2, 1]]
    labels = np.array([0, 1, 2, 1])
    for right_closed in (False, True):
        stats = reliability_bins(labels, probs=probs, n_bins=15, right_closed=right_closed)
        assert stats.count[-1] == 4 and stats.count[:-1].sum() == 0
        assert expected_calibration_error(labels, probs=probs, right_closed=right_closed) == 0.0
    assert accuracy(labels, probs=probs) == 1.0
    assert negative_log_likelihood(labels, probs=probs) == 0.0
    assert brier_score(labels, probs=probs) == 0.0
    assert maximum_calibration_error(labels, probs=probs) == 0.0
    assert classwise_ece(labels, probs=probs) == 0.0


def test_all_wrong():
    probs = np.array([[0.2, 0.8]] * 3)
    labels = np.zeros(3, dtype=np.int64)
    assert accuracy(labels, probs=probs) == 0.0
    assert math.isclose(expected_calibration_error(labels, probs=probs), 0.8, rel_tol=1e-14)
    assert math.isclose(maximum_calibration_error(labels, probs=probs), 0.8, rel_tol=1e-14)
    assert math.isclose(negative_log_likelihood(labels, probs=probs), -math.log(0.2), rel_tol=1e-14)
    assert math.isclose(brier_score(labels, probs=probs), 2 * 0.8**2, rel_tol=1e-14)


def test_zero_probability_for_the_label_gives_infinite_nll():
    assert negative_log_likelihood(np.array([1]), probs=np.array([[1.0, 0.0]])) == math.inf


@pytest.mark.parametrize(
    "right_closed, expected",
    [(False, [0, 1, 1, 3, 4, 4]), (True, [0, 0, 1, 2, 3, 4])],
)
def test_confidences_on_bin_edges(right_closed, expected):
    conf = np.array([0.0, 0.2, 0.3, 0.6, 0.8, 1.0])
    assert bin_indices(conf, 5, right_closed=right_closed).tolist() == expected


def test_float32_confidence_is_binned_by_its_exact_value():
    # float32(0.2) = 0.20000000298 lies above the edge 0.2 in both conventions.
    conf = np.array([np.float32(0.2)], dtype=np.float32).astype(np.float64)
    assert bin_indices(conf, 5).tolist() == [1]
    assert bin_indices(conf, 5, right_closed=True).tolist() == [1]


@pytest.mark.parametrize("label, expected_ece", [(1, 0.3), (0, 0.7)])
def test_single_example(label, expected_ece):
    probs = np.array([[0.3, 0.7]])
    labels = np.array([label])
    assert math.isclose(expected_calibration_error(labels, probs=probs), expected_ece, rel_tol=1e-14)
    assert math.isclose(adaptive_ece(labels, probs=probs), expected_ece, rel_tol=1e-14)
    assert math.isclose(maximum_calibration_error(labels, probs=probs), expected_ece, rel_tol=1e-14)
    assert accuracy(labels, probs=probs) == float(label == 1)


def test_logits_and_probs_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(97, 7)) * 3
    labels = rng.integers(0, 7, size=97)
    probs = softmax(logits)
    for metric in (
        accuracy,
        negative_log_likelihood,
        brier_score,
        expected_calibration_error,
        adaptive_ece,
        classwise_ece,
        maximum_calibration_error,
    ):
        assert math.isclose(metric(labels, logits=logits), metric(labels, probs=probs), rel_tol=1e-9, abs_tol=1e-12), (
            metric
        )


def test_torch_inputs_match_numpy_and_are_computed_in_float64():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=50)
    from_numpy = negative_log_likelihood(labels, logits=logits)
    from_torch = negative_log_likelihood(torch.from_numpy(labels), logits=torch.from_numpy(logits))
    assert from_numpy == from_torch
    assert expected_calibration_error(torch.from_numpy(labels), logits=torch.from_numpy(logits).bfloat16()) >= 0
    # A margin of 1000 nats would overflow a naive float32 softmax; log-softmax gives it exactly.
    big = np.array([[1000.0, 0.0]], dtype=np.float32)
    assert negative_log_likelihood(np.array([1]), logits=big) == 1000.0
    assert negative_log_likelihood(np.array([0]), logits=big) == 0.0


def test_evaluate_logits_reports_percent_and_nats():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(200, 5)) * 2
    labels = rng.integers(0, 5, size=200)
    m = evaluate_logits(labels, logits, n_bins=10)
    assert {"acc", "nll", "ece", "brier", "mce", "n"} <= set(m)
    assert m["n"] == 200
    assert math.isclose(m["acc"], 100 * accuracy(labels, logits=logits))
    assert math.isclose(m["ece"], 100 * expected_calibration_error(labels, logits=logits, n_bins=10), rel_tol=1e-12)
    assert math.isclose(m["mce"], 100 * maximum_calibration_error(labels, logits=logits, n_bins=10), rel_tol=1e-12)
    assert math.isclose(m["nll"], negative_log_likelihood(labels, logits=logits), rel_tol=1e-12)
    assert math.isclose(m["brier"], brier_score(labels, logits=logits), rel_tol=1e-12)
    assert all(isinstance(v, (int, float)) for v in m.values())


def test_bootstrap_interval_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 3)) * 2
    labels = rng.integers(0, 3, size=300)
    ci = bootstrap_ci(expected_calibration_error, labels, logits=logits, n_resamples=200, seed=7, n_bins=10)
    assert ci.low <= ci.estimate <= ci.high and ci.low < ci.high
    assert ci.estimate == expected_calibration_error(labels, logits=logits, n_bins=10)
    assert ci == bootstrap_ci(expected_calibration_error, labels, logits=logits, n_resamples=200, seed=7, n_bins=10)
    # Every resample of an all-correct set is all correct.
    probs = np.eye(2)[[0, 1, 1]]
    ci = bootstrap_ci(accuracy, np.array([0, 1, 1]), probs=probs, n_resamples=20)
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)


# ---- bad input -------------------------------------------------------------------------------

ALL_METRICS = (
    accuracy,
    negative_log_likelihood,
    brier_score,
    expected_calibration_error,
    adaptive_ece,
    classwise_ece,
    maximum_calibration_error,
)


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_both_or_neither_score_keyword_is_an_error(metric):
    with pytest.raises(ValueError, match="exactly one of logits= or probs="):
        metric(LABELS, logits=PROBS, probs=PROBS)
    with pytest.raises(ValueError, match="exactly one of logits= or probs="):
        metric(LABELS)


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_mismatched_lengths(metric):
    with pytest.raises(ValueError, match="labels has 3 entries but the scores have 4 rows"):
        metric(LABELS[:3], probs=PROBS)


@pytest.mark.parametrize("bad_label", [-1, 2])
def test_labels_out_of_range(bad_label):
    labels = LABELS.copy()
    labels[2] = bad_label
    with pytest.raises(ValueError, match=rf"labels\[2\] = {bad_label} is out of range.*\[0, 2\)"):
        expected_calibration_error(labels, probs=PROBS)


def test_nan_and_inf_are_rejected():
    logits = np.zeros((4, 2))
    logits[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"logits\[1, 1\] = nan"):
        negative_log_likelihood(LABELS, logits=logits)
    logits[1, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        accuracy(LABELS, logits=torch.from_numpy(logits))


def test_probabilities_must_be_probabilities():
    with pytest.raises(ValueError, match="row 1 of probs sums to 1.2"):
        accuracy(np.array([0, 1]), probs=np.array([[0.5, 0.5], [0.6, 0.6]]))
    with pytest.raises(ValueError, match=r"probs\[0, 0\] = -0.5 is not a probability"):
        accuracy(np.array([0]), probs=np.array([[-0.5, 1.5]]))


def test_wrong_types_and_shapes():
    with pytest.raises(TypeError, match="labels must hold integers"):
        accuracy(LABELS.astype(float), probs=PROBS)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        accuracy(LABELS, logits=np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        accuracy(LABELS[:, None], probs=PROBS)
    with pytest.raises(ValueError, match="at least one row"):
        accuracy(np.array([], dtype=np.int64), logits=np.zeros((0, 3)))
    with pytest.raises(ValueError, match="n_bins must be an int >= 1, got 0"):
        expected_calibration_error(LABELS, probs=PROBS, n_bins=0)
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        accuracy(LABELS, logits="logits")
