"""Safe, atomic checkpoint files and capture/restore of every random number generator.

A checkpoint is a nested structure of dicts, lists, tuples, tensors and plain Python
values, written with ``torch.save`` to a temporary file in the destination directory
and renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a crash
mid-write never leaves a truncated checkpoint. Loading uses ``torch.load(weights_only=True)``,
whose unpickler accepts only those types: a file carrying any other pickled object is
refused instead of executed.

Every checkpoint carries a SHA-256 checksum of its contents (each tensor's dtype, shape
and bytes, and every plain value) under the reserved key ``"__checksum__"``; loading
recomputes it and refuses a file whose bytes changed on disk, which ``torch.load`` alone
does not notice inside tensor data. Files written before checksums existed still load.

The temporary file is named ``.<name>.<host>-<pid>.<random>.tmp``. One left behind by a
killed writer is deleted by the next save into the same directory once its writer is
gone or it was not modified for an hour (see :mod:`jemfast._leftovers`): a live writer
streams into its file and renames it right after, so it is never idle that long.

The trainer's checkpoints are states in :data:`CHECKPOINT_FORMAT`
(:meth:`JEMTrainer.state_dict <jemfast.train.JEMTrainer.state_dict>`):
:func:`check_trainer_state` refuses anything else and :func:`model_weights` takes the weights
out of one for another model; :func:`clone_state` and :func:`to_cpu` copy nested states.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jemfast._leftovers import owner_tag, stale_leftovers

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "clone_state",
    "to_cpu",
    "state_checksum",
    "remove_stale_temporaries",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEYS",
    "check_trainer_state",
    "model_weights",
]

CHECKSUM_KEY = "__checksum__"
CHECKSUM_ALGORITHM = "sha256"
# save_checkpoint's temporary files: .<target>.<host>-<pid>.<8 random chars>.tmp, and without the
# owner tag in older versions; the random part is what tempfile.mkstemp appends.
_TEMPORARY_PATTERN = re.compile(r"\.(?P<target>.+?)\.(?:(?P<owner>[A-Za-z0-9_-]+-\d+)\.)?[a-z0-9_]{8}\.tmp")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unsafe (arbitrary pickled objects) or malformed."""


def state_checksum(state: Any) -> str:
    """SHA-256 (hex) of a nested checkpoint state: tensors' dtype, shape and bytes, and every plain value.

    Containers are walked in order, so the digest of a state equals the digest
    of that state after a save/load round trip, wherever its tensors live.
    """
    digest = hashlib.sha256()
    _feed_checksum(digest, state)
    return digest.hexdigest()


def _feed_checksum(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        if tensor.is_quantized:  # the stored integers are what a flipped byte would change
            tensor = tensor.int_repr()
        tensor = tensor.resolve_conj().resolve_neg().cpu().contiguous()
        digest.update(f"tensor|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict|{len(value)}|".encode())
        for key, item in value.items():
            _feed_checksum(digest, key)
            _feed_checksum(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'list' if isinstance(value, list) else 'tuple'}|{len(value)}|".encode())
        for item in value:
            _feed_checksum(digest, item)
    else:  # numbers, strings, bools, None, dtypes: repr is exact and round-trips
        digest.update(f"{type(value).__name__}|{value!r}|".encode())


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files of :func:`save_checkpoint` in ``directory`` whose writer was killed.

    A file is stale when its writer process is gone or it was not modified for
    an hour (:func:`jemfast._leftovers.is_stale`); files of live writers are
    left alone. Returns the files removed.
    """
    removed = []
    for path in stale_leftovers(directory, _TEMPORARY_PATTERN, folders=False):
        try:
            path.unlink()
        except FileNotFoundError:  # another writer removed it first
            continue
        logger.info("removed %s, left by a checkpoint write that did not finish", path)
        removed.append(path)
    return removed


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same directory, then rename).

    A SHA-256 checksum of ``state`` is stored with it (under ``"__checksum__"``,
    which ``state`` must not use) and verified by :func:`load_checkpoint`.
    Temporary files of killed earlier writes in the directory are removed first.

    Args:
        path: destination file; its parent directory is created.
        state: dicts, lists, tuples, tensors, numbers, strings, bools and None only.

    Returns:
        The destination path.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if CHECKSUM_KEY in state:
        raise ValueError(f"state must not have the key {CHECKSUM_KEY!r}: save_checkpoint stores the checksum there")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    payload = {**state, CHECKSUM_KEY: {"algorithm": CHECKSUM_ALGORITHM, "digest": state_checksum(state)}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
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

    The stored checksum is verified and removed from the returned dict; a file
    without one (written by an older version) loads unverified.

    Raises:
        CheckpointError: the file does not exist, holds pickled objects other than
            tensors and plain containers/values, is not a dict, or its contents do
            not match its checksum (bytes changed on disk).
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
    _verify_checksum(path, state, state.pop(CHECKSUM_KEY, None))
    return state


def _verify_checksum(path: Path, state: dict[str, Any], stored: Any | None) -> None:
    """Raise CheckpointError naming ``path`` unless ``state`` matches the ``stored`` checksum record."""
    if stored is None:
        logger.debug("checkpoint %s has no checksum (written by an older version); loading it unverified", path)
        return
    if not (
        isinstance(stored, dict)
        and stored.get("algorithm") == CHECKSUM_ALGORITHM
        and isinstance(stored.get("digest"), str)
    ):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has a malformed checksum record {stored!r}; "
            f"expected {{'algorithm': {CHECKSUM_ALGORITHM!r}, 'digest': <hex>}}"
        )
    actual = state_checksum(state)
    if actual != stored["digest"]:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its contents have SHA-256 {actual}, "
            f"but it was saved with {stored['digest']}; restore it from a copy or use another checkpoint"
        )


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's (CPU and every CUDA device) global generators.

    Only tensors and plain values, so the result can be stored in a safe checkpoint.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
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


def to_cpu(tree: Any) -> Any:
    """A nested state with every tensor detached and moved to the CPU, for a checkpoint entry.

    Containers are rebuilt (their types kept); a tensor already on the CPU and other values
    are shared, not copied.
    """
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


# ---------------------------------------------------------------------- the trainer's checkpoints
# The format of JEMTrainer.state_dict() (its "format" entry) and the keys every such state has.
CHECKPOINT_FORMAT = "jemfast.trainer/1"
CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "step",
    "epoch",
    "rollbacks",
    "lr_scale",
    "best_val_nll",
    "n_classes",
    "sample_shape",
    "fit",
    "ranks",
)


def check_trainer_state(state: Any) -> None:
    """Raise CheckpointError unless ``state`` is a trainer state (a
    :meth:`JEMTrainer.state_dict() <jemfast.train.JEMTrainer.state_dict>`) of
    :data:`CHECKPOINT_FORMAT` with every key of :data:`CHECKPOINT_KEYS`."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"not a {CHECKPOINT_FORMAT} checkpoint (format = "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {', '.join(missing)}; a {CHECKPOINT_FORMAT} checkpoint has {', '.join(CHECKPOINT_KEYS)}"
        )


def model_weights(source: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The model weights in ``source``, checked to fit the model whose ``state_dict()`` is ``own``.

    Args:
        source: a trainer state (its ``"model"`` entry is taken) or a plain model ``state_dict``.
        own: the receiving model's ``state_dict()``.

    Raises:
        ValueError: the names differ (the first few missing and unexpected are named), or a
            tensor's shape differs (the first such is named).
    """
    weights = source["model"] if source.get("format") == CHECKPOINT_FORMAT else source
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"the weights do not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(
                f"the weights do not fit this model: {name} has shape {tuple(tensor.shape)} "
                f"in the source and {tuple(own[name].shape)} here"
            )
    return weights
