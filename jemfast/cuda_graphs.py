"""Capture a function into CUDA graphs and replay it; knows nothing of what the function does.

A :class:`GraphCache` holds one graph per call signature (for the sampler: batch size
and whether labels are given). Each call compares the owner's capture key with the
key the graphs were captured under and re-captures when it changed. The key is the
owner's business (``capture_key()``); :func:`attribute_key` builds one from every
attribute of an object, so a new setting cannot be forgotten and replay a stale graph.

What makes replays correct, whatever the function:

* Inputs are copied into static tensors before each replay; the output is cloned after.
* Warm-up runs the function on a side stream before capture (cuDNN/cuBLAS choose their
  algorithms and allocate workspaces there), inside ``torch.random.fork_rng`` and with
  the tensors the owner names in ``preserve`` restored afterwards, so warm-up leaves
  no trace and captured and eager calls given the same state give the same results.
* Capture and replay run with the owner's device current (CUDA graphs and Triton
  launches follow the current device, not the tensors'), and each capture records on
  a stream of that device: ``torch.cuda.graph``'s default stream is one per process,
  made on whichever device was current at the first capture.
* Capture errors are thread-local: a DataLoader's pin-memory thread calls
  ``cudaHostAlloc`` while the training thread captures, and the default "global" mode
  would turn that unrelated call into a failed capture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import chain
from typing import Any

import torch
from torch import nn

__all__ = ["GraphCache", "attribute_key", "module_key", "tensor_key"]

logger = logging.getLogger(__name__)

WARMUP_RUNS = 2
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)


def tensor_key(t: torch.Tensor) -> tuple:
    """What a graph remembers of a tensor: its storage address, dtype, shape and device."""
    return (t.data_ptr(), t.dtype, tuple(t.shape), t.device)


def module_key(module: nn.Module) -> tuple:
    """Every parameter's and buffer's :func:`tensor_key` and every submodule's mode."""
    tensors = chain(module.parameters(), module.buffers())
    return tuple(tensor_key(t) for t in tensors), tuple(m.training for m in module.modules())


def _value_key(name: str, value: Any) -> Hashable:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, torch.Tensor):
        return tensor_key(value)
    if isinstance(value, nn.Module):
        return module_key(value)
    if callable(getattr(value, "capture_key", None)):
        return value.capture_key()
    if isinstance(value, (tuple, list)):
        return tuple(_value_key(name, v) for v in value)
    raise TypeError(
        f"attribute {name!r} ({type(value).__name__}) has no capture key: give its type a capture_key() "
        "method, or list the attribute in attribute_key(..., skip=...) if captured graphs do not depend on it"
    )


def attribute_key(obj: Any, skip: Iterable[str] = ()) -> tuple:
    """A key over every attribute of ``obj`` except those in ``skip``.

    Plain values stand for themselves, tensors for their :func:`tensor_key`, modules for
    their :func:`module_key` and objects with a ``capture_key()`` method for its result.
    Any other type raises TypeError, so a new attribute is never silently left out.
    """
    skipped = set(skip)
    return tuple((name, _value_key(name, value)) for name, value in sorted(vars(obj).items()) if name not in skipped)


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, static_inputs: Sequence[torch.Tensor | None], out: torch.Tensor):
        self.graph = graph
        self.static_inputs = static_inputs
        self.out = out


class GraphCache:
    """Replays functions from CUDA graphs, one per call signature, capturing on first use.

    Args:
        name: what is captured, for log lines.
        device: the CUDA device the functions run on.
        preserve: returns the tensors a warm-up may change and that must be restored
            before capture (random states, module buffers).
    """

    def __init__(self, name: str, device: torch.device, preserve: Callable[[], Iterable[torch.Tensor]] = tuple):
        self.name = name
        self.device = torch.device(device)
        self.preserve = preserve
        self.pool = None
        self.stream: torch.cuda.Stream | None = None
        self.graphs: dict[Hashable, _Captured] = {}
        self.key: Hashable = None
        self.captures = 0  # how many captures were made (tests and logs read it)

    def run(
        self, key: Hashable, signature: Hashable, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor | None
    ) -> torch.Tensor:
        """Replay the graph for ``signature``, capturing ``fn`` first if needed; return a copy of its output.

        Args:
            key: the owner's capture key. When it differs from the one the graphs were
                captured under, they are all dropped and re-captured.
            signature: what distinguishes one graph from another (shapes, optional inputs).
            fn: ``fn(*inputs, warmup: bool) -> Tensor``, called only to capture: twice
                with ``warmup=True`` (it must not then change state that ``preserve``
                does not restore; the sampler skips its buffer write-back), then once
                under capture.
            inputs: copied into the graph's static inputs before each replay (None
                stays None: it belongs in the signature).
        """
        if key != self.key:
            if self.graphs:
                logger.info("re-capturing %s: what it depends on changed", self.name)
            self.graphs.clear()
            self.key = key
        with torch.cuda.device(self.device):
            captured = self.graphs.get(signature)
            if captured is None:
                captured = self.graphs[signature] = self._capture(fn, inputs)
                logger.debug("captured %s for %s", self.name, signature)
            else:
                for static, new in zip(captured.static_inputs, inputs, strict=True):
                    if static is not None:
                        static.copy_(new)
            captured.graph.replay()
            return captured.out.clone()

    def _capture(self, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor | None]) -> _Captured:
        static_inputs = [None if t is None else t.detach().clone() for t in inputs]
        kept = list(self.preserve())
        saved = [t.detach().clone() for t in kept]
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.random.fork_rng(devices=[self.device]), torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                fn(*static_inputs, warmup=True)
        current.wait_stream(side)
        with torch.no_grad():
            for t, value in zip(kept, saved, strict=True):
                t.copy_(value)

        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            out = fn(*static_inputs, warmup=False)
        self.captures += 1
        return _Captured(graph, static_inputs, out)
