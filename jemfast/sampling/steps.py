"""Chain steps: what one outer step of :class:`~jemfast.sampling.SGLDSampler`'s chain computes.

The sampler runs ``n_steps`` outer steps of its step strategy on the samples x,
(B, *sample_shape), in place:

* :class:`LangevinStep` is SGLD as JEM runs it: one forward and input-gradient backward
  of the whole model, then one fused update
  ``x <- clip(x + step_size * clip(grad_x log p(x)) + noise_std * z)``.
* :class:`PYLDStep` is JEM++'s proximal Langevin sampler (Yang & Ji 2021): one full
  forward/backward gives the input gradient and the *costate*, then ``inner_steps``
  cheap steps back-propagate through the first layer only.

A step strategy is a frozen dataclass, so its settings are values (compared, hashed and
keyed for CUDA-graph capture like any other setting), with the interface of
:class:`ChainStep`. It reads the chain's shared settings (step size, noise, clamps) from
``sampler.settings`` and calls the sampler's :meth:`~SGLDSampler.input_gradient`,
:meth:`~SGLDSampler.log_p` and :meth:`~SGLDSampler.autocast`.

Settings are checked with :mod:`jemfast._checks`, as :class:`~jemfast.sampling.SamplerSettings`
checks its own: errors name the field and the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from jemfast._checks import check_bounds, check_int, check_number
from jemfast.cuda_graphs import attribute_key
from jemfast.ops.sgld import SGLDSettings

if TYPE_CHECKING:
    from jemfast.sampling.sampler import SGLDSampler

__all__ = ["ChainStep", "LangevinStep", "PYLDStep"]


@runtime_checkable
class ChainStep(Protocol):
    """The interface :class:`~jemfast.sampling.SGLDSampler` uses to run one outer step of a chain."""

    name: ClassVar[str]  # short name for logs and repr ("sgld", "pyld")

    def bind(self, model: nn.Module) -> ChainStep:
        """This step with what it takes from ``model`` filled in; the sampler calls it when given the step."""
        ...

    def updates(self, sampler: SGLDSampler) -> dict[str, SGLDSettings]:
        """The fused updates the step applies, checked; called once per chain, outside the step loop."""
        ...

    def run(
        self,
        sampler: SGLDSampler,
        x: torch.Tensor,
        y: torch.Tensor | None,
        updates: dict[str, SGLDSettings],
        backend: str,
    ) -> None:
        """One outer step on contiguous x (B, *sample_shape), in place; y: optional (B,) labels."""
        ...

    def capture_key(self) -> tuple:
        """What a captured chain depends on in this step (see :func:`jemfast.cuda_graphs.attribute_key`)."""
        ...


@dataclass(frozen=True)
class LangevinStep:
    """SGLD, the JEM sampler: one forward and input-gradient backward of the model, one fused update.

    ``x <- clip(x + step_size * clip(grad_x log p(x), grad_clamp) + noise_std * z, clamp)``
    with the sampler's settings.
    """

    name: ClassVar[str] = "sgld"

    def bind(self, model: nn.Module) -> LangevinStep:
        return self

    def updates(self, sampler: SGLDSampler) -> dict[str, SGLDSettings]:
        s = sampler.settings
        return {"langevin": SGLDSettings.checked(s.step_size, s.noise_std, s.grad_clamp, s.clamp)}

    def run(
        self,
        sampler: SGLDSampler,
        x: torch.Tensor,
        y: torch.Tensor | None,
        updates: dict[str, SGLDSettings],
        backend: str,
    ) -> None:
        grad = sampler.input_gradient(x, y)
        updates["langevin"].apply_(x, grad.contiguous(), sampler.rng_state, backend)

    def capture_key(self) -> tuple:
        return (type(self).__name__,)


@dataclass(frozen=True)
class PYLDStep:
    """JEM++'s proximal Langevin step (Yang & Ji 2021): one full gradient, then cheap first-layer steps.

    One outer step:

    1. One forward and backward of the whole model give the input gradient of log p(x)
       and the costate p = d log p(x) / d h, h = layer(x) (same shape as h); x takes the
       full step ``x <- clip(x + step_size * clip(grad, grad_clamp), clamp)`` with the
       sampler's settings (skipped when step_size is 0), without noise.
    2. ``inner_steps`` times: the gradient of ``sum(layer(x) * p)`` (back-propagation
       through ``layer`` only, p held fixed) and
       ``x <- clip(x + lr * clip(grad, self.grad_clamp), self.clamp)``. The sampler's
       noise (noise_std) is added in the last inner step only; with no inner steps it is
       added on its own, unclipped.

    Args:
        inner_steps: cheap steps per outer step (>= 0; JEM++'s ``--in_steps``).
        lr: the inner steps' step size (JEM++'s ``--pyld_lr``).
        grad_clamp: clip the inner steps' gradient to [-grad_clamp, grad_clamp] (None: no clip).
        clamp: clip x to (lo, hi) after each inner step (None: no clip).
        layer: the module whose output is h; it must run exactly once per forward of the
            model. None: the model's ``.first_layer``, filled in by :meth:`bind` when a
            sampler is built.
    """

    name: ClassVar[str] = "pyld"

    inner_steps: int = 5
    lr: float = 0.2
    grad_clamp: float | None = 1.0
    clamp: tuple[float, float] | None = (-1.0, 1.0)
    layer: nn.Module | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner_steps", check_int("inner_steps", self.inner_steps, minimum=0))
        object.__setattr__(self, "lr", check_number("lr", self.lr))
        if self.grad_clamp is not None:
            object.__setattr__(self, "grad_clamp", check_number("grad_clamp", self.grad_clamp, positive=True))
        object.__setattr__(self, "clamp", check_bounds("clamp", self.clamp))
        if self.layer is not None and not isinstance(self.layer, nn.Module):
            raise ValueError(f"layer must be a torch.nn.Module or None, got {self.layer!r:.80}")

    def bind(self, model: nn.Module) -> PYLDStep:
        if self.layer is not None:
            return self
        layer = getattr(model, "first_layer", None)
        if not isinstance(layer, nn.Module):
            raise ValueError(
                "PYLDStep needs the first layer: pass PYLDStep(layer=<module>) or give the model "
                "a .first_layer attribute (jemfast's WideResNet has one)"
            )
        return replace(self, layer=layer)

    def updates(self, sampler: SGLDSampler) -> dict[str, SGLDSettings]:
        """The full step's update, the inner steps' (the last one adds the noise) and the noise-only one."""
        if self.layer is None:
            raise ValueError("PYLDStep.layer is unset: bind(model) the step before running it")
        s = sampler.settings
        inner = (self.grad_clamp, self.clamp)
        return {
            "full": SGLDSettings.checked(s.step_size, 0.0, s.grad_clamp, s.clamp),
            "inner": SGLDSettings.checked(self.lr, 0.0, *inner),
            "inner_last": SGLDSettings.checked(self.lr, s.noise_std, *inner),
            "noise": SGLDSettings.checked(0.0, s.noise_std),
        }

    def run(
        self,
        sampler: SGLDSampler,
        x: torch.Tensor,
        y: torch.Tensor | None,
        updates: dict[str, SGLDSettings],
        backend: str,
    ) -> None:
        grad_x, costate = self._gradient_and_costate(sampler, x, y)
        if updates["full"].step_size != 0.0:
            updates["full"].apply_(x, grad_x.to(x.dtype).contiguous(), sampler.rng_state, backend)
        # The float16 scale that _gradient_and_costate left on the costate carries into
        # every inner gradient; each is divided back before its update.
        scale = sampler.grad_scale
        for k in range(self.inner_steps):
            x_in = x.detach().requires_grad_(True)
            with sampler.autocast():
                hamiltonian = (self.layer(x_in).float() * costate).sum()
            (grad,) = torch.autograd.grad(hamiltonian, x_in)
            if scale != 1.0:
                grad = grad / scale
            update = updates["inner_last"] if k == self.inner_steps - 1 else updates["inner"]
            update.apply_(x, grad.to(x.dtype).contiguous(), sampler.rng_state, backend)
        if self.inner_steps == 0 and updates["noise"].noise_std > 0:
            updates["noise"].apply_(x, torch.zeros_like(x), sampler.rng_state, backend)

    def _gradient_and_costate(
        self, sampler: SGLDSampler, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """grad_x log p(x) (x's shape, float16 scale divided out) and the costate (h's shape, detached).

        Under float16 both gradients are taken of ``FP16_GRAD_SCALE * log p`` so they do not
        underflow; the costate keeps the scale, so the inner steps' backward through the
        layer stays in range too.
        """
        captured: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            x_in = x.detach().requires_grad_(True)
            with sampler.autocast():
                logits = sampler.model(x_in)
        finally:
            hook.remove()
        if len(captured) != 1:
            raise RuntimeError(f"the PYLD layer ran {len(captured)} times in one forward pass; expected exactly once")
        scale = sampler.grad_scale
        grad_x, costate = torch.autograd.grad(sampler.log_p(logits.float(), y).sum() * scale, (x_in, captured[0]))
        if scale != 1.0:
            grad_x = grad_x / scale
        return grad_x, costate.detach()

    def capture_key(self) -> tuple:
        # attribute_key keys the layer by its module_key (parameters' storage, modes).
        return type(self).__name__, attribute_key(self)
