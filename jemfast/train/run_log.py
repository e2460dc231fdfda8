"""Run directory output: metrics.jsonl (written and read here) and a progress display.

metrics.jsonl holds one JSON object per line with a ``"kind"``:

- ``"step"``: ``step, epoch, ce, acc, e_data, e_samples, e_gap, loss, lr, sample_time_s, step_time_s``
  (energies are batch means; ``e_samples``/``e_gap`` are null when no sampling runs);
- ``"epoch"``: ``epoch, step, val_acc, val_nll, val_ece, train_ce, train_acc, lr, time_s``
  (accuracy and ECE in percent; ``val_*`` null without a validation loader);
- ``"rollback"``: ``step, restored_step, rollbacks, lr_scale, reason``;
- ``"config"``: the trainer's settings (:meth:`JEMTrainer.config`), at the start of each ``fit``.

Only rank 0 writes. The progress display is a tqdm bar when stderr is a terminal and
plain log lines (``logging``) otherwise, at most one every :data:`LOG_INTERVAL_S`
seconds (every step's record is in metrics.jsonl anyway).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "read_epoch_records"]

logger = logging.getLogger(__name__)

# Plain progress lines (no terminal): one per this many seconds keeps CI and log files readable.
LOG_INTERVAL_S = 20.0


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/Inf; null keeps every line parseable by strict readers.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Writer for one run directory (or only a console display when ``run_dir`` is None)."""

    def __init__(self, run_dir: str | Path | None, enabled: bool = True, progress: bool | None = None):
        self.enabled = enabled
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._file = None
        if self.enabled and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        use_bar = sys.stderr.isatty() if progress is None else progress
        # Without tqdm (an optional dependency) the display is plain log lines.
        self._use_bar = bool(use_bar) and enabled and importlib.util.find_spec("tqdm") is not None
        self._bar = None
        self._last_line = -math.inf

    @property
    def metrics_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "metrics.jsonl"

    def write_config(self, config: dict[str, Any]) -> None:
        """Append the trainer's settings as a ``"config"`` record (one per fit call, so a resumed
        run shows the settings it continued with). A run directory's only config *file* is the
        recipe the command line writes (config.yaml)."""
        self.write({"kind": "config", **json.loads(json.dumps(config, sort_keys=True, default=str))})

    def write(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (flushed, so a crash loses nothing written)."""
        if not self.enabled or self.run_dir is None:
            return
        if self._file is None:
            self._file = open(self.metrics_path, "a", encoding="utf-8")
        self._file.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def start_epoch(self, epoch: int, total: int | None) -> None:
        if not self._use_bar:
            return
        from tqdm import tqdm

        self.close_bar()
        self._bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)

    def progress(self, n_steps: int, summary: dict[str, float]) -> None:
        """Advance the display by ``n_steps`` with the latest ``summary`` of step metrics."""
        if not self.enabled:
            return
        text = {k: f"{v:.4g}" for k, v in summary.items() if isinstance(v, float)}
        if self._bar is not None:
            self._bar.update(n_steps)
            self._bar.set_postfix(text, refresh=False)
        elif time.monotonic() - self._last_line >= LOG_INTERVAL_S:
            self._last_line = time.monotonic()
            step = summary.get("step")
            text.pop("step", None)
            step = int(step) if isinstance(step, float) and math.isfinite(step) else step
            logger.info("step %s: %s", step, " ".join(f"{k}={v}" for k, v in text.items()))

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.close_bar()
        if self._file is not None:
            self._file.close()
            self._file = None


def read_epoch_records(metrics_jsonl_path: str | os.PathLike) -> list[dict]:
    """The ``"kind": "epoch"`` records of a run's JSON Lines log, sorted by epoch.

    Blank lines and records of other kinds are skipped; a line that is not a
    JSON object raises ValueError naming the line. An epoch logged twice (a run killed
    after its epoch record but before its checkpoint repeats the epoch on resume) keeps
    its last record.
    """
    records = []
    with open(metrics_jsonl_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{metrics_jsonl_path}:{lineno} is not valid JSON: {err}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{metrics_jsonl_path}:{lineno} is not a JSON object")
            if record.get("kind") == "epoch":
                if "epoch" not in record:
                    raise ValueError(f"{metrics_jsonl_path}:{lineno} is an epoch record without an 'epoch' field")
                records.append(record)
    latest = {r["epoch"]: r for r in records}
    return [latest[epoch] for epoch in sorted(latest)]
