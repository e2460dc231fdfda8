"""Counter-based random numbers held in a device tensor.

A generator state is an int64 tensor ``[seed, offset]`` on the device where
numbers are drawn. Each draw of ``n`` numbers uses counters ``offset .. offset+n-1``
(see :mod:`jemfast.backends.torch_ref` for the exact Philox4x32-10 definition, and
:mod:`jemfast.backends` for the backends of ``jemfast::random_``; tests/test_ops_philox.py)
and then advances ``offset`` by ``n`` *on the device*. So draws never sync with
the host, and a captured CUDA graph that draws numbers draws fresh ones on every
replay (a seed passed as a Python int would be frozen into the graph).
"""

from __future__ import annotations

import torch

import jemfast._ops  # noqa: F401  (registers torch.ops.jemfast)
from jemfast._checks import check_int
from jemfast.backends import resolve_backend

_SEED_BITS = 63


def make_rng_state(seed: int | torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """A new generator state ``tensor([seed, 0], dtype=int64)`` on ``device``.

    Args:
        seed: an int (any value in the int64 range), a ``torch.Generator`` (a seed is
            drawn from it, advancing it), or None for a seed from torch's default generator.
        device: where the state lives; it must be the device of the tensors it will fill.
    """
    if isinstance(seed, torch.Generator):
        value = int(torch.randint(0, 2**_SEED_BITS - 1, (1,), generator=seed, device=seed.device).item())
    elif seed is None:
        value = int(torch.randint(0, 2**_SEED_BITS - 1, (1,)).item())
    else:  # an int64; a non-int raises TypeError
        value = check_int("seed", seed, minimum=-(2**63), maximum=2**63 - 1, type_error=TypeError)
    return torch.tensor([value, 0], dtype=torch.int64, device=device)


def derive_seed(*words: int) -> int:
    """A seed in [0, 2**63) derived from ``words`` (e.g. ``(seed, rank, stream)``) by numpy's SeedSequence.

    Different word tuples give statistically independent, far-apart keys, unlike
    ``seed + rank + k``, where rank r's stream k+1 meets rank r+1's stream k.
    """
    from numpy.random import SeedSequence

    words = [check_int(f"derive_seed's words[{i}]", w, type_error=TypeError) for i, w in enumerate(words)]
    high, low = SeedSequence([w % 2**64 for w in words]).generate_state(2, dtype="uint32")
    return (int(high) & 0x7FFFFFFF) << 32 | int(low)


def check_rng_state(rng_state: torch.Tensor, device: torch.device, name: str = "rng_state") -> None:
    """Raise a clear error unless ``rng_state`` is an int64 tensor of shape (2,) on ``device``."""
    if not isinstance(rng_state, torch.Tensor):
        raise TypeError(f"{name} must be an int64 tensor [seed, offset], got {type(rng_state).__name__}")
    if rng_state.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype torch.int64, got {rng_state.dtype}")
    if tuple(rng_state.shape) != (2,):
        raise ValueError(f"{name} must have shape (2,) = [seed, offset], got {tuple(rng_state.shape)}")
    if rng_state.device != device:
        raise ValueError(f"{name} is on {rng_state.device} but the tensors it draws for are on {device}")
    if not rng_state.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _draw(rng_state: torch.Tensor, shape, normal: bool, backend: str | None) -> torch.Tensor:
    check_rng_state(rng_state, rng_state.device)
    shape = torch.Size(shape if not isinstance(shape, int) else (shape,))
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must be non-negative, got {tuple(shape)}")
    out = torch.empty(shape, dtype=torch.float32, device=rng_state.device)
    # "cuda" has no fill kernel: the registry runs Triton's (or the reference) for it.
    name = resolve_backend(backend, rng_state.device, op="random_")
    torch.ops.jemfast.random_(out, rng_state, normal, name)
    return out


def random_normal(rng_state: torch.Tensor, shape, *, backend: str | None = None) -> torch.Tensor:
    """Standard normals (float32, ``shape``) from ``rng_state``; advances it by their count.

    Element i (flat order) is the normal ``tl.randn(seed, offset + i)`` gives (for
    counters below 2**32), the same stream :func:`jemfast.ops.sgld_update_` uses.
    """
    return _draw(rng_state, shape, True, backend)


def random_uniform(rng_state: torch.Tensor, shape, *, backend: str | None = None) -> torch.Tensor:
    """Uniforms on [0, 1) (float32, ``shape``) from ``rng_state``, as ``tl.rand``; advances it by their count."""
    return _draw(rng_state, shape, False, backend)
