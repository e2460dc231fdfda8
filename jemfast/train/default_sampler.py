"""The sampler a JEMTrainer builds for itself when it is given none.

:class:`DefaultSampler` says which one: an :class:`~jemfast.sampling.SGLDSampler` preset over
a replay buffer of ``buffer_size`` rows initialised uniformly in [-1, 1], with options
overriding the preset's values. The trainer builds it with :meth:`DefaultSampler.build`
once it knows the shape of one input (``JEMTrainer(sample_shape=...)`` or the first
batch), with random keys it derives from its own seed and rank::

    trainer = JEMTrainer(model, optimizer, sampler=DefaultSampler("jem", buffer_size=10000, options={"n_steps": 20}))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from jemfast.sampling.buffer import ReplayBuffer
from jemfast.sampling.sampler import PRESETS, SGLDSampler

__all__ = ["DefaultSampler"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class DefaultSampler:
    """Settings of the sampler a :class:`~jemfast.train.JEMTrainer` builds when given none.

    Args:
        preset: the :meth:`SGLDSampler.preset <jemfast.sampling.SGLDSampler.preset>` to start
            from, one of :data:`jemfast.sampling.PRESETS` ("jem", "jempp", "sadajem").
        buffer_size: rows of the replay buffer (one unconditional partition, uniform init).
        options: keyword arguments of :class:`~jemfast.sampling.SGLDSampler` that replace the
            preset's values (and the trainer's temperature, amp_dtype and noise seed), e.g.
            ``{"n_steps": 5}``. Stored as a read-only copy.

    Raises:
        ValueError: an unknown preset or a buffer size that is not a positive int.
        TypeError: options that are not a mapping with str keys.
    """

    preset: str = "jem"
    buffer_size: int = 10000
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ValueError(f"DefaultSampler.preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        size = self.buffer_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"DefaultSampler.buffer_size must be a positive int, got {size!r}")
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise TypeError(f"DefaultSampler.options must be a mapping with str keys, got {self.options!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __repr__(self) -> str:
        options = dict(self.options)
        return f"DefaultSampler(preset={self.preset!r}, buffer_size={self.buffer_size!r}, options={options!r})"

    def __reduce__(self):  # a mappingproxy does not pickle or deepcopy; the copy it wraps does
        return (type(self), (self.preset, self.buffer_size, dict(self.options)))

    def describe(self) -> str:
        """The name a run's config record gives this sampler: ``"default:<preset>"``."""
        return f"default:{self.preset}"

    def build(
        self,
        module: nn.Module,
        sample_shape: tuple[int, ...],
        device: torch.device,
        *,
        buffer_seed: int,
        noise_seed: int,
        temperature: float = 1.0,
        amp_dtype: torch.dtype | None = None,
    ) -> SGLDSampler:
        """The sampler: ``SGLDSampler.preset(preset, module, buffer, **options)``.

        Args:
            module: the model to sample from (the underlying module, not a DDP wrapper).
            sample_shape: the shape of one input.
            device: where the buffer lives and the chains run.
            buffer_seed, noise_seed: keys of the buffer's and the chains' random streams.
            temperature, amp_dtype: the sampler's, unless ``options`` set them.

        Building consumes nothing from torch's global generators (CPU and ``device``), so a
        run sees the same random streams whether its sampler was built early or late.
        """
        device = torch.device(device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # Unconditional JEM sampling: one buffer partition, not one per class.
            buffer = ReplayBuffer(
                sample_shape,
                size=self.buffer_size,
                n_classes=None,
                init="uniform",
                device=device,
                seed=buffer_seed,
            )
            options = {"temperature": temperature, "amp_dtype": amp_dtype, "seed": noise_seed, **self.options}
            sampler = SGLDSampler.preset(self.preset, module, buffer, **options)
        logger.info(
            "built default %r sampler with a buffer of %d x %s on %s",
            self.preset,
            self.buffer_size,
            sample_shape,
            device,
        )
        return sampler
