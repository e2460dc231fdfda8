"""A run's predictions on one data split, stored as a .npz file.

The file holds ``logits`` (N, C) float32, ``labels`` (N,) int64 and, when the
split has them, ``subsets`` (N,) of strings naming the subset of each example
(for instance the test-duration subsets "1s", "3s", "full"). Strings are
stored as a fixed-width unicode array so the file loads with
``allow_pickle=False``. Files are written to a temporary file in the same folder
and renamed into place, so a crash mid-write never leaves a truncated file under
the final name; a damaged file is refused on load with a message naming it.
"""

from __future__ import annotations

import logging
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import _to_numpy, as_labels, as_scores

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Logits and labels of one split, with an optional subset name per example.

    Attributes:
        logits: (N, C) float32 logits.
        labels: (N,) int64 class labels in [0, C).
        subsets: (N,) unicode strings, or None.

    Numpy arrays and torch tensors are accepted and converted; inconsistent
    shapes, labels out of range and non-finite logits raise ValueError.
    """

    logits: np.ndarray
    labels: np.ndarray
    subsets: np.ndarray | None = None

    def __post_init__(self) -> None:
        logits = as_scores(self.logits, "logits").astype(np.float32)
        labels = as_labels(self.labels, n_classes=logits.shape[1])
        if labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"labels has {labels.shape[0]} entries but logits has {logits.shape[0]} rows; expected the same N"
            )
        subsets = None
        if self.subsets is not None:
            subsets = _to_numpy(self.subsets, "subsets")
            if subsets.ndim != 1 or subsets.shape[0] != labels.shape[0]:
                raise ValueError(f"subsets must have shape ({labels.shape[0]},), got shape {subsets.shape}")
            if subsets.dtype.kind not in "UO":
                raise TypeError(f"subsets must hold strings, got dtype {subsets.dtype}")
            if subsets.dtype.kind == "O" and not all(isinstance(s, str) for s in subsets):
                raise TypeError("subsets must hold strings only")
            subsets = subsets.astype(str)
        self.logits, self.labels, self.subsets = logits, labels, subsets

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes C."""
        return int(self.logits.shape[1])

    def subset_names(self) -> list[str]:
        """The distinct subset names in order of first appearance (empty without subsets)."""
        if self.subsets is None:
            return []
        _, first = np.unique(self.subsets, return_index=True)
        return [str(self.subsets[i]) for i in sorted(first)]

    def subset(self, name: str) -> Predictions:
        """The predictions of the examples whose subset is ``name``.

        Raises ValueError when there are no subsets or ``name`` is not one of them.
        """
        if self.subsets is None:
            raise ValueError(f"these predictions have no subsets; cannot select subset {name!r}")
        mask = self.subsets == name
        if not mask.any():
            raise ValueError(f"no subset named {name!r}; available: {self.subset_names()}")
        return Predictions(self.logits[mask], self.labels[mask], self.subsets[mask])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the predictions to ``path`` (.npz, uncompressed) atomically and return the path.

        ".npz" is appended when the name lacks it; the returned path is the file
        written. The arrays go to a temporary file in the same folder that is
        then renamed over ``path``, so readers see the old file or the new one,
        never a partial one.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"logits": self.logits.astype(np.float32), "labels": self.labels.astype(np.int64)}
        if self.subsets is not None:
            arrays["subsets"] = self.subsets.astype(str)
        _write_npz_atomically(path, arrays)
        logger.debug("wrote %d predictions over %d classes to %s", len(self), self.n_classes, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictions:
        """Read predictions written by :meth:`save` (``np.load`` with ``allow_pickle=False``).

        Raises FileNotFoundError for a missing file and ValueError naming the
        file when it is truncated, corrupt, not an .npz archive, or lacks arrays.
        """
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError(f"holds a single {type(data).__name__}, not an .npz archive")
            with data:
                missing = {"logits", "labels"} - set(data.files)
                if missing:
                    raise ValueError(f"lacks the arrays {sorted(missing)}; found {data.files}")
                logits, labels = data["logits"], data["labels"]
                subsets = data["subsets"] if "subsets" in data.files else None
        except FileNotFoundError:
            raise
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"{path}: not a readable predictions file ({exc}); expected an .npz written by "
                "Predictions.save: rerun the evaluation to write it again"
            ) from exc
        try:
            return cls(logits, labels, subsets)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{path}: {exc}") from exc


def _write_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` into a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    # A fresh name opened exclusively (not mkstemp) so the file gets the usual permissions, not 0600.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    handle = open(tmp, "xb")
    try:
        with handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def as_predictions(preds, name: str = "predictions") -> Predictions:
    """``preds`` itself when it is a Predictions, else loaded from a ``.npz`` path."""
    if isinstance(preds, Predictions):
        return preds
    if isinstance(preds, (str, os.PathLike)):
        return Predictions.load(preds)
    raise TypeError(f"{name} must be a Predictions or a path to a .npz file, got {type(preds).__name__}")
