"""The ``"torch"`` backend: pure-PyTorch reference implementations that *define* every op.

Every fast backend (:mod:`~jemfast.backends.cpu_kernels`,
:mod:`~jemfast.backends.triton_kernels`, :mod:`~jemfast.backends.cuda_ext`) is tested
against these functions; the launchers' shared signature is documented once, in
:class:`jemfast.backends.Launchers`, and the op x backend table with each op's tests is
in :mod:`jemfast.backends`. They use only tensor operations on the input's device,
never ``.item()`` or host randomness, so they also run inside CUDA graph capture
(slowly, as many small kernels) and serve every device.

Random numbers
--------------
jemfast's noise is counter-based: a normal is a pure function of a 64-bit key
(the seed) and a 64-bit counter. The generator is Philox4x32-10 (Salmon et al.,
"Parallel random numbers: as easy as 1, 2, 3", SC 2011) exactly as
``triton.language.random.philox`` implements it for 32-bit counter words:

* counter words ``(c0, c1, c2, c3) = (lo32(n), hi32(n), 0, 0)`` for counter ``n``;
* key ``(k0, k1) = (lo32(seed), hi32(seed))``;
* ten rounds of ``(c0, c1, c2, c3) <- (hi(B*c2) ^ c1 ^ k0, lo(B*c2), hi(A*c0) ^ c3 ^ k1, lo(A*c0))``
  with ``A = 0xD2511F53``, ``B = 0xCD9E8D57``, the key bumped by the Weyl
  constants ``(0x9E3779B9, 0xBB67AE85)`` after each round.

Uniforms and normals follow Triton's ``uint_to_uniform_float`` and
``pair_uniform_to_normal`` (Box-Muller, using the first two Philox words). For
``n < 2**32`` the Philox words are bit-for-bit those behind ``tl.randn(seed, n)``
with a 32-bit offset, and the normal agrees with it to a few float32 ulps: the
log, cos and sqrt implementations differ between backends (compiled Triton uses
an approximate sqrt on the GPU), and the tests hold normals to 1e-6. Past ``2**32`` the high counter bits go into ``c1``
(the usual Philox4x32 counter layout). Triton's own *64-bit* offset path is a
different generator (Philox on 64-bit words) and is deliberately not used: it
is not Philox4x32-10 and needs 64x64-bit multiplies, which the GPU does slowly.

The constants below are the one Python definition of the noise spec:
:mod:`~jemfast.backends.cpu_kernels` imports them (as numpy scalars for numba);
the Triton backend uses ``tl.philox``'s built-in copies, which
tests/test_ops_philox.py holds to these functions bit for bit; ``csrc/philox.cuh``
has C++ copies, which tests/test_backends.py parses and compares with these.

All integer arithmetic is done on int64 tensors holding uint32 values; a
32x32-bit product is one wrapping int64 multiply whose bits are the unsigned
64-bit product.
"""

from __future__ import annotations

import torch

PROVIDES = frozenset({"sgld_update_", "random_", "energy_forward", "energy_backward"})

_MASK32 = 0xFFFFFFFF
# Philox4x32-10 round multipliers, Weyl key increments (golden ratio, sqrt(3) - 1) and round count.
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUNDS = 10
# Triton's scale for int31 -> [0, 1): the largest value with MAX_INT * scale < 1 in float32.
UNIFORM_SCALE = 4.6566127342e-10
BOX_MULLER_U_MIN = 1.0e-7
TWO_PI = 6.283185307179586


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi32(a*b), lo32(a*b)) for a constant uint32 ``a`` and uint32 values ``b`` held in int64.

    The 64-bit product may exceed int64's range; the multiply wraps modulo 2**64
    (two's complement), which keeps all 64 bits of the unsigned product, and the
    masks below read them back as unsigned halves. The known-answer tests pin this.
    """
    p = b * a
    return (p >> 32).bitwise_and_(_MASK32), p.bitwise_and_(_MASK32)


def philox4x32_10(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding uint32 words (broadcasting).

    Returns the four output words, each an int64 tensor with values in [0, 2**32).
    """
    for _ in range(PHILOX_ROUNDS):
        hi_a, lo_a = _mulhilo32(PHILOX_ROUND_A, c0)
        hi_b, lo_b = _mulhilo32(PHILOX_ROUND_B, c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & _MASK32
        k1 = (k1 + PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def uint32_to_uniform(r: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for 32-bit words: float32 in [0, 1).

    The word is read as int32 ``v``; negative values are folded with ``~v``;
    the result is ``float32(v) * 4.6566127342e-10`` in float32 arithmetic.
    """
    folded = torch.where(r >= 2**31, _MASK32 - r, r)
    # A device-side fill, not torch.tensor(...): copying a host value would sync the
    # stream and is refused inside CUDA-graph capture.
    return folded.to(torch.float32) * torch.full((), UNIFORM_SCALE, dtype=torch.float32, device=r.device)


def box_muller(u0: torch.Tensor, u1: torch.Tensor) -> torch.Tensor:
    """First output of Triton's ``pair_uniform_to_normal``, in float32."""
    u0 = torch.clamp_min(u0, BOX_MULLER_U_MIN)
    theta = u1 * TWO_PI
    radius = torch.sqrt(torch.log(u0) * -2.0)
    return radius * torch.cos(theta)


def philox_words(rng_state: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox output words for counters ``offset .. offset + n - 1`` of ``rng_state = [seed, offset]``.

    Reads seed and offset as device tensors (no host sync); does not advance the state.
    """
    seed = rng_state[0:1]
    counter = torch.arange(n, dtype=torch.int64, device=rng_state.device).add_(rng_state[1:2])
    c0 = counter & _MASK32
    c1 = (counter >> 32) & _MASK32
    zero = torch.zeros_like(c0)
    k0 = seed & _MASK32
    k1 = (seed >> 32) & _MASK32
    return philox4x32_10(c0, c1, zero, zero, k0, k1)


def random_normal(rng_state: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` standard normals (float32, flat) for the next ``n`` counters; does not advance the state."""
    r0, r1, _, _ = philox_words(rng_state, n)
    return box_muller(uint32_to_uniform(r0), uint32_to_uniform(r1))


def random_uniform(rng_state: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` uniforms on [0, 1) (float32, flat), Triton's ``tl.rand``; does not advance the state."""
    r0, _, _, _ = philox_words(rng_state, n)
    return uint32_to_uniform(r0)


def sgld_update_(
    x: torch.Tensor,
    grad: torch.Tensor,
    rng_state: torch.Tensor,
    step_size: float,
    noise_std: float,
    grad_clamp: float | None,
    clamp: tuple[float, float] | None,
) -> None:
    """The SGLD update (:meth:`jemfast.backends.Launchers.sgld_update_`), as float32 tensor ops."""
    n = x.numel()
    if n == 0:
        return
    g = grad.reshape(-1).to(torch.float32)
    if grad_clamp is not None:
        g = torch.clamp(g, -grad_clamp, grad_clamp)
    y = x.reshape(-1).to(torch.float32) + step_size * g
    if noise_std != 0.0:
        y = y + noise_std * random_normal(rng_state, n)
    if clamp is not None:
        y = torch.clamp(y, clamp[0], clamp[1])
    x.copy_(y.view(x.shape))
    rng_state[1:2].add_(n)


def random_(out: torch.Tensor, rng_state: torch.Tensor, normal: bool) -> None:
    """Fill ``out`` (:meth:`jemfast.backends.Launchers.random_`) from :func:`random_normal` / :func:`random_uniform`."""
    n = out.numel()
    if n == 0:
        return
    values = random_normal(rng_state, n) if normal else random_uniform(rng_state, n)
    out.copy_(values.view(out.shape))
    rng_state[1:2].add_(n)


def energy_forward(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """E = -T * logsumexp(logits / T) over the last dim, in float32. ``logits`` (R, C) -> (R,)."""
    return torch.logsumexp(logits.to(torch.float32) / temperature, dim=-1).mul_(-temperature)


def energy_backward(grad_e: torch.Tensor, logits: torch.Tensor, e: torch.Tensor, temperature: float) -> torch.Tensor:
    """dE/dlogits = -softmax(logits / T), times the incoming gradient; ``e`` is the float32 forward output.

    Computed in float32 and rounded once to the logits' dtype, (R, C). Rows whose
    log-sum-exp is infinite follow torch.logsumexp's backward (the difference
    ``logits/T - lse`` is NaN there).
    """
    lse = (e.to(torch.float32) / -temperature).unsqueeze(-1)
    soft = torch.exp(logits.to(torch.float32) / temperature - lse)
    return soft.mul_(grad_e.to(torch.float32).unsqueeze(-1)).neg_().to(logits.dtype)
