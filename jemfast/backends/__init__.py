"""The backend registry: which implementation of an op runs for a given device.

jemfast has four ops (``torch.ops.jemfast.*``, declared in :mod:`jemfast._ops`) and four
backends, one module each. Every backend module exports the launchers of the ops it
implements under the *same names and signatures* (:class:`Launchers`) and lists them in
a module-level ``PROVIDES``; :data:`REGISTRY` repeats those sets here, so that choosing a
backend never imports a heavy module (tests/test_backends.py checks the two agree).

Where to find an op
-------------------
::

    op               torch  cpu       triton  cuda              wrapper                 tests
    sgld_update_     yes    yes       yes     yes               jemfast/ops/sgld.py     tests/test_ops_sgld.py
    random_          yes    yes       yes     -> triton, torch  jemfast/ops/philox.py   tests/test_ops_philox.py
    energy_forward   yes    -> torch  yes     yes               jemfast/ops/energy.py   tests/test_ops_energy.py
    energy_backward  yes    -> torch  yes     yes               (energy's autograd)     tests/test_ops_energy.py

``-> x, y``: the backend lacks the op and :func:`resolve_backend` falls back to the first
of its :attr:`BackendInfo.fallback` that provides it and can run on the device (the CUDA
extension has no fill kernel: Triton's is one launch, the reference ~150; on CPU,
torch's logsumexp is already one fused reduction, so numba adds nothing).

Backends:

* ``"torch"``  - :mod:`jemfast.backends.torch_ref`, the pure-PyTorch reference that
  *defines* every op (and the Philox constants); runs anywhere, also under CUDA graph capture.
* ``"cpu"``    - :mod:`jemfast.backends.cpu_kernels`, fused numba loops for CPU tensors.
* ``"triton"`` - :mod:`jemfast.backends.triton_kernels`; CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1`` (Triton's interpreter, for tests).
* ``"cuda"``   - :mod:`jemfast.backends.cuda_ext`, the compiled ``csrc/`` extension; CUDA tensors.

Other tests: tests/test_backends.py (this registry, the shared interface, the Philox
constants of csrc/philox.cuh), tests/test_csrc.py (the CUDA sources and loader),
tests/test_triton_compile.py (the Triton kernels compiled for sm_90 without a GPU).

Choosing
--------
:func:`resolve_backend` is the one place that decides: the name asked for (or else
``$JEMFAST_BACKEND``; ``None`` picks the first available entry of :data:`AUTO_ORDER`
on CUDA or :data:`AUTO_ORDER_CPU` on CPU), checked with :func:`unavailable_reason`, then,
given ``op=``, the fallback above. An unknown name raises ValueError; a named backend
that cannot serve the device raises :class:`BackendUnavailableError` saying why. The
wrappers in :mod:`jemfast.ops` pass the result to the custom op, whose body is
``launcher(op, backend)(...)``. Nothing here touches ``torch.cuda`` or imports triton,
numba or the extension at import time.

Why a ``backend: str`` argument rather than per-device registration
--------------------------------------------------------------------
torchao and flash-attention register one kernel per dispatch key
(``@torch.library.register_kernel(op, "cuda")``) and let the dispatcher choose. That fits
one implementation per device; jemfast has two per device (the extension and Triton on
CUDA, numba and the reference on CPU) plus the reference on every device, and callers
choose among them by name: tests and benchmarks run all of them on the same CUDA tensors,
and a user pins one with ``backend=`` or ``JEMFAST_BACKEND``. The dispatcher keys on the
device, not on "which of two CUDA implementations", so with per-device registration the
choice would have to be read from global state inside the kernel: invisible in the op's
schema, in a ``torch.compile`` graph and in a profiler trace, and free to differ from
what a compiled or captured graph was built with. As a string argument the explicit
choice is part of the call: ``torch.compile`` records it in the graph and a CUDA graph
captures the launch it selected, the reference stays callable on CUDA tensors, and one
fake and one autograd registration serve every backend. The string passed is the
backend that runs the op (after the fallback), so a trace shows what ran. The cost is
one dictionary lookup per call in Python, next to the wrapper's argument checks.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

OPS = ("sgld_update_", "random_", "energy_forward", "energy_backward")


class Launchers(Protocol):
    """The launchers a backend module exports: the one place their signature is documented.

    A module implements the subset named in its ``PROVIDES``. Every launcher gets tensors
    the wrappers in :mod:`jemfast.ops` have already validated: contiguous, on one device,
    of a dtype the backend supports; it launches on the current stream and never syncs
    with the host (``cpu`` reads the CPU state tensor directly), so ``torch_ref``,
    ``triton`` and ``cuda`` launches can be captured in a CUDA graph. Each computes
    exactly the function :mod:`jemfast.backends.torch_ref` defines.
    """

    def sgld_update_(
        self,
        x: torch.Tensor,
        grad: torch.Tensor,
        rng_state: torch.Tensor,
        step_size: float,
        noise_std: float,
        grad_clamp: float | None,
        clamp: tuple[float, float] | None,
    ) -> None:
        """In place: ``x <- clip(x + step_size * clip(grad, +-grad_clamp) + noise_std * z, clamp)``.

        Args:
            x: float32/bfloat16/float16, any shape; arithmetic in float32, rounded once to x's dtype.
            grad: same shape and dtype as ``x`` (the ascent direction, grad log p).
            rng_state: int64 ``[seed, offset]`` of shape (2,) on x's device; element i (flat
                order) uses the normal of Philox counter ``offset + i``, and ``offset`` is
                advanced by ``x.numel()`` on the device (also when ``noise_std == 0``).
            step_size: multiplies the (clamped) gradient.
            noise_std: standard deviation of the Gaussian noise, >= 0 (0: no noise drawn).
            grad_clamp: if not None (> 0), ``grad`` is clipped to [-grad_clamp, grad_clamp] first.
            clamp: if not None, ``(lo, hi)`` bounds the result is clipped to.
        """

    def random_(self, out: torch.Tensor, rng_state: torch.Tensor, normal: bool) -> None:
        """Fill float32 ``out`` with standard normals (``normal``) or uniforms on [0, 1).

        Element i uses Philox counter ``offset + i`` of ``rng_state = [seed, offset]``,
        which is then advanced by ``out.numel()`` on the device.
        """

    def energy_forward(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Energies ``E[r] = -T * logsumexp(logits[r] / T)`` of (R, C) logits: float32, shape (R,).

        Kept in float32 whatever the logits' dtype: the backward recomputes the softmax
        from E. +-inf and NaN behave as in ``torch.logsumexp``.
        """

    def energy_backward(
        self, grad_e: torch.Tensor, logits: torch.Tensor, e: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """``grad_logits[r, c] = -grad_e[r] * exp(logits[r, c] / T + e[r] / T)``, shape (R, C).

        ``e`` is the float32 forward output. Returned in the *logits' dtype*: computed in
        float32 and rounded once, so a bfloat16 head's (R, C) gradient is never
        materialised in float32 by the fused backends.
        """


@dataclass(frozen=True)
class BackendInfo:
    """One row of the registry."""

    name: str
    module: str  # imported only when one of its launchers is first needed
    provides: frozenset[str]  # equal to the module's PROVIDES (tests/test_backends.py)
    fallback: tuple[str, ...]  # tried in order for an op this backend lacks
    unavailable: Callable[[torch.device], str | None]  # why it cannot run on a device, or None


class BackendUnavailableError(RuntimeError):
    """A backend was requested by name but cannot run on the given tensors."""


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _torch_reason(device: torch.device) -> str | None:
    return None


def _cpu_reason(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the numba CPU kernels need CPU tensors (got a {device.type} tensor)"
    if importlib.util.find_spec("numba") is None:
        return 'numba is not installed: pip install "jemfast[cpu]"'
    return None


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton backend cannot run on ``device``, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install 'jemfast[triton]')"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and _triton_interpret():
        return None
    return (
        f"Triton kernels need CUDA tensors (got a {device.type} tensor); on CPU they run only "
        "in Triton's interpreter with TRITON_INTERPRET=1"
    )


def _cuda_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the CUDA extension needs CUDA tensors (got a {device.type} tensor)"
    from jemfast.backends import cuda_ext

    return None if cuda_ext.is_available() else cuda_ext.unavailable_reason()


_ALL = frozenset(OPS)
_ENERGY = frozenset({"energy_forward", "energy_backward"})

# One row per backend: name, module, the ops it provides (its module's PROVIDES), the
# fallback for the ops it lacks, and why it cannot run on a device.
REGISTRY: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo("torch", "jemfast.backends.torch_ref", _ALL, (), _torch_reason),
        BackendInfo("cpu", "jemfast.backends.cpu_kernels", _ALL - _ENERGY, ("torch",), _cpu_reason),
        BackendInfo("triton", "jemfast.backends.triton_kernels", _ALL, ("torch",), triton_unavailable_reason),
        BackendInfo("cuda", "jemfast.backends.cuda_ext", _ALL - {"random_"}, ("triton", "torch"), _cuda_reason),
    )
}
BACKENDS = tuple(REGISTRY)

# Order tried for backend=None on a CUDA device. Both fused backends move the
# same bytes (12 per fp32 element for SGLD); the compiled extension goes first
# because it has no JIT/launch overhead in eager mode. Neither order has been
# measured on a GPU yet: benchmarks/bench_sgld_update.py decides it.
AUTO_ORDER = ("cuda", "triton", "torch")
# On CPU the numba kernels beat the reference's ~150 tensor passes for the noise
# about 6x (393k elements: 7 ms against 44 ms, side by side on an idle 2-core
# x86 machine); the Triton interpreter is never chosen automatically.
AUTO_ORDER_CPU = ("cpu", "torch")


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device``, or None when it can."""
    info = REGISTRY.get(backend)
    if info is None:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return info.unavailable(device)


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")


def _provider(op: str, name: str, device: torch.device) -> str:
    """``name`` if it implements ``op``, else its first fallback that does and can run on ``device``."""
    _check_op(op)
    info = REGISTRY[name]
    if op in info.provides:
        return name
    for candidate in info.fallback:
        if op in REGISTRY[candidate].provides and unavailable_reason(candidate, device) is None:
            return candidate
    return "torch"  # the reference implements every op and runs anywhere


def resolve_backend(requested: str | None, device: torch.device, op: str | None = None) -> str:
    """The backend to run for tensors on ``device`` (and, given ``op``, the one that runs it).

    ``requested`` (or else ``$JEMFAST_BACKEND``) names one explicitly; None picks the
    first available one of :data:`AUTO_ORDER` / :data:`AUTO_ORDER_CPU`. With ``op``, a
    backend that lacks the op is replaced by its documented fallback (the table in this
    module's docstring). Raises ValueError for an unknown name and
    BackendUnavailableError when the named backend cannot serve ``device``.
    """
    name = requested if requested is not None else (os.environ.get("JEMFAST_BACKEND") or None)
    if name is not None:
        if name not in REGISTRY:
            source = "backend" if requested is not None else "JEMFAST_BACKEND"
            raise ValueError(f"{source}={name!r} is not a backend; expected one of {BACKENDS}")
        reason = unavailable_reason(name, device)
        if reason is not None:
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    else:
        auto = AUTO_ORDER if device.type == "cuda" else AUTO_ORDER_CPU
        name = next((c for c in auto if unavailable_reason(c, device) is None), "torch")
    return name if op is None else _provider(op, name, device)


def launcher(op: str, backend: str) -> Callable[..., object]:
    """``backend``'s launcher for ``op`` (a :class:`Launchers` method), importing its module on first use.

    ``backend`` must implement ``op``: pass the name :func:`resolve_backend` returned for it.
    """
    _check_op(op)
    info = REGISTRY.get(backend)
    if info is None:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if op not in info.provides:
        raise ValueError(
            f"backend {backend!r} does not implement {op}; resolve_backend(..., op={op!r}) "
            f"picks its fallback (first available of {info.fallback})"
        )
    return getattr(importlib.import_module(info.module), op)
