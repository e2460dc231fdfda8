"""The fused SGLD update, jemfast's hottest op.

Validates the arguments and resolves the backend; ``jemfast::sgld_update_``
(:mod:`jemfast._ops`) runs it. Backends and their table: :mod:`jemfast.backends`;
tests: tests/test_ops_sgld.py (and tests/test_csrc.py for the CUDA kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import jemfast._ops  # noqa: F401  (registers torch.ops.jemfast)
from jemfast._checks import check_bounds, check_number
from jemfast.backends import resolve_backend
from jemfast.ops.philox import check_rng_state

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class SGLDSettings:
    """The scalar arguments of :func:`sgld_update_`, checked once.

    The sampler checks its settings when it is built and then calls :meth:`apply_` every
    step: the hot loop repeats no argument checks (``sgld_update_`` itself, a public op,
    checks every call).
    """

    step_size: float
    noise_std: float
    grad_clamp: float | None = None
    clamp_lo: float | None = None
    clamp_hi: float | None = None

    @classmethod
    def checked(cls, step_size, noise_std, grad_clamp=None, clamp=None) -> SGLDSettings:
        """Validate (finite numbers, ``noise_std >= 0``, ``grad_clamp > 0``, ``lo <= hi``) and convert."""
        step_size = check_number("step_size", step_size, type_error=TypeError)
        noise_std = check_number("noise_std", noise_std, minimum=0, type_error=TypeError)
        if grad_clamp is not None:
            grad_clamp = check_number("grad_clamp", grad_clamp, positive=True, type_error=TypeError)
        clamp_lo, clamp_hi = check_bounds("clamp", clamp) or (None, None)
        return cls(step_size, noise_std, grad_clamp, clamp_lo, clamp_hi)

    def apply_(self, x: torch.Tensor, grad: torch.Tensor, rng_state: torch.Tensor, backend: str) -> None:
        """The update on contiguous ``x`` and ``grad`` (same shape, dtype, device) with a resolved backend."""
        torch.ops.jemfast.sgld_update_(
            x, grad, rng_state, self.step_size, self.noise_std, self.grad_clamp, self.clamp_lo, self.clamp_hi, backend
        )


def sgld_update_(
    x: torch.Tensor,
    grad: torch.Tensor,
    *,
    step_size: float,
    noise_std: float,
    rng_state: torch.Tensor,
    grad_clamp: float | None = None,
    clamp: tuple[float, float] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One in-place SGLD step: ``x <- clip(x + step_size * clip(grad) + noise_std * z, clamp)``.

    ``grad`` is the *ascent* direction, ``grad_x log p(x) = -grad_x E(x)``, as in the
    JEM reference. The arithmetic and the noise are float32 whatever ``x.dtype``;
    the result is rounded once to ``x.dtype``.

    Noise: element i of ``x`` in contiguous (row-major) order uses counter
    ``offset + i`` of ``rng_state = [seed, offset]`` (the normal ``tl.randn(seed,
    offset + i)`` gives for counters below 2**32); afterwards ``offset`` is advanced
    by ``x.numel()`` on the device, so consecutive calls and CUDA graph replays draw
    fresh noise without a host sync.

    Args:
        x: samples, any shape, float32 / bfloat16 / float16; updated in place.
            A non-contiguous ``x`` is updated through a contiguous copy.
        grad: same shape, dtype and device as ``x``.
        step_size: multiplies the (clamped) gradient.
        noise_std: standard deviation of the added Gaussian noise, >= 0.
        rng_state: int64 tensor ``[seed, offset]`` on ``x``'s device (see
            :func:`jemfast.ops.make_rng_state`); advanced in place.
        grad_clamp: if given (> 0), the gradient is clipped to [-grad_clamp, grad_clamp].
        clamp: optional ``(lo, hi)`` bounds the result is clipped to.
        backend: "torch", "cpu", "triton" or "cuda"; None picks the fastest available
            (``$JEMFAST_BACKEND`` overrides).

    Returns:
        ``x``.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(grad, torch.Tensor):
        raise TypeError("x and grad must be tensors")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    if grad.dtype != x.dtype:
        raise TypeError(f"grad has dtype {grad.dtype} but x has {x.dtype}; they must match")
    if grad.shape != x.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but x has {tuple(x.shape)}; they must match")
    if grad.device != x.device:
        raise ValueError(f"grad is on {grad.device} but x is on {x.device}")
    check_rng_state(rng_state, x.device)
    settings = SGLDSettings.checked(step_size, noise_std, grad_clamp, clamp)
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("sgld_update_ modifies x in place; x must not require grad (use x.detach())")
    name = resolve_backend(backend, x.device, op="sgld_update_")
    target = x if x.is_contiguous() else x.contiguous()
    settings.apply_(target, grad.contiguous(), rng_state, name)
    if target is not x:
        x.copy_(target)
    return x
