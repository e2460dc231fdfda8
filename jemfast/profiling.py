"""NVTX ranges for profiling with Nsight Systems, free when switched off.

Ranges are emitted only when profiling is on: ``JEMFAST_NVTX=1`` in the
environment, :func:`set_nvtx_enabled(True)`, or ``nvtx=True`` on the object
that owns the range (e.g. :class:`jemfast.SGLDSampler`). When off,
:func:`nvtx_range` returns one shared no-op context manager, so a disabled
range costs a function call and an ``if``.

Profile a training run::

    JEMFAST_NVTX=1 nsys profile -t cuda,nvtx -o jem_run jemfast train ...

Ranges: ``sgld/chain``, ``sgld/step``, ``sgld/buffer_draw``, ``sgld/write_back``,
``sgld/graph_replay``, ``train/step``.
"""

from __future__ import annotations

import contextlib
import os

_NULL = contextlib.nullcontext()
_enabled: bool | None = None


def nvtx_enabled() -> bool:
    """Whether ranges are emitted process-wide (``JEMFAST_NVTX`` unless set explicitly)."""
    global _enabled
    if _enabled is None:
        _enabled = os.environ.get("JEMFAST_NVTX", "0") not in ("", "0")
    return _enabled


def set_nvtx_enabled(enabled: bool) -> None:
    """Switch NVTX ranges on or off for the whole process."""
    global _enabled
    _enabled = bool(enabled)


def _nvtx_push_pop():
    """(push, pop) of the ``nvtx`` package (domain "jemfast"), else torch's own NVTX
    bindings (no domain), so profiling still works where the package is missing."""
    try:
        import nvtx
    except ImportError:
        import torch.cuda.nvtx as torch_nvtx

        return torch_nvtx.range_push, torch_nvtx.range_pop
    return (lambda name: nvtx.push_range(name, domain="jemfast")), (lambda: nvtx.pop_range(domain="jemfast"))


class _Range:
    __slots__ = ("name",)
    _push_pop = None

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        if _Range._push_pop is None:
            _Range._push_pop = _nvtx_push_pop()
        _Range._push_pop[0](self.name)
        return self

    def __exit__(self, *exc):
        _Range._push_pop[1]()
        return False


def nvtx_range(name: str, enabled: bool | None = None):
    """A context manager marking ``name`` on the NVTX timeline, or a no-op when disabled.

    Args:
        name: range label shown by Nsight.
        enabled: force on/off for this range; None follows :func:`nvtx_enabled`.
    """
    if enabled is None:
        enabled = nvtx_enabled()
    return _Range(name) if enabled else _NULL
