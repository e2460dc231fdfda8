"""Calibration of classifiers: metrics, post-hoc calibrators, OOD scores, plots and reports.

Pure numpy/torch/matplotlib; depends on no other jemfast package. Metric
functions return fractions, :func:`evaluate_logits` and the reports percent
(see :mod:`jemfast.calibration.metrics` for units and the binning rule).
"""

from .metrics import (
    BinStats,
    ConfidenceInterval,
    accuracy,
    adaptive_ece,
    bin_edges,
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
from .ood import auroc, energy_score, fpr_at_tpr, input_gradient_norm, max_softmax_probability, ood_metrics
from .plots import compare_reliability, confidence_histogram, reliability_diagram, training_curves
from .predictions import Predictions
from .report import METHODS, compare_models, report_runs, write_report
from .scalers import (
    Calibrator,
    LogisticScaling,
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
    load_calibrator,
)

__all__ = [
    "BinStats",
    "Calibrator",
    "ConfidenceInterval",
    "LogisticScaling",
    "METHODS",
    "MatrixScaling",
    "Predictions",
    "TemperatureScaling",
    "VectorScaling",
    "accuracy",
    "adaptive_ece",
    "auroc",
    "bin_edges",
    "bin_indices",
    "bootstrap_ci",
    "brier_score",
    "classwise_ece",
    "compare_models",
    "compare_reliability",
    "confidence_histogram",
    "energy_score",
    "evaluate_logits",
    "expected_calibration_error",
    "fpr_at_tpr",
    "input_gradient_norm",
    "load_calibrator",
    "max_softmax_probability",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "ood_metrics",
    "reliability_bins",
    "reliability_diagram",
    "report_runs",
    "training_curves",
    "write_report",
]
