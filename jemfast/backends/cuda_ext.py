"""The ``"cuda"`` backend: loader for the compiled CUDA kernels (``jemfast._C``, built from ``csrc/``).

It provides ``sgld_update_``, ``energy_forward`` and ``energy_backward`` under the
launcher names and signatures of :class:`jemfast.backends.Launchers` (the registry, with
the op x backend table and each op's tests). It has no random fill kernel: the registry
runs ``random_`` for it on Triton, or on the reference when Triton is unavailable.
The kernels' own Philox copy lives in ``csrc/philox.cuh`` (tests/test_backends.py holds
its constants to :mod:`jemfast.backends.torch_ref`'s; tests/test_csrc.py its numbers).

The extension is imported lazily, on the first call that needs it, so that
importing jemfast never requires a CUDA build, never initialises CUDA and
never logs anything. Input validation is the job of :mod:`jemfast.ops`; the
functions here expect contiguous CUDA tensors of float32, bfloat16 or float16
(the binding still checks devices and dtypes before touching pointers).

Build the extension with::

    JEMFAST_BUILD_CUDA=1 pip install --no-build-isolation -e .
"""

from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType

import torch

PROVIDES = frozenset({"sgld_update_", "energy_forward", "energy_backward"})

logger = logging.getLogger(__name__)

_BUILD_HINT = "install with JEMFAST_BUILD_CUDA=1 pip install --no-build-isolation -e ."

_lock = threading.Lock()
_loaded = False
_module: ModuleType | None = None
_reason = ""
_warned = False


def _load() -> ModuleType | None:
    """Import ``jemfast._C`` once; remember why it failed if it did."""
    global _loaded, _module, _reason
    if _loaded:
        return _module
    with _lock:
        if not _loaded:
            try:
                _module = importlib.import_module("jemfast._C")
                _reason = ""
            except ImportError as exc:
                _module = None
                if isinstance(exc, ModuleNotFoundError) and exc.name == "jemfast._C":
                    _reason = f"jemfast._C is not built: {_BUILD_HINT}"
                else:
                    _reason = f"jemfast._C failed to import ({exc}); rebuild it: {_BUILD_HINT}"
            _loaded = True
    return _module


def is_available() -> bool:
    """True when the compiled extension imports (it still needs CUDA tensors to run)."""
    return _load() is not None


def unavailable_reason() -> str:
    """Why :func:`is_available` is False (empty string when it is True)."""
    _load()
    return _reason


def _extension() -> ModuleType:
    """The extension module; logs once and raises RuntimeError when it is missing."""
    global _warned
    module = _load()
    if module is None:
        if not _warned:
            _warned = True
            logger.warning("CUDA backend unavailable: %s", _reason)
        raise RuntimeError(f"the CUDA backend is unavailable: {_reason}")
    return module


def sgld_update_(
    x: torch.Tensor,
    grad: torch.Tensor,
    rng_state: torch.Tensor,
    step_size: float,
    noise_std: float,
    grad_clamp: float | None,
    clamp: tuple[float, float] | None,
) -> None:
    """The SGLD update (:meth:`jemfast.backends.Launchers.sgld_update_`) on contiguous CUDA tensors.

    The counter offset is advanced on the device, with no host sync; the kernel runs on
    the current CUDA stream, so it can be captured in a CUDA graph.
    """
    clamp_pair = None if clamp is None else (float(clamp[0]), float(clamp[1]))
    grad_clip = None if grad_clamp is None else float(grad_clamp)
    _extension().sgld_update_(x, grad, rng_state, float(step_size), float(noise_std), grad_clip, clamp_pair)


def energy_forward(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The energy (:meth:`jemfast.backends.Launchers.energy_forward`) of contiguous CUDA (R, C) logits.

    E is kept in float32 whatever the logits' dtype, because the backward recomputes the
    softmax from it (a bfloat16 E would shift every probability by up to |E| / T * 2**-8).
    """
    return _extension().energy_forward(logits, float(temperature))


def energy_backward(grad_e: torch.Tensor, logits: torch.Tensor, e: torch.Tensor, temperature: float) -> torch.Tensor:
    """The energy's gradient (:meth:`jemfast.backends.Launchers.energy_backward`), in the logits' dtype.

    ``grad_e`` is read as float32 and may be expanded; the softmax is recomputed from ``e``.
    """
    return _extension().energy_backward(grad_e, logits, e, float(temperature))
