"""The run pipeline behind the command line: features, train, evaluate, calibrate, report, demo.

Each step reads and writes a run directory, so steps can run in separate
processes (``jemfast train`` today, ``jemfast evaluate`` tomorrow)::

    config.yaml          the resolved recipe (jemfast.recipes): the run's one config file
    train.log            the training log
    metrics.jsonl        step and epoch records (jemfast.train.run_log)
    checkpoints/         last.pt (resumable) and best.pt (lowest dev NLL)
    predictions/         dev.npz, test.npz (jemfast.calibration.Predictions), by ``evaluate``
    metrics.json         dev and test metrics per subset, by ``evaluate``
    calibrators/         temperature.json, logistic.json, by ``calibrate``
    calibration.json     test metrics before and after each calibrator, by ``calibrate``
    .jemfast.lock        only while ``train`` runs: one training process per run (jemfast.run_lock)

User errors (a missing data path, unreadable audio, a bad config value) raise
:class:`jemfast.recipes.ConfigError`; :mod:`jemfast.cli` prints them as one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jemfast.data.manifest import SPLITS
from jemfast.recipes import (
    CONFIG_NAME,
    ConfigError,
    ModelConfig,
    RunConfig,
    TrainConfig,
    amp_dtype,
    build_model,
    build_optimizer,
    build_sampler,
    load_config,
    resolve_device,
    save_config,
)
from jemfast.run_lock import run_lock

logger = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "data_paths",
    "cache_dir",
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

CHECKPOINT_NAMES = ("best", "last")


# ------------------------------------------------------------------ data
def data_paths(config: RunConfig) -> dict[str, Path]:
    """Manifests and labels of ``data.dir``: ``{"train", "dev", "test", "labels"}`` paths.

    Raises ConfigError when data.dir is unset or a file is missing.
    """
    folder = config.data.dir
    if folder is None:
        raise ConfigError(
            "data.dir is not set; pass --data DIR or --set data.dir=DIR (a folder made by `jemfast prepare`)"
        )
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data path {folder} does not exist; create it with `jemfast prepare ... --out {folder}`")
    paths = {split: folder / f"{split}.csv" for split in SPLITS}
    paths["labels"] = folder / "labels.txt"
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"data path {folder} lacks {', '.join(missing)}; `jemfast prepare` writes these files")
    return paths


def cache_dir(config: RunConfig) -> Path:
    """Where the feature caches live: data.cache_dir, or <data.dir>/features."""
    if config.data.cache_dir is not None:
        return Path(config.data.cache_dir)
    return Path(config.data.dir) / "features"


@contextlib.contextmanager
def _bad_input(what: str, hint: str = "") -> Iterator[None]:
    """Turn the library's ValueErrors about user data (manifests, audio, labels) into ConfigErrors.

    ``hint`` is appended to the message of an AudioError (an unusable audio file).
    """
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:  # AudioError is a ValueError
        if hint:
            from jemfast.data import AudioError  # only callers that read audio pass a hint

            hint = hint if isinstance(exc, AudioError) else ""
        raise ConfigError(f"{what}: {exc}{hint}") from exc


def build_features(config: RunConfig, splits: Sequence[str] = SPLITS, rebuild: bool = False) -> dict:
    """Build (or reuse) the feature cache of each split; returns ``{split: FeatureCache}``.

    Caches go to ``cache_dir(config)/<split>/<recipe key>``; an existing cache
    whose manifest and audio files are unchanged is reused unless ``rebuild``.

    ``data.on_error`` decides what an unusable audio file does: ``raise`` stops
    with a ConfigError naming it and writes no cache; ``skip`` leaves it out,
    names it in a warning and records it in the cache's index.json (``skipped``).
    The cache folder's name does not depend on on_error: a build that skips
    nothing holds the same content either way and is shared, a strict build
    never reuses a cache with skipped files (it rebuilds, and so names the bad
    file), and a cache with skipped files is named again in a warning whenever
    it is reused.
    """
    from jemfast.data import FeatureCache, FeatureRecipe

    paths = data_paths(config)
    recipe = FeatureRecipe(n_mels=config.data.n_mels)
    root = cache_dir(config)
    on_error = config.data.on_error
    caches = {}
    for split in splits:
        hint = "; data.on_error=skip (--on-error skip) leaves such files out" if on_error == "raise" else ""
        with _bad_input(f"features of {paths[split]}", hint=hint):
            caches[split] = FeatureCache.build(
                paths[split],
                root / split,
                recipe,
                workers=config.data.feature_workers,
                on_error=on_error,
                progress=sys.stderr.isatty(),
                rebuild=rebuild,
            )
    return caches


def _log_skipped(caches: dict) -> None:
    """Record in the run's train.log each split's utterances that data.on_error=skip left out.

    The feature build has already warned about them on stderr (when building or reusing the cache).
    """
    from jemfast.data.cache import describe_skipped

    for split, cache in caches.items():
        if cache.skipped:
            logger.info(
                "%s: %d of %d utterances were left out (data.on_error=skip): %s",
                split,
                len(cache.skipped),
                len(cache.skipped) + len(cache),
                describe_skipped(cache.skipped),
            )


def _read_labels(config: RunConfig) -> list[str]:
    from jemfast.data import read_labels

    path = data_paths(config)["labels"]
    with _bad_input(str(path)):
        labels = read_labels(path)
    if len(labels) < 2:
        raise ConfigError(f"{path} names {len(labels)} class; a classifier needs at least 2")
    return labels


# ------------------------------------------------------------------ runs
def load_run_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
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


def _absolute_data_paths(config: RunConfig) -> RunConfig:
    # A run must find its data again from any working directory (resume, evaluate, report).
    paths = ("data.dir", "data.cache_dir", "train.init_from")
    return config.updated({key: str(Path(config.get(key)).resolve()) for key in paths if config.get(key) is not None})


def _initial_weights(config: RunConfig, labels: Sequence[str]) -> Path:
    """The checkpoint that train.init_from names (its best.pt, else last.pt), checked against ``config``.

    Raises ConfigError when the source is not a run, has no checkpoint, or trained another
    architecture or class list, before anything is written.
    """
    source = Path(config.train.init_from)
    source_config = load_run_config(source)
    if source_config.model != config.model:
        raise ConfigError(
            f"train.init_from: {source} trained model {source_config.model.to_dict()}, "
            f"but this run builds {config.model.to_dict()}; the architectures must match"
        )
    try:
        source_labels = _read_labels(source_config)
    except ConfigError:  # the source's data moved: the weights' shapes are still checked on loading
        source_labels = list(labels)
    if list(source_labels) != list(labels):
        raise ConfigError(
            f"train.init_from: {source} classifies {source_labels}, this run {list(labels)}; the class lists must match"
        )
    return _checkpoint_path(source, "best")


def _fit_batches(dataset, batch_size: int):
    """(x, y) batches of one pass over the training chunks, in order (for the class-Gaussian fit)."""
    from torch.utils.data import DataLoader

    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)


# Keys a resumed run cannot change, each with the reason: the checkpoint it continues was
# made under their values, so a new value either fails to load (a tensor of another shape)
# or would silently make the run a mixture of two runs. Everything else (epochs, learning
# rate and schedule, sampler step sizes, devices, workers, ...) may change on resume.
RESUME_FIXED_KEYS: dict[str, str] = {
    **{f"model.{key}": "the checkpoint's weights belong to that architecture" for key in ModelConfig.specs()},
    "data.n_mels": "the model and the replay buffer take inputs of that many Mel bands",
    "data.chunk_frames": "the checkpoint's replay buffer holds samples of that many frames",
    "data.batch_size": "the checkpoint's place in the epoch and its learning-rate schedule count batches of that size",
    "data.dir": "the run's weights and classes come from that corpus",
    "task.name": "reports group runs by task",
    "train.method": "the checkpoint holds that method's sampler state (or none for softmax)",
    "train.seed": "the random streams saved in the checkpoint derive from it",
    "train.init_from": "the starting weights were taken when the run began",
    "sampling.buffer_size": "the checkpoint's replay buffer has that many samples",
    "sampling.init": "the replay buffer was initialised that way when the run began",
}


def _refuse_fixed_changes(run_dir: Path, config: RunConfig) -> RunConfig | None:
    """ConfigError naming the first :data:`RESUME_FIXED_KEYS` value ``config`` changes in the run's config.yaml.

    Returns the run's stored config (None when it has no config.yaml).
    """
    if not (run_dir / CONFIG_NAME).is_file():
        return None  # nothing recorded to compare with; loading the checkpoint still checks the shapes
    stored = load_run_config(run_dir)
    for dotted, reason in RESUME_FIXED_KEYS.items():
        if config.get(dotted) != stored.get(dotted):
            raise ConfigError(
                f"cannot resume {run_dir} with {dotted}={_as_typed(config.get(dotted))}: the run was trained with "
                f"{dotted}={_as_typed(stored.get(dotted))} and {reason}; train a new run into another --run-dir "
                "instead"
            )
    return stored


def _as_typed(value: Any) -> str:
    """A config value as it is written after --set (null for None)."""
    return "null" if value is None else str(value)


def _apply_optimizer_overrides(trainer, stored: TrainConfig, wanted: TrainConfig) -> None:
    """Make a resumed run train with the config's lr, momentum and weight decay.

    The checkpoint's optimizer state carries the values the run was trained with; a
    ``--resume --set train.lr=...`` must win over them. The learning rate is rescaled by
    new / old peak rate, so the schedule's position (warm-up, decays, rollback halvings) is kept.
    """
    if wanted.lr != stored.lr:
        if stored.lr <= 0:
            raise ConfigError(f"cannot rescale a run trained with train.lr={stored.lr}; train a new run")
        trainer.scale_learning_rates(wanted.lr / stored.lr)
        logger.info("learning rate rescaled from a peak of %g to %g", stored.lr, wanted.lr)
    for key in ("momentum", "weight_decay"):
        old, new = getattr(stored, key), getattr(wanted, key)
        if new != old:
            trainer.set_optimizer_options(**{key: new})
            logger.info("train.%s changed from %g to %g", key, old, new)


def _load_resume_checkpoint(trainer, path: Path) -> None:
    """Load ``path`` into ``trainer``; a checkpoint that does not fit the run is a ConfigError."""
    try:
        trainer.load_checkpoint(path)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # CheckpointError is a ValueError
        raise ConfigError(f"cannot resume from {path}: {exc}") from exc


def train_run(
    config: RunConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool | None = None
) -> Path:
    """Train one run of ``config`` into ``run_dir``; returns the run directory.

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` when it
    exists (and starts afresh otherwise). Without it, a run directory that
    already holds checkpoints is refused, so no run is overwritten by accident.
    A resume that changes a :data:`RESUME_FIXED_KEYS` value is refused, and a
    failed resume leaves the run directory as it was: config.yaml and train.log
    are written only once the checkpoint has loaded.

    The run directory is locked (:func:`jemfast.run_lock.run_lock`) for the
    whole call: while one process trains a run, another ``train_run`` into it
    raises :class:`jemfast.run_lock.RunDirectoryBusy` naming that process.

    On KeyboardInterrupt the trainer writes a resumable last.pt and the
    exception propagates with a ``resume_hint`` attribute.
    """
    with run_lock(run_dir):
        return _train_locked(config, Path(run_dir), resume, progress)


def _train_locked(config: RunConfig, run_dir: Path, resume: bool, progress: bool | None) -> Path:
    """:func:`train_run`, with the run directory's lock held."""
    import torch

    from jemfast.data import ChunkDataset, UtteranceDataset, make_eval_loader, make_train_loader
    from jemfast.train import DivergenceError, DivergenceGuard, JEMLoss, JEMTrainer

    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not resume and last.is_file():
        raise ConfigError(
            f"run directory {run_dir} already has checkpoints; continue it with `jemfast train --resume {run_dir}` "
            "or pass another --run-dir"
        )
    config = _absolute_data_paths(config)
    resuming = resume and last.is_file()
    if resuming:
        stored_config = _refuse_fixed_changes(run_dir, config)
    data, train_cfg = config.data, config.train
    method = train_cfg.method
    labels = _read_labels(config)
    caches = build_features(config, splits=("train", "dev"))
    device = resolve_device(train_cfg.device)
    seed = train_cfg.seed
    torch.manual_seed(seed)

    with _bad_input("training data"):
        train_set = ChunkDataset(caches["train"], labels, chunk_frames=data.chunk_frames, seed=seed)
        dev_set = UtteranceDataset(caches["dev"], labels)
    if len(train_set) < data.batch_size:
        raise ConfigError(
            f"data.batch_size ({data.batch_size}) exceeds the {len(train_set)} training utterances; "
            "lower it with --set data.batch_size=N"
        )
    train_loader = make_train_loader(
        train_set, data.batch_size, num_workers=data.num_workers, seed=seed, pin_memory=device.type == "cuda"
    )
    dev_loader = make_eval_loader(dev_set, data.eval_batch_size, num_workers=data.num_workers)

    init_path = _initial_weights(config, labels) if train_cfg.init_from is not None and not resuming else None
    model = build_model(config, len(labels)).to(device)
    optimizer, scheduler = build_optimizer(config, model, len(train_loader))
    sampler = None
    if train_cfg.uses_sampling:
        # A resumed run restores the fitted class Gaussians with the buffer, so skip the fitting pass.
        fit = None if resuming else _fit_batches(train_set, data.batch_size)
        sampler = build_sampler(config, model, config.sample_shape, len(labels), device, fit_batches=fit)

    trainer = JEMTrainer(
        model,
        optimizer,
        sampler=sampler,
        objective=JEMLoss(
            p_x_weight=train_cfg.generative_weight,
            energy_l2=train_cfg.energy_l2,
            temperature=train_cfg.temperature,
        ),
        scheduler=scheduler,
        run_dir=run_dir,
        amp_dtype=amp_dtype(config),
        n_classes=len(labels),
        device=device,
        seed=seed,
        progress=progress,
        data_noise=train_cfg.data_noise,
        guard=DivergenceGuard(max_rollbacks=train_cfg.max_rollbacks),
    )
    if resuming:
        # Loaded here, not by fit(resume=True), so that nothing in the run directory changes
        # (config.yaml, train.log) unless the checkpoint fits this run.
        _load_resume_checkpoint(trainer, last)
        if stored_config is not None:
            _apply_optimizer_overrides(trainer, stored_config.train, train_cfg)
    if init_path is not None:
        with _bad_input(f"train.init_from ({init_path})"):
            trainer.init_model_from(init_path)
    save_config(config, run_dir / CONFIG_NAME)
    with _log_to_file(run_dir / "train.log"):
        logger.info(
            "%s %s run in %s: %s on %s, %d training utterances, %d steps per epoch, %d epochs%s",
            "resuming" if resuming else "starting",
            method,
            f"{run_dir} from epoch {trainer.epoch}, step {trainer.step_count}" if resuming else run_dir,
            f"WRN-{config.model.depth}-{config.model.width}",
            device,
            len(train_set),
            len(train_loader),
            train_cfg.epochs,
            f", from the weights of {init_path}" if init_path else "",
        )
        _log_skipped(caches)
        try:
            trainer.fit(  # resume=False: a resumed run's checkpoint is loaded above
                train_loader,
                train_cfg.epochs,
                val_loader=dev_loader,
                resume=False,
                checkpoint_every=train_cfg.checkpoint_every,
            )
        except KeyboardInterrupt as exc:
            exc.resume_hint = f"resumable checkpoint in {last}; continue with: jemfast train --resume {run_dir}"
            raise
        except DivergenceError as exc:
            raise DivergenceError(
                f"{exc}. {last} holds the last checked state; continue with: jemfast train --resume {run_dir} "
                f"--set train.max_rollbacks={trainer.rollbacks + train_cfg.max_rollbacks} and a lower "
                f"train.lr (now {train_cfg.lr:g})"
            ) from exc
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
    device = resolve_device(config.train.device)
    model = build_model(config, len(labels))
    model.load_state_dict(state["model"])
    model.to(device)
    caches = build_features(config, splits=("dev", "test"))
    result: dict[str, Any] = {"checkpoint": path.name, "epoch": int(state["epoch"]), "step": int(state["step"])}
    for split in ("dev", "test"):
        with _bad_input(f"{split} data"):
            dataset = UtteranceDataset(caches[split], labels)
        loader = make_eval_loader(dataset, config.data.eval_batch_size, config.data.num_workers)
        logits, targets, subsets = _predict(model, loader, device)
        preds = Predictions(logits, targets, subsets if any(subsets) else None)
        preds.save(run_dir / "predictions" / f"{split}.npz")
        result[split] = _metrics_by_subset(preds, config.eval.n_bins)
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "evaluated %s (%s, epoch %d): test acc %.2f%%, ECE %.2f%%",
        run_dir,
        path.name,
        result["epoch"],
        result["test"]["all"]["acc"],
        result["test"]["all"]["ece"],
    )
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
    n_bins = config.eval.n_bins
    result: dict[str, Any] = {name: c.state_dict() for name, c in calibrators.items()}
    result["test"] = {"uncalibrated": _metrics_by_subset(test, n_bins)}
    for name, calibrator in calibrators.items():
        result["test"][name] = _metrics_by_subset(test, n_bins, calibrator)
    (run_dir / "calibration.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    logger.info(
        "calibrated %s: test ECE %.2f%% -> %.2f%% (temperature), %.2f%% (logistic)",
        run_dir,
        result["test"]["uncalibrated"]["all"]["ece"],
        result["test"]["temperature"]["all"]["ece"],
        result["test"]["logistic"]["all"]["ece"],
    )
    return result


def report_runs(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    n_bootstrap: int = 0,
    title: str = "Calibration of softmax and energy-based models",
) -> dict[str, Any]:
    """Tables and plots comparing each task's softmax run with its energy-based run(s).

    ``run_dirs`` must hold, per task (config task.name), exactly one softmax
    run and at least one energy run (jem, jempp or sadajem); a task with
    several energy runs gets one table group per method ("task (method)").
    Runs without predictions are evaluated first. Writes ``report.md``,
    ``report.json``, fitted calibrators, ``<group>_reliability.{png,pdf}``
    (softmax vs energy on test) and ``<task>_<method>_curves.png`` (training
    curves) into ``out_dir``; returns ``{"markdown", "json", "plots"}`` paths.
    """
    from jemfast.calibration import compare_reliability, report_tasks, training_curves

    if not run_dirs:
        raise ConfigError("report needs at least one run directory")
    by_task: dict[str, dict[str, list[Path]]] = {}
    for run in run_dirs:
        run = Path(run)
        config = load_run_config(run)
        method = config.train.method
        kind = "softmax" if method == "softmax" else "energy"
        by_task.setdefault(config.task.name, {"softmax": [], "energy": []})[kind].append(run)
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
            method = load_run_config(energy_run).train.method
            energy = _ensure_predictions(energy_run)
            name = task if len(runs["energy"]) == 1 else f"{task} ({method})"
            if name in groups:
                raise ConfigError(f"task {task!r} has two {method} runs; report one of them")
            groups[name] = {
                "softmax_dev": softmax["dev"],
                "softmax_test": softmax["test"],
                "energy_dev": energy["dev"],
                "energy_test": energy["test"],
            }
            curves.append((f"{task}_{method}", energy_run))
    out_dir = Path(out_dir)
    with _bad_input("report"):
        md_path, json_path = report_tasks(groups, out_dir, title=title, name="report", n_bootstrap=n_bootstrap)
    plots: list[Path] = []
    for name, splits in groups.items():
        slug = name.replace(" (", "_").replace(")", "").replace(" ", "_")
        for suffix in ("png", "pdf"):
            plots.append(
                compare_reliability(
                    splits["softmax_test"], splits["energy_test"], out_dir / f"{slug}_reliability.{suffix}"
                )
            )
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


def list_benchmarks(folder: Path | None = None) -> dict[str, Path]:
    """Benchmark name -> script, for every ``bench_<name>.py`` in the benchmarks folder."""
    folder = benchmarks_dir() if folder is None else folder
    return {p.stem[len("bench_") :]: p for p in sorted(folder.glob("bench_*.py"))}


# ------------------------------------------------------------------ demo
def run_demo(
    out_dir: str | os.PathLike = "jemfast_demo",
    overrides: Sequence[str] = (),
    n_per_class: int = 50,
    n_eval_per_class: int = 20,
    progress: bool | None = None,
) -> dict[str, Any]:
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
    task = base.task.name
    logger.info("generating the synthetic %s corpus in %s", task, out_dir / "corpus")
    with _bad_input("demo corpus"):
        corpus = generate_corpus(out_dir / "corpus", task, n_per_class=n_per_class, n_eval_per_class=n_eval_per_class)
    runs: dict[str, Path] = {}
    calibration: dict[str, Any] = {}
    for method in ("softmax", "jem"):
        changes = {"train.method": method, "data.dir": str(corpus["root"])}
        if method == "softmax":
            # The baseline is the plain classifier: the energy terms belong to the JEM run.
            changes.update({"train.p_x_weight": None, "train.energy_l2": 0.0})
        config = base.updated(changes)
        run_dir = out_dir / "runs" / method
        train_run(config, run_dir, resume=True, progress=progress)
        evaluate_run(run_dir)
        calibration[method] = calibrate_run(run_dir)
        runs[method] = run_dir
    report = report_runs(
        [runs["softmax"], runs["jem"]],
        out_dir / "report",
        title="Calibration on the synthetic demo corpus (test split)",
    )
    return {"corpus": corpus["root"], "runs": runs, "report": report, "calibration": calibration}
