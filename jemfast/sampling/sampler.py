"""SGLD sampling from a classifier's energy, the hot loop of JEM training.

A JEM classifier f defines ``log p(x) = logsumexp(f(x) / T) + const`` (and
``log p(x, y) = f(x)[y] / T + const``). :class:`SGLDSampler` draws approximate
samples by Stochastic Gradient Langevin Dynamics started from a
:class:`~jemfast.sampling.buffer.ReplayBuffer` (persistent chains):

    x <- clip(x + step_size * clip(grad_x log p(x)) + noise_std * z, clamp)

n_steps times, with the fused :func:`jemfast.ops.sgld_update_`. Only the input
gradient is computed: the parameters' ``requires_grad`` is switched off for the
chain and restored afterwards. On a CUDA device the whole chain (buffer draw,
re-init, n_steps of forward + input gradient + update, write-back) is captured
once into a CUDA graph and replayed (:mod:`jemfast.cuda_graphs`), re-captured whenever
:meth:`SGLDSampler.capture_key` changes.

``method="pyld"`` is JEM++'s sampler (Yang & Ji 2021): each outer step takes one
full forward/backward to get the input gradient and the *costate* p (the
gradient of log p(x) with respect to the first layer's output), then
``pyld_inner_steps`` cheap steps that back-propagate ``sum(first_layer(x) * p)``
through the first layer only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jemfast.backends import resolve_backend
from jemfast.cuda_graphs import GraphCache, attribute_key
from jemfast.ops import check_rng_state, derive_seed, energy, make_rng_state
from jemfast.ops.sgld import SUPPORTED_DTYPES, SGLDSettings
from jemfast.profiling import nvtx_range
from jemfast.sampling.buffer import ReplayBuffer
from jemfast.sampling.norm_stats import frozen_norm_statistics

logger = logging.getLogger(__name__)

MODEL_MODES = ("eval", "train", "keep")
CHAIN_METHODS = ("sgld", "pyld")

# Input gradients of log p(x) are tiny: on WRN-10-1 and WRN-28-5 (no norm, 32 x 192
# inputs in [-1, 1]) their median magnitude is 6e-6 and 99.9% of them lie below
# float16's smallest normal (6.1e-5), so a float16 backward flushes 0.26-0.32% of them
# to zero. Scaling log p by 2**12 before the backward removes every flush (relative
# error to float32: 2.6% -> 2.3% on WRN-28-5; what remains is the float16 forward) and
# stays finite up to 2**16. A constant, unlike a dynamic loss scale, needs no host sync
# and keeps the chain capturable as one CUDA graph.
FP16_GRAD_SCALE = 2.0**12


@dataclass(frozen=True)
class PresetSource:
    """Where a preset's defaults come from."""

    reference: str
    note: str


# Defaults of the public reference implementations, as their training scripts run them.
PRESETS: dict[str, tuple[dict[str, Any], PresetSource]] = {
    "jem": (
        dict(n_steps=20, step_size=1.0, noise_std=0.01, model_mode="eval", method="sgld"),
        PresetSource(
            "wgrathwohl/JEM, train_wrn_ebm.py (Grathwohl et al. 2019)",
            "--n_steps 20 --sgld_lr 1.0 --sgld_std 0.01, uniform [-1, 1] buffer init, "
            "reinit_freq 0.05, f.eval() during sampling",
        ),
    ),
    "jempp": (
        dict(
            n_steps=5,
            step_size=1.0,
            noise_std=0.0,
            model_mode="train",
            method="pyld",
            pyld_inner_steps=5,
            pyld_lr=0.2,
            pyld_grad_clamp=1.0,
            pyld_clamp=(-1.0, 1.0),
        ),
        PresetSource(
            "sndnyang/JEMPP, train_jempp.py and scripts/jempp_cifar10.sh (Yang & Ji 2021)",
            "--n_steps 5 --in_steps 5 --pyld_lr 0.2 --sgld_lr 1.0 --eps 1 --sgld_std 0, "
            "inner steps clamp x to [-1, 1], class-conditional Gaussian buffer init, "
            "batch norm in train mode during sampling",
        ),
    ),
    "sadajem": (
        dict(n_steps=5, step_size=1.0, noise_std=0.0, grad_clamp=1.0, clamp=(-1.0, 1.0), model_mode="train"),
        PresetSource(
            "sndnyang/SADAJEM (Yang, Su & Ji 2023)",
            "5 SGLD steps, gradient clamped to [-1, 1], x clamped to [-1, 1], no noise",
        ),
    ),
}


@contextlib.contextmanager
def input_gradient_only(model: nn.Module) -> Iterator[None]:
    """Switch off ``requires_grad`` on every parameter that has it; restore on exit.

    Parameters' ``.grad`` are never touched. Restores exactly the flags that were on.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


@contextlib.contextmanager
def model_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Put ``model`` in eval or train mode (or leave it, "keep"); restore every submodule's flag on exit."""
    if mode == "keep":
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class SGLDSampler:
    """Draws negative samples for JEM training by SGLD from a replay buffer.

    Args:
        model: classifier mapping (B, *sample_shape) inputs to (B, C) logits.
        buffer: the :class:`ReplayBuffer` holding the persistent chains.
        n_steps: SGLD steps per call (outer steps for "pyld").
        step_size: multiplies grad_x log p(x) (the JEM reference's ``sgld_lr``).
        noise_std: standard deviation of the Gaussian noise added each step.
        grad_clamp: clip the input gradient to [-grad_clamp, grad_clamp] (None: no clip).
        clamp: clip samples to (lo, hi) after each step (None: no clip).
        temperature: T in log p(x) = logsumexp(f(x) / T).
        model_mode: "eval" (JEM), "train" (JEM++ / SADA-JEM: batch norm uses batch
            statistics) or "keep"; the model's mode is restored after each call. In
            every mode the chain leaves batch-norm running statistics untouched
            (:mod:`jemfast.sampling.norm_stats`).
        amp_dtype: run the model under ``torch.autocast`` with this dtype (e.g.
            torch.bfloat16); the update itself is always float32 arithmetic. Under
            float16 the input gradient is taken of ``FP16_GRAD_SCALE * log p`` and divided
            back, so it does not underflow (see that constant).
        cuda_graph: True, False or "auto" (on for CUDA buffers).
        method: "sgld" or "pyld".
        pyld_layer: the module whose output is the PYLD costate (default
            ``model.first_layer``).
        pyld_inner_steps, pyld_lr, pyld_grad_clamp, pyld_clamp: PYLD's inner steps,
            their step size, gradient clip and sample clip.
        seed: seed of the sampler's noise stream (None: drawn from torch's generator).
        backend: kernel backend for the update (None: fastest available).
        nvtx: emit NVTX ranges (None: follow ``JEMFAST_NVTX``).
    """

    def __init__(
        self,
        model: nn.Module,
        buffer: ReplayBuffer,
        n_steps: int = 50,
        step_size: float = 1.0,
        noise_std: float = 0.01,
        grad_clamp: float | None = None,
        clamp: tuple[float, float] | None = None,
        temperature: float = 1.0,
        model_mode: str = "eval",
        amp_dtype: torch.dtype | None = None,
        cuda_graph: bool | str = "auto",
        method: str = "sgld",
        *,
        pyld_layer: nn.Module | None = None,
        pyld_inner_steps: int = 5,
        pyld_lr: float = 0.2,
        pyld_grad_clamp: float | None = 1.0,
        pyld_clamp: tuple[float, float] | None = (-1.0, 1.0),
        seed: int | None = None,
        backend: str | None = None,
        nvtx: bool | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"buffer must be a jemfast ReplayBuffer, got {type(buffer).__name__}")
        _check_positive_int("n_steps", n_steps, 0)
        _check_choice("model_mode", model_mode, MODEL_MODES)
        _check_choice("method", method, CHAIN_METHODS)
        _check_choice("cuda_graph", cuda_graph, (True, False, "auto"))
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if amp_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"amp_dtype must be None, torch.bfloat16 or torch.float16, got {amp_dtype!r}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if method == "pyld":
            _check_positive_int("pyld_inner_steps", pyld_inner_steps, 0)
            layer = pyld_layer if pyld_layer is not None else getattr(model, "first_layer", None)
            if not isinstance(layer, nn.Module):
                raise ValueError(
                    "method='pyld' needs the first layer: pass pyld_layer=<module> or give the model "
                    "a .first_layer attribute (jemfast's WideResNet has one)"
                )
            pyld_layer = layer
        if cuda_graph is True and buffer.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA buffer; this buffer is on {buffer.device}")

        self.model = model
        self.buffer = buffer
        self.n_steps = n_steps
        self.step_size = float(step_size)
        self.noise_std = float(noise_std)
        self.grad_clamp = grad_clamp
        self.clamp = tuple(clamp) if clamp is not None else None
        self.temperature = float(temperature)
        self.model_mode = model_mode
        self.amp_dtype = amp_dtype
        self.method = method
        self.pyld_layer = pyld_layer
        self.pyld_inner_steps = pyld_inner_steps
        self.pyld_lr = float(pyld_lr)
        self.pyld_grad_clamp = pyld_grad_clamp
        self.pyld_clamp = tuple(pyld_clamp) if pyld_clamp is not None else None
        self.backend = backend
        self.nvtx = nvtx
        self.rng_state = make_rng_state(seed, buffer.device)
        self.use_cuda_graph = cuda_graph is True or (cuda_graph == "auto" and buffer.device.type == "cuda")
        self._graphs: GraphCache | None = None  # built on the first captured call

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, model: nn.Module, buffer: ReplayBuffer, **overrides: Any) -> SGLDSampler:
        """A sampler with a reference implementation's defaults ("jem", "jempp", "sadajem").

        See :data:`PRESETS` for each preset's values and source; ``overrides`` replace any of them.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {tuple(PRESETS)}")
        kwargs = dict(PRESETS[name][0])
        kwargs.update(overrides)
        return cls(model, buffer, **kwargs)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Run the chains for ``batch_size`` buffer rows and return the samples.

        Args:
            batch_size: B.
            y: optional (B,) int64 labels on the buffer's device: sample from
                p(x | y) using the y-th logit and y's buffer partition.

        Returns:
            (B, *sample_shape) detached samples in the buffer's dtype; they are also
            written back into the buffer.
        """
        _check_positive_int("batch_size", batch_size)
        if y is not None:
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (batch_size,):
                raise ValueError(f"y must be an int64 tensor of shape ({batch_size},), got {y!r:.80}")
            if y.device != self.buffer.device:
                raise ValueError(f"y is on {y.device}, expected the buffer's device {self.buffer.device}")
        if self.use_cuda_graph:
            if self._graphs is None:
                self._graphs = GraphCache("the SGLD chain", self.buffer.device, preserve=self._capture_preserved)
            with nvtx_range("sgld/graph_replay", self.nvtx):
                return self._graphs.run(
                    self.capture_key(),
                    (batch_size, y is not None),
                    lambda y, warmup: self.sample_eager(batch_size, y, write_back=not warmup),
                    y,
                )
        return self.sample_eager(batch_size, y)

    def capture_key(self) -> tuple:
        """What a captured chain depends on besides tensor contents.

        Every attribute of the sampler (settings, the model's parameters, buffers and
        modes, the replay buffer's :meth:`~ReplayBuffer.capture_key`, the noise state's
        storage) and whether grad mode is on; a new attribute is included by itself.
        """
        return attribute_key(self, skip=("_graphs",)), torch.is_grad_enabled()

    def _capture_preserved(self) -> list[torch.Tensor]:
        # A capture's warm-up runs draw random numbers; a user's module may update other
        # buffers (the chain itself never writes batch-norm running statistics).
        return [self.rng_state, self.buffer.rng_state, *self.model.buffers()]

    def sample_eager(self, batch_size: int, y: torch.Tensor | None = None, write_back: bool = True) -> torch.Tensor:
        """The chain without CUDA graphs (what a graph captures): draw, run, write back."""
        with nvtx_range("sgld/chain", self.nvtx):
            with nvtx_range("sgld/buffer_draw", self.nvtx):
                x, idx = self.buffer.sample(batch_size, y)
            x = self.run_chain(x, y)
            if write_back:
                with nvtx_range("sgld/write_back", self.nvtx):
                    self.buffer.write(idx, x)
        return x

    def log_p(self, logits: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Unnormalised log density per sample, (B,): logsumexp(logits / T), or logits[y] / T."""
        if y is None:
            return energy(logits, self.temperature) * (-1.0 / self.temperature)
        return logits.gather(1, y.view(-1, 1)).squeeze(1) / self.temperature

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # The autocast weight-cast cache must be off: a CUDA graph would replay
        # casts of stale weights otherwise.
        return torch.autocast(self.buffer.device.type, dtype=self.amp_dtype, cache_enabled=False)

    def run_chain(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Run the chain on starting points ``x`` (updated in place) and return them.

        x: (B, *sample_shape) tensor not requiring grad; y: optional (B,) labels.
        """
        with (
            input_gradient_only(self.model),
            model_mode(self.model, self.model_mode),
            frozen_norm_statistics(self.model),
            torch.enable_grad(),
        ):
            # The per-call checks of sgld_update_, made once for the whole chain.
            if not x.is_contiguous() or x.requires_grad:
                raise ValueError("run_chain updates x in place: pass a contiguous tensor that does not require grad")
            if x.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
            check_rng_state(self.rng_state, x.device)
            # Settings are checked and the backend chosen once per chain, not at every step.
            updates = self._updates()
            backend = resolve_backend(self.backend, x.device, op="sgld_update_")
            if self.method == "sgld":
                for _ in range(self.n_steps):
                    with nvtx_range("sgld/step", self.nvtx):
                        grad = self._input_gradient(x, y)
                        updates["langevin"].apply_(x, grad.contiguous(), self.rng_state, backend)
            else:
                for _ in range(self.n_steps):
                    with nvtx_range("sgld/step", self.nvtx):
                        self._pyld_step(x, y, updates, backend)
        return x.detach()

    def _updates(self) -> dict[str, SGLDSettings]:
        """The chain's update settings, checked: the SGLD step, and PYLD's full, inner and last steps."""
        updates = {"langevin": SGLDSettings.checked(self.step_size, self.noise_std, self.grad_clamp, self.clamp)}
        if self.method == "pyld":
            updates["full"] = SGLDSettings.checked(self.step_size, 0.0, self.grad_clamp, self.clamp)
            inner = (self.pyld_grad_clamp, self.pyld_clamp)
            updates["inner"] = SGLDSettings.checked(self.pyld_lr, 0.0, *inner)
            updates["inner_last"] = SGLDSettings.checked(self.pyld_lr, self.noise_std, *inner)
            updates["noise"] = SGLDSettings.checked(0.0, self.noise_std)
        return updates

    @property
    def _grad_scale(self) -> float:
        return FP16_GRAD_SCALE if self.amp_dtype == torch.float16 else 1.0

    def _input_gradient(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x_in = x.detach().requires_grad_(True)
        with self._autocast():
            logits = self.model(x_in)
        scale = self._grad_scale
        log_p = self.log_p(logits.float(), y)
        (grad,) = torch.autograd.grad(log_p.sum() * scale, x_in)
        return (grad / scale if scale != 1.0 else grad).to(x.dtype)

    def _pyld_step(self, x: torch.Tensor, y: torch.Tensor | None, updates: dict, backend: str) -> None:
        """One PYLD outer step (JEM++): full gradient and costate, then cheap first-layer steps."""
        captured: list[torch.Tensor] = []
        hook = self.pyld_layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            x_in = x.detach().requires_grad_(True)
            with self._autocast():
                logits = self.model(x_in)
        finally:
            hook.remove()
        if len(captured) != 1:
            raise RuntimeError(f"the PYLD layer ran {len(captured)} times in one forward pass; expected exactly once")
        # Under float16 both gradients carry FP16_GRAD_SCALE: the costate keeps it (so the
        # inner steps' backward through the first layer stays in range too) and each
        # input gradient is divided back before its update.
        scale = self._grad_scale
        grad_x, costate = torch.autograd.grad(self.log_p(logits.float(), y).sum() * scale, (x_in, captured[0]))
        costate = costate.detach()
        if scale != 1.0:
            grad_x = grad_x / scale
        if self.step_size != 0.0:
            updates["full"].apply_(x, grad_x.to(x.dtype).contiguous(), self.rng_state, backend)
        for k in range(self.pyld_inner_steps):
            x_in = x.detach().requires_grad_(True)
            with self._autocast():
                hamiltonian = (self.pyld_layer(x_in).float() * costate).sum()
            (grad,) = torch.autograd.grad(hamiltonian, x_in)
            if scale != 1.0:
                grad = grad / scale
            last = k == self.pyld_inner_steps - 1
            update = updates["inner_last"] if last else updates["inner"]
            update.apply_(x, grad.to(x.dtype).contiguous(), self.rng_state, backend)
        if self.pyld_inner_steps == 0 and self.noise_std > 0:
            updates["noise"].apply_(x, torch.zeros_like(x), self.rng_state, backend)

    # ------------------------------------------------------------------ state
    def reseed(self, seed: int) -> None:
        """Restart the noise stream and the buffer's stream from ``seed`` (in place: graphs follow).

        The two streams get keys derived from ``seed`` (:func:`jemfast.ops.derive_seed`), far
        apart from each other and from those of any other seed.
        """
        self.rng_state.copy_(make_rng_state(derive_seed(seed, 0), self.rng_state.device))
        self.buffer.reseed(derive_seed(seed, 1))

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (safe for ``torch.load(weights_only=True)``)."""
        return {"rng_state": self.rng_state.clone(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the noise stream and the buffer (in place, so captured graphs stay valid)."""
        if not isinstance(state, dict) or "rng_state" not in state or "buffer" not in state:
            raise ValueError("sampler state must be a dict with 'rng_state' and 'buffer' entries")
        rng = state["rng_state"]
        check_rng_state(rng.to(self.rng_state.device) if isinstance(rng, torch.Tensor) else rng, self.rng_state.device)
        self.buffer.load_state_dict(state["buffer"])
        self.rng_state.copy_(rng)

    def __repr__(self) -> str:
        return (
            f"SGLDSampler(method={self.method!r}, n_steps={self.n_steps}, step_size={self.step_size}, "
            f"noise_std={self.noise_std}, grad_clamp={self.grad_clamp}, clamp={self.clamp}, "
            f"temperature={self.temperature}, model_mode={self.model_mode!r}, amp_dtype={self.amp_dtype}, "
            f"cuda_graph={self.use_cuda_graph})"
        )
