"""Training precision: autocast, the float16 gradient scaler, and the optimizer update through them.

A trainer runs in float32 (``amp_dtype=None``) or autocasts its forwards to bfloat16 or
float16 (:func:`autocast`). float16 on CUDA needs a gradient scaler (:func:`grad_scaler`);
its inf check is read on the host, one sync per step, which bfloat16 avoids.
:func:`optimizer_update` is one update from a loss: zeroed gradients, backward, optional
clipping of the global gradient norm, optimizer step, each through the scaler when there is one.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["AMP_DTYPES", "autocast", "grad_scaler", "optimizer_update"]

# fp32 (None) or autocast to one of the two half types.
AMP_DTYPES = (None, torch.float16, torch.bfloat16)


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``amp_dtype`` on ``device``'s type, or a no-op context for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def grad_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A CUDA gradient scaler for float16 training on a GPU; None otherwise (none is needed)."""
    if amp_dtype == torch.float16 and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def optimizer_update(
    loss: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> None:
    """One optimizer update from the scalar ``loss``.

    Zeroes the gradients (set to None), backpropagates, clips the global norm of the
    gradients of ``model``'s parameters to ``grad_clip`` (None: no clipping) and steps
    ``optimizer``. With a ``scaler`` the loss is scaled, the gradients are unscaled before
    clipping, and the scaler steps the optimizer (skipping a step with inf/NaN gradients)
    and updates its scale.
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
