"""Backend selection: which implementation of an op runs for a given device.

Backends, one module each:

* ``"torch"``  - :mod:`jemfast.backends.torch_ref`, the pure-PyTorch reference; runs anywhere.
* ``"cpu"``    - :mod:`jemfast.backends.cpu_kernels`, fused numba loops for CPU tensors
  (the SGLD update and random fills; the energy uses torch's own fused logsumexp).
* ``"triton"`` - :mod:`jemfast.backends.triton_kernels`; CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1`` (Triton's interpreter, for tests).
* ``"cuda"``   - :mod:`jemfast.backends.cuda_ext`, the compiled ``csrc/`` extension; CUDA tensors.

``backend=None`` picks the first available entry of :data:`AUTO_ORDER` (CUDA) or
:data:`AUTO_ORDER_CPU` for the device; the ``JEMFAST_BACKEND`` environment variable overrides that choice.
Asking by name for a backend that cannot serve the tensor raises
:class:`BackendUnavailableError` saying why. Nothing here touches
``torch.cuda`` or imports triton at import time.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("torch", "cpu", "triton", "cuda")

# Order tried for backend=None on a CUDA device. Both fused backends move the
# same bytes (12 per fp32 element for SGLD); the compiled extension goes first
# because it has no JIT/launch overhead in eager mode. Neither order has been
# measured on a GPU yet: benchmarks/bench_sgld_update.py decides it.
AUTO_ORDER = ("cuda", "triton", "torch")
# On CPU the numba kernels beat the reference's ~150 tensor passes for the noise
# about 6x (393k elements: 7 ms against 44 ms, side by side on an idle 2-core
# x86 machine); the Triton interpreter is never chosen automatically.
AUTO_ORDER_CPU = ("cpu", "torch")


class BackendUnavailableError(RuntimeError):
    """A backend was requested by name but cannot run on the given tensors."""


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device``, or None when it can."""
    if backend == "torch":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the numba CPU kernels need CPU tensors (got a {device.type} tensor)"
        if importlib.util.find_spec("numba") is None:
            return 'numba is not installed: pip install "jemfast[cpu]"'
        return None
    if backend == "triton":
        return triton_unavailable_reason(device)
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA extension needs CUDA tensors (got a {device.type} tensor)"
        from jemfast.backends import cuda_ext

        return None if cuda_ext.is_available() else cuda_ext.unavailable_reason()
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def resolve_backend(requested: str | None, device: torch.device) -> str:
    """The backend to run for tensors on ``device``.

    ``requested`` (or else ``$JEMFAST_BACKEND``) names one explicitly; None picks
    the fastest available one. Raises ValueError for an unknown name and
    BackendUnavailableError when the named backend cannot serve ``device``.
    """
    name = requested if requested is not None else (os.environ.get("JEMFAST_BACKEND") or None)
    if name is not None:
        if name not in BACKENDS:
            source = "backend" if requested is not None else "JEMFAST_BACKEND"
            raise ValueError(f"{source}={name!r} is not a backend; expected one of {BACKENDS}")
        reason = unavailable_reason(name, device)
        if reason is not None:
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
        return name
    for candidate in AUTO_ORDER if device.type == "cuda" else AUTO_ORDER_CPU:
        if unavailable_reason(candidate, device) is None:
            return candidate
    return "torch"
