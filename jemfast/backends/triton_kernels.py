"""The ``"triton"`` backend: the fused SGLD update, counter-based random fills and the energy.

It provides every op, under the launcher names and signatures of
:class:`jemfast.backends.Launchers` (the registry, with the op x backend table and
each op's tests); each computes exactly the function its namesake in
:mod:`jemfast.backends.torch_ref` defines. The random numbers come from Triton's own
``tl.philox`` / ``tl.uint_to_uniform_float`` / ``tl.pair_uniform_to_normal``, whose
built-in constants are the Philox4x32-10 ones torch_ref defines (tests/test_ops_philox.py
checks the words bit for bit against ``tl.randint4x``), with 32-bit counter words
``(lo32(n), hi32(n), 0, 0)``, so for counters below 2**32 they are exactly ``tl.randn(seed, n)``.

Seeds and offsets are *loaded from the device* (``rng_ptr``), never passed as
Python ints: a graph-captured launch would otherwise freeze them. The launcher
advances the offset with a tiny in-stream add after the kernel.

Block sizes are not yet tuned on a GPU: 1024 elements and 4 warps (8 elements
per thread, two 16-byte fp32 vectors) is the usual starting point for a
memory-bound elementwise kernel on Hopper; re-measure with
benchmarks/bench_sgld_update.py before changing it.

Compiled for sm_90 (tests/test_triton_compile.py does it without a GPU), the SGLD
update has 16-byte loads and stores and no register spills (56 registers with
Triton 3.9, 47 with 3.6); its SASS holds
about 130 instructions per element on the path taken (Philox ~60, accurate
logf/cosf ~50; cosf's large-argument reduction is never entered, 2*pi*u < 7).
At an H100's issue rate that is roughly as many elements per second as HBM3 can
feed at 12 bytes each, so the kernel may be issue-bound rather than memory-bound:
the noise spec (one Philox call per element, libm-accurate log and cos) sets that
floor, not the launch shape.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

PROVIDES = frozenset({"sgld_update_", "random_", "energy_forward", "energy_backward"})

SGLD_BLOCK = 1024
SGLD_NUM_WARPS = 4
RANDOM_BLOCK = 1024
# Rows per program and the column tile of the energy kernels: logits rows are
# short (the paper's tasks have 4-10 classes), so several rows share a program.
ENERGY_MAX_BLOCK_C = 1024
ENERGY_ROW_ELEMENTS = 4096
# Fewer rows per program when the grid would otherwise leave SMs idle (2 programs
# per SM of an H100, 132 SMs): a (256, 32000) batch would get only 64 programs.
# Each row's reduction is the same whatever the split. Not yet measured on a GPU.
ENERGY_MIN_PROGRAMS = 264


@triton.jit
def _counter_normal(seed, counter):
    """Normal for int64 counters: Philox4x32-10 on (lo32, hi32, 0, 0), Box-Muller on words 0 and 1."""
    c0 = (counter & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((counter >> 32) & 0xFFFFFFFF).to(tl.uint32)
    zero = tl.zeros_like(c0)
    r0, r1, _, _ = tl.philox(seed, c0, c1, zero, zero)
    z, _ = tl.pair_uniform_to_normal(tl.uint_to_uniform_float(r0), tl.uint_to_uniform_float(r1))
    return z


@triton.jit
def _sgld_update_kernel(
    x_ptr,
    grad_ptr,
    rng_ptr,
    n_elements,
    step_size,
    noise_std,
    grad_clamp,
    clamp_lo,
    clamp_hi,
    HAS_NOISE: tl.constexpr,
    HAS_GRAD_CLAMP: tl.constexpr,
    HAS_CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """x <- clip(x + step_size * clip(grad) + noise_std * z, clamp), in place.

    Bytes moved per element: read x, read grad, write x (12 in fp32, 6 in bf16/fp16);
    the noise is made in registers, so it costs no memory traffic.
    """
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    g = tl.load(grad_ptr + offs, mask=mask).to(tl.float32)
    if HAS_GRAD_CLAMP:
        g = tl.minimum(tl.maximum(g, -grad_clamp), grad_clamp)
    y = x + step_size * g
    if HAS_NOISE:
        seed = tl.load(rng_ptr)
        base = tl.load(rng_ptr + 1)
        y = y + noise_std * _counter_normal(seed, base + offs)
    if HAS_CLAMP:
        y = tl.minimum(tl.maximum(y, clamp_lo), clamp_hi)
    tl.store(x_ptr + offs, y.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _random_kernel(out_ptr, rng_ptr, n_elements, NORMAL: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = normal or uniform for counter offset + i (float32)."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    seed = tl.load(rng_ptr)
    counter = tl.load(rng_ptr + 1) + offs
    if NORMAL:
        value = _counter_normal(seed, counter)
    else:
        c0 = (counter & 0xFFFFFFFF).to(tl.uint32)
        c1 = ((counter >> 32) & 0xFFFFFFFF).to(tl.uint32)
        zero = tl.zeros_like(c0)
        r0, _, _, _ = tl.philox(seed, c0, c1, zero, zero)
        value = tl.uint_to_uniform_float(r0)
    tl.store(out_ptr + offs, value, mask=mask)


@triton.jit
def _energy_forward_kernel(
    logits_ptr,
    energy_ptr,
    n_rows,
    n_cols,
    inv_temperature,
    temperature,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """E[r] = -T * logsumexp(logits[r] / T) with an online (running-max) log-sum-exp.

    Reads the logits once (R*C elements) and writes R float32 energies.
    +inf anywhere in a row gives lse = +inf, an all -inf row gives -inf, NaN propagates,
    as torch.logsumexp does.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    running_max = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_R,), tl.float32)
    has_pos_inf = tl.zeros((BLOCK_R,), tl.int32)
    has_nan = tl.zeros((BLOCK_R,), tl.int32)
    for start in range(0, n_cols, BLOCK_C):
        cols = start + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < n_cols)[None, :]
        v = tl.load(logits_ptr + rows[:, None] * n_cols + cols[None, :], mask=mask, other=float("-inf"))
        v = v.to(tl.float32) * inv_temperature
        has_pos_inf = tl.maximum(has_pos_inf, tl.max((v == float("inf")).to(tl.int32), axis=1))
        has_nan = tl.maximum(has_nan, tl.max((v != v).to(tl.int32), axis=1))
        finite_v = tl.where((v == float("inf")) | (v != v), float("-inf"), v)
        new_max = tl.maximum(running_max, tl.max(finite_v, axis=1))
        # Rows still all -inf keep a zero sum instead of exp(-inf - -inf) = NaN.
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp(running_max - safe_max) + tl.sum(
            tl.exp(finite_v - safe_max[:, None]), axis=1
        )
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    lse = tl.where(running_max == float("-inf"), float("-inf"), lse)
    lse = tl.where(has_pos_inf > 0, float("inf"), lse)
    lse = tl.where(has_nan > 0, float("nan"), lse)
    tl.store(energy_ptr + rows, -temperature * lse, mask=row_mask)


@triton.jit
def _energy_backward_kernel(
    grad_energy_ptr,
    logits_ptr,
    energy_ptr,
    grad_logits_ptr,
    n_rows,
    n_cols,
    inv_temperature,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """grad_logits[r, c] = -grad_E[r] * exp(logits[r, c] / T - lse[r]), lse = -E / T.

    One pass: reads the logits once, writes the gradient once in grad_logits_ptr's
    dtype (the logits' dtype; float32 arithmetic, one rounding), plus 2R floats.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    lse = -tl.load(energy_ptr + rows, mask=row_mask, other=0.0) * inv_temperature
    g = tl.load(grad_energy_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    for start in range(0, n_cols, BLOCK_C):
        cols = start + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < n_cols)[None, :]
        idx = rows[:, None] * n_cols + cols[None, :]
        v = tl.load(logits_ptr + idx, mask=mask, other=0.0).to(tl.float32) * inv_temperature
        grad = -g[:, None] * tl.exp(v - lse[:, None])
        tl.store(grad_logits_ptr + idx, grad.to(grad_logits_ptr.dtype.element_ty), mask=mask)


def _on_device_of(t: torch.Tensor):
    """Make ``t``'s CUDA device current: Triton launches on the current device, not
    on the tensors' (a cuda:1 tensor would otherwise be handed to a cuda:0 kernel)."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def sgld_update_(
    x: torch.Tensor,
    grad: torch.Tensor,
    rng_state: torch.Tensor,
    step_size: float,
    noise_std: float,
    grad_clamp: float | None,
    clamp: tuple[float, float] | None,
) -> None:
    """Launch the fused SGLD update (:meth:`jemfast.backends.Launchers.sgld_update_`)."""
    n = x.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, SGLD_BLOCK),)
    with _on_device_of(x):
        _sgld_update_kernel[grid](
            x,
            grad,
            rng_state,
            n,
            float(step_size),
            float(noise_std),
            float(grad_clamp) if grad_clamp is not None else 0.0,
            float(clamp[0]) if clamp is not None else 0.0,
            float(clamp[1]) if clamp is not None else 0.0,
            HAS_NOISE=noise_std != 0.0,
            HAS_GRAD_CLAMP=grad_clamp is not None,
            HAS_CLAMP=clamp is not None,
            BLOCK=SGLD_BLOCK,
            num_warps=SGLD_NUM_WARPS,
        )
    rng_state[1:2].add_(n)


def random_(out: torch.Tensor, rng_state: torch.Tensor, normal: bool) -> None:
    """Launch the random fill (:meth:`jemfast.backends.Launchers.random_`)."""
    n = out.numel()
    if n == 0:
        return
    with _on_device_of(out):
        _random_kernel[(triton.cdiv(n, RANDOM_BLOCK),)](out, rng_state, n, NORMAL=normal, BLOCK=RANDOM_BLOCK)
    rng_state[1:2].add_(n)


def _energy_blocks(n_rows: int, n_cols: int) -> tuple[int, int]:
    """(rows per program, column tile), both powers of two."""
    block_c = min(triton.next_power_of_2(max(n_cols, 1)), ENERGY_MAX_BLOCK_C)
    block_r = max(1, min(64, ENERGY_ROW_ELEMENTS // block_c))
    while block_r > 1 and triton.cdiv(n_rows, block_r) < ENERGY_MIN_PROGRAMS:
        block_r //= 2
    return block_r, block_c


def energy_forward(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Launch the energy (:meth:`jemfast.backends.Launchers.energy_forward`): (R, C) logits -> (R,) float32."""
    n_rows, n_cols = logits.shape
    out = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return out
    block_r, block_c = _energy_blocks(n_rows, n_cols)
    with _on_device_of(logits):
        _energy_forward_kernel[(triton.cdiv(n_rows, block_r),)](
            logits, out, n_rows, n_cols, 1.0 / temperature, float(temperature), BLOCK_R=block_r, BLOCK_C=block_c
        )
    return out


def energy_backward(grad_e: torch.Tensor, logits: torch.Tensor, e: torch.Tensor, temperature: float) -> torch.Tensor:
    """Launch the energy's gradient (:meth:`jemfast.backends.Launchers.energy_backward`), in logits' dtype.

    The kernel computes in float32 and rounds once on the store, so a bfloat16 head's
    gradient is written once at 2 bytes per element (no float32 (R, C) intermediate).
    """
    n_rows, n_cols = logits.shape
    out = torch.empty(n_rows, n_cols, dtype=logits.dtype, device=logits.device)
    if out.numel() == 0:
        return out
    block_r, block_c = _energy_blocks(n_rows, n_cols)
    with _on_device_of(logits):
        _energy_backward_kernel[(triton.cdiv(n_rows, block_r),)](
            grad_e.contiguous(), logits, e, out, n_rows, n_cols, 1.0 / temperature, BLOCK_R=block_r, BLOCK_C=block_c
        )
    return out
