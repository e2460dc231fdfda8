"""Sampling from a classifier's energy: the replay buffer, the SGLD sampler and its steps, CUDA-graph capture.

Names are loaded on first use, so that :mod:`jemfast.sampling.choices` (what a config
may name) can be read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS = {
    "ReplayBuffer": "buffer",
    "INIT_CHOICES": "choices",
    "MODEL_MODES": "choices",
    "frozen_norm_statistics": "norm_stats",
    "reestimate_norm_statistics": "norm_stats",
    "PRESETS": "sampler",
    "SamplerPreset": "sampler",
    "SamplerSettings": "sampler",
    "SGLDSampler": "sampler",
    "input_gradient_only": "sampler",
    "model_mode": "sampler",
    "LangevinStep": "steps",
    "PYLDStep": "steps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"jemfast.sampling.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'jemfast.sampling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
