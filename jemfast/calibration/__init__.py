"""Calibration of classifiers: metrics, post-hoc calibrators, OOD scores, plots and reports.

Metrics, calibrators and OOD scores are numpy/torch only and import no other jemfast
package (the trainer scores validation with them). Plots need matplotlib (the
``plots`` extra) and are imported on first use; reports also read run logs. Metric
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
from .predictions import Predictions
from .scalers import (
    Calibrator,
    LogisticScaling,
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
    load_calibrator,
)

# Names from modules that need matplotlib: imported when first used.
_LAZY = {
    "compare_reliability": "plots",
    "confidence_histogram": "plots",
    "reliability_diagram": "plots",
    "training_curves": "plots",
    "REPORT_ROWS": "report",
    "compare_models": "report",
    "report_tasks": "report",
    "write_report": "report",
}


def __getattr__(name: str):
    if name == "report_runs":  # renamed: jemfast.pipeline.report_runs takes run directories
        import warnings

        warnings.warn("jemfast.calibration.report_runs is now report_tasks", DeprecationWarning, stacklevel=2)
        name = "report_tasks"
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BinStats",
    "Calibrator",
    "ConfidenceInterval",
    "LogisticScaling",
    "REPORT_ROWS",
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
    "report_tasks",
    "training_curves",
    "write_report",
]
