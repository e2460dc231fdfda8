"""The JEM training objective as a pure function of logits.

A classifier f: x -> (C,) logits defines (Grathwohl et al., 2020)

    p(y | x) = softmax(f(x))_y                         the classifier
    E(x)     = -T logsumexp_y f(x)_y / T               the energy, p(x) proportional to exp(-E(x) / T)

and JEM maximises log p(x, y) = log p(y | x) + log p(x). The gradient of log p(x)
is estimated with samples x~ from the model (SGLD), which gives the surrogate

    loss = p_y_weight * CE(f(x), y)                                   (-log p(y | x))
         + p_x_weight * (mean_x E(x) - mean_x~ E(x~))                 (-log p(x), up to a constant)
         + energy_l2  * (mean_x E(x)^2 + mean_x~ E(x~)^2)             (keeps energies near 0)

The L2 term is the one the JEM reference code offers (``--l2_energy``) to keep the
two energies from drifting apart. Without samples (``logits_samples`` None, the softmax
baseline) the p(x) term is absent and the L2 term, when asked for, applies to the data.

:class:`JEMLoss` holds the four settings (the weights of the three terms and T) and is
the objective a :class:`~jemfast.train.JEMTrainer` takes; :func:`jem_objective` is the
same loss as a plain function. Nothing here knows about optimisers, precision, devices
or logging: the trainer (:mod:`jemfast.train.trainer`) is the loop around this loss.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from jemfast.ops.energy import energy

__all__ = ["JEMLoss", "JEMObjective", "jem_objective"]


@dataclass(frozen=True)
class JEMObjective:
    """The loss and its parts (0-d float32 tensors, still attached to the graph).

    ``e_samples`` and ``e_gap`` are NaN without samples.
    """

    loss: torch.Tensor
    ce: torch.Tensor  # -log p(y | x), nats, mean over the batch
    e_data: torch.Tensor  # mean E(x)
    e_samples: torch.Tensor  # mean E(x~)
    e_gap: torch.Tensor  # e_data - e_samples


def jem_objective(
    logits_data: torch.Tensor,
    labels: torch.Tensor,
    logits_samples: torch.Tensor | None = None,
    *,
    p_y_weight: float = 1.0,
    p_x_weight: float = 1.0,
    energy_l2: float = 0.0,
    temperature: float = 1.0,
) -> JEMObjective:
    """The JEM loss of one batch.

    Args:
        logits_data: (B, C) logits of the data, any float dtype (computed in float32).
        labels: (B,) int64 class indices.
        logits_samples: (B', C) logits of the model's samples, or None (no p(x) term).
        p_y_weight, p_x_weight, energy_l2: the weights of the three terms.
        temperature: T of the energy.
    """
    logits_data = logits_data.float()
    ce = F.cross_entropy(logits_data, labels)
    e_data_all = energy(logits_data, temperature)
    e_data = e_data_all.mean()
    loss = p_y_weight * ce
    if logits_samples is None:
        nan = torch.full((), float("nan"), device=logits_data.device)
        if energy_l2 > 0:
            loss = loss + energy_l2 * e_data_all.pow(2).mean()
        return JEMObjective(loss, ce, e_data, nan, nan)
    e_samples_all = energy(logits_samples.float(), temperature)
    e_samples = e_samples_all.mean()
    gap = e_data - e_samples
    loss = loss + p_x_weight * gap
    if energy_l2 > 0:
        loss = loss + energy_l2 * (e_data_all.pow(2).mean() + e_samples_all.pow(2).mean())
    return JEMObjective(loss, ce, e_data, e_samples, gap)


@dataclass(frozen=True)
class JEMLoss:
    """The JEM objective's settings; calling it computes :func:`jem_objective` with them.

    Each field is a factor of the surrogate loss of log p(x, y) in the module docstring::

        loss = p_y_weight * CE(f(x), y)                              (-log p(y | x))
             + p_x_weight * (mean E(x) - mean E(x~))                 (-log p(x), up to a constant)
             + energy_l2  * (mean E(x)^2 + mean E(x~)^2)             (keeps energies near 0)
        E(x) = -temperature * logsumexp_y f(x)_y / temperature       (p(x) proportional to exp(-E(x) / T))

    Args:
        p_y_weight: weight of the classifier term (cross-entropy).
        p_x_weight: weight of the generative term; 0 draws no samples and trains the
            plain softmax classifier (the paper's baseline).
        energy_l2: weight of the L2 penalty on the energies (JEM's ``--l2_energy``); 0 adds none.
        temperature: T of the energy, > 0.

    Raises:
        ValueError: a weight that is not a finite number >= 0, a temperature that is not a
            finite number > 0, or a bool anywhere (the message names the field and value).

    Example::

        objective = JEMLoss(energy_l2=0.1)
        terms = objective(model(x), y, model(x_samples))  # a JEMObjective
        terms.loss.backward()
    """

    p_y_weight: float = 1.0
    p_x_weight: float = 1.0
    energy_l2: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            positive = field.name == "temperature"
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or (value <= 0 if positive else value < 0)
            ):
                bound = "> 0" if positive else ">= 0"
                raise ValueError(f"JEMLoss.{field.name} must be a finite number {bound}, got {value!r}")
            object.__setattr__(self, field.name, float(value))

    @property
    def uses_samples(self) -> bool:
        """True when the loss has a p(x) term, so a training step needs samples (``p_x_weight > 0``)."""
        return self.p_x_weight > 0

    def __call__(
        self,
        logits_data: torch.Tensor,
        labels: torch.Tensor,
        logits_samples: torch.Tensor | None = None,
    ) -> JEMObjective:
        """The loss of one batch: :func:`jem_objective` with these settings (same arguments)."""
        return jem_objective(
            logits_data,
            labels,
            logits_samples,
            p_y_weight=self.p_y_weight,
            p_x_weight=self.p_x_weight,
            energy_l2=self.energy_l2,
            temperature=self.temperature,
        )
