"""Sampling from a classifier's energy: the replay buffer, the SGLD sampler and its steps, CUDA-graph capture.

Names are loaded on first use, so that :mod:`jemfast.sampling.choices` (what a config
may name) can be read without importing torch.
"""

from __future__ import annotations

from jemfast._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
