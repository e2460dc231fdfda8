"""Evaluation of the classifier being trained: accuracy, NLL and ECE on a loader.

:func:`evaluate_model` runs the model in eval mode without gradients over a loader (pooling
the logits of every rank under DDP) and scores the logits with
:func:`jemfast.calibration.metrics.evaluate_logits`; it refuses non-finite logits with
:class:`NonFiniteLogits`. :func:`guarded_validation` is the epoch-end validation of a
trainer with a divergence guard: a blown-up model is rolled back and validated again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from jemfast.train import distributed as dist_utils
from jemfast.train.guard import DivergenceError, DivergenceGuard
from jemfast.train.precision import autocast

__all__ = ["NonFiniteLogits", "evaluate_model", "guarded_validation"]


class NonFiniteLogits(ValueError):
    """The model produced NaN or Inf logits where finite ones were needed (evaluation)."""


def evaluate_model(
    module: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    world_size: int = 1,
) -> dict[str, float]:
    """Accuracy (percent), NLL (nats) and ECE (percent) of ``module`` on ``loader``.

    Args:
        module: the classifier (not a DDP wrapper), ``(N, *sample_shape) -> (N, C)`` logits;
            run in eval mode under ``torch.no_grad``, then put back in its former mode.
        loader: iterable of ``(x, y, ...)`` batches; ``x`` is moved to ``device``.
        amp_dtype: autocast to this dtype (None: the model's own precision); the logits
            are scored in float32.
        world_size: with more than one rank, every rank evaluates its own batches and the
            logits of all ranks are pooled (a collective: every rank must call this).

    Returns:
        ``evaluate_logits(labels, logits)``: ``{"acc", "nll", "ece", ...}``.

    Raises:
        ValueError: the loader yielded no batches.
        NonFiniteLogits: some logit is NaN or Inf (names the first such example).
    """
    from jemfast.calibration.metrics import evaluate_logits

    was_training = module.training
    module.eval()
    logits_list, labels_list = [], []
    try:
        with torch.no_grad(), autocast(device, amp_dtype):
            for batch in loader:
                x, y = batch[0], batch[1]
                logits_list.append(module(x.to(device, non_blocking=True)).float().cpu())
                labels_list.append(y.cpu().long())
    finally:
        module.train(was_training)
    if not logits_list:
        raise ValueError("validation loader yielded no batches")
    logits, labels = torch.cat(logits_list), torch.cat(labels_list)
    if world_size > 1:
        pooled = dist_utils.all_gather_objects((logits, labels))
        logits = torch.cat([p[0] for p in pooled])
        labels = torch.cat([p[1] for p in pooled])
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(1).nonzero()[0])
        raise NonFiniteLogits(f"the model's logits are not finite (NaN or Inf) on validation example {bad}")
    return evaluate_logits(labels, logits)


def guarded_validation(
    evaluate: Callable[[], dict[str, float]],
    guard: DivergenceGuard,
    rollback: Callable[[str], None],
) -> dict[str, float]:
    """Validation at an epoch end: ``evaluate()``, and while the model is blown up, ``rollback``
    (with the reason) and evaluate again.

    Blown up means non-finite logits (counted as an infinite NLL) or an NLL (nats) above
    ``guard.val_nll_threshold``; with the guard disabled the first result is returned as it is.
    ``rollback`` raises DivergenceError once the guard's rollbacks are used up.
    """
    for _ in range(guard.max_rollbacks + 2):
        try:
            val = evaluate()
        except NonFiniteLogits:
            val = {"nll": math.inf}
        if not guard.enabled or val["nll"] <= guard.val_nll_threshold:
            return val
        rollback(f"validation NLL {val['nll']:.3g} (threshold {guard.val_nll_threshold:g})")
    raise DivergenceError("validation kept failing after rollbacks")  # rollback raises first
