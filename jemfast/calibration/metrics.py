"""Classification and calibration metrics.

Every metric takes the labels first and then exactly one of the keywords
``logits=`` or ``probs=``: the caller says which kind of score it passes, the
functions never guess. Inputs may be numpy arrays or torch tensors of shape
(N, C) with labels of shape (N,) holding integers in [0, C). All arithmetic is
done in float64 on the CPU.

Units
-----
The metric functions return *fractions*: ``accuracy`` is in [0, 1] and the
calibration errors (ECE, adaptive ECE, classwise ECE, MCE) are in [0, 1].
``negative_log_likelihood`` is the mean NLL in nats and ``brier_score`` is the
multi-class Brier score in [0, 2]. :func:`evaluate_logits`, which feeds the
trainer's logs and the report, converts accuracy, ECE and MCE to *percent*,
as the paper reports them.

Binning rule
------------
Equal-width bins have edges ``k / n_bins`` for k = 0..n_bins, each the
float64 nearest to the exact fraction (so 0.6 is an edge of 5 bins, where
``numpy.linspace`` would give 0.6000000000000001). By default
bins are closed on the left, ``[lo, hi)``, so a confidence lying exactly on an
edge goes to the bin above it, and a confidence of exactly 1.0 goes into the
top bin, which is therefore ``[lo, 1]``. With ``right_closed=True`` bins are
``(lo, hi]`` and a confidence of exactly 0.0 goes into the bottom bin. Edges
are compared in float64, so a float32 confidence is binned by its exact value
(for example float32 0.2 is 0.2000000030 and lies above the edge 0.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from jemfast._checks import check_int, check_number

logger = logging.getLogger(__name__)

# Tolerance on the row sums of probabilities passed with ``probs=``; loose
# enough for float32 softmax outputs, tight enough to catch unnormalised scores.
PROB_SUM_ATOL = 1e-4


def _to_numpy(x, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array without copying numpy input."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.double()
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def as_labels(labels, n_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Validate class labels and return them as an int64 array of shape (N,).

    Raises TypeError for a non-integer dtype and ValueError for a wrong shape,
    an empty array or (when ``n_classes`` is given) a label outside [0, C).
    """
    arr = _to_numpy(labels, name)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one example is needed")
    arr = arr.astype(np.int64, copy=False)
    if n_classes is not None:
        bad = (arr < 0) | (arr >= n_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{i}] = {int(arr[i])} is out of range; expected a class index in [0, {n_classes})")
    return arr


def as_scores(x, name: str) -> np.ndarray:
    """Validate an (N, C) array of logits or probabilities and return it in float64."""
    arr = _to_numpy(x, name)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) or arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        r, c = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}[{r}, {c}] = {arr[r, c]}; expected finite values (no NaN or inf)")
    return arr


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, float64."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float64."""
    return np.exp(log_softmax(logits))


def _check_probs(probs: np.ndarray) -> None:
    if (probs < 0).any() or (probs > 1).any():
        r, c = np.argwhere((probs < 0) | (probs > 1))[0]
        raise ValueError(
            f"probs[{r}, {c}] = {probs[r, c]} is not a probability; expected values in [0, 1] "
            "(pass logits= for unnormalised scores)"
        )
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROB_SUM_ATOL
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"row {r} of probs sums to {sums[r]:.6g}; expected rows summing to 1 "
            f"(within {PROB_SUM_ATOL}); pass logits= for unnormalised scores"
        )


def _resolve(labels, logits, probs) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate inputs; return (labels int64, probs float64, log-probs or None)."""
    if (logits is None) == (probs is None):
        raise ValueError("pass exactly one of logits= or probs=, got " + ("both" if logits is not None else "neither"))
    if logits is not None:
        scores = as_scores(logits, "logits")
        log_p = log_softmax(scores)
        p = np.exp(log_p)
    else:
        p = as_scores(probs, "probs")
        _check_probs(p)
        log_p = None
    y = as_labels(labels, n_classes=p.shape[1])
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but the scores have {p.shape[0]} rows; expected the same N")
    return y, p, log_p


def bin_edges(n_bins: int) -> np.ndarray:
    """The (n_bins + 1,) equal-width edges k / n_bins, k = 0..n_bins, in float64."""
    n_bins = check_int("n_bins", n_bins, minimum=1)
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def bin_indices(confidences: np.ndarray, n_bins: int, right_closed: bool = False) -> np.ndarray:
    """Equal-width bin index in [0, n_bins) of each confidence in [0, 1].

    Left-closed bins ``[lo, hi)`` with 1.0 in the top bin by default;
    ``right_closed=True`` gives ``(lo, hi]`` with 0.0 in the bottom bin. Edges
    are :func:`bin_edges`.
    """
    edges = bin_edges(n_bins)
    side = "left" if right_closed else "right"
    idx = np.searchsorted(edges, confidences, side=side) - 1
    return np.clip(idx, 0, n_bins - 1)


class BinStats(NamedTuple):
    """Per-bin statistics of a reliability diagram, arrays of shape (n_bins,).

    ``accuracy`` and ``confidence`` are NaN in empty bins; ``count`` is the
    number of examples in each bin; ``edges`` has shape (n_bins + 1,).
    """

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray


def _bin_stats(correct: np.ndarray, confidences: np.ndarray, n_bins: int, right_closed: bool) -> BinStats:
    idx = bin_indices(confidences, n_bins, right_closed)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_correct = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    sum_conf = np.bincount(idx, weights=confidences, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, sum_correct / count, np.nan)
        conf = np.where(count > 0, sum_conf / count, np.nan)
    return BinStats(bin_edges(n_bins), count.astype(np.int64), acc, conf)


def reliability_bins(labels, *, logits=None, probs=None, n_bins: int = 15, right_closed: bool = False) -> BinStats:
    """Top-label reliability statistics in ``n_bins`` equal-width confidence bins.

    The confidence of an example is its largest class probability and it is
    correct when the arg-max class equals the label (ties go to the lowest
    class index, as in ``numpy.argmax``). Accuracy and confidence are fractions.
    """
    y, p, _ = _resolve(labels, logits, probs)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    return _bin_stats(p.argmax(axis=1) == y, p.max(axis=1), n_bins, right_closed)


def accuracy(labels, *, logits=None, probs=None) -> float:
    """Top-1 accuracy as a fraction in [0, 1] (not percent)."""
    y, p, _ = _resolve(labels, logits, probs)
    return float(np.mean(p.argmax(axis=1) == y))


def negative_log_likelihood(labels, *, logits=None, probs=None) -> float:
    """Mean negative log-likelihood of the labels in nats.

    With ``logits=`` it is computed through a stable log-softmax. With
    ``probs=`` it is ``-log p[label]``, which is ``inf`` when a label has
    probability exactly 0.
    """
    y, p, log_p = _resolve(labels, logits, probs)
    rows = np.arange(y.shape[0])
    if log_p is not None:
        return float(-np.mean(log_p[rows, y]))
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(p[rows, y])))


def brier_score(labels, *, logits=None, probs=None) -> float:
    """Multi-class Brier score, mean over examples of sum_k (p_k - [y = k])^2, in [0, 2]."""
    y, p, _ = _resolve(labels, logits, probs)
    onehot = np.zeros_like(p)
    onehot[np.arange(y.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def expected_calibration_error(
    labels, *, logits=None, probs=None, n_bins: int = 15, right_closed: bool = False
) -> float:
    """Top-label ECE with equal-width bins, as a fraction in [0, 1] (not percent).

    ECE = sum_b (n_b / N) |acc_b - conf_b| over the ``n_bins`` bins of the
    confidence; bins follow the module's binning rule (``[lo, hi)`` with 1.0 in
    the top bin, or ``(lo, hi]`` with ``right_closed=True``).
    """
    stats = reliability_bins(labels, logits=logits, probs=probs, n_bins=n_bins, right_closed=right_closed)
    filled = stats.count > 0
    weights = stats.count[filled] / stats.count.sum()
    return float(np.sum(weights * np.abs(stats.accuracy[filled] - stats.confidence[filled])))


def maximum_calibration_error(
    labels, *, logits=None, probs=None, n_bins: int = 15, right_closed: bool = False
) -> float:
    """Top-label MCE: the largest |acc_b - conf_b| over non-empty equal-width bins, a fraction."""
    stats = reliability_bins(labels, logits=logits, probs=probs, n_bins=n_bins, right_closed=right_closed)
    filled = stats.count > 0
    return float(np.max(np.abs(stats.accuracy[filled] - stats.confidence[filled])))


def adaptive_ece(labels, *, logits=None, probs=None, n_bins: int = 15) -> float:
    """Top-label ECE with equal-mass bins, as a fraction in [0, 1].

    Examples are sorted by confidence (stable sort, so ties keep their input
    order) and split into ``n_bins`` consecutive groups whose sizes differ by at
    most one (``numpy.array_split``); with N < n_bins there are N bins of one
    example each. The error is sum_b (n_b / N) |acc_b - conf_b|.
    """
    y, p, _ = _resolve(labels, logits, probs)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    n = y.shape[0]
    total = 0.0
    for group in np.array_split(order, min(n_bins, n)):
        total += group.size / n * abs(correct[group].mean() - conf[group].mean())
    return float(total)


def classwise_ece(labels, *, logits=None, probs=None, n_bins: int = 15, right_closed: bool = False) -> float:
    """Classwise ECE (Kull et al., 2019) as a fraction in [0, 1].

    For each class k the probabilities p_k of all N examples are binned with
    the module's equal-width rule, and the class error is
    sum_b (n_b / N) |mean_b([y = k]) - mean_b(p_k)|; the result is the mean of
    the C class errors. A class absent from the labels is still included:
    any probability the model gives it is miscalibration.
    """
    y, p, _ = _resolve(labels, logits, probs)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    n, c = p.shape
    per_class = np.empty(c)
    for k in range(c):
        stats = _bin_stats(y == k, p[:, k], n_bins, right_closed)
        filled = stats.count > 0
        per_class[k] = np.sum(stats.count[filled] / n * np.abs(stats.accuracy[filled] - stats.confidence[filled]))
    return float(per_class.mean())


class ConfidenceInterval(NamedTuple):
    """A point estimate with a percentile bootstrap interval, in the metric's units."""

    estimate: float
    low: float
    high: float
    confidence: float


def bootstrap_ci(
    metric: Callable[..., float],
    labels,
    *,
    logits=None,
    probs=None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **metric_kwargs,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``metric`` over examples resampled with replacement.

    ``metric`` is one of this module's functions (or any with the same
    calling convention); ``metric_kwargs`` (e.g. ``n_bins``) are passed through.
    The estimate is the metric on the full data; ``low`` and ``high`` are the
    (1 - confidence)/2 and (1 + confidence)/2 quantiles over ``n_resamples``
    resamples drawn from ``numpy.random.default_rng(seed)``.
    """
    if check_number("confidence", confidence, positive=True) >= 1.0:
        raise ValueError(f"confidence must be a finite number in (0, 1), got {confidence!r}")
    n_resamples = check_int("n_resamples", n_resamples, minimum=1)
    y, p, _ = _resolve(labels, logits, probs)
    scores = as_scores(logits, "logits") if logits is not None else p
    key = "logits" if logits is not None else "probs"
    estimate = metric(y, **{key: scores}, **metric_kwargs)
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values[i] = metric(y[idx], **{key: scores[idx]}, **metric_kwargs)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return ConfidenceInterval(float(estimate), float(low), float(high), float(confidence))


def evaluate_logits(labels, logits, n_bins: int = 15) -> dict[str, float]:
    """The standard validation metrics of a classifier from its logits.

    Args:
        labels: (N,) integer class labels in [0, C).
        logits: (N, C) logits (numpy or torch, any float dtype).
        n_bins: equal-width bins for ECE and MCE.

    Returns:
        ``{"acc": percent, "nll": mean nats, "ece": percent, "mce": percent,
        "adaptive_ece": percent, "brier": Brier score in [0, 2], "n": N}``;
        ``n`` is an int, the other values are Python floats.
    """
    y, p, log_p = _resolve(labels, logits, None)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    stats = _bin_stats(p.argmax(axis=1) == y, p.max(axis=1), n_bins, False)
    filled = stats.count > 0
    gaps = np.abs(stats.accuracy[filled] - stats.confidence[filled])
    ece = float(np.sum(stats.count[filled] / y.shape[0] * gaps))
    nll = float(-np.mean(log_p[np.arange(y.shape[0]), y]))
    return {
        "acc": 100.0 * float(np.mean(p.argmax(axis=1) == y)),
        "nll": nll,
        "ece": 100.0 * ece,
        "mce": 100.0 * float(gaps.max()),
        "adaptive_ece": 100.0 * adaptive_ece(y, probs=p, n_bins=n_bins),
        "brier": brier_score(y, probs=p),
        "n": int(y.shape[0]),
    }
