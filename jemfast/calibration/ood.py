"""Out-of-distribution scores and their detection metrics.

Scores follow one convention: higher means more in-distribution. The
detection metrics treat in-distribution examples as positives:
:func:`auroc` is the probability that an in-distribution example scores above
an out-of-distribution one, and :func:`fpr_at_tpr` is the fraction of
out-of-distribution examples accepted at the threshold that accepts a given
fraction of in-distribution ones.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from jemfast._checks import check_number

from .metrics import _to_numpy, as_scores, log_softmax

logger = logging.getLogger(__name__)


def energy_score(logits, temperature: float = 1.0):
    """Negative energy -E(x) = T logsumexp(f(x) / T) of each example (Liu et al., 2020).

    Args:
        logits: (N, C) logits f(x), numpy array or torch tensor.
        temperature: T > 0.

    Returns:
        (N,) scores, higher = more in-distribution: a float64 numpy array for
        numpy input, a tensor of the input's dtype and device (differentiable)
        for torch input.
    """
    temperature = check_number("temperature", temperature, positive=True)
    if isinstance(logits, torch.Tensor):
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
        return temperature * torch.logsumexp(logits / temperature, dim=1)
    z = as_scores(logits, "logits") / temperature
    top = z.max(axis=1)
    return temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def max_softmax_probability(logits):
    """Maximum softmax probability of each example (Hendrycks and Gimpel, 2017).

    Returns (N,) scores in (0, 1], higher = more in-distribution; float64 numpy
    for numpy input, a tensor like the input for torch input.
    """
    if isinstance(logits, torch.Tensor):
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
        return torch.softmax(logits, dim=1).amax(dim=1)
    return np.exp(log_softmax(as_scores(logits, "logits")).max(axis=1))


def input_gradient_norm(model: torch.nn.Module, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """L2 norm of the gradient of log p(x) with respect to each input (Grathwohl et al., 2019).

    log p(x) = T logsumexp(f(x) / T) up to the model's normalising constant,
    so the gradient of the (N,) energies summed over the batch gives each
    example's own input gradient. In-distribution inputs sit near modes of
    p(x), where the gradient is small, so use the *negated* norm (JEM's
    "approximate mass") as a higher-is-in-distribution score.

    The model is used as it is: put it in eval mode first if batch statistics
    must not change. Parameter gradients are left untouched.

    Args:
        model: maps (N, ...) inputs to (N, C) logits.
        x: (N, ...) floating-point inputs.
        temperature: T > 0.

    Returns:
        (N,) float tensor of gradient norms on ``x``'s device, detached.
    """
    temperature = check_number("temperature", temperature, positive=True)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)
        logits = model(inputs)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"model returned shape {tuple(logits.shape)}; expected logits of shape ({x.shape[0]}, C)")
        log_px = temperature * torch.logsumexp(logits / temperature, dim=1)
        (grad,) = torch.autograd.grad(log_px.sum(), inputs)
    return grad.flatten(1).norm(dim=1).detach()


def _as_score_vector(scores, name: str) -> np.ndarray:
    arr = _to_numpy(scores, name)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name}[{int(np.flatnonzero(np.isnan(arr))[0])}] is NaN; expected real scores")
    return arr


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve, in-distribution as positives, a fraction in [0, 1].

    Equal to P(s_in > s_out) + P(s_in = s_out) / 2 over all pairs (the
    Mann-Whitney statistic), computed from ranks in O(N log N).
    """
    s_in = _as_score_vector(scores_in, "scores_in")
    s_out = _as_score_vector(scores_out, "scores_out")
    ranks = _average_ranks(np.concatenate([s_in, s_out]))
    n_in, n_out = s_in.size, s_out.size
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0
    return float(u / (n_in * n_out))


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
    """False-positive rate at the threshold that keeps at least ``tpr`` of the in-distribution scores.

    The threshold t is the largest value with mean(s_in >= t) >= tpr (the
    ceil(tpr * N_in)-th highest in-distribution score); the result is
    mean(s_out >= t), a fraction in [0, 1].
    """
    tpr = check_number("tpr", tpr, positive=True, maximum=1)
    s_in = _as_score_vector(scores_in, "scores_in")
    s_out = _as_score_vector(scores_out, "scores_out")
    # Guard the ceil against 0.95 * 100 = 95.00000000000001.
    k = min(s_in.size, max(1, math.ceil(tpr * s_in.size - 1e-9)))
    threshold = np.sort(s_in)[::-1][k - 1]
    return float(np.mean(s_out >= threshold))


def ood_metrics(scores_in, scores_out, tpr: float = 0.95) -> dict[str, float]:
    """``{"auroc": percent, "fpr_at_tpr": percent}`` for in- and out-of-distribution scores."""
    return {
        "auroc": 100.0 * auroc(scores_in, scores_out),
        "fpr_at_tpr": 100.0 * fpr_at_tpr(scores_in, scores_out, tpr),
    }
