"""SGLD sampling from a classifier's energy, the hot loop of JEM training.

A JEM classifier f defines ``log p(x) = logsumexp(f(x) / T) + const`` (and
``log p(x, y) = f(x)[y] / T + const``). :class:`SGLDSampler` draws approximate
samples by Langevin dynamics started from a
:class:`~jemfast.sampling.buffer.ReplayBuffer` (persistent chains): ``n_steps`` outer
steps of a step strategy (:mod:`jemfast.sampling.steps`), by default SGLD,

    x <- clip(x + step_size * clip(grad_x log p(x)) + noise_std * z, clamp)

with the fused :func:`jemfast.ops.sgld_update_` (:class:`~jemfast.sampling.steps.LangevinStep`),
or JEM++'s proximal sampler (:class:`~jemfast.sampling.steps.PYLDStep`). Only the input
gradient is computed: the parameters' ``requires_grad`` is switched off for the chain
and restored afterwards.

What the chain computes is one :class:`SamplerSettings` (validated, frozen); how it
runs (temperature, autocast dtype, CUDA graphs, noise seed, kernel backend, NVTX) are
the sampler's own arguments. :data:`PRESETS` holds the reference implementations'
settings (:meth:`SGLDSampler.preset`).

On a CUDA device the whole chain (buffer draw, re-init, n_steps of forward + input
gradient + update, write-back) is captured once into a CUDA graph and replayed
(:mod:`jemfast.cuda_graphs`), re-captured whenever :meth:`SGLDSampler.capture_key`
changes (it covers the settings, the step strategy included).

The keywords ``method=`` and ``pyld_*=`` of earlier versions still work, with a
DeprecationWarning each; they map onto ``step=PYLDStep(...)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jemfast._checks import check_bounds, check_choice, check_int, check_number
from jemfast.backends import resolve_backend
from jemfast.cuda_graphs import GraphCache, attribute_key
from jemfast.ops import check_rng_state, derive_seed, energy, make_rng_state
from jemfast.ops.sgld import SUPPORTED_DTYPES
from jemfast.profiling import nvtx_range
from jemfast.sampling.buffer import ReplayBuffer
from jemfast.sampling.choices import MODEL_MODES
from jemfast.sampling.norm_stats import frozen_norm_statistics
from jemfast.sampling.steps import ChainStep, LangevinStep, PYLDStep

logger = logging.getLogger(__name__)

# Input gradients of log p(x) are tiny: on WRN-10-1 and WRN-28-5 (no norm, 32 x 192
# inputs in [-1, 1]) their median magnitude is 6e-6 and 99.9% of them lie below
# float16's smallest normal (6.1e-5), so a float16 backward flushes 0.26-0.32% of them
# to zero. Scaling log p by 2**12 before the backward removes every flush (relative
# error to float32: 2.6% -> 2.3% on WRN-28-5; what remains is the float16 forward) and
# stays finite up to 2**16. A constant, unlike a dynamic loss scale, needs no host sync
# and keeps the chain capturable as one CUDA graph.
FP16_GRAD_SCALE = 2.0**12


@dataclass(frozen=True)
class SamplerSettings:
    """What a sampler's chain computes, validated when built (errors name the field).

    Args:
        n_steps: outer steps per call (>= 0).
        step_size: multiplies grad_x log p(x) (the JEM reference's ``sgld_lr``).
        noise_std: standard deviation of the Gaussian noise added each step (>= 0).
        grad_clamp: clip the input gradient to [-grad_clamp, grad_clamp] (> 0; None: no clip).
        clamp: clip samples to (lo, hi) after each step (None: no clip).
        model_mode: "eval" (JEM), "train" (JEM++ / SADA-JEM: batch norm uses batch
            statistics) or "keep"; the model's mode is restored after each call. In
            every mode the chain leaves batch-norm running statistics untouched
            (:mod:`jemfast.sampling.norm_stats`).
        step: the step strategy, :class:`LangevinStep` (SGLD) or :class:`PYLDStep` (JEM++).
    """

    n_steps: int = 50
    step_size: float = 1.0
    noise_std: float = 0.01
    grad_clamp: float | None = None
    clamp: tuple[float, float] | None = None
    model_mode: str = "eval"
    step: ChainStep = LangevinStep()

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: store the normalised values
        set_field(self, "n_steps", check_int("n_steps", self.n_steps, minimum=0))
        set_field(self, "step_size", check_number("step_size", self.step_size))
        set_field(self, "noise_std", check_number("noise_std", self.noise_std, minimum=0))
        if self.grad_clamp is not None:
            set_field(self, "grad_clamp", check_number("grad_clamp", self.grad_clamp, positive=True))
        set_field(self, "clamp", check_bounds("clamp", self.clamp))
        set_field(self, "model_mode", check_choice("model_mode", self.model_mode, MODEL_MODES))
        if not isinstance(self.step, ChainStep):
            raise ValueError(f"step must be a chain step such as LangevinStep() or PYLDStep(), got {self.step!r:.80}")

    def capture_key(self) -> tuple:
        """Every field; the step by its own ``capture_key()``."""
        return attribute_key(self)


@dataclass(frozen=True)
class SamplerPreset:
    """A reference implementation's sampler settings and where they come from."""

    settings: SamplerSettings
    reference: str  # the implementation (repository, script, paper)
    note: str  # the flags and behaviour the settings reproduce

    def __getitem__(self, index: int) -> Any:
        # PRESETS used to map names to (constructor keywords, source) pairs.
        if index not in (0, 1):
            raise IndexError(index)
        warnings.warn(
            "PRESETS[name][0] and [1] are deprecated; read PRESETS[name].settings, .reference and .note",
            DeprecationWarning,
            stacklevel=2,
        )
        return _fields(self.settings) if index == 0 else self


# Defaults of the public reference implementations, as their training scripts run them.
PRESETS: dict[str, SamplerPreset] = {
    "jem": SamplerPreset(
        SamplerSettings(n_steps=20, step_size=1.0, noise_std=0.01, model_mode="eval"),
        "wgrathwohl/JEM, train_wrn_ebm.py (Grathwohl et al. 2019)",
        "--n_steps 20 --sgld_lr 1.0 --sgld_std 0.01, uniform [-1, 1] buffer init, "
        "reinit_freq 0.05, f.eval() during sampling",
    ),
    "jempp": SamplerPreset(
        SamplerSettings(
            n_steps=5,
            step_size=1.0,
            noise_std=0.0,
            model_mode="train",
            step=PYLDStep(inner_steps=5, lr=0.2, grad_clamp=1.0, clamp=(-1.0, 1.0)),
        ),
        "sndnyang/JEMPP, train_jempp.py and scripts/jempp_cifar10.sh (Yang & Ji 2021)",
        "--n_steps 5 --in_steps 5 --pyld_lr 0.2 --sgld_lr 1.0 --eps 1 --sgld_std 0, "
        "inner steps clamp x to [-1, 1], class-conditional Gaussian buffer init, "
        "batch norm in train mode during sampling",
    ),
    "sadajem": SamplerPreset(
        SamplerSettings(n_steps=5, step_size=1.0, noise_std=0.0, grad_clamp=1.0, clamp=(-1.0, 1.0), model_mode="train"),
        "sndnyang/SADAJEM (Yang, Su & Ji 2023)",
        "5 SGLD steps, gradient clamped to [-1, 1], x clamped to [-1, 1], no noise",
    ),
}

# SGLDSampler's arguments that are not settings: how the chain runs, not what it computes.
RUNTIME_OPTIONS = ("temperature", "amp_dtype", "cuda_graph", "seed", "backend", "nvtx")
# The deprecated keywords and the PYLDStep field each one sets.
DEPRECATED_PYLD_KEYWORDS = {
    "pyld_layer": "layer",
    "pyld_inner_steps": "inner_steps",
    "pyld_lr": "lr",
    "pyld_grad_clamp": "grad_clamp",
    "pyld_clamp": "clamp",
}
CHAIN_METHODS = ("sgld", "pyld")  # the deprecated method= keyword's values


def _fields(settings: SamplerSettings) -> dict[str, Any]:
    # Shallow, unlike dataclasses.asdict: the step (and a PYLD layer) stay the same objects.
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _step_from_deprecated_keywords(step: ChainStep | None, base: ChainStep, keywords: dict[str, Any]) -> ChainStep:
    """The step ``method=`` and ``pyld_*=`` ask for, on top of ``base``; one DeprecationWarning each.

    As before, ``pyld_*`` keywords only matter for a PYLD chain: ``method="pyld"``, or
    ``base`` a PYLDStep (a preset's).
    """
    unknown = sorted(set(keywords) - {"method", *DEPRECATED_PYLD_KEYWORDS})
    if unknown:
        raise TypeError(f"SGLDSampler got unexpected keyword argument(s): {', '.join(map(repr, unknown))}")
    if not keywords:
        return base if step is None else step
    if step is not None:
        raise ValueError(f"pass step= or the deprecated {', '.join(sorted(keywords))}, not both")
    method = keywords.get("method", PYLDStep.name if isinstance(base, PYLDStep) else LangevinStep.name)
    method = check_choice("method", method, CHAIN_METHODS)
    if "method" in keywords:
        replacement = "step=PYLDStep(...)" if method == "pyld" else "step=LangevinStep() (the default)"
        # stacklevel 3: the caller of SGLDSampler() or SGLDSampler.preset().
        warnings.warn(f"method={method!r} is deprecated; pass {replacement}", DeprecationWarning, stacklevel=3)
    changes = {}
    for keyword, field in DEPRECATED_PYLD_KEYWORDS.items():
        if keyword in keywords:
            unused = "" if method == "pyld" else " (it has no effect on an SGLD chain)"
            message = f"{keyword} is deprecated; pass step=PYLDStep({field}=...){unused}"
            warnings.warn(message, DeprecationWarning, stacklevel=3)
            changes[field] = keywords[keyword]
    if method == "pyld":
        return dataclasses.replace(base if isinstance(base, PYLDStep) else PYLDStep(), **changes)
    return LangevinStep() if "method" in keywords else base


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


class _Setting:
    """A sampler attribute that reads ``sampler.settings.<name>``; assigning one replaces the settings.

    The replacement is validated like any :class:`SamplerSettings` and changes the
    sampler's capture key, so a captured chain is re-captured.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, sampler: SGLDSampler | None, owner: type | None = None) -> Any:
        if sampler is None:
            return self
        return getattr(sampler.settings, self.name)

    def __set__(self, sampler: SGLDSampler, value: Any) -> None:
        sampler.settings = dataclasses.replace(sampler.settings, **{self.name: value})


class _DeprecatedPYLDAttribute:
    """Read-only ``sampler.pyld_*``: the PYLD step's field, with a DeprecationWarning."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.field = name, DEPRECATED_PYLD_KEYWORDS[name]

    def __get__(self, sampler: SGLDSampler | None, owner: type | None = None) -> Any:
        if sampler is None:
            return self
        warnings.warn(
            f"sampler.{self.name} is deprecated; read sampler.step.{self.field}", DeprecationWarning, stacklevel=2
        )
        if not isinstance(sampler.step, PYLDStep):
            raise AttributeError(f"{self.name}: this sampler's step is {sampler.step!r}, not a PYLDStep")
        return getattr(sampler.step, self.field)


class SGLDSampler:
    """Draws negative samples for JEM training by Langevin dynamics from a replay buffer.

    The arguments from ``n_steps`` to ``model_mode`` and ``step`` are the chain's
    :class:`SamplerSettings` (see there), kept as :attr:`settings`; the others say how it
    runs. Build one from settings with :meth:`from_settings` or from a reference
    implementation's with :meth:`preset`.

    Args:
        model: classifier mapping (B, *sample_shape) inputs to (B, C) logits.
        buffer: the :class:`ReplayBuffer` holding the persistent chains.
        n_steps, step_size, noise_std, grad_clamp, clamp, model_mode: see :class:`SamplerSettings`.
        temperature: T in log p(x) = logsumexp(f(x) / T).
        amp_dtype: run the model under ``torch.autocast`` with this dtype (e.g.
            torch.bfloat16); the update itself is always float32 arithmetic. Under
            float16 the input gradient is taken of ``FP16_GRAD_SCALE * log p`` and divided
            back, so it does not underflow (see that constant).
        cuda_graph: True, False or "auto" (on for CUDA buffers).
        step: the step strategy (None: :class:`LangevinStep`, SGLD); a
            :class:`PYLDStep` without a layer gets the model's ``.first_layer``.
        seed: seed of the sampler's noise stream (None: drawn from torch's generator).
        backend: kernel backend for the update (None: fastest available).
        nvtx: emit NVTX ranges (None: follow ``JEMFAST_NVTX``).
        **deprecated: ``method="sgld" | "pyld"`` and ``pyld_layer``, ``pyld_inner_steps``,
            ``pyld_lr``, ``pyld_grad_clamp``, ``pyld_clamp``, mapped onto
            ``step=PYLDStep(...)`` with a DeprecationWarning each.
    """

    # Read (and assignable) views of self.settings.
    n_steps = _Setting()
    step_size = _Setting()
    noise_std = _Setting()
    grad_clamp = _Setting()
    clamp = _Setting()
    model_mode = _Setting()
    step = _Setting()
    # Deprecated read-only views of a PYLD step's fields.
    pyld_layer = _DeprecatedPYLDAttribute()
    pyld_inner_steps = _DeprecatedPYLDAttribute()
    pyld_lr = _DeprecatedPYLDAttribute()
    pyld_grad_clamp = _DeprecatedPYLDAttribute()
    pyld_clamp = _DeprecatedPYLDAttribute()

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
        *,
        step: ChainStep | None = None,
        seed: int | None = None,
        backend: str | None = None,
        nvtx: bool | None = None,
        **deprecated: Any,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"buffer must be a jemfast ReplayBuffer, got {type(buffer).__name__}")
        step = _step_from_deprecated_keywords(step, LangevinStep(), deprecated)
        settings = SamplerSettings(n_steps, step_size, noise_std, grad_clamp, clamp, model_mode, step)
        cuda_graph = check_choice("cuda_graph", cuda_graph, (True, False, "auto"))
        temperature = check_number("temperature", temperature, positive=True)
        check_choice("amp_dtype", amp_dtype, (None, torch.bfloat16, torch.float16))
        if cuda_graph is True and buffer.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA buffer; this buffer is on {buffer.device}")

        self.model = model
        self.buffer = buffer
        self.settings = settings  # after self.model: binds the step to the model
        self.temperature = float(temperature)
        self.amp_dtype = amp_dtype
        self.backend = backend
        self.nvtx = nvtx
        self.rng_state = make_rng_state(seed, buffer.device)
        self.use_cuda_graph = cuda_graph is True or (cuda_graph == "auto" and buffer.device.type == "cuda")
        self._graphs: GraphCache | None = None  # built on the first captured call

    @property
    def settings(self) -> SamplerSettings:
        """What the chain computes; the one place the chain reads its settings from."""
        return self._settings

    @settings.setter
    def settings(self, settings: SamplerSettings) -> None:
        if not isinstance(settings, SamplerSettings):
            raise TypeError(f"settings must be a SamplerSettings, got {type(settings).__name__}")
        step = settings.step.bind(self.model)
        self._settings = settings if step is settings.step else dataclasses.replace(settings, step=step)

    @property
    def method(self) -> str:
        """The step strategy's short name ("sgld", "pyld"), for logs."""
        return self.step.name

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(
        cls,
        model: nn.Module,
        buffer: ReplayBuffer,
        settings: SamplerSettings,
        *,
        temperature: float = 1.0,
        amp_dtype: torch.dtype | None = None,
        cuda_graph: bool | str = "auto",
        seed: int | None = None,
        backend: str | None = None,
        nvtx: bool | None = None,
    ) -> SGLDSampler:
        """A sampler running ``settings``; the keywords are the runtime options of the constructor."""
        if not isinstance(settings, SamplerSettings):
            raise TypeError(f"settings must be a SamplerSettings, got {type(settings).__name__}")
        runtime = dict(temperature=temperature, amp_dtype=amp_dtype, cuda_graph=cuda_graph, seed=seed)
        return cls(model, buffer, **_fields(settings), **runtime, backend=backend, nvtx=nvtx)

    @classmethod
    def preset(cls, name: str, model: nn.Module, buffer: ReplayBuffer, **overrides: Any) -> SGLDSampler:
        """A sampler with a reference implementation's settings ("jem", "jempp", "sadajem").

        See :data:`PRESETS` for each preset's settings and source. ``overrides`` are
        :class:`SamplerSettings` fields, which replace the preset's, and runtime options
        (those of :meth:`from_settings`). The deprecated ``method`` and ``pyld_*`` keywords
        replace fields of the preset's step (jempp's PYLDStep).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {tuple(PRESETS)}")
        settings = PRESETS[name].settings
        changes = {k: overrides.pop(k) for k in list(overrides) if k in _fields(settings)}
        deprecated = {k: overrides.pop(k) for k in list(overrides) if k not in RUNTIME_OPTIONS}
        if deprecated:
            changes["step"] = _step_from_deprecated_keywords(changes.get("step"), settings.step, deprecated)
        return cls.from_settings(model, buffer, dataclasses.replace(settings, **changes), **overrides)

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
        check_int("batch_size", batch_size, minimum=1)
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

        Every attribute of the sampler (the settings with the step strategy, the runtime
        options, the model's parameters, buffers and modes, the replay buffer's
        :meth:`~ReplayBuffer.capture_key`, the noise state's storage) and whether grad
        mode is on; a new attribute is included by itself.
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

    def run_chain(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Run the chain on starting points ``x`` (updated in place) and return them.

        x: (B, *sample_shape) tensor not requiring grad; y: optional (B,) labels.
        """
        settings = self.settings
        with (
            input_gradient_only(self.model),
            model_mode(self.model, settings.model_mode),
            frozen_norm_statistics(self.model),
            torch.enable_grad(),
        ):
            # The per-call checks of sgld_update_, made once for the whole chain.
            if not x.is_contiguous() or x.requires_grad:
                raise ValueError("run_chain updates x in place: pass a contiguous tensor that does not require grad")
            if x.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
            check_rng_state(self.rng_state, x.device)
            # The updates are checked and the backend chosen once per chain, not at every step.
            updates = settings.step.updates(self)
            backend = resolve_backend(self.backend, x.device, op="sgld_update_")
            for _ in range(settings.n_steps):
                with nvtx_range("sgld/step", self.nvtx):
                    settings.step.run(self, x, y, updates, backend)
        return x.detach()

    # ------------------------------------------------------------------ what steps call
    def log_p(self, logits: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Unnormalised log density per sample, (B,): logsumexp(logits / T), or logits[y] / T."""
        if y is None:
            return energy(logits, self.temperature) * (-1.0 / self.temperature)
        return logits.gather(1, y.view(-1, 1)).squeeze(1) / self.temperature

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` with ``amp_dtype`` for the model's forward (a no-op without one)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # The autocast weight-cast cache must be off: a CUDA graph would replay
        # casts of stale weights otherwise.
        return torch.autocast(self.buffer.device.type, dtype=self.amp_dtype, cache_enabled=False)

    @property
    def grad_scale(self) -> float:
        """What log p is multiplied by before a backward: FP16_GRAD_SCALE under float16, else 1."""
        return FP16_GRAD_SCALE if self.amp_dtype == torch.float16 else 1.0

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """grad_x log p(x) (or log p(x, y)) in x's shape and dtype; grad mode must be on."""
        x_in = x.detach().requires_grad_(True)
        with self.autocast():
            logits = self.model(x_in)
        scale = self.grad_scale
        log_p = self.log_p(logits.float(), y)
        (grad,) = torch.autograd.grad(log_p.sum() * scale, x_in)
        return (grad / scale if scale != 1.0 else grad).to(x.dtype)

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
        s = self.settings
        return (
            f"SGLDSampler(step={s.step!r}, n_steps={s.n_steps}, step_size={s.step_size}, "
            f"noise_std={s.noise_std}, grad_clamp={s.grad_clamp}, clamp={s.clamp}, "
            f"temperature={self.temperature}, model_mode={s.model_mode!r}, amp_dtype={self.amp_dtype}, "
            f"cuda_graph={self.use_cuda_graph})"
        )
