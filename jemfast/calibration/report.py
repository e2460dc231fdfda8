"""Calibration tables like the paper's Tables 2 and 3, as Markdown and JSON.

For each task the table compares five methods on the test split: the softmax
classifier, the softmax classifier after temperature scaling ("softmax + TS")
and after logistic scaling ("softmax + LS"), the energy model, and the energy
model after temperature scaling ("energy + TS"). Calibrators are fitted on the
dev split of the same model. ECE and accuracy are in percent, NLL in nats,
ECE with equal-width bins (15 by default).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from jemfast._checks import check_int

from .metrics import bootstrap_ci, evaluate_logits, expected_calibration_error
from .predictions import Predictions, as_predictions
from .scalers import Calibrator, LogisticScaling, TemperatureScaling

logger = logging.getLogger(__name__)

REPORT_ROWS = ("softmax", "softmax + TS", "softmax + LS", "energy", "energy + TS")
ALL_SUBSETS = "all"
RUN_KEYS = ("softmax_dev", "softmax_test", "energy_dev", "energy_test")


def _rows_for(
    method: str, test: Predictions, calibrator: Calibrator | None, n_bins: int, n_bootstrap: int, seed: int
) -> list[dict]:
    """One row for the whole test split and one per subset (in order of appearance)."""
    groups = [(ALL_SUBSETS, test)] + [(name, test.subset(name)) for name in test.subset_names()]
    rows = []
    for subset, preds in groups:
        logits = preds.logits if calibrator is None else calibrator.transform(preds.logits)
        metrics = evaluate_logits(preds.labels, logits, n_bins=n_bins)
        row = {
            "method": method,
            "subset": subset,
            "ece": metrics["ece"],
            "acc": metrics["acc"],
            "nll": metrics["nll"],
            "brier": metrics["brier"],
            "mce": metrics["mce"],
            "n": metrics["n"],
        }
        if n_bootstrap > 0:
            ci = bootstrap_ci(
                expected_calibration_error,
                preds.labels,
                logits=logits,
                n_resamples=n_bootstrap,
                seed=seed,
                n_bins=n_bins,
            )
            row["ece_low"], row["ece_high"] = 100.0 * ci.low, 100.0 * ci.high
        rows.append(row)
    return rows


def compare_models(
    softmax_dev,
    softmax_test,
    energy_dev,
    energy_test,
    n_bins: int = 15,
    calibrator_dir: str | os.PathLike | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> list[dict]:
    """Evaluate the five methods of the paper's calibration table on one task.

    Args:
        softmax_dev, softmax_test: :class:`Predictions` (or .npz paths) of the
            softmax classifier on the dev split (where calibrators are fitted)
            and on the test split.
        energy_dev, energy_test: the same for the energy model.
        n_bins: equal-width bins for ECE and MCE.
        calibrator_dir: when given, the fitted calibrators are saved there as
            JSON (softmax_ts.json, softmax_ls.json, energy_ts.json).
        n_bootstrap: when positive, each row also gets ece_low and ece_high,
            a 95% percentile bootstrap interval of the ECE (percent) over
            ``n_bootstrap`` resamples of the test examples drawn with ``seed``.

    Returns:
        Rows (dicts) with keys method (one of :data:`REPORT_ROWS`), subset
        ("all", then each subset name of the test predictions), ece (percent),
        acc (percent), nll (nats), brier, mce (percent) and n.
    """
    n_bootstrap = check_int("n_bootstrap", n_bootstrap, minimum=0)
    named = dict(zip(RUN_KEYS, (softmax_dev, softmax_test, energy_dev, energy_test), strict=True))
    preds = {key: as_predictions(value, key) for key, value in named.items()}
    for model in ("softmax", "energy"):
        dev, test = preds[f"{model}_dev"], preds[f"{model}_test"]
        if dev.n_classes != test.n_classes:
            raise ValueError(
                f"{model}_dev has {dev.n_classes} classes but {model}_test has {test.n_classes}; expected the same C"
            )
    calibrators = {
        "softmax_ts": TemperatureScaling().fit(preds["softmax_dev"].logits, preds["softmax_dev"].labels),
        "softmax_ls": LogisticScaling().fit(preds["softmax_dev"].logits, preds["softmax_dev"].labels),
        "energy_ts": TemperatureScaling().fit(preds["energy_dev"].logits, preds["energy_dev"].labels),
    }
    if calibrator_dir is not None:
        for name, calibrator in calibrators.items():
            calibrator.save(Path(calibrator_dir) / f"{name}.json")
    plan = (
        ("softmax", preds["softmax_test"], None),
        ("softmax + TS", preds["softmax_test"], calibrators["softmax_ts"]),
        ("softmax + LS", preds["softmax_test"], calibrators["softmax_ls"]),
        ("energy", preds["energy_test"], None),
        ("energy + TS", preds["energy_test"], calibrators["energy_ts"]),
    )
    rows = []
    for method, test, calibrator in plan:
        rows.extend(_rows_for(method, test, calibrator, n_bins, n_bootstrap, seed))
    return rows


def _check_rows(rows: Sequence[Mapping]) -> None:
    if not rows:
        raise ValueError("rows is empty; nothing to report")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        missing = {"method", "ece", "acc", "nll"} - set(row)
        if missing:
            raise ValueError(f"rows[{i}] lacks the keys {sorted(missing)}")


def _unique(values) -> list:
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _markdown(rows: Sequence[Mapping], title: str) -> str:
    """One table per subset; methods as rows, an ECE/ACC/NLL triple per task as columns."""
    tasks = _unique(row.get("task") for row in rows)
    subsets = _unique(row.get("subset", ALL_SUBSETS) for row in rows)
    lines = [
        f"# {title}",
        "",
        "ECE and ACC in percent, NLL in nats; best ECE per column in bold; "
        "brackets give a 95% bootstrap interval where computed.",
        "",
    ]
    for subset in subsets:
        if len(subsets) > 1:
            lines += [f"## Subset: {subset}", ""]
        in_subset = [r for r in rows if r.get("subset", ALL_SUBSETS) == subset]
        header = ["Method"]
        for task in tasks:
            prefix = f"{task} " if task is not None else ""
            header += [f"{prefix}ECE (%)", f"{prefix}ACC (%)", f"{prefix}NLL"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        cell = {(r.get("task"), r["method"]): r for r in in_subset}
        best_ece = {task: min((r["ece"] for r in in_subset if r.get("task") == task), default=None) for task in tasks}
        for method in _unique(r["method"] for r in in_subset):
            out = [str(method)]
            for task in tasks:
                row = cell.get((task, method))
                if row is None:
                    out += ["-", "-", "-"]
                    continue
                ece = _fmt(row["ece"], 2)
                if "ece_low" in row and "ece_high" in row:
                    ece = f"{ece} [{_fmt(row['ece_low'], 2)}, {_fmt(row['ece_high'], 2)}]"
                out += [f"**{ece}**" if row["ece"] == best_ece[task] else ece, _fmt(row["acc"], 2), _fmt(row["nll"], 3)]
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(
    rows: Sequence[Mapping], out_dir: str | os.PathLike, title: str = "Calibration", name: str = "calibration"
) -> tuple[Path, Path]:
    """Write ``rows`` as a Markdown table and as JSON into ``out_dir``.

    Rows are dicts with at least method, ece, acc and nll, optionally task and
    subset (as produced by :func:`compare_models` or :func:`report_tasks`).

    Returns:
        (path of ``<name>.md``, path of ``<name>.json``); the JSON holds
        ``{"title": title, "rows": rows}``.
    """
    _check_rows(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{name}.md", out_dir / f"{name}.json"
    md_path.write_text(_markdown(rows, title), encoding="utf-8")
    json_path.write_text(
        json.dumps({"title": title, "rows": [dict(r) for r in rows]}, indent=2) + "\n", encoding="utf-8"
    )
    logger.info("wrote %s and %s", md_path, json_path)
    return md_path, json_path


def report_tasks(
    runs: Mapping[str, Mapping[str, object]],
    out_dir: str | os.PathLike,
    n_bins: int = 15,
    title: str = "Calibration",
    name: str = "calibration",
    n_bootstrap: int = 0,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Compare the five methods on several tasks and write one report, in one call.

    Args:
        runs: task name -> mapping with the keys softmax_dev, softmax_test,
            energy_dev and energy_test, each a :class:`Predictions` or a path
            to its .npz file.
        out_dir: where the report (and the fitted calibrators, under
            ``calibrators/<task>/``) are written.
        n_bins: equal-width bins for ECE.
        n_bootstrap, seed: bootstrap intervals of the ECE, as in :func:`compare_models`.

    Returns:
        (Markdown path, JSON path), as :func:`write_report`.
    """
    if not runs:
        raise ValueError("runs is empty; expected task name -> predictions")
    for task, splits in runs.items():
        missing = set(RUN_KEYS) - set(splits)
        if missing:
            raise ValueError(f"run {task!r} lacks {sorted(missing)}; expected the keys {list(RUN_KEYS)}")
    rows = []
    for task, splits in runs.items():
        task_rows = compare_models(
            *(splits[key] for key in RUN_KEYS),
            n_bins=n_bins,
            n_bootstrap=n_bootstrap,
            seed=seed,
            calibrator_dir=Path(out_dir) / "calibrators" / str(task),
        )
        rows.extend({"task": str(task), **row} for row in task_rows)
    return write_report(rows, out_dir, title=title, name=name)
