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

Nothing here knows about optimisers, precision, devices or logging: the trainer
(:mod:`jemfast.train.trainer`) is the loop around this function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jemfast.ops.energy import energy

__all__ = ["JEMObjective", "jem_objective"]


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
