"""Per-step metrics kept on the device until someone looks at them.

Reading a CUDA tensor's value blocks the host until the GPU has caught up, which
stalls the pipeline when done every step. A step's metrics therefore stay a small
device tensor (plus CUDA events for timing); :class:`StepMetrics` turns them into
Python floats only when a value is read, and the trainer reads them in bulk at
its sync interval (:func:`step_records`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = ["StepClock", "StepMetrics", "DEVICE_METRICS", "step_records"]

# Order of the values in a step's device tensor.
DEVICE_METRICS = ("ce", "acc", "e_data", "e_samples", "e_gap", "loss")


class StepClock:
    """Marks points in a step: CUDA events on a GPU (no sync), ``perf_counter`` otherwise."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def mark(self):
        if self.cuda:
            # On the trainer's device's stream, which need not be the current device.
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        """Seconds between two marks; waits for the end event on a GPU."""
        if start is None or end is None:
            return float("nan")
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return end - start


class StepMetrics(Mapping):
    """Read-only mapping ``name -> float`` for one training step, materialised on first read.

    Keys: ``step, epoch, ce, acc`` (percent), ``e_data, e_samples, e_gap`` (mean energies of the
    batch and of the samples, and data minus samples; NaN without sampling), ``loss, lr,
    sample_time_s, step_time_s``.
    """

    def __init__(self, step: int, epoch: int, values: torch.Tensor, lr: float, clock: StepClock, marks: tuple):
        self._head = {"step": float(step), "epoch": float(epoch)}
        self._values = values
        self._lr = lr
        self._clock = clock
        self._marks = marks
        self._data: dict[str, float] | None = None

    @property
    def step(self) -> int:
        return int(self._head["step"])

    def device_values(self) -> torch.Tensor:
        """The unsynchronised values, ordered as ``DEVICE_METRICS``."""
        return self._values

    def materialise(self, values: list[float] | None = None) -> dict[str, float]:
        """Python floats for every key; ``values`` may come from a batched transfer."""
        if self._data is None:
            if values is None:
                values = self._values.tolist()
            data = dict(self._head)
            data.update(zip(DEVICE_METRICS, (float(v) for v in values), strict=True))
            data["acc"] *= 100.0
            data["lr"] = float(self._lr)
            t_start, t_sampled, t_end = self._marks
            data["sample_time_s"] = self._clock.seconds(t_start, t_sampled) if t_sampled is not None else 0.0
            data["step_time_s"] = self._clock.seconds(t_start, t_end)
            self._data = data
        return self._data

    def __getitem__(self, key: str) -> float:
        return self.materialise()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.materialise())

    def __len__(self) -> int:
        return len(self.materialise())

    def __repr__(self) -> str:
        return f"StepMetrics({self.materialise()!r})"


def step_records(metrics: Sequence[StepMetrics]) -> list[dict[str, Any]]:
    """The ``"step"`` records of metrics.jsonl for ``metrics``, read from the device in one
    transfer: ``{"kind": "step", "step": int, "epoch": int, <the other keys>: float}`` each."""
    if not metrics:
        return []
    rows = torch.stack([m.device_values() for m in metrics]).tolist()
    records = []
    for m, row in zip(metrics, rows, strict=True):
        record = {"kind": "step", **m.materialise(row)}
        record["step"], record["epoch"] = int(record["step"]), int(record["epoch"])
        records.append(record)
    return records
