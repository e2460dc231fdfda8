"""Functional ops the sampler and users call: the fused SGLD update, the energy, counter-based RNG."""

from jemfast.ops.energy import energy
from jemfast.ops.philox import check_rng_state, derive_seed, make_rng_state, random_normal, random_uniform
from jemfast.ops.sgld import sgld_update_

__all__ = [
    "energy",
    "sgld_update_",
    "make_rng_state",
    "check_rng_state",
    "derive_seed",
    "random_normal",
    "random_uniform",
]
