"""JEMTrainer's constructor arguments: each checked, and turned into the value the trainer keeps.

Every ``*_argument`` function takes one argument as given to :class:`~jemfast.train.JEMTrainer`
and returns what the trainer stores (a :class:`JEMLoss`, a sampler or its settings, a
:class:`DivergenceGuard`, a device, the joint-forward choice); :func:`check_options` checks
the options the trainer stores as given. A bad value raises TypeError or ValueError with a
message that names the argument.

The keywords that :class:`JEMLoss` and :class:`DefaultSampler` replaced (``p_x_weight``,
``p_y_weight``, ``energy_l2``, ``temperature``; ``buffer_size``, ``sampler_preset``,
``sampler_options``) still work: :func:`objective_argument` and :func:`sampler_argument`
take them out of the trainer's ``**deprecated`` and warn with a DeprecationWarning that
names the replacement. Their warnings use ``stacklevel=3`` and so point at the line that
built the trainer: call them directly from ``JEMTrainer.__init__``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from jemfast._checks import check_choice, check_int, check_number
from jemfast.sampling.norm_stats import norm_layers
from jemfast.train.default_sampler import DefaultSampler
from jemfast.train.guard import DivergenceGuard
from jemfast.train.objective import JEMLoss
from jemfast.train.precision import AMP_DTYPES

__all__ = [
    "check_options",
    "device_argument",
    "guard_argument",
    "joint_forward_argument",
    "objective_argument",
    "sampler_argument",
]

# The deprecated keywords that JEMLoss's fields and DefaultSampler's fields (name -> field) replaced.
_OBJECTIVE_KEYWORDS = ("p_x_weight", "p_y_weight", "energy_l2", "temperature")
_SAMPLER_KEYWORDS = {"sampler_preset": "preset", "buffer_size": "buffer_size", "sampler_options": "options"}


def _arguments(values: dict[str, Any]) -> str:
    """``name=value, ...`` as in a call."""
    return ", ".join(f"{name}={value!r}" for name, value in values.items())


def _keywords(names: Iterable[str]) -> str:
    """``name=, ...``: keywords named in a message."""
    return ", ".join(f"{name}=" for name in names)


def objective_argument(objective: Any, deprecated: dict[str, Any]) -> JEMLoss:
    """The trainer's JEMLoss: ``objective``, or one built from the deprecated keywords it replaced.

    Args:
        objective: a :class:`JEMLoss`, None (``JEMLoss()``), or a number: JEMTrainer's 4th
            positional parameter was once ``p_x_weight``.
        deprecated: the trainer's unrecognised keywords; the objective's are taken out of it.

    Raises:
        TypeError: ``objective`` is something else, or ``p_x_weight`` came twice.
        ValueError: a JEMLoss together with deprecated keywords (settings given twice).
    """
    weights = {name: deprecated.pop(name) for name in _OBJECTIVE_KEYWORDS if name in deprecated}
    used = f"JEMTrainer({_keywords(weights)})"
    if isinstance(objective, numbers.Real):  # JEMTrainer's 4th positional parameter was p_x_weight
        if "p_x_weight" in weights:
            raise TypeError("JEMTrainer got p_x_weight twice: as its 4th positional argument and as a keyword")
        weights = {"p_x_weight": objective, **weights}
        used = "a number as JEMTrainer's 4th positional argument (formerly p_x_weight)"
        objective = None
    if objective is None:
        if not weights:
            return JEMLoss()
        warnings.warn(
            f"{used} is deprecated; pass objective=JEMLoss({_arguments(weights)}) instead "
            "(from jemfast.train import JEMLoss)",
            DeprecationWarning,
            stacklevel=3,
        )
        return JEMLoss(**weights)
    if not isinstance(objective, JEMLoss):
        raise TypeError(f"objective must be a JEMLoss or None (JEMLoss()), got {type(objective).__name__}")
    if weights:
        raise ValueError(
            f"JEMTrainer got objective={objective!r} and {_keywords(weights)}; give the settings in the JEMLoss only"
        )
    return objective


def sampler_argument(sampler: Any, deprecated: dict[str, Any]) -> tuple[Any, DefaultSampler | None]:
    """``(sampler, default_sampler)``: a given sampler and None, or None and the settings of the
    sampler the trainer builds.

    Args:
        sampler: an ``SGLDSampler`` (used as given), a :class:`DefaultSampler`, or None
            (``DefaultSampler()``, or one from the deprecated keywords).
        deprecated: the trainer's unrecognised keywords; the sampler's are taken out of it
            (with a DeprecationWarning; with a given sampler they have no effect).

    Raises:
        ValueError: a DefaultSampler together with deprecated keywords, or a sampler that
            wraps a DistributedDataParallel model.
    """
    given = {name: deprecated.pop(name) for name in _SAMPLER_KEYWORDS if name in deprecated}
    settings = {_SAMPLER_KEYWORDS[name]: value for name, value in given.items()}
    if "options" in settings and settings["options"] is None:  # sampler_options=None meant "none"
        del settings["options"]
    used = f"JEMTrainer({_keywords(given)})"
    if isinstance(sampler, DefaultSampler):
        if given:
            raise ValueError(
                f"JEMTrainer got sampler={sampler!r} and {_keywords(given)}; "
                "give the settings in the DefaultSampler only"
            )
        return None, sampler
    if given:
        replacement = f"sampler=DefaultSampler({_arguments(settings)})"
        if sampler is None:
            message = f"{used} is deprecated; pass {replacement} instead (from jemfast.train import DefaultSampler)"
        else:
            message = (
                f"{used} is deprecated and has no effect with a given sampler: drop it ({replacement} "
                "replaces it where the trainer builds its own sampler)"
            )
        warnings.warn(message, DeprecationWarning, stacklevel=3)
    if sampler is None:
        return None, DefaultSampler(**settings)
    if isinstance(getattr(sampler, "model", None), nn.parallel.DistributedDataParallel):
        raise ValueError(
            "the sampler must wrap the underlying module (model.module), not the DDP wrapper: "
            "sampling through DDP would interfere with its gradient synchronisation"
        )
    return sampler, None


def guard_argument(guard: Any) -> DivergenceGuard:
    """The trainer's DivergenceGuard: ``guard`` itself, the defaults for True, a disabled one for False/None."""
    if isinstance(guard, bool) or guard is None:
        return DivergenceGuard() if guard else DivergenceGuard(enabled=False)
    if not isinstance(guard, DivergenceGuard):
        raise TypeError(f"guard must be a DivergenceGuard, bool or None, got {type(guard).__name__}")
    return guard


def device_argument(device: str | torch.device | None, module: nn.Module) -> torch.device:
    """Where training runs: ``device``, or for None the device of the module's first parameter
    (the CPU for a module without parameters)."""
    if device is None:
        first = next(iter(module.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    return torch.device(device)


def joint_forward_argument(joint_forward: Any, module: nn.Module) -> bool:
    """Whether data and samples share one forward: ``joint_forward``, or for None, True unless
    ``module`` has batch-norm running statistics (the samples would enter them).

    Raises:
        ValueError: not True, False or None; or True for a module with running statistics.
    """
    check_choice("joint_forward", joint_forward, (None, True, False))
    has_running_stats = bool(norm_layers(module))
    if joint_forward is None:
        return not has_running_stats
    if joint_forward and has_running_stats:
        raise ValueError(
            "joint_forward=True needs a model without batch-norm running statistics: one joint "
            "forward would fold the samples into the statistics used at evaluation; leave "
            "joint_forward=None (separate forwards for data and samples)"
        )
    return joint_forward


def check_options(
    *,
    scheduler: Any,
    amp_dtype: Any,
    grad_clip: Any,
    scheduler_interval: Any,
    n_classes: Any,
    sync_every: Any,
    check_values: Any,
    data_noise: Any,
    sample_shape: Any,
) -> None:
    """Raise TypeError/ValueError for a JEMTrainer option out of its range (the message names it).

    The options are those the trainer keeps as given; see :class:`~jemfast.train.JEMTrainer`
    for their meaning (``data_noise`` is a standard deviation in the input's units,
    ``sample_shape`` the shape of one input).
    """
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(
            f"scheduler must be a learning-rate scheduler (with a step() method) or None, got "
            f"{type(scheduler).__name__}; JEMTrainer's positional parameters are (model, optimizer, "
            "sampler, objective, scheduler, run_dir), the rest are keywords"
        )
    check_choice("amp_dtype", amp_dtype, AMP_DTYPES)
    if grad_clip is not None:
        check_number("grad_clip", grad_clip, positive=True)
    check_choice("scheduler_interval", scheduler_interval, ("step", "epoch"))
    if n_classes is not None:
        check_int("n_classes", n_classes, minimum=2)
    if sync_every is not None:
        check_int("sync_every", sync_every, minimum=1)
    check_choice("check_values", check_values, (True, False, "auto"))
    check_number("data_noise", data_noise, minimum=0)
    if sample_shape is not None and not (
        isinstance(sample_shape, (tuple, list))
        and sample_shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in sample_shape)
    ):
        raise ValueError(f"sample_shape must be a non-empty tuple of positive ints, got {sample_shape!r}")
