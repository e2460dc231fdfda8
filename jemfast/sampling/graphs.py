"""CUDA-graph capture of the whole SGLD chain.

One call of :meth:`SGLDSampler.sample` launches, per step, a forward pass, a
backward pass to the input and the update: hundreds of small kernels whose
launch overhead dominates for the small batches JEM uses. Capturing the whole
chain (buffer draw, re-init, n_steps of forward + input gradient + update,
write-back) into one graph turns it into a single replay.

What makes replays correct:

* Randomness comes from device tensors (the sampler's and the buffer's
  ``rng_state``) advanced *by kernels*, so each replay draws fresh numbers.
* The graph reads the model's parameters through their storage, so in-place
  optimizer updates are seen; a capture remembers the parameters' and buffers'
  data pointers, dtypes and the model's mode, and is re-captured when any of
  them changes (e.g. ``model.to(...)``, a new buffer storage, ``model.half()``).
* Labels for conditional sampling are copied into a static input before replay.
* Warm-up runs the chain on a side stream before capture (cuDNN/cuBLAS pick
  their algorithms and allocate workspaces there) without writing to the
  buffer; the sampler's and buffer's random states, torch's CUDA generator
  (dropout) and the model's buffers (the chain itself never writes batch-norm
  running statistics, but a user's module may keep other buffers) are
  restored afterwards, so warm-up leaves no trace:
  graph and eager modes given the same states produce the same samples.
* Capture and replay happen with the buffer's device current: CUDA graphs and
  Triton launches follow the current device, not the tensors'. Each capture uses
  its own stream on that device (``torch.cuda.graph``'s default stream is one per
  process, made on whichever device was current at the first capture).
* Capture errors are thread-local: a DataLoader's pin-memory thread calls
  ``cudaHostAlloc`` while the training thread captures, and the default "global"
  mode would turn that unrelated call into a failed capture.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from jemfast.sampling.sampler import SGLDSampler

logger = logging.getLogger(__name__)

WARMUP_RUNS = 2


def _fingerprint(sampler: "SGLDSampler") -> tuple:
    """What a captured graph depends on besides tensor contents."""
    model = sampler.model
    tensors = list(model.parameters()) + list(model.buffers())
    buf = sampler.buffer
    return (
        tuple((t.data_ptr(), t.dtype, tuple(t.shape)) for t in tensors),
        tuple(m.training for m in model.modules()),
        torch.is_grad_enabled(),
        buf.storage.data_ptr(),
        buf.rng_state.data_ptr(),
        sampler.rng_state.data_ptr(),
        getattr(buf, "init_mean", None) is not None and buf.init_mean.data_ptr(),
        buf.reinit_freq,
        (
            sampler.n_steps, sampler.step_size, sampler.noise_std, sampler.grad_clamp, sampler.clamp,
            sampler.temperature, sampler.model_mode, sampler.amp_dtype, sampler.method, sampler.pyld_inner_steps,
            sampler.pyld_lr, sampler.pyld_grad_clamp, sampler.pyld_clamp, sampler.backend,
        ),
    )  # fmt: skip


class _CapturedChain:
    def __init__(self, graph: torch.cuda.CUDAGraph, static_y: torch.Tensor | None, static_out: torch.Tensor):
        self.graph = graph
        self.static_y = static_y
        self.static_out = static_out


class ChainGraphs:
    """One captured chain per (batch size, conditional), re-captured when stale."""

    def __init__(self, sampler: "SGLDSampler"):
        self.sampler = sampler
        self.pool = None
        self.streams: dict[torch.device, torch.cuda.Stream] = {}
        self.graphs: dict[tuple[int, bool], _CapturedChain] = {}
        self.fingerprint = None
        self.captures = 0  # how many captures were made (tests and logs read it)

    def run(self, batch_size: int, y: torch.Tensor | None) -> torch.Tensor:
        """Replay (capturing first if needed) and return a fresh copy of the samples."""
        fingerprint = _fingerprint(self.sampler)
        if fingerprint != self.fingerprint:
            if self.graphs:
                logger.info("re-capturing the SGLD chain: the model, buffer or sampler settings changed")
            self.graphs.clear()
            self.fingerprint = fingerprint
        key = (batch_size, y is not None)
        with torch.cuda.device(self.sampler.buffer.device):
            chain = self.graphs.get(key)
            if chain is None:
                chain = self._capture(batch_size, y)
                self.graphs[key] = chain
            if y is not None:
                chain.static_y.copy_(y)
            chain.graph.replay()
            return chain.static_out.clone()

    def _capture(self, batch_size: int, y: torch.Tensor | None) -> _CapturedChain:
        sampler = self.sampler
        buf = sampler.buffer
        device = buf.device
        static_y = None if y is None else y.detach().clone()
        if buf.init != "class_gaussian" and not buf.filled:
            buf.reset()  # host-side first fill must not be recorded into the graph
        saved_rng = (sampler.rng_state.clone(), buf.rng_state.clone())
        model_buffers = list(sampler.model.buffers())
        saved_buffers = [b.detach().clone() for b in model_buffers]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.random.fork_rng(devices=[device]), torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                sampler.sample_eager(batch_size, static_y, write_back=False)
        torch.cuda.current_stream(device).wait_stream(side)
        sampler.rng_state.copy_(saved_rng[0])
        buf.rng_state.copy_(saved_rng[1])
        with torch.no_grad():
            for b, saved in zip(model_buffers, saved_buffers):
                b.copy_(saved)

        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        stream = self.streams.get(device)
        if stream is None:
            stream = self.streams[device] = torch.cuda.Stream(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=stream, capture_error_mode="thread_local"):
            static_out = sampler.sample_eager(batch_size, static_y, write_back=True)
        self.captures += 1
        logger.debug("captured the SGLD chain for batch size %d (conditional=%s)", batch_size, y is not None)
        return _CapturedChain(graph, static_y, static_out)
