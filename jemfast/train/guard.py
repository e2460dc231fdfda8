"""Divergence guard: detect a diverged JEM step and roll back to the last good state.

JEM training occasionally blows up (the energy of samples runs away from the energy
of data, or the loss turns NaN); the reference implementation simply crashes when
``|loss| > 1e8``. The guard instead keeps an in-memory snapshot of the last state that
passed a check, and on divergence restores it, reseeds the sampler, optionally lowers
the learning rate and continues. Checks happen only at host-sync intervals: between
them a device-side flag accumulates, so no step forces a sync.

Besides the loss and the energy gap, a check looks at the weights themselves (every
parameter finite) and, at each epoch end, at validation (finite NLL below
``val_nll_threshold``): a snapshot or checkpoint is only ever taken of weights that
passed. A step can leave NaN weights behind a finite loss (the loss is computed
before the update), so the loss alone is not enough.

The data stream is not rewound: after a rollback, training goes on with the next
batch the loader yields, so the batches seen between the snapshot and the
divergence are skipped for that epoch (the weights, optimizer, scheduler, buffer
and step counter all return to the snapshot). Replaying them would need every
loader to be seekable, and re-feeding the batches that led to a blow-up is not
obviously better than moving on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DivergenceGuard", "DivergenceError", "weights_not_finite"]


class DivergenceError(RuntimeError):
    """Training diverged more often than the guard allows."""


@dataclass
class DivergenceGuard:
    """Settings and device-side state of the divergence check.

    Attributes:
        gap_threshold: a step diverged when ``|mean E(data) - mean E(samples)|`` exceeds this.
        loss_threshold: ... or when ``|loss|`` exceeds this (the JEM reference crashes at 1e8),
            or when the loss is NaN/Inf.
        max_rollbacks: rollbacks allowed in a run; the next divergence raises DivergenceError.
        lr_factor: learning rates are multiplied by this at each rollback (1.0 keeps them).
        val_nll_threshold: an epoch whose validation NLL (nats) is above this, or not finite,
            counts as diverged: no useful classifier averages 1000 nats per example, while a
            blown-up one reads 1e6 and more with finite weights.
        snapshot_every: steps between in-memory snapshots of a state that passed the check.
        enabled: False turns the guard off (a divergence then goes unnoticed).
    """

    gap_threshold: float = 1e8
    loss_threshold: float = 1e8
    max_rollbacks: int = 5
    lr_factor: float = 0.5
    snapshot_every: int = 100
    val_nll_threshold: float = 1e3
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("gap_threshold", "loss_threshold", "val_nll_threshold"):
            value = getattr(self, name)
            if not (value > 0):
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not isinstance(self.max_rollbacks, int) or self.max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be a non-negative int, got {self.max_rollbacks!r}")
        if not (0 < self.lr_factor <= 1) or math.isnan(self.lr_factor):
            raise ValueError(f"lr_factor must be in (0, 1], got {self.lr_factor!r}")
        if not isinstance(self.snapshot_every, int) or self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive int, got {self.snapshot_every!r}")
        self._flag: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor, gap: torch.Tensor | None) -> None:
        """Fold one step's loss (and energy gap) into the device-side divergence flag."""
        if not self.enabled:
            return
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss) | (loss.abs() > self.loss_threshold)
        if gap is not None:
            gap = gap.detach().float()
            bad = bad | ~torch.isfinite(gap) | (gap.abs() > self.gap_threshold)
        self._flag = bad if self._flag is None else (self._flag | bad)

    def pending_flag(self) -> torch.Tensor | None:
        """The accumulated flag (a bool tensor) since the last :meth:`reset`, or None."""
        return self._flag

    def reset(self) -> None:
        self._flag = None


def weights_not_finite(module: nn.Module, device: torch.device) -> torch.Tensor:
    """Device flag (a bool scalar on ``device``): some parameter of ``module`` holds NaN or Inf.

    One reduction per parameter and no host sync; False for a module without parameters.
    """
    params = [p.detach() for p in module.parameters()]
    if not params:
        return torch.zeros((), dtype=torch.bool, device=device)
    return ~torch.stack([torch.isfinite(p).all() for p in params]).all().to(device)
