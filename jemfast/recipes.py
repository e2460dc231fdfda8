"""Training recipes: YAML configs with a small schema, command-line overrides, and what a config builds.

A config has five sections; every key has a default (the paper's setting), so a
recipe file states only what it changes, but the package's recipes spell out
every value so they read as documentation::

    task:     name, description
    data:     dir (train.csv, dev.csv, test.csv, labels.txt), cache_dir, n_mels,
              chunk_frames, batch_size, eval_batch_size, num_workers, feature_workers, on_error
    model:    depth, width, norm, dropout                       (a jemfast WideResNet)
    train:    method, epochs, lr, momentum, weight_decay, warmup_steps, milestones,
              gamma, seed, device, p_x_weight, energy_l2, temperature, data_noise, max_rollbacks, init_from,
              checkpoint_every, amp
    sampling: n_steps, buffer_size, init, reinit_freq, step_size, noise_std, pyld_lr, clamp
    eval:     n_bins

:func:`load_config` reads a recipe by package name ("age", "emotion",
"language", "demo") or by path, merges it over the defaults, applies
``section.key=value`` overrides (values parsed as YAML scalars) and validates
the result up front: unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the key. The builders (:func:`build_model`,
:func:`build_sampler`) turn a validated config into library objects.

Methods: ``softmax`` is :class:`~jemfast.train.JEMTrainer` with
``p_x_weight = 0`` (no sampling); ``jem``, ``jempp`` and ``sadajem`` use
``SGLDSampler.preset(method, ...)`` with the recipe's ``n_steps`` (and any
other non-null sampling value) and each method's replay-buffer initialisation
(``sampling.init: null`` picks it): JEM's reference draws fresh chains from
U[-1, 1], but the features here are normalised per band to zero mean and unit
variance, so ``jem`` and ``sadajem`` start from N(0, 1), which matches the
data's scale; ``jempp`` uses JEM++'s informative class-conditional Gaussian,
fitted on the training chunks with ``ReplayBuffer.fit_init``. For the same
reason the [-1, 1] sample clamp of JEM++ and SADA-JEM becomes
:data:`FEATURE_CLAMP` (see its comment for the measurement).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "METHODS",
    "ENERGY_METHODS",
    "DEFAULTS",
    "SCHEMA",
    "recipe_names",
    "recipe_path",
    "load_config",
    "read_config_file",
    "apply_overrides",
    "parse_override",
    "validate_config",
    "max_mel_bands",
    "save_config",
    "resolve_device",
    "buffer_init",
    "build_model",
    "build_sampler",
    "build_optimizer",
]

METHODS = ("softmax", "jem", "jempp", "sadajem")
ENERGY_METHODS = METHODS[1:]
INIT_CHOICES = ("uniform", "normal", "class_gaussian")
# data.on_error: what a feature build does with an unusable audio file (jemfast.data.FeatureCache.build).
ON_ERROR_CHOICES = ("raise", "skip")
# Buffer initialisation per method when sampling.init is null (see the module docstring).
DEFAULT_INIT = {"jem": "normal", "jempp": "class_gaussian", "sadajem": "normal"}
# The JEM++ and SADA-JEM references clamp samples to [-1, 1], the range of their images.
# Per-band mean/variance-normalised log-Mel features are not in [-1, 1]: measured on the
# synthetic language corpus (16 bands), 31.5% of values lie outside it, 0.45% outside
# [-3, 3], and the 0.1% / 99.9% quantiles are -3.1 / 3.6. A [-1, 1] clamp keeps samples
# off a third of the data's range; [-4, 4] is the same idea (the data's range) for these
# features. sampling.clamp overrides it.
FEATURE_CLAMP = (-4.0, 4.0)
CONFIG_NAME = "config.yaml"
# YAML 1.1 (PyYAML) reads exponents without a dot, such as 5e-4, as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
# Integer values end up in torch and numpy as int64; a larger one would fail there with a traceback.
INT64_MAX = 2**63 - 1
# train.seed feeds torch.manual_seed (accepts [-2**63, 2**64)), numpy's default_rng through
# ChunkDataset (accepts only seeds >= 0) and the counter-based generators of the replay buffer
# (seed) and the sampler (seed + 1, see build_sampler), whose keys must fit in int64. Every one
# of them accepts [0, 2**63 - 2].
SEED_MAX = 2**63 - 2


class ConfigError(ValueError):
    """A user error: a bad config value, an unknown method, a missing data path or run directory.

    The command line prints its message as one line and exits with status 1.
    """


@dataclass(frozen=True)
class Field:
    """One config key: its type(s), whether null is allowed, and its range or choices."""

    types: tuple[type, ...]
    nullable: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    item_type: type | None = None  # for lists
    help: str = ""


def _int(minimum: int | None = None, nullable: bool = False, help: str = "", maximum: int | None = None) -> Field:
    return Field((int,), nullable=nullable, minimum=minimum, maximum=maximum, help=help)


def _float(minimum: float | None = None, maximum: float | None = None, nullable: bool = False, help: str = "") -> Field:
    return Field((float,), nullable=nullable, minimum=minimum, maximum=maximum, help=help)


def _str(nullable: bool = False, choices: tuple | None = None, help: str = "") -> Field:
    return Field((str,), nullable=nullable, choices=choices, help=help)


SCHEMA: dict[str, dict[str, Field]] = {
    "task": {
        "name": _str(help="task name; report groups runs by it"),
        "description": _str(nullable=True),
    },
    "data": {
        "dir": _str(nullable=True, help="folder with train.csv, dev.csv, test.csv and labels.txt"),
        "cache_dir": _str(nullable=True, help="feature caches (default: <dir>/features)"),
        "n_mels": _int(1, help="log-Mel bands (at most max_mel_bands(), checked in validate_config)"),
        "chunk_frames": _int(1, help="training chunk length in 10 ms frames"),
        "batch_size": _int(1),
        "eval_batch_size": _int(1),
        "num_workers": _int(0, help="DataLoader worker processes"),
        "feature_workers": _int(0, help="feature extraction processes (0: in this process)"),
        "on_error": _str(
            choices=ON_ERROR_CHOICES,
            help="an unusable audio file (unreadable, too short, out of range, non-finite features): "
            "raise stops the feature build naming it; skip leaves it out, names it in a "
            "warning and records it in the cache's index.json",
        ),
    },
    "model": {
        "depth": _int(10),
        "width": _int(1),
        "norm": _str(nullable=True, choices=("batch", "group")),
        "dropout": _float(0.0, 0.999),
    },
    "train": {
        "method": _str(choices=METHODS),
        "epochs": _int(1),
        "lr": _float(0.0),
        "momentum": _float(0.0, 1.0),
        "weight_decay": _float(0.0),
        "warmup_steps": _int(0),
        "milestones": Field((list,), item_type=int, help="epochs at which the learning rate is multiplied by gamma"),
        "gamma": _float(0.0),
        "seed": _int(0, maximum=SEED_MAX, help="seed of every random stream of the run"),
        "device": _str(help="auto, cpu, cuda or cuda:N"),
        "p_x_weight": _float(0.0, nullable=True, help="weight of log p(x); null: 0 for softmax, 1 otherwise"),
        "energy_l2": _float(0.0),
        "temperature": _float(1e-3, help="energy temperature T in E(x) = -T logsumexp(f(x) / T)"),
        "data_noise": _float(0.0, help="std of Gaussian noise added to every training input (feature units)"),
        "max_rollbacks": _int(0, help="divergence rollbacks allowed in a run (raise it to continue a diverged run)"),
        "init_from": _str(nullable=True, help="run directory whose best (else last) weights start this run"),
        "checkpoint_every": _int(1, nullable=True, help="also checkpoint every this many steps"),
        "amp": _str(nullable=True, choices=("bf16", "fp16")),
    },
    "sampling": {
        "n_steps": _int(0, nullable=True, help="SGLD steps per iteration (outer steps for PYLD); null: the preset's"),
        "buffer_size": _int(1),
        "init": _str(nullable=True, choices=INIT_CHOICES, help="null: the method's own initialisation"),
        "reinit_freq": _float(0.0, 1.0),
        "step_size": _float(0.0, nullable=True, help="null: the preset's value"),
        "noise_std": _float(0.0, nullable=True, help="null: the preset's value"),
        "pyld_lr": _float(0.0, nullable=True, help="jempp's PYLD step size; null: the preset's 0.2"),
        "clamp": Field(
            (list,),
            nullable=True,
            item_type=float,
            help="[lo, hi] bounds for the samples (sadajem's clamp, jempp's inner steps, jem's "
            "chain); null: none for jem, FEATURE_CLAMP for jempp and sadajem",
        ),
    },
    "eval": {
        "n_bins": _int(1, help="equal-width bins of the ECE"),
    },
}

# The paper's setting (Hao et al., Interspeech 2024; see the README); recipes change what their task needs.
DEFAULTS: dict[str, dict[str, Any]] = {
    "task": {"name": "task", "description": None},
    "data": {
        "dir": None,
        "cache_dir": None,
        "n_mels": 32,
        "chunk_frames": 192,
        "batch_size": 64,
        "eval_batch_size": 16,
        "num_workers": 0,
        "feature_workers": 0,
        "on_error": "raise",
    },
    "model": {"depth": 28, "width": 5, "norm": None, "dropout": 0.0},
    "train": {
        "method": "jem",
        "epochs": 150,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_steps": 1000,
        "milestones": [40, 80, 120],
        "gamma": 0.2,
        "seed": 0,
        "device": "auto",
        "p_x_weight": None,
        "energy_l2": 0.0,
        "temperature": 1.0,
        "data_noise": 0.03,
        "max_rollbacks": 5,
        "init_from": None,
        "checkpoint_every": None,
        "amp": None,
    },
    "sampling": {
        "n_steps": 50,
        "buffer_size": 10000,
        "init": None,
        "reinit_freq": 0.05,
        "step_size": None,
        "noise_std": None,
        "pyld_lr": 0.2,
        "clamp": None,
    },
    "eval": {"n_bins": 15},
}


# ------------------------------------------------------------------ loading
def recipe_names() -> list[str]:
    """Names of the recipes shipped in ``jemfast/configs`` (e.g. age, demo, emotion, language)."""
    folder = resources.files("jemfast") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """The file of a recipe given by package name or by path; ConfigError when neither exists."""
    text = str(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    if path.suffix == "" and "/" not in text and os.sep not in text:
        packaged = resources.files("jemfast") / "configs" / f"{text}.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    raise ConfigError(f"config {text!r} is neither a file nor a packaged recipe; recipes: {', '.join(recipe_names())}")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML config file into a (possibly partial) nested dict; ConfigError on bad YAML."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], update: dict[str, Any], where: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for section, values in update.items():
        if section not in SCHEMA:
            raise ConfigError(f"{where}: unknown section {section!r}; expected one of {sorted(SCHEMA)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping, got {type(values).__name__}")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"{where}: unknown key {section}.{key}; {section} has {', '.join(sorted(SCHEMA[section]))}"
                )
            merged[section][key] = value
    return merged


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``"section.key=value"`` into (section, key, value), the value parsed as a YAML scalar or list."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.epochs=3)")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key (e.g. model.width), got {dotted!r}")
    section, key = parts
    if section not in SCHEMA:
        raise ConfigError(f"override {text!r}: unknown section {section!r}; expected one of {sorted(SCHEMA)}")
    if key not in SCHEMA[section]:
        raise ConfigError(
            f"override {text!r}: unknown key {section}.{key}; {section} has {', '.join(sorted(SCHEMA[section]))}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r}") from None
    if isinstance(value, dict):
        raise ConfigError(f"override {text!r}: the value must be a scalar or a list, got a mapping")
    return section, key, value


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``section.key=value`` override applied (not validated)."""
    config = copy.deepcopy(config)
    for text in overrides:
        section, key, value = parse_override(text)
        config[section][key] = value
    return config


def _as_float(name: str, value: Any) -> Any:
    """An int (or a YAML-1.1 exponent string) as a float; other values unchanged."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_exponent = isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip())
    if not (is_int or is_exponent):
        return value
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range
        raise ConfigError(f"{name} must be a finite number, got {value!r}") from None


def _check_finite(name: str, value: Any) -> None:
    # NaN passes every comparison with a minimum or maximum, and an infinite learning rate,
    # noise or weight turns the weights into NaN within a step: refuse both at the door.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _check_value(section: str, key: str, value: Any, field: Field) -> Any:
    name = f"{section}.{key}"
    if value is None:
        if field.nullable:
            return None
        raise ConfigError(f"{name} must not be null")
    expected = field.types
    if float in expected:
        value = _as_float(name, value)
    if isinstance(value, bool) and bool not in expected:
        raise ConfigError(f"{name} must be {_type_words(field)}, got the boolean {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{name} must be {_type_words(field)}, got {type(value).__name__} {value!r}")
    _check_finite(name, value)
    if isinstance(value, int) and not isinstance(value, bool) and field.maximum is None and value > INT64_MAX:
        raise ConfigError(f"{name} must be <= {INT64_MAX} (2**63 - 1), got {value!r}")
    if field.item_type is float:
        value = [_as_float(name, v) for v in value]
    if field.item_type is not None:
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, field.item_type)]
        if bad:
            raise ConfigError(f"{name} must be a list of {field.item_type.__name__}, got {value!r}")
        for item in value:
            _check_finite(name, item)
    if field.choices is not None and value not in field.choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, field.choices))}, got {value!r}")
    if field.minimum is not None and value < field.minimum:
        raise ConfigError(f"{name} must be >= {field.minimum}, got {value!r}")
    if field.maximum is not None and value > field.maximum:
        raise ConfigError(f"{name} must be <= {field.maximum}, got {value!r}")
    return value


def _type_words(field: Field) -> str:
    words = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false"}
    text = " or ".join(words[t] for t in field.types)
    return text + (" or null" if field.nullable else "")


def max_mel_bands() -> int:
    """The most log-Mel bands the feature recipe can resolve: the n_fft // 2 + 1 bins of its FFT.

    More bands than FFT bins only adds empty filters, and makes feature caches
    grow with n_mels for nothing.
    """
    from jemfast.data.features import FeatureRecipe

    return FeatureRecipe().n_fft // 2 + 1


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check every key against :data:`SCHEMA` and the cross-key rules; returns a normalised copy.

    Raises ConfigError naming the first bad key (unknown keys, missing keys,
    wrong types, values out of range, NaN or infinite numbers, more Mel bands
    than FFT bins, an invalid Wide-ResNet depth, unsorted milestones, a buffer
    the sampler cannot use).
    """
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(config).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for section in config:
        if section not in SCHEMA:
            raise ConfigError(f"unknown section {section!r}; expected one of {sorted(SCHEMA)}")
    for section, fields in SCHEMA.items():
        values = config.get(section)
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} must be a mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key {section}.{unknown[0]}; {section} has {', '.join(sorted(fields))}")
        out[section] = {}
        for key, field in fields.items():
            if key not in values:
                raise ConfigError(f"missing key {section}.{key}")
            out[section][key] = _check_value(section, key, values[key], field)
    n_mels, top = out["data"]["n_mels"], max_mel_bands()
    if n_mels > top:
        raise ConfigError(
            f"data.n_mels must be <= {top} (the frequency bins of the feature recipe's "
            f"{2 * (top - 1)}-point FFT), got {n_mels}"
        )
    depth = out["model"]["depth"]
    if (depth - 4) % 6 != 0:
        raise ConfigError(f"model.depth must be 10, 16, 22, 28, ... ((depth - 4) divisible by 6), got {depth}")
    milestones = out["train"]["milestones"]
    if milestones != sorted(milestones) or any(m < 0 for m in milestones):
        raise ConfigError(f"train.milestones must be increasing non-negative epochs, got {milestones}")
    device = out["train"]["device"]
    if device not in ("auto", "cpu") and not (device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    clamp = out["sampling"]["clamp"]
    if clamp is not None and (len(clamp) != 2 or not clamp[0] < clamp[1]):
        raise ConfigError(f"sampling.clamp must be null or [lo, hi] with lo < hi, got {clamp!r}")
    if out["train"]["method"] != "softmax" and out["sampling"]["buffer_size"] < out["data"]["batch_size"]:
        raise ConfigError(
            f"sampling.buffer_size ({out['sampling']['buffer_size']}) must be at least data.batch_size "
            f"({out['data']['batch_size']})"
        )
    return out


def load_config(
    name_or_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    method: str | None = None,
) -> dict[str, Any]:
    """Defaults, then the recipe file (package name or path; None: defaults only), then ``method``, then overrides.

    Returns the validated config. Raises ConfigError for a missing recipe,
    bad YAML, an unknown method or any invalid key.
    """
    config = copy.deepcopy(DEFAULTS)
    if name_or_path is not None:
        path = recipe_path(name_or_path)
        config = _merge(config, read_config_file(path), str(path))
    if method is not None:
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        config["train"]["method"] = method
    config = apply_overrides(config, overrides)
    return validate_config(config)


def save_config(config: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a config as YAML (section order of :data:`SCHEMA`) and return the path.

    The file is replaced atomically: a reader (``jemfast evaluate`` of a run being
    resumed) or a crash mid-write sees the old config or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {section: dict(config[section]) for section in SCHEMA}
    text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # Mode 0o666 less the umask, as a plain write would create it (mkstemp would make it private).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# ------------------------------------------------------------------ builders
def resolve_device(name: str):
    """``torch.device`` for train.device; "auto" is CUDA when available, else CPU.

    A CUDA device is also made the current one: CUDA graphs, Triton launches and
    NCCL collectives follow the current device, not the tensors'.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device is {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
        if device.index is not None:
            torch.cuda.set_device(device)
    return device


def buffer_init(config: dict[str, Any]) -> str:
    """The replay-buffer initialisation of the config's method (sampling.init, or the method's own)."""
    method = config["train"]["method"]
    if method == "softmax":
        raise ConfigError("the softmax method draws no samples and has no replay buffer")
    return config["sampling"]["init"] or DEFAULT_INIT[method]


def build_model(config: dict[str, Any], n_classes: int):
    """The config's WideResNet for ``n_classes`` classes; input (N, 1, n_mels, frames), output (N, n_classes)."""
    from jemfast.models import WideResNet

    model = config["model"]
    return WideResNet(
        depth=model["depth"],
        width=model["width"],
        num_classes=n_classes,
        in_channels=1,
        norm=model["norm"],
        dropout=model["dropout"],
    )


def build_optimizer(config: dict[str, Any], model, steps_per_epoch: int):
    """SGD with the paper's warm-up and step decay (:func:`jemfast.train.paper_optimizer`) from train.*."""
    from jemfast.train import paper_optimizer

    train = config["train"]
    return paper_optimizer(
        model,
        steps_per_epoch=steps_per_epoch,
        lr=train["lr"],
        momentum=train["momentum"],
        weight_decay=train["weight_decay"],
        warmup_steps=train["warmup_steps"],
        milestones=train["milestones"],
        gamma=train["gamma"],
    )


def amp_dtype(config: dict[str, Any]):
    """torch dtype of train.amp (None for full float32)."""
    import torch

    return {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}[config["train"]["amp"]]


def build_sampler(
    config: dict[str, Any],
    model,
    sample_shape: Sequence[int],
    n_classes: int,
    device,
    fit_batches: Iterable | None = None,
):
    """The method's SGLDSampler over ``model`` with a replay buffer of ``sample_shape`` samples on ``device``.

    ``fit_batches`` ((x, y) batches of training chunks) feed the class_gaussian
    initialisation, which fits one diagonal Gaussian per class; without them
    that buffer stays unfilled until a checkpoint's buffer state is loaded
    (a resumed run). Returns None for softmax.
    """
    from jemfast.sampling import ReplayBuffer, SGLDSampler

    method = config["train"]["method"]
    if method == "softmax":
        return None
    sampling, seed = config["sampling"], config["train"]["seed"]
    init = buffer_init(config)
    buffer = ReplayBuffer(
        tuple(sample_shape),
        size=sampling["buffer_size"],
        n_classes=None,
        init=init,
        reinit_freq=sampling["reinit_freq"],
        device=device,
        seed=seed,
    )
    if init == "class_gaussian" and fit_batches is not None:
        buffer.fit_init(fit_batches, n_classes=n_classes)
    options: dict[str, Any] = {
        "seed": seed + 1,
        "amp_dtype": amp_dtype(config),
        "temperature": config["train"]["temperature"],
    }
    for key in ("n_steps", "step_size", "noise_std"):  # null: the preset's value
        if sampling[key] is not None:
            options[key] = sampling[key]
    if method == "jempp" and sampling["pyld_lr"] is not None:
        options["pyld_lr"] = sampling["pyld_lr"]
    clamp = sampling["clamp"] if sampling["clamp"] is not None else (None if method == "jem" else FEATURE_CLAMP)
    if clamp is not None:
        options["pyld_clamp" if method == "jempp" else "clamp"] = tuple(clamp)
    return SGLDSampler.preset(method, model, buffer, **options)
