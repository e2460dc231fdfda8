"""Loader for the compiled CUDA kernels (``jemfast._C``, built from ``csrc/``).

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
    """In-place SGLD step ``x <- clip(x + step_size * clip(grad) + noise_std * z, clamp)``.

    Args:
        x: contiguous CUDA tensor (any shape, float32/bfloat16/float16), updated in place.
        grad: gradient of log p(x) w.r.t. ``x``, same dtype and number of elements.
        rng_state: int64 CUDA tensor ``[seed, offset]`` of shape (2,) on x's device.
            Element ``i`` (flat order) uses Philox counter ``offset + i``; the
            offset is advanced by ``x.numel()`` on the device, with no host sync.
        step_size: multiplier of the gradient (the SGLD step, in x's units per gradient unit).
        noise_std: standard deviation of the Gaussian noise (x's units).
        grad_clamp: if given, ``grad`` is clipped to ``[-grad_clamp, grad_clamp]`` first.
        clamp: if given, ``(lo, hi)`` bounds applied to the result.

    Runs on the current CUDA stream, so it can be captured in a CUDA graph.
    """
    clamp_pair = None if clamp is None else (float(clamp[0]), float(clamp[1]))
    grad_clip = None if grad_clamp is None else float(grad_clamp)
    _extension().sgld_update_(x, grad, rng_state, float(step_size), float(noise_std), grad_clip, clamp_pair)


def energy_forward(logits2d: torch.Tensor, temperature: float) -> torch.Tensor:
    """Energy ``E[r] = -T * logsumexp(logits2d[r, :] / T)``.

    Args:
        logits2d: contiguous CUDA tensor (R, C), float32/bfloat16/float16.
        temperature: T > 0.

    Returns:
        E, float32, shape (R,): kept in float32 whatever the logits' dtype, because
        the backward recomputes the softmax from it (a bfloat16 E would shift
        every probability by up to |E| / T * 2**-8).
    """
    return _extension().energy_forward(logits2d, float(temperature))


def energy_backward(
    grad_energy: torch.Tensor, logits2d: torch.Tensor, energy: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Gradient of the energy: ``grad_logits[r, c] = -grad_energy[r] * softmax(logits2d[r] / T)[c]``.

    Args:
        grad_energy: incoming gradient, shape (R,) (read as float32; may be expanded).
        logits2d: the forward input, contiguous CUDA tensor (R, C).
        energy: the float32 forward output E, shape (R,); the softmax is recomputed from it.
        temperature: T > 0, as in the forward.

    Returns:
        grad_logits, shape (R, C), in logits2d's dtype.
    """
    return _extension().energy_backward(grad_energy, logits2d, energy, float(temperature))
