"""Sampling from a classifier's energy: the replay buffer, the SGLD sampler and its CUDA-graph capture."""

from jemfast.sampling.buffer import ReplayBuffer
from jemfast.sampling.norm_stats import frozen_norm_statistics, reestimate_norm_statistics
from jemfast.sampling.sampler import PRESETS, SGLDSampler, input_gradient_only, model_mode

__all__ = [
    "ReplayBuffer",
    "SGLDSampler",
    "PRESETS",
    "input_gradient_only",
    "model_mode",
    "frozen_norm_statistics",
    "reestimate_norm_statistics",
]
