"""Optional dependencies: which extra brings each, and one clear error when it is missing.

The core (``pip install jemfast``: torch, numpy, pyyaml) runs the ops, the sampler and
the trainer. Speech features, plots and the numba CPU kernels come with extras::

    pip install "jemfast[speech]"   # librosa, soundfile: audio and log-Mel features
    pip install "jemfast[plots]"    # matplotlib: reliability diagrams, training curves
    pip install "jemfast[cpu]"      # numba: the fused CPU kernels
    pip install "jemfast[all]"      # everything, with tqdm, nvtx and triton
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the extra that installs it
EXTRA_OF = {
    "librosa": "speech",
    "soundfile": "speech",
    "matplotlib": "plots",
    "numba": "cpu",
    "tqdm": "all",
    "nvtx": "all",
    "triton": "triton",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that brings it.

    Args:
        module: the importable name (e.g. "librosa", "matplotlib.figure").
        purpose: what needs it, for the message (e.g. "log-Mel features").
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = EXTRA_OF.get(top, "all")
        raise MissingExtraError(
            f'{purpose} needs {top}, which is not installed: pip install "jemfast[{extra}]"'
        ) from err
