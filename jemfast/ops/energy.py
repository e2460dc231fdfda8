"""The log-sum-exp energy of a classifier's logits.

Validates the arguments and resolves the backend; ``jemfast::energy_forward`` and its
autograd, ``jemfast::energy_backward`` (:mod:`jemfast._ops`), run it. Backends and their
table: :mod:`jemfast.backends`; tests: tests/test_ops_energy.py (and tests/test_csrc.py).
"""

from __future__ import annotations

import torch

import jemfast._ops  # noqa: F401  (registers torch.ops.jemfast)
from jemfast._checks import check_number
from jemfast.backends import resolve_backend

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def energy(logits: torch.Tensor, temperature: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
    """Energy ``E(x) = -T * logsumexp(logits / T, dim=-1)``, differentiable.

    Low energy means high unnormalised density ``p(x) ~ exp(-E(x) / T)``. The
    reduction is done in float32 with a running maximum, so large-magnitude
    logits are safe; +-inf and NaN behave as in ``torch.logsumexp``.

    Args:
        logits: (..., C) float tensor, C >= 1.
        temperature: T > 0.
        backend: "torch", "cpu" (runs the reference), "triton" or "cuda"; None picks the
            fastest available (``$JEMFAST_BACKEND`` overrides).
            float64 logits always use the torch reference (in float64).

    Returns:
        (...) tensor of energies in ``logits.dtype``.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a tensor, got {type(logits).__name__}")
    if logits.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"logits must be a floating tensor (float32/bfloat16/float16/float64), got {logits.dtype}")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., C) with C >= 1, got {tuple(logits.shape)}")
    temperature = check_number("temperature", temperature, positive=True, type_error=TypeError)
    if logits.dtype == torch.float64:
        return torch.logsumexp(logits / temperature, dim=-1) * -temperature
    # "cpu" has no energy kernels (torch's logsumexp is fused already): the registry runs the reference.
    name = resolve_backend(backend, logits.device, op="energy_forward")
    rows = logits.reshape(-1, logits.shape[-1]).contiguous()
    e = torch.ops.jemfast.energy_forward(rows, temperature, name)
    return e.to(logits.dtype).reshape(logits.shape[:-1])
