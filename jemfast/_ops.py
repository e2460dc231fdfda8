"""torch.library declarations of jemfast's ops and their fake (meta) implementations.

Registering the kernels as custom ops lets ``torch.compile`` trace through them
(the fake implementations give output shapes without running anything) and lets
autograd and CUDA graph capture treat them as single opaque calls. The
user-facing wrappers, which validate input and choose the backend, live in
:mod:`jemfast.ops`; here every argument is already checked and contiguous.

Ops:

* ``jemfast::sgld_update_(x, grad, rng_state, ...)`` mutates ``x`` and ``rng_state``.
* ``jemfast::random_(out, rng_state, normal)`` fills ``out``, mutates ``rng_state``.
* ``jemfast::energy_forward(logits, temperature, backend) -> E`` (float32, differentiable).
* ``jemfast::energy_backward(grad_E, logits, E, temperature, backend) -> grad_logits`` (logits' dtype:
  the fused backends accumulate in float32 registers and round once on the store, so a
  bfloat16 head's (R, C) gradient is never materialised in float32).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _backend_module(backend: str):
    if backend == "torch":
        from jemfast.backends import torch_ref

        return torch_ref
    if backend == "cpu":
        from jemfast.backends import cpu_kernels

        return cpu_kernels
    if backend == "triton":
        from jemfast.backends import triton_kernels

        return triton_kernels
    if backend == "cuda":
        from jemfast.backends import cuda_ext

        return cuda_ext
    raise ValueError(f"unknown backend {backend!r}")


def _clamp_pair(lo: Optional[float], hi: Optional[float]) -> Optional[tuple[float, float]]:
    return None if lo is None else (lo, hi)


@torch.library.custom_op("jemfast::sgld_update_", mutates_args=("x", "rng_state"))
def sgld_update_op(
    x: Tensor,
    grad: Tensor,
    rng_state: Tensor,
    step_size: float,
    noise_std: float,
    grad_clamp: Optional[float],
    clamp_lo: Optional[float],
    clamp_hi: Optional[float],
    backend: str,
) -> None:
    clamp = _clamp_pair(clamp_lo, clamp_hi)
    if backend in ("torch", "cpu"):
        _backend_module(backend).sgld_update_(x, grad, rng_state, step_size, noise_std, grad_clamp, clamp)
    elif backend == "triton":
        _backend_module("triton").sgld_update_forward(x, grad, rng_state, step_size, noise_std, grad_clamp, clamp)
    else:
        _backend_module("cuda").sgld_update_(x, grad, rng_state, step_size, noise_std, grad_clamp, clamp)


@sgld_update_op.register_fake
def _(x, grad, rng_state, step_size, noise_std, grad_clamp, clamp_lo, clamp_hi, backend) -> None:
    return None


@torch.library.custom_op("jemfast::random_", mutates_args=("out", "rng_state"))
def random_op(out: Tensor, rng_state: Tensor, normal: bool, backend: str) -> None:
    if backend in ("triton", "cpu"):
        _backend_module(backend).random_forward(out, rng_state, normal)
        return
    # "torch": the reference (jemfast.ops.philox routes "cuda" to Triton or here,
    # since the extension has no fill kernel).
    from jemfast.backends import torch_ref

    n = out.numel()
    if n:
        values = torch_ref.random_normal(rng_state, n) if normal else torch_ref.random_uniform(rng_state, n)
        out.copy_(values.view(out.shape))
        rng_state[1:2].add_(n)


@random_op.register_fake
def _(out, rng_state, normal, backend) -> None:
    return None


@torch.library.custom_op("jemfast::energy_forward", mutates_args=())
def energy_forward_op(logits: Tensor, temperature: float, backend: str) -> Tensor:
    # torch's logsumexp is already one fused reduction on CPU: "cpu" uses the reference.
    module = _backend_module("torch" if backend == "cpu" else backend)
    return module.energy_forward(logits, temperature).to(torch.float32)


@energy_forward_op.register_fake
def _(logits, temperature, backend):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("jemfast::energy_backward", mutates_args=())
def energy_backward_op(grad_e: Tensor, logits: Tensor, e: Tensor, temperature: float, backend: str) -> Tensor:
    module = _backend_module("torch" if backend == "cpu" else backend)
    # A no-op for "cuda" and "triton", which already write logits' dtype; the float32
    # torch reference is rounded here, once.
    return module.energy_backward(grad_e, logits, e, temperature).to(logits.dtype)


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
