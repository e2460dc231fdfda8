"""Checks of one training batch ``(x, y)`` before a step, so that a bad batch changes no state.

Each raises TypeError/ValueError naming the problem:

- :func:`check_batch`: ``x`` a floating ``(N, *sample_shape)`` tensor of the trainer's sample
  shape, ``y`` ``N`` integer class labels (types and shapes only, no host sync);
- :func:`check_batch_values`: no NaN/Inf in ``x``, labels in ``[0, n_classes)`` (reads values);
- :func:`infer_n_classes`: the number of classes, from one no-grad forward of the model,
  for a trainer that was not told it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["check_batch", "check_batch_values", "infer_n_classes"]


def infer_n_classes(module: nn.Module, x: torch.Tensor, device: torch.device, *, check_finite: bool = False) -> int:
    """The number of classes C, from one no-grad forward of ``x[:2]`` in eval mode.

    Args:
        module: the classifier, ``(N, *sample_shape) -> (N, C)`` logits; its train/eval
            mode is restored afterwards, and eval mode leaves batch-norm statistics alone.
        x: a batch ``(N, *sample_shape)``; its first two rows go through the model on ``device``.
        check_finite: first refuse those two rows if they hold NaN or Inf.

    Raises:
        ValueError: non-finite rows (``check_finite``), or the output is not ``(N, C)``
            logits with ``C >= 2``.
        TypeError: the logits are not floating point.
    """
    if check_finite and not bool(torch.isfinite(x[:2]).all()):
        raise ValueError("x contains NaN or Inf values")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x[:2].to(device))
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != min(2, x.shape[0]):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model must map a batch of shape (N, ...) to logits of shape (N, C); "
            f"for a batch of {min(2, x.shape[0])} it returned {shape}"
        )
    if out.shape[1] < 2:
        raise ValueError(f"model returned {out.shape[1]} logit(s) per example; expected C >= 2 classes")
    if not out.is_floating_point():
        raise TypeError(
            f"the model returned {out.dtype} logits; a JEM needs floating-point logits "
            "(the energy and its input gradient are taken from them)"
        )
    return int(out.shape[1])


def check_batch(x: Any, y: Any, sample_shape: tuple[int, ...] | None = None) -> None:
    """Raise TypeError/ValueError unless ``x`` and ``y`` have the types and shapes of a batch.

    Args:
        x: must be a floating tensor of shape (N, *sample_shape), N >= 1.
        y: must be an integer tensor of shape (N,) (class indices; their values are
            :func:`check_batch_values`' job).
        sample_shape: the shape one input must have (the trainer's, or its replay
            buffer's); None accepts any.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must have an integer dtype (class indices), got {y.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, *sample_shape) with at least 2 dims, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (N = 0)")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (N,) = ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if sample_shape is not None and tuple(x.shape[1:]) != sample_shape:
        raise ValueError(
            f"x has sample shape {tuple(x.shape[1:])}, but this trainer (and its replay buffer) "
            f"was set up for {sample_shape}"
        )


def check_batch_values(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
    """Raise ValueError if ``x`` (N, ...) holds NaN or Inf (naming the first such example) or a
    label in ``y`` (N,) lies outside ``[0, n_classes)``. Reads the values: a host sync on a GPU."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"x contains NaN or Inf values (first in example {bad})")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got values in [{lo}, {hi}]")
