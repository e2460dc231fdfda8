"""Learning rates: the paper's optimisation recipe, SGD with a linear warm-up and step decay by
epoch, and :func:`scale_learning_rates`, which rescales a run's rates and the schedule ahead
(the divergence guard's rollbacks, a resumed run's new peak rate).

The schedule is step-wise (``scheduler.step()`` after every optimizer step), so the
warm-up is smooth and the epoch milestones are expressed in steps. Its factor is a
small callable object rather than a closure, so ``LambdaLR.state_dict()`` stores its
fields and the schedule round-trips through a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["WarmupStepDecay", "paper_optimizer", "scale_learning_rates"]


class WarmupStepDecay:
    """Learning-rate factor for step ``s`` (0-based count of optimizer steps taken).

    ``factor(s) = min(1, (s + 1) / warmup_steps) * gamma ** k`` where ``k`` is the number
    of milestone epochs ``m`` with ``s >= m * steps_per_epoch``.
    """

    def __init__(self, warmup_steps: int, milestones: Sequence[int], gamma: float, steps_per_epoch: int):
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive int, got {steps_per_epoch!r}")
        milestones = list(milestones)
        if any((not isinstance(m, int)) or m < 0 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing non-negative epoch numbers, got {milestones!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}")
        self.warmup_steps = warmup_steps
        self.milestone_steps = [m * steps_per_epoch for m in milestones]
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        warm = 1.0 if self.warmup_steps == 0 else min(1.0, (step + 1) / self.warmup_steps)
        decays = sum(1 for m in self.milestone_steps if step >= m)
        return warm * self.gamma**decays


def paper_optimizer(
    model: nn.Module,
    *,
    steps_per_epoch: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup_steps: int = 1000,
    milestones: Sequence[int] = (40, 80, 120),
    gamma: float = 0.2,
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD and its step-wise schedule as in the paper (JEM's WRN recipe).

    The learning rate rises linearly to ``lr`` over the first ``warmup_steps`` optimizer
    steps and is multiplied by ``gamma`` at each epoch in ``milestones``. The paper does not
    restate the weight decay; 5e-4 is the usual Wide-ResNet value. Call
    ``scheduler.step()`` once per optimizer step (``JEMTrainer`` does).

    Args:
        model: the classifier whose parameters are optimised.
        steps_per_epoch: optimizer steps per epoch (usually ``len(train_loader)``).

    Returns:
        ``(optimizer, scheduler)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    factor = WarmupStepDecay(warmup_steps, milestones, gamma, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def scale_learning_rates(optimizer: torch.optim.Optimizer, scheduler: Any, ratio: float) -> None:
    """Multiply every learning rate by ``ratio``, in place: each parameter group's ``lr`` (and
    ``initial_lr``, a scheduler's record of the starting rate) and the scheduler's ``base_lrs``,
    so the rest of the schedule follows. ``scheduler`` may be None."""
    for group in optimizer.param_groups:
        group["lr"] *= ratio
        if "initial_lr" in group:
            group["initial_lr"] *= ratio
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
