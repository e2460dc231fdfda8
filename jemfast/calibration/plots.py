"""Calibration figures, written as PNG or PDF files.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas and
never through pyplot, so no window opens, no global backend is switched and
no figure stays alive in a global registry. The file type follows the
extension of ``path`` (.png or .pdf).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from jemfast._checks import check_int
from jemfast._extras import require
from jemfast.train.run_log import read_epoch_records

from .metrics import _bin_stats, _resolve, bin_edges
from .predictions import as_predictions

FigureCanvasAgg = require("matplotlib.backends.backend_agg", "plotting").FigureCanvasAgg
Figure = require("matplotlib.figure", "plotting").Figure

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".png", ".pdf")


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"path {str(path)!r} must end in one of {SUPPORTED_SUFFIXES}")
    return path


def _new_figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    logger.debug("wrote %s", path)
    return path


def _draw_reliability(ax, labels, probs: np.ndarray, n_bins: int, title: str | None) -> None:
    """Accuracy per confidence bin, the gap to the diagonal, and the ECE in percent."""
    correct = probs.argmax(axis=1) == labels
    stats = _bin_stats(correct, probs.max(axis=1), n_bins, False)
    filled = stats.count > 0
    width = 1.0 / n_bins
    lefts = stats.edges[:-1][filled]
    acc = stats.accuracy[filled]
    conf = stats.confidence[filled]
    ece = float(np.sum(stats.count[filled] / stats.count.sum() * np.abs(acc - conf)))
    ax.bar(lefts, acc, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    # The gap bar spans from the accuracy to the mean confidence of the bin.
    ax.bar(
        lefts,
        conf - acc,
        bottom=acc,
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.5,
        label="gap",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    ax.text(
        0.04,
        0.95,
        f"ECE = {100 * ece:.2f}%",
        transform=ax.transAxes,
        va="top",
        bbox=dict(boxstyle="round", facecolor="white", alpha=0.8),
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)


def reliability_diagram(
    labels, *, logits=None, probs=None, path: str | os.PathLike, n_bins: int = 15, title: str | None = None
) -> Path:
    """Reliability diagram: accuracy per equal-width confidence bin, the gap, and the ECE.

    Args:
        labels: (N,) integer labels.
        logits / probs: exactly one, (N, C).
        path: output file, .png or .pdf.
        n_bins: equal-width bins (the binning rule of :mod:`jemfast.calibration.metrics`).
        title: optional axes title.

    Returns:
        The path written.
    """
    path = _check_path(path)
    y, p, _ = _resolve(labels, logits, probs)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    fig, ax = _new_figure(4.5, 4.5)
    _draw_reliability(ax, y, p, n_bins, title)
    return _save(fig, path)


def confidence_histogram(
    labels, *, logits=None, probs=None, path: str | os.PathLike, n_bins: int = 15, title: str | None = None
) -> Path:
    """Histogram of the top-label confidence, split into correct and incorrect predictions.

    Bars are stacked and normalised by N, so their total height is 1; dashed
    lines mark the accuracy and the mean confidence, whose distance is the
    overall over- or under-confidence. Returns the path written.
    """
    path = _check_path(path)
    y, p, _ = _resolve(labels, logits, probs)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = bin_edges(n_bins)
    weights = np.full(conf.shape, 1.0 / conf.size)
    fig, ax = _new_figure(5.0, 3.8)
    ax.hist(
        [conf[correct], conf[~correct]],
        bins=edges,
        weights=[weights[correct], weights[~correct]],
        stacked=True,
        color=["tab:green", "tab:red"],
        edgecolor="black",
        linewidth=0.5,
        label=["correct", "incorrect"],
    )
    ax.axvline(
        correct.mean(), color="black", linestyle="--", linewidth=1, label=f"accuracy {100 * correct.mean():.1f}%"
    )
    ax.axvline(
        conf.mean(), color="tab:blue", linestyle=":", linewidth=1.5, label=f"mean confidence {100 * conf.mean():.1f}%"
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("fraction of examples")
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _plot_series(ax, records: list[dict], keys: tuple[str, ...]) -> bool:
    drawn = False
    for key in keys:
        points = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
            drawn = True
    return drawn


def training_curves(metrics_jsonl_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Accuracy (percent) and NLL (nats) against epoch from a run's log (the paper's Figure 2).

    Reads epoch records (``{"kind": "epoch", "epoch": ..., "val_acc": ...,
    "val_nll": ..., ...}``); the left panel shows every present field among
    train_acc and val_acc, the right one train_nll, train_ce and val_nll.
    Raises ValueError when the log has no epoch records. Returns the path written.
    """
    path = _check_path(path)
    records = read_epoch_records(metrics_jsonl_path)
    if not records:
        raise ValueError(f'{metrics_jsonl_path} has no records with "kind": "epoch"; nothing to plot')
    fig, (ax_acc, ax_nll) = _new_figure(9.0, 3.6, ncols=2)
    panels = (
        (ax_acc, ("train_acc", "val_acc"), "accuracy (%)"),
        (ax_nll, ("train_nll", "train_ce", "val_nll"), "NLL (nats)"),
    )
    for ax, keys, ylabel in panels:
        if _plot_series(ax, records, keys):
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def compare_reliability(
    softmax_preds,
    energy_preds,
    path: str | os.PathLike,
    n_bins: int = 15,
    titles: tuple[str, str] = ("softmax", "energy model"),
) -> Path:
    """Reliability diagrams of the softmax and the energy model side by side.

    ``softmax_preds`` and ``energy_preds`` are :class:`Predictions` (or paths
    to their .npz files), usually of the same test split. Returns the path written.
    """
    path = _check_path(path)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    panels = [as_predictions(softmax_preds, "softmax_preds"), as_predictions(energy_preds, "energy_preds")]
    fig, axes = _new_figure(9.0, 4.5, ncols=2)
    for ax, preds, title in zip(axes, panels, titles, strict=True):
        y, p, _ = _resolve(preds.labels, preds.logits, None)
        _draw_reliability(ax, y, p, n_bins, title)
    return _save(fig, path)
