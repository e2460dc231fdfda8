"""Names the sampling layer accepts, without importing torch.

Recipes (:mod:`jemfast.recipes`) validate against these when a config is read, before
anything heavy is imported; the replay buffer and the sampler check the same tuples.
"""

# How the replay buffer draws fresh chains (jemfast.sampling.ReplayBuffer's ``init``).
INIT_CHOICES = ("uniform", "normal", "class_gaussian")
# The model's mode during a chain (jemfast.sampling.SGLDSampler's ``model_mode``).
MODEL_MODES = ("eval", "train", "keep")

__all__ = ["INIT_CHOICES", "MODEL_MODES"]
