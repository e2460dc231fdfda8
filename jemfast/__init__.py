"""jemfast: fast Joint Energy-based Model training and calibration of speech classifiers.

The public API is imported lazily, so ``import jemfast`` stays cheap and a
sub-package is loaded only when one of its names is used::

    from jemfast import JEMTrainer, JEMLoss, SGLDSampler, ReplayBuffer
    from jemfast.ops import sgld_update_, energy

Layers (data flows one way, lower layers never import higher ones)::

    data -> models -> ops/backends -> sampling -> train -> calibration -> pipeline -> cli

with one exception by design: ``calibration.metrics`` (numpy and torch only) is a
leaf that ``train`` uses to score validation, so the trainer and the reports compute
ECE and NLL with the same code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "sgld_update_": "jemfast.ops",
    "energy": "jemfast.ops",
    "make_rng_state": "jemfast.ops",
    "WideResNet": "jemfast.models",
    "wrn28_5": "jemfast.models",
    "wrn16_2": "jemfast.models",
    "ReplayBuffer": "jemfast.sampling",
    "SGLDSampler": "jemfast.sampling",
    "JEMTrainer": "jemfast.train",
    "JEMLoss": "jemfast.train",
    "DefaultSampler": "jemfast.train",
    "paper_optimizer": "jemfast.train",
    "TemperatureScaling": "jemfast.calibration",
    "LogisticScaling": "jemfast.calibration",
    "evaluate_logits": "jemfast.calibration",
}

__all__ = sorted(_EXPORTS) + ["ops", "calibration", "data", "models", "sampling", "train", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in ("ops", "calibration", "data", "models", "sampling", "train", "backends"):
        return importlib.import_module(f"jemfast.{name}")
    raise AttributeError(f"module 'jemfast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
