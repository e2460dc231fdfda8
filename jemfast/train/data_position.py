"""Where a fit stands in its training data, so a resumed run trains on an uninterrupted run's batches.

A position is a plain dict, saved as the ``"fit"`` entry of a trainer checkpoint:

- ``batch_in_epoch``: batches of the current epoch already trained on (the trainer counts them);
- ``epoch_rng``, ``epoch_gen``: torch's global generator state and the loader's generator state
  when the epoch began (None before it began), from which its shuffle is drawn again on resume;
- ``next_gen``: the loader's generator state at the end of the last epoch, where the next
  epoch's shuffle starts (a resumed run rebuilds and reseeds its loader, so it is set back).

:func:`epoch_batches` starts an epoch's iteration, or resumes one mid-way, from a position;
:func:`epoch_start` is the position after an epoch ends (and before the first).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["epoch_batches", "epoch_start"]


def _generator(loader: Iterable | None) -> torch.Generator | None:
    """The loader's own ``torch.Generator`` (a DataLoader's shuffle), or None."""
    generator = getattr(loader, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def epoch_start(loader: Iterable | None = None) -> dict[str, Any]:
    """The position at the start of an epoch: no batch taken, the epoch not begun, and
    ``next_gen`` the state of ``loader``'s generator now (None without one)."""
    generator = _generator(loader)
    return {
        "batch_in_epoch": 0,
        "epoch_rng": None,
        "epoch_gen": None,
        "next_gen": generator.get_state() if generator is not None else None,
    }


def epoch_batches(loader: Iterable, epoch: int, position: dict[str, Any]) -> Iterator:
    """An iterator over epoch ``epoch`` of ``loader``, from ``position`` (updated in place).

    The loader's sampler and dataset are told the epoch (``set_epoch``: a DistributedSampler's
    shuffle, a ChunkDataset's random chunks, both functions of seed and epoch). At an epoch's
    start the loader's generator is set to ``next_gen`` and the generator states are recorded
    in ``position``; mid-way (``batch_in_epoch > 0``), the epoch's shuffle is drawn again from
    the recorded states and the batches already trained on are skipped, leaving torch's
    global generator as it was.
    """
    for part in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
    generator = _generator(loader)
    if position["batch_in_epoch"] == 0 and generator is not None and position.get("next_gen") is not None:
        generator.set_state(position["next_gen"])
    if position["batch_in_epoch"] > 0 and position["epoch_rng"] is not None:
        current = torch.get_rng_state()
        torch.set_rng_state(position["epoch_rng"])
        if generator is not None and position["epoch_gen"] is not None:
            generator.set_state(position["epoch_gen"])
        # A RandomSampler draws its seed at the first next(), so skip before restoring.
        iterator = iter(loader)
        for _ in range(position["batch_in_epoch"]):
            next(iterator)
        torch.set_rng_state(current)
        return iterator
    position["batch_in_epoch"] = 0
    position["epoch_rng"] = torch.get_rng_state()
    position["epoch_gen"] = generator.get_state() if generator is not None else None
    return iter(loader)
