"""Safe, atomic checkpoint files and capture/restore of every random number generator.

A checkpoint is a nested structure of dicts, lists, tuples, tensors and plain Python
values, written with ``torch.save`` to a temporary file in the destination directory
and renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a crash
mid-write never leaves a truncated checkpoint. Loading uses ``torch.load(weights_only=True)``,
whose unpickler accepts only those types: a file carrying any other pickled object is
refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "clone_state",
]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unsafe (arbitrary pickled objects) or malformed."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same directory, then rename).

    Args:
        path: destination file; its parent directory is created.
        state: dicts, lists, tuples, tensors, numbers, strings, bools and None only.

    Returns:
        The destination path.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without running any code from it.

    Raises:
        CheckpointError: the file does not exist, holds pickled objects other than
            tensors and plain containers/values, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as err:
        raise CheckpointError(
            f"refusing checkpoint {str(path)!r}: it is not a plain tensor/value file "
            f"(safe loading with weights_only=True failed: {err})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, expected a dict")
    return state


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's (CPU and every CUDA device) global generators.

    Only tensors and plain values, so the result can be stored in a safe checkpoint.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored when both sides have them."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = [s.cpu() for s in state["cuda"]]
        n = min(len(saved), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(saved[i], i)


def clone_state(tree: Any) -> Any:
    """Deep copy of a nested state: tensors cloned on their device, containers rebuilt.

    Used for in-memory snapshots; ``state_dict()`` results alias live tensors.
    """
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: clone_state(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [clone_state(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(clone_state(v) for v in tree)
    return tree
