"""The ``jemfast`` command line: from a corpus to a calibration report.

Subcommands (``jemfast <command> --help`` for each one's options)::

    prepare    import a corpus (AP17-OLR, CASIA, VoxCeleb age, a Kaldi folder) or
               generate a synthetic one into manifests (train/dev/test.csv, labels.txt)
    features   build the log-Mel feature caches of a config's data
    train      train one run: --method softmax | jem | jempp | sadajem, a config and
               --set overrides; --resume RUN_DIR continues an interrupted run
    evaluate   a run's predictions and metrics on dev and test (per test subset)
    calibrate  fit temperature and logistic scaling on dev, apply them to test
    report     tables and plots comparing softmax and energy runs, per task
    bench      run the micro-benchmarks of a source checkout (benchmarks/)
    demo       the whole pipeline on a generated corpus, in a few minutes on a CPU

A run is a directory::

    config.yaml          the resolved recipe (jemfast.recipes); config.json is the trainer's view
    train.log            the training log
    metrics.jsonl        step and epoch records (jemfast.train.run_log)
    checkpoints/         last.pt (resumable) and best.pt (lowest dev NLL)
    predictions/         dev.npz, test.npz (jemfast.calibration.Predictions), by ``evaluate``
    metrics.json         dev and test metrics per subset, by ``evaluate``
    calibrators/         temperature.json, logistic.json, by ``calibrate``
    calibration.json     test metrics before and after each calibrator, by ``calibrate``

User errors (a missing data path, an unknown method, a bad config value) print
one line ``jemfast: error: ...`` and exit with status 1 (2 for malformed
arguments); Ctrl-C during training leaves a resumable checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from jemfast.recipes import (
    CONFIG_NAME,
    METHODS,
    ConfigError,
    amp_dtype,
    build_model,
    build_optimizer,
    build_sampler,
    load_config,
    recipe_names,
    resolve_device,
    save_config,
)

logger = logging.getLogger(__name__)

__all__ = [
    "main",
    "build_parser",
    "build_features",
    "train_run",
    "evaluate_run",
    "calibrate_run",
    "report_runs",
    "run_demo",
    "benchmarks_dir",
    "list_benchmarks",
    "load_run_config",
]

SPLITS = ("train", "dev", "test")
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
CHECKPOINT_NAMES = ("best", "last")


# ------------------------------------------------------------------ data
def data_paths(config: dict[str, Any]) -> dict[str, Path]:
    """Manifests and labels of ``data.dir``: ``{"train", "dev", "test", "labels"}`` paths.

    Raises ConfigError when data.dir is unset or a file is missing.
    """
    folder = config["data"]["dir"]
    if folder is None:
        raise ConfigError("data.dir is not set; pass --data DIR or --set data.dir=DIR (a folder made by `jemfast prepare`)")
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data path {folder} does not exist; create it with `jemfast prepare ... --out {folder}`")
    paths = {split: folder / f"{split}.csv" for split in SPLITS}
    paths["labels"] = folder / "labels.txt"
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"data path {folder} lacks {', '.join(missing)}; `jemfast prepare` writes these files")
    return paths


def cache_dir(config: dict[str, Any]) -> Path:
    """Where the feature caches live: data.cache_dir, or <data.dir>/features."""
    if config["data"]["cache_dir"] is not None:
        return Path(config["data"]["cache_dir"])
    return Path(config["data"]["dir"]) / "features"


@contextlib.contextmanager
def _bad_input(what: str) -> Iterator[None]:
    """Turn the library's ValueErrors about user data (manifests, audio, labels) into ConfigErrors."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:  # AudioError is a ValueError
        raise ConfigError(f"{what}: {exc}") from exc


def build_features(config: dict[str, Any], splits: Sequence[str] = SPLITS, rebuild: bool = False) -> dict:
    """Build (or reuse) the feature cache of each split; returns ``{split: FeatureCache}``.

    Caches go to ``cache_dir(config)/<split>/<recipe key>``; an existing cache
    whose manifest and audio files are unchanged is reused unless ``rebuild``.
    """
    from jemfast.data import FeatureCache, FeatureRecipe

    paths = data_paths(config)
    recipe = FeatureRecipe(n_mels=config["data"]["n_mels"])
    root = cache_dir(config)
    caches = {}
    for split in splits:
        with _bad_input(f"features of {paths[split]}"):
            caches[split] = FeatureCache.build(
                paths[split], root / split, recipe, workers=config["data"]["feature_workers"],
                progress=sys.stderr.isatty(), rebuild=rebuild,
            )
    return caches


def _read_labels(config: dict[str, Any]) -> list[str]:
    from jemfast.data import read_labels

    path = data_paths(config)["labels"]
    with _bad_input(str(path)):
        labels = read_labels(path)
    if len(labels) < 2:
        raise ConfigError(f"{path} names {len(labels)} class; a classifier needs at least 2")
    return labels


# ------------------------------------------------------------------ runs
def load_run_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The validated config.yaml of a run directory, with optional ``section.key=value`` overrides."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no {CONFIG_NAME} (made by `jemfast train`)")
    return load_config(path, overrides)


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """Copy jemfast's log records into ``path`` (appending, so a resumed run keeps one log)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package_logger = logging.getLogger("jemfast")
    package_logger.addHandler(handler)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        handler.close()


def _absolute_data_paths(config: dict[str, Any]) -> dict[str, Any]:
    # A run must find its data again from any working directory (resume, evaluate, report).
    config = json.loads(json.dumps(config))
    for key in ("dir", "cache_dir"):
        if config["data"][key] is not None:
            config["data"][key] = str(Path(config["data"][key]).resolve())
    return config


def _fit_batches(dataset, batch_size: int):
    """(x, y) batches of one pass over the training chunks, in order (for the class-Gaussian fit)."""
    from torch.utils.data import DataLoader

    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield x, y


def train_run(config: dict[str, Any], run_dir: str | os.PathLike, resume: bool = False,
              progress: Optional[bool] = None) -> Path:
    """Train one run of ``config`` into ``run_dir``; returns the run directory.

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` when it
    exists (and starts afresh otherwise). Without it, a run directory that
    already holds checkpoints is refused, so no run is overwritten by accident.
    On KeyboardInterrupt the trainer writes a resumable last.pt and the
    exception propagates with a ``resume_hint`` attribute.
    """
    import torch

    from jemfast.data import ChunkDataset, UtteranceDataset, make_eval_loader, make_train_loader
    from jemfast.train import JEMTrainer

    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not resume and last.is_file():
        raise ConfigError(
            f"run directory {run_dir} already has checkpoints; continue it with `jemfast train --resume {run_dir}` "
            "or pass another --run-dir"
        )
    config = _absolute_data_paths(config)
    data, train_cfg = config["data"], config["train"]
    method = train_cfg["method"]
    labels = _read_labels(config)
    caches = build_features(config, splits=("train", "dev"))
    device = resolve_device(train_cfg["device"])
    seed = train_cfg["seed"]
    torch.manual_seed(seed)

    with _bad_input("training data"):
        train_set = ChunkDataset(caches["train"], labels, chunk_frames=data["chunk_frames"], seed=seed)
        dev_set = UtteranceDataset(caches["dev"], labels)
    if len(train_set) < data["batch_size"]:
        raise ConfigError(
            f"data.batch_size ({data['batch_size']}) exceeds the {len(train_set)} training utterances; "
            "lower it with --set data.batch_size=N"
        )
    train_loader = make_train_loader(
        train_set, data["batch_size"], num_workers=data["num_workers"], seed=seed, pin_memory=device.type == "cuda"
    )
    dev_loader = make_eval_loader(dev_set, data["eval_batch_size"], num_workers=data["num_workers"])

    model = build_model(config, len(labels)).to(device)
    optimizer, scheduler = build_optimizer(config, model, len(train_loader))
    sample_shape = (1, data["n_mels"], data["chunk_frames"])
    p_x_weight = train_cfg["p_x_weight"]
    if p_x_weight is None:
        p_x_weight = 0.0 if method == "softmax" else 1.0
    if method == "softmax" and p_x_weight > 0:
        raise ConfigError(f"train.p_x_weight is {p_x_weight} but the softmax method draws no samples; use 0 or null")
    if method != "softmax" and p_x_weight == 0:
        raise ConfigError(f"train.p_x_weight is 0, which trains a softmax model; use --method softmax instead of {method}")
    sampler = None
    if method != "softmax":
        resuming = resume and last.is_file()
        # A resumed run restores the fitted class Gaussians with the buffer, so skip the fitting pass.
        fit = None if resuming else _fit_batches(train_set, data["batch_size"])
        sampler = build_sampler(config, model, sample_shape, len(labels), device, fit_batches=fit)

    trainer = JEMTrainer(
        model, optimizer, sampler=sampler, p_x_weight=p_x_weight, energy_l2=train_cfg["energy_l2"],
        amp_dtype=amp_dtype(config), scheduler=scheduler, run_dir=run_dir, n_classes=len(labels),
        device=device, seed=seed, buffer_size=config["sampling"]["buffer_size"], progress=progress,
    )
    save_config(config, run_dir / CONFIG_NAME)
    with _log_to_file(run_dir / "train.log"):
        logger.info(
            "%s %s run in %s: %s on %s, %d training utterances, %d steps per epoch, %d epochs",
            "resuming" if resume and last.is_file() else "starting", method, run_dir,
            f"WRN-{config['model']['depth']}-{config['model']['width']}", device, len(train_set),
            len(train_loader), train_cfg["epochs"],
        )
        try:
            trainer.fit(
                train_loader, train_cfg["epochs"], val_loader=dev_loader, resume=resume,
                checkpoint_every=train_cfg["checkpoint_every"], config={"recipe": config},
            )
        except KeyboardInterrupt as exc:
            exc.resume_hint = (
                f"resumable checkpoint in {last}; continue with: jemfast train --resume {run_dir}"
            )
            raise
        finally:
            trainer.log.close()
    logger.info("finished %s run in %s (epoch %d, step %d)", method, run_dir, trainer.epoch, trainer.step_count)
    return run_dir


def _checkpoint_path(run_dir: Path, which: str) -> Path:
    folder = run_dir / "checkpoints"
    order = ("best", "last") if which == "best" else ("last",)
    for name in order:
        path = folder / f"{name}.pt"
        if path.is_file():
            return path
    raise ConfigError(f"{run_dir} has no {which} checkpoint in {folder}; train it first with `jemfast train`")


def _predict(model, loader, device):
    """Logits (N, C), labels (N,) and subset names (N,) of every utterance the loader yields."""
    import numpy as np
    import torch

    logits, labels, subsets = [], [], []
    model.eval()
    with torch.no_grad():
        for x, y, names in loader:
            logits.append(model(x.to(device)).float().cpu())
            labels.append(y)
            subsets.extend(names)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), np.array(subsets, dtype=str)


def _metrics_by_subset(preds, n_bins: int, calibrator=None) -> dict[str, dict[str, float]]:
    from jemfast.calibration import evaluate_logits

    groups = [("all", preds)] + [(name, preds.subset(name)) for name in preds.subset_names()]
    out = {}
    for name, group in groups:
        logits = group.logits if calibrator is None else calibrator.transform(group.logits)
        out[name] = evaluate_logits(group.labels, logits, n_bins=n_bins)
    return out


def evaluate_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> dict[str, Any]:
    """Predict dev and test with a run's checkpoint ("best", falling back to "last", or "last").

    Writes ``predictions/dev.npz`` and ``predictions/test.npz`` (with subset
    names where the manifest has them) and ``metrics.json``; returns the
    metrics ``{"checkpoint", "epoch", "dev": {subset: metrics}, "test": {...}}``
    (acc and ece in percent, nll in nats; subset "all" is the whole split).
    """
    from jemfast.calibration import Predictions
    from jemfast.data import UtteranceDataset, make_eval_loader
    from jemfast.train import load_checkpoint

    if checkpoint not in CHECKPOINT_NAMES:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {checkpoint!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    labels = _read_labels(config)
    path = _checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    device = resolve_device(config["train"]["device"])
    model = build_model(config, len(labels))
    model.load_state_dict(state["model"])
    model.to(device)
    caches = build_features(config, splits=("dev", "test"))
    result: dict[str, Any] = {"checkpoint": path.name, "epoch": int(state["epoch"]), "step": int(state["step"])}
    for split in ("dev", "test"):
        with _bad_input(f"{split} data"):
            dataset = UtteranceDataset(caches[split], labels)
        loader = make_eval_loader(dataset, config["data"]["eval_batch_size"], config["data"]["num_workers"])
        logits, targets, subsets = _predict(model, loader, device)
        preds = Predictions(logits, targets, subsets if any(subsets) else None)
        preds.save(run_dir / "predictions" / f"{split}.npz")
        result[split] = _metrics_by_subset(preds, config["eval"]["n_bins"])
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info("evaluated %s (%s, epoch %d): test acc %.2f%%, ECE %.2f%%", run_dir, path.name, result["epoch"],
                result["test"]["all"]["acc"], result["test"]["all"]["ece"])
    return result


def _ensure_predictions(run_dir: Path) -> dict[str, Path]:
    paths = {split: run_dir / "predictions" / f"{split}.npz" for split in ("dev", "test")}
    if not all(p.is_file() for p in paths.values()):
        logger.info("no predictions in %s yet; evaluating it first", run_dir)
        evaluate_run(run_dir)
    return paths


def calibrate_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Fit temperature and logistic scaling on a run's dev predictions and score test with each.

    Evaluates the run first when it has no predictions. Writes
    ``calibrators/temperature.json``, ``calibrators/logistic.json`` and
    ``calibration.json``; returns ``{"temperature": state, "logistic": state,
    "test": {calibration: {subset: metrics}}}`` with calibration one of
    "uncalibrated", "temperature", "logistic".
    """
    from jemfast.calibration import LogisticScaling, Predictions, TemperatureScaling

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    paths = _ensure_predictions(run_dir)
    dev, test = Predictions.load(paths["dev"]), Predictions.load(paths["test"])
    calibrators = {
        "temperature": TemperatureScaling().fit(dev.logits, dev.labels),
        "logistic": LogisticScaling().fit(dev.logits, dev.labels),
    }
    for name, calibrator in calibrators.items():
        calibrator.save(run_dir / "calibrators" / f"{name}.json")
    n_bins = config["eval"]["n_bins"]
    result: dict[str, Any] = {name: c.state_dict() for name, c in calibrators.items()}
    result["test"] = {"uncalibrated": _metrics_by_subset(test, n_bins)}
    for name, calibrator in calibrators.items():
        result["test"][name] = _metrics_by_subset(test, n_bins, calibrator)
    (run_dir / "calibration.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    logger.info("calibrated %s: test ECE %.2f%% -> %.2f%% (temperature), %.2f%% (logistic)", run_dir,
                result["test"]["uncalibrated"]["all"]["ece"], result["test"]["temperature"]["all"]["ece"],
                result["test"]["logistic"]["all"]["ece"])
    return result


def report_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, n_bootstrap: int = 0,
                title: str = "Calibration of softmax and energy-based models") -> dict[str, Any]:
    """Tables and plots comparing each task's softmax run with its energy-based run(s).

    ``run_dirs`` must hold, per task (config task.name), exactly one softmax
    run and at least one energy run (jem, jempp or sadajem); a task with
    several energy runs gets one table group per method ("task (method)").
    Runs without predictions are evaluated first. Writes ``report.md``,
    ``report.json``, fitted calibrators, ``<group>_reliability.{png,pdf}``
    (softmax vs energy on test) and ``<task>_<method>_curves.png`` (training
    curves) into ``out_dir``; returns ``{"markdown", "json", "plots"}`` paths.
    """
    from jemfast.calibration import compare_reliability, training_curves
    from jemfast.calibration import report_runs as write_task_report

    if not run_dirs:
        raise ConfigError("report needs at least one run directory")
    by_task: dict[str, dict[str, list[Path]]] = {}
    for run in run_dirs:
        run = Path(run)
        config = load_run_config(run)
        method = config["train"]["method"]
        kind = "softmax" if method == "softmax" else "energy"
        by_task.setdefault(config["task"]["name"], {"softmax": [], "energy": []})[kind].append(run)
    groups: dict[str, dict[str, Path]] = {}
    curves: list[tuple[str, Path]] = []
    for task, runs in by_task.items():
        if len(runs["softmax"]) != 1 or not runs["energy"]:
            raise ConfigError(
                f"task {task!r} needs one softmax run and at least one energy run; got "
                f"{len(runs['softmax'])} softmax and {len(runs['energy'])} energy run(s)"
            )
        softmax = _ensure_predictions(runs["softmax"][0])
        curves.append((f"{task}_softmax", runs["softmax"][0]))
        for energy_run in runs["energy"]:
            method = load_run_config(energy_run)["train"]["method"]
            energy = _ensure_predictions(energy_run)
            name = task if len(runs["energy"]) == 1 else f"{task} ({method})"
            if name in groups:
                raise ConfigError(f"task {task!r} has two {method} runs; report one of them")
            groups[name] = {"softmax_dev": softmax["dev"], "softmax_test": softmax["test"],
                            "energy_dev": energy["dev"], "energy_test": energy["test"]}
            curves.append((f"{task}_{method}", energy_run))
    out_dir = Path(out_dir)
    with _bad_input("report"):
        md_path, json_path = write_task_report(groups, out_dir, title=title, name="report", n_bootstrap=n_bootstrap)
    plots: list[Path] = []
    for name, splits in groups.items():
        slug = name.replace(" (", "_").replace(")", "").replace(" ", "_")
        for suffix in ("png", "pdf"):
            plots.append(compare_reliability(splits["softmax_test"], splits["energy_test"],
                                             out_dir / f"{slug}_reliability.{suffix}"))
    for name, run in curves:
        metrics = run / "metrics.jsonl"
        if metrics.is_file():
            try:
                plots.append(training_curves(metrics, out_dir / f"{name}_curves.png"))
            except ValueError as exc:  # a run interrupted before its first epoch has no curve yet
                logger.warning("no training curves for %s: %s", run, exc)
    logger.info("wrote %s, %s and %d plots", md_path, json_path, len(plots))
    return {"markdown": md_path, "json": json_path, "plots": plots}


# ------------------------------------------------------------------ benchmarks
def benchmarks_dir() -> Path:
    """The benchmarks/ folder of the source checkout jemfast was installed from.

    Raises ConfigError when it is absent (an installation from a wheel has no benchmarks).
    """
    import jemfast

    folder = Path(jemfast.__file__).resolve().parent.parent / "benchmarks"
    if not (folder / "common.py").is_file():
        raise ConfigError(
            f"no benchmarks found at {folder}: they live in the source checkout, not in the installed package; "
            "clone the repository and install it with `pip install -e .`"
        )
    return folder


def list_benchmarks(folder: Optional[Path] = None) -> dict[str, Path]:
    """Benchmark name -> script, for every ``bench_<name>.py`` in the benchmarks folder."""
    folder = benchmarks_dir() if folder is None else folder
    return {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))}


# ------------------------------------------------------------------ demo
def run_demo(out_dir: str | os.PathLike = "jemfast_demo", overrides: Sequence[str] = (), n_per_class: int = 50,
             n_eval_per_class: int = 20, progress: Optional[bool] = None) -> dict[str, Any]:
    """The whole pipeline on a generated corpus: softmax and JEM runs, calibration and the report.

    Generates the demo recipe's synthetic corpus (``n_per_class`` training and
    ``n_eval_per_class`` dev and test utterances per class) into
    ``out_dir/corpus``, trains the "demo" recipe (plus ``overrides``) with
    the softmax and jem methods into ``out_dir/runs/<method>``, evaluates and
    calibrates both and writes the report into ``out_dir/report``. Re-running
    reuses the corpus and features and continues unfinished runs.
    Returns ``{"corpus", "runs", "report", "calibration"}``.
    """
    from jemfast.data import generate_corpus

    out_dir = Path(out_dir)
    base = load_config("demo", overrides)
    task = base["task"]["name"]
    logger.info("generating the synthetic %s corpus in %s", task, out_dir / "corpus")
    with _bad_input("demo corpus"):
        corpus = generate_corpus(out_dir / "corpus", task, n_per_class=n_per_class, n_eval_per_class=n_eval_per_class)
    runs: dict[str, Path] = {}
    calibration: dict[str, Any] = {}
    for method in ("softmax", "jem"):
        config = json.loads(json.dumps(base))
        config["train"]["method"] = method
        config["data"]["dir"] = str(corpus["root"])
        if method == "softmax":
            # The baseline is the plain classifier: the energy terms belong to the JEM run.
            config["train"]["p_x_weight"] = None
            config["train"]["energy_l2"] = 0.0
        run_dir = out_dir / "runs" / method
        train_run(config, run_dir, resume=True, progress=progress)
        evaluate_run(run_dir)
        calibration[method] = calibrate_run(run_dir)
        runs[method] = run_dir
    report = report_runs([runs["softmax"], runs["jem"]], out_dir / "report",
                         title="Calibration on the synthetic demo corpus (test split)")
    return {"corpus": corpus["root"], "runs": runs, "report": report, "calibration": calibration}


# ------------------------------------------------------------------ printing
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned numbers."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row, values in zip(text, rows):
        cells = [t.rjust(w) if isinstance(v, (int, float)) else t.ljust(w) for t, v, w in zip(row, values, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _metric_rows(label: str, by_subset: dict[str, dict[str, float]]) -> list[list[Any]]:
    return [[label, subset, m["acc"], m["ece"], m["nll"], m["n"]] for subset, m in by_subset.items()]


METRIC_HEADERS = ("", "subset", "ACC (%)", "ECE (%)", "NLL", "N")


# ------------------------------------------------------------------ commands
def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.set or [])
    if getattr(args, "data", None):
        overrides.append(f"data.dir={json.dumps(str(args.data))}")
    return load_config(args.config, overrides, method=getattr(args, "method", None))


def _require_path(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    return path


def cmd_prepare(args: argparse.Namespace) -> int:
    from jemfast.data import generate_corpus, import_ap17_olr, import_casia, import_kaldi_dir, import_voxceleb_age

    on_error = args.on_error
    with _bad_input(f"prepare {args.source}"):
        if args.source == "synthetic":
            result = generate_corpus(args.out, args.task, n_per_class=args.n_per_class,
                                     n_eval_per_class=args.n_eval_per_class, seed=args.seed)
            print(f"synthetic {args.task} corpus in {result['root']} ({len(result['classes'])} classes)")
            return 0
        if args.source == "ap17-olr":
            report = import_ap17_olr(_require_path(args.root, "data path"), args.out, on_error=on_error)
        elif args.source == "casia":
            report = import_casia(_require_path(args.root, "data path"), args.out,
                                  speaker_independent=args.speaker_independent,
                                  test_speakers=args.test_speakers, seed=args.seed, on_error=on_error)
        elif args.source == "voxceleb-age":
            if args.age_list:
                lists: Any = _require_path(args.age_list, "age list")
            else:
                if not (args.train_list and args.test_list):
                    raise ConfigError("voxceleb-age needs --age-list, or --train-list and --test-list")
                lists = {"train": _require_path(args.train_list, "age list"),
                         "test": _require_path(args.test_list, "age list")}
                if args.dev_list:
                    lists["dev"] = _require_path(args.dev_list, "age list")
            report = import_voxceleb_age(lists, _require_path(args.wav_root, "data path"), args.out,
                                         seed=args.seed, on_error=on_error)
        else:  # kaldi
            report = import_kaldi_dir(_require_path(args.root, "data path"), Path(args.out), subset=args.subset,
                                      on_error=on_error)
    for split, path in report.manifests.items():
        print(f"{split}: {report.counts[split]} utterances -> {path}")
    if report.labels is not None:
        print(f"labels -> {report.labels}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable file(s); first: {report.skipped[0][0]} ({report.skipped[0][1]})")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    caches = build_features(config, rebuild=args.rebuild)
    rows = [[split, len(c), c.total_frames, len(c.skipped), str(c.directory)] for split, c in caches.items()]
    print(_table(("split", "utterances", "frames", "skipped", "cache"), rows))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.config or args.method or args.data:
            raise ConfigError("--resume takes the run's own config.yaml; use --set to change values, "
                              "not --config, --method or --data")
        config = load_run_config(args.resume, args.set or [])
        run_dir = Path(args.resume)
    else:
        if args.config is None:
            raise ConfigError(f"train needs --config (a file or one of {', '.join(recipe_names())}) or --resume RUN_DIR")
        config = _config_from_args(args)
        run_dir = Path(args.run_dir or Path("runs") / f"{config['task']['name']}_{config['train']['method']}")
    train_run(config, run_dir, resume=bool(args.resume))
    print(f"run: {run_dir}")
    print(f"next: jemfast evaluate {run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    for run in args.runs:
        result = evaluate_run(run, checkpoint=args.checkpoint)
        print(f"{run} ({result['checkpoint']}, epoch {result['epoch']})")
        rows = _metric_rows("dev", result["dev"]) + _metric_rows("test", result["test"])
        print(_table(METRIC_HEADERS, rows))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    for run in args.runs:
        result = calibrate_run(run)
        temperature = result["temperature"].get("temperature")
        print(f"{run}: temperature {temperature:.3f}" if isinstance(temperature, float) else str(run))
        rows = []
        for name, by_subset in result["test"].items():
            rows += _metric_rows(name, by_subset)
        print(_table(("test",) + METRIC_HEADERS[1:], rows))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    result = report_runs(args.runs, args.out, n_bootstrap=args.bootstrap)
    print(Path(result["markdown"]).read_text(encoding="utf-8"))
    print(f"report: {result['markdown']} and {result['json']}; {len(result['plots'])} plots in {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    scripts = list_benchmarks()
    if args.list:
        for name, path in scripts.items():
            print(f"{name:16s} {path}")
        return 0
    names = args.names or list(scripts)
    unknown = [n for n in names if n not in scripts]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(scripts)}")
    extra = shlex.split(args.args or "")
    failed = []
    for name in names:
        logger.info("running benchmark %s", name)
        completed = subprocess.run([sys.executable, str(scripts[name]), *extra], cwd=scripts[name].parent.parent)
        if completed.returncode != 0:
            failed.append(f"{name} (exit status {completed.returncode})")
    if failed:
        raise ConfigError(f"benchmark(s) failed: {', '.join(failed)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"train.device={args.device}")
    out = Path(args.out)
    try:
        result = run_demo(out, overrides, n_per_class=args.n_per_class, n_eval_per_class=args.n_eval_per_class)
    except KeyboardInterrupt as exc:
        exc.resume_hint = f"run `jemfast demo --out {out}` again to continue where it stopped"
        raise
    report = result["report"]
    print(Path(report["markdown"]).read_text(encoding="utf-8"))
    rows = []
    for method, cal in result["calibration"].items():
        for name in ("uncalibrated", "temperature", "logistic"):
            m = cal["test"][name]["all"]
            rows.append([method, name, m["acc"], m["ece"], m["nll"], m["n"]])
    print(_table(("model", "calibration", "ACC (%)", "ECE (%)", "NLL", "N"), rows))
    print()
    print(f"corpus:  {result['corpus']}")
    for method, run in result["runs"].items():
        print(f"{method + ' run:':9s}{run}")
    print(f"report:  {report['markdown']}")
    print(f"plots:   {', '.join(str(p) for p in report['plots'] if p.suffix == '.png')}")
    return 0


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_config_options(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    parser.add_argument("-c", "--config", required=config_required,
                        help=f"recipe file or packaged recipe name ({', '.join(recipe_names())})")
    parser.add_argument("--data", help="data folder (train.csv, dev.csv, test.csv, labels.txt); sets data.dir")
    parser.add_argument("--set", nargs="+", metavar="SECTION.KEY=VALUE", action="extend",
                        help="override config values, e.g. --set train.epochs=3 model.width=2")


def build_parser() -> argparse.ArgumentParser:
    """The ``jemfast`` argument parser with all subcommands."""
    from jemfast import __version__

    parser = _Parser(prog="jemfast", description="Fast JEM training and calibration of speech classifiers.")
    parser.add_argument("--version", action="version", version=f"jemfast {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prepare = commands.add_parser("prepare", help="import a corpus (or generate one) into manifests")
    sources = prepare.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, text in (("synthetic", "generate the synthetic corpus"), ("ap17-olr", "AP17-OLR Kaldi folders"),
                       ("casia", "CASIA <speaker>/<emotion>/*.wav"), ("voxceleb-age", "VoxCeleb-Enrichment ages"),
                       ("kaldi", "one Kaldi data folder into one manifest")):
        sub = sources.add_parser(name, help=text)
        sub.add_argument("--out", required=True, help="output folder (a manifest path for kaldi)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                         help="stop at an unreadable audio file, or skip and count it")
        sub.set_defaults(func=cmd_prepare)
        if name == "synthetic":
            from jemfast.data import TASKS

            sub.add_argument("--task", choices=TASKS, default="emotion")
            sub.add_argument("--n-per-class", type=int, default=50)
            sub.add_argument("--n-eval-per-class", type=int, default=None)
        elif name == "voxceleb-age":
            sub.add_argument("wav_root", help="folder of <VoxCeleb_ID>/<video_id>/*.wav")
            sub.add_argument("--age-list", help="one age list, split by speaker")
            sub.add_argument("--train-list")
            sub.add_argument("--dev-list")
            sub.add_argument("--test-list")
        else:
            sub.add_argument("root", help="corpus folder")
            if name == "casia":
                sub.add_argument("--speaker-independent", action="store_true")
                sub.add_argument("--test-speakers", nargs="+")
            if name == "kaldi":
                sub.add_argument("--subset", default="", help="subset name for every row (e.g. 3s)")

    features = commands.add_parser("features", help="build the feature caches of a config's data")
    _add_config_options(features, config_required=True)
    features.add_argument("--rebuild", action="store_true", help="rebuild even when a cache is up to date")
    features.set_defaults(func=cmd_features)

    train = commands.add_parser("train", help="train a run (or --resume one)")
    _add_config_options(train)
    train.add_argument("--method", help=f"one of {', '.join(METHODS)} (default: the config's train.method)")
    train.add_argument("--run-dir", help="run directory (default: runs/<task>_<method>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or finished run")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="predictions and metrics of runs on dev and test")
    evaluate.add_argument("runs", nargs="+", metavar="RUN_DIR")
    evaluate.add_argument("--checkpoint", choices=CHECKPOINT_NAMES, default="best",
                          help="best (lowest dev NLL; falls back to last) or last")
    evaluate.set_defaults(func=cmd_evaluate)

    calibrate = commands.add_parser("calibrate", help="temperature and logistic scaling fitted on dev, scored on test")
    calibrate.add_argument("runs", nargs="+", metavar="RUN_DIR")
    calibrate.set_defaults(func=cmd_calibrate)

    report = commands.add_parser("report", help="tables and plots for softmax and energy runs")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default="report", help="output folder (default: ./report)")
    report.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="95%% bootstrap intervals of the ECE from N resamples")
    report.set_defaults(func=cmd_report)

    bench = commands.add_parser("bench", help="run the micro-benchmarks (from a source checkout)")
    bench.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.add_argument("--args", help="extra arguments for every script, e.g. --args='--no-write'")
    bench.set_defaults(func=cmd_bench)

    demo = commands.add_parser("demo", help="the whole pipeline on a generated corpus in a few minutes")
    demo.add_argument("--out", default="jemfast_demo", help="work folder (default: ./jemfast_demo)")
    demo.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    demo.add_argument("--n-per-class", type=int, default=50, help="training utterances per class")
    demo.add_argument("--n-eval-per-class", type=int, default=20, help="dev and test utterances per class")
    demo.add_argument("--set", nargs="+", metavar="SECTION.KEY=VALUE", action="extend",
                      help="override the demo recipe, e.g. --set train.epochs=2")
    demo.set_defaults(func=cmd_demo)
    return parser


# ------------------------------------------------------------------ entry point
_HANDLER_FLAG = "_jemfast_cli_handler"


def _remove_console_handler() -> None:
    package_logger = logging.getLogger("jemfast")
    for handler in list(package_logger.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            package_logger.removeHandler(handler)


def _setup_logging(quiet: bool) -> None:
    """INFO (WARNING with --quiet) from the jemfast loggers to stderr, one handler however often main runs."""
    package_logger = logging.getLogger("jemfast")
    _remove_console_handler()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s jemfast: %(message)s", "%H:%M:%S"))
    setattr(handler, _HANDLER_FLAG, True)
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit status.

    0 on success, 1 for a user error, 2 for malformed arguments, 130 after Ctrl-C.
    Unexpected exceptions propagate with their traceback: they are bugs.
    """
    from jemfast.data import AudioError
    from jemfast.train import CheckpointError, DivergenceError

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        hint = getattr(exc, "resume_hint", None)
        print(f"jemfast: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, AudioError, CheckpointError, DivergenceError, FileNotFoundError) as exc:
        print(f"jemfast: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        # The handler holds this call's stderr; a later in-process call installs its own.
        _remove_console_handler()


def entry_point() -> None:
    """Console-script entry: exit the process with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
