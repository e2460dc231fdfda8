"""torch.library declarations of jemfast's ops and their fake (meta) implementations.

Registering the kernels as custom ops lets ``torch.compile`` trace through them
(the fake implementations give output shapes without running anything) and lets
autograd and CUDA graph capture treat them as single opaque calls. The
user-facing wrappers, which validate input and choose the backend, live in
:mod:`jemfast.ops`; here every argument is already checked and contiguous, and
``backend`` names a backend that implements the op (``resolve_backend(..., op=...)``).
Each body is one call of ``launcher(op, backend)``: the registry in
:mod:`jemfast.backends` documents the launchers' signature, the op x backend table
and each op's tests, and says why ``backend`` is a schema argument rather than a
per-device registration.

Ops:

* ``jemfast::sgld_update_(x, grad, rng_state, ..., backend)`` mutates ``x`` and ``rng_state``.
* ``jemfast::random_(out, rng_state, normal, backend)`` fills ``out``, mutates ``rng_state``.
* ``jemfast::energy_forward(logits, temperature, backend) -> E`` (float32, differentiable).
* ``jemfast::energy_backward(grad_E, logits, E, temperature, backend) -> grad_logits`` (logits' dtype:
  the fused backends accumulate in float32 registers and round once on the store, so a
  bfloat16 head's (R, C) gradient is never materialised in float32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from jemfast.backends import launcher


def _clamp_pair(lo: float | None, hi: float | None) -> tuple[float, float] | None:
    return None if lo is None else (lo, hi)


@torch.library.custom_op("jemfast::sgld_update_", mutates_args=("x", "rng_state"))
def sgld_update_op(
    x: Tensor,
    grad: Tensor,
    rng_state: Tensor,
    step_size: float,
    noise_std: float,
    grad_clamp: float | None,
    clamp_lo: float | None,
    clamp_hi: float | None,
    backend: str,
) -> None:
    launcher("sgld_update_", backend)(
        x, grad, rng_state, step_size, noise_std, grad_clamp, _clamp_pair(clamp_lo, clamp_hi)
    )


@sgld_update_op.register_fake
def _(x, grad, rng_state, step_size, noise_std, grad_clamp, clamp_lo, clamp_hi, backend) -> None:
    return None


@torch.library.custom_op("jemfast::random_", mutates_args=("out", "rng_state"))
def random_op(out: Tensor, rng_state: Tensor, normal: bool, backend: str) -> None:
    launcher("random_", backend)(out, rng_state, normal)


@random_op.register_fake
def _(out, rng_state, normal, backend) -> None:
    return None


@torch.library.custom_op("jemfast::energy_forward", mutates_args=())
def energy_forward_op(logits: Tensor, temperature: float, backend: str) -> Tensor:
    return launcher("energy_forward", backend)(logits, temperature)


@energy_forward_op.register_fake
def _(logits, temperature, backend):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("jemfast::energy_backward", mutates_args=())
def energy_backward_op(grad_e: Tensor, logits: Tensor, e: Tensor, temperature: float, backend: str) -> Tensor:
    return launcher("energy_backward", backend)(grad_e, logits, e, temperature)


@energy_backward_op.register_fake
def _(grad_e, logits, e, temperature, backend):
    return logits.new_empty(logits.shape)


def _energy_setup_context(ctx, inputs, output) -> None:
    logits, temperature, backend = inputs
    ctx.save_for_backward(logits, output)
    ctx.temperature = temperature
    ctx.backend = backend


def _energy_backward(ctx, grad_e):
    logits, e = ctx.saved_tensors
    return energy_backward_op(grad_e.contiguous(), logits, e, ctx.temperature, ctx.backend), None, None


energy_forward_op.register_autograd(_energy_backward, setup_context=_energy_setup_context)
