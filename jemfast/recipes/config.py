"""The run configuration as typed objects: one frozen dataclass per section of a recipe.

A field's type, default and range are declared once, here::

    RunConfig
      task:     TaskConfig       name, description
      data:     DataConfig       dir, cache_dir, n_mels, chunk_frames, batch_size, ...
      model:    ModelConfig      depth, width, norm, dropout (a jemfast WideResNet)
      train:    TrainConfig      method, epochs, lr, ..., p_x_weight, energy_l2, temperature, ...
      sampling: SamplingConfig   n_steps, buffer_size, init, reinit_freq, step_size, ...
      eval:     EvalConfig       n_bins

The defaults are the paper's setting (Hao et al., Interspeech 2024); a recipe file
states only what it changes. Every object checks itself when it is made (the
annotation gives the type, ``Literal`` the choices, :func:`setting` the range), so
``TrainConfig(lr=-1)``, a recipe file and a ``--set train.lr=-1`` override fail the
same way: a :class:`ConfigError` naming ``train.lr``, the bad value and what was
expected. Integers are accepted for float fields, and YAML 1.1's ``5e-4`` (a string
to PyYAML) as the number it means.

The objects are frozen: a changed config is a new, checked one
(:meth:`RunConfig.updated`), so no half-valid config exists.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from jemfast.sampling.choices import INIT_CHOICES

__all__ = [
    "ConfigError",
    "METHODS",
    "ENERGY_METHODS",
    "SEED_MAX",
    "FEATURE_CLAMP",
    "setting",
    "TaskConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "SamplingConfig",
    "EvalConfig",
    "RunConfig",
    "max_mel_bands",
]


class ConfigError(ValueError):
    """A user error: a bad config value, an unknown method, a missing data path or run directory.

    The command line prints its message as one line and exits with status 1.
    """


Method = Literal["softmax", "jem", "jempp", "sadajem"]
METHODS: tuple[str, ...] = typing.get_args(Method)
ENERGY_METHODS = METHODS[1:]
# Buffer initialisation per method when sampling.init is null: JEM's reference draws fresh
# chains from U[-1, 1], but the features here are normalised per band to zero mean and unit
# variance, so jem and sadajem start from N(0, 1), the data's scale; jempp keeps JEM++'s
# class-conditional Gaussian fitted on the training chunks.
DEFAULT_INIT = {"jem": "normal", "jempp": "class_gaussian", "sadajem": "normal"}
# The JEM++ and SADA-JEM references clamp samples to [-1, 1], the range of their images.
# Per-band mean/variance-normalised log-Mel features are not in [-1, 1]: measured on the
# synthetic language corpus (16 bands), 31.5% of values lie outside it, 0.45% outside
# [-3, 3], and the 0.1% / 99.9% quantiles are -3.1 / 3.6. A [-1, 1] clamp keeps samples
# off a third of the data's range; [-4, 4] is the same idea (the data's range) for these
# features. sampling.clamp overrides it.
FEATURE_CLAMP = (-4.0, 4.0)
# Integer values end up in torch and numpy as int64; a larger one would fail there with a traceback.
INT64_MAX = 2**63 - 1
# train.seed feeds torch.manual_seed (accepts [-2**63, 2**64)), numpy's default_rng through
# ChunkDataset (accepts only seeds >= 0) and the counter-based generators of the replay buffer
# and the sampler, whose keys must fit in int64. Every one of them accepts [0, 2**63 - 2].
SEED_MAX = 2**63 - 2
# YAML 1.1 (PyYAML) reads exponents without a dot, such as 5e-4, as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false"}


def setting(
    default: Any,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple | None = None,
) -> Any:
    """A config field: its default, a one-line help, and its range or (for plain strings) its choices."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices}
    if isinstance(default, (list, dict)):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a field accepts, read from its annotation and :func:`setting` metadata."""

    name: str  # "section.key"
    kind: type  # int, float, str or tuple (a list in YAML)
    nullable: bool
    choices: tuple | None
    minimum: float | None
    maximum: float | None
    item_kind: type | None  # for tuples
    length: int | None  # for fixed-length tuples

    def words(self) -> str:
        text = _TYPE_WORDS[list if self.kind is tuple else self.kind]
        return text + (" or null" if self.nullable else "")


def _spec(section: str, field: dataclasses.Field, annotation: Any) -> FieldSpec:
    nullable = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        nullable = type(None) in args
        (annotation,) = [a for a in args if a is not type(None)]
    choices = field.metadata.get("choices")
    item_kind = length = None
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        kind = type(choices[0])
    elif origin is tuple:
        kind, items = tuple, typing.get_args(annotation)
        item_kind = items[0]
        length = None if items[-1] is Ellipsis else len(items)
    else:
        kind = annotation
    return FieldSpec(
        f"{section}.{field.name}",
        kind,
        nullable,
        choices,
        field.metadata.get("minimum"),
        field.metadata.get("maximum"),
        item_kind,
        length,
    )


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


def _check_scalar(name: str, value: Any, kind: type, words: str) -> Any:
    if kind is float:
        value = _as_float(name, value)
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {words}, got the boolean {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be {words}, got {type(value).__name__} {value!r}")
    _check_finite(name, value)
    return value


def _check(spec: FieldSpec, value: Any) -> Any:
    """``value`` checked against ``spec`` and normalised (floats for float fields, tuples for lists)."""
    name = spec.name
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{name} must not be null")
    if spec.kind is tuple:
        if not isinstance(value, (list, tuple)) or isinstance(value, str):
            raise ConfigError(f"{name} must be {spec.words()}, got {type(value).__name__} {value!r}")
        items = [_as_float(name, v) if spec.item_kind is float else v for v in value]
        if any(isinstance(v, bool) or not isinstance(v, spec.item_kind) for v in items):
            raise ConfigError(f"{name} must be a list of {spec.item_kind.__name__}, got {list(value)!r}")
        for item in items:
            _check_finite(name, item)
        if spec.length is not None and len(items) != spec.length:
            raise ConfigError(f"{name} must be a list of {spec.length} numbers, got {list(value)!r}")
        return tuple(items)
    value = _check_scalar(name, value, spec.kind, spec.words())
    if spec.kind is int and spec.maximum is None and value > INT64_MAX:
        raise ConfigError(f"{name} must be <= {INT64_MAX} (2**63 - 1), got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{name} must be >= {spec.minimum}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{name} must be <= {spec.maximum}, got {value!r}")
    return value


class Section:
    """Base of the section dataclasses: checks and normalises every field when made."""

    NAME: ClassVar[str]

    @classmethod
    def specs(cls) -> dict[str, FieldSpec]:
        """Each field's :class:`FieldSpec`, by field name (cached per class)."""
        cached = cls.__dict__.get("_specs")
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = {f.name: _spec(cls.NAME, f, hints[f.name]) for f in dataclasses.fields(cls)}
            cls._specs = cached
        return cached

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each field's one-line help (empty when its name says it all)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def __post_init__(self) -> None:
        for key, spec in self.specs().items():
            object.__setattr__(self, key, _check(spec, getattr(self, key)))
        self.check()

    def check(self) -> None:
        """Rules between fields of this section (ConfigError naming the key); none by default."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "") -> Section:
        """The section from a (possibly partial) mapping; keys it lacks keep their defaults."""
        prefix = f"{where}: " if where else ""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{prefix}section {cls.NAME!r} must be a mapping, got {type(values).__name__}")
        known = cls.specs()
        for key in values:
            if key not in known:
                raise ConfigError(f"{prefix}unknown key {cls.NAME}.{key}; {cls.NAME} has {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), in field order: what config.yaml holds."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in vars(self).items() if key in self.specs()}


@dataclass(frozen=True)
class TaskConfig(Section):
    """What the run is about; reports group runs by ``name``."""

    NAME: ClassVar[str] = "task"
    name: str = setting("task", "task name; report groups runs by it")
    description: str | None = None


@dataclass(frozen=True)
class DataConfig(Section):
    """The corpus, its features and the loaders."""

    NAME: ClassVar[str] = "data"
    dir: str | None = setting(None, "folder with train.csv, dev.csv, test.csv and labels.txt")
    cache_dir: str | None = setting(None, "feature caches (default: <dir>/features)")
    n_mels: int = setting(32, "log-Mel bands (at most max_mel_bands())", minimum=1)
    chunk_frames: int = setting(192, "training chunk length in 10 ms frames", minimum=1)
    batch_size: int = setting(64, minimum=1)
    eval_batch_size: int = setting(16, minimum=1)
    num_workers: int = setting(0, "DataLoader worker processes", minimum=0)
    feature_workers: int = setting(0, "feature extraction processes (0: in this process)", minimum=0)
    on_error: Literal["raise", "skip"] = setting(
        "raise",
        "an unusable audio file (unreadable, too short, out of range, non-finite features): raise stops "
        "the feature build naming it; skip leaves it out, names it in a warning and records it in the "
        "cache's index.json",
    )

    def check(self) -> None:
        top = max_mel_bands()
        if self.n_mels > top:
            raise ConfigError(
                f"data.n_mels must be <= {top} (the frequency bins of the feature recipe's "
                f"{2 * (top - 1)}-point FFT), got {self.n_mels}"
            )


@dataclass(frozen=True)
class ModelConfig(Section):
    """The classifier: a jemfast WideResNet (``depth`` = 6n + 4)."""

    NAME: ClassVar[str] = "model"
    depth: int = setting(28, minimum=10)
    width: int = setting(5, minimum=1)
    norm: Literal["batch", "group"] | None = setting(None, "null: no normalisation (the paper's WRN)")
    dropout: float = setting(0.0, minimum=0.0, maximum=0.999)

    def check(self) -> None:
        if (self.depth - 4) % 6 != 0:
            raise ConfigError(f"model.depth must be 10, 16, 22, 28, ... ((depth - 4) divisible by 6), got {self.depth}")


@dataclass(frozen=True)
class TrainConfig(Section):
    """The method, its objective and the optimisation (SGD with warm-up and step decay)."""

    NAME: ClassVar[str] = "train"
    method: Method = "jem"
    epochs: int = setting(150, minimum=1)
    lr: float = setting(0.1, minimum=0.0)
    momentum: float = setting(0.9, minimum=0.0, maximum=1.0)
    weight_decay: float = setting(5e-4, minimum=0.0)
    warmup_steps: int = setting(1000, minimum=0)
    milestones: tuple[int, ...] = setting((40, 80, 120), "epochs at which the learning rate is multiplied by gamma")
    gamma: float = setting(0.2, minimum=0.0)
    seed: int = setting(0, "seed of every random stream of the run", minimum=0, maximum=SEED_MAX)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    p_x_weight: float | None = setting(None, "weight of log p(x); null: 0 for softmax, 1 otherwise", minimum=0.0)
    energy_l2: float = setting(0.0, minimum=0.0)
    temperature: float = setting(1.0, "energy temperature T in E(x) = -T logsumexp(f(x) / T)", minimum=1e-3)
    data_noise: float = setting(0.03, "std of Gaussian noise added to every training input", minimum=0.0)
    max_rollbacks: int = setting(5, "divergence rollbacks allowed in a run", minimum=0)
    init_from: str | None = setting(None, "run directory whose best (else last) weights start this run")
    checkpoint_every: int | None = setting(None, "also checkpoint every this many steps", minimum=1)
    amp: Literal["bf16", "fp16"] | None = None

    def check(self) -> None:
        if list(self.milestones) != sorted(self.milestones) or any(m < 0 for m in self.milestones):
            raise ConfigError(f"train.milestones must be increasing non-negative epochs, got {list(self.milestones)}")
        if self.device not in ("auto", "cpu") and not (self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.method == "softmax" and (self.p_x_weight or 0) > 0:
            raise ConfigError(
                f"train.p_x_weight is {self.p_x_weight} but the softmax method draws no samples; use 0 or null"
            )
        if self.method != "softmax" and self.p_x_weight == 0:
            raise ConfigError(
                f"train.p_x_weight is 0, which trains a softmax model; use --method softmax instead of {self.method}"
            )

    @property
    def uses_sampling(self) -> bool:
        """True for the energy-based methods (jem, jempp, sadajem)."""
        return self.method != "softmax"

    @property
    def generative_weight(self) -> float:
        """The weight of log p(x) this run trains with: p_x_weight, or 0 (softmax) / 1 (energy) when null."""
        if self.p_x_weight is not None:
            return self.p_x_weight
        return 1.0 if self.uses_sampling else 0.0


@dataclass(frozen=True)
class SamplingConfig(Section):
    """The SGLD sampler and its replay buffer; null values take the method's preset (jemfast.sampling.PRESETS)."""

    NAME: ClassVar[str] = "sampling"
    n_steps: int | None = setting(50, "SGLD steps per iteration (outer steps for PYLD); null: the preset's", minimum=0)
    buffer_size: int = setting(10000, minimum=1)
    init: str | None = setting(None, "null: the method's own initialisation (DEFAULT_INIT)", choices=INIT_CHOICES)
    reinit_freq: float = setting(0.05, "share of chains restarted from the init at each draw", minimum=0.0, maximum=1.0)
    step_size: float | None = setting(None, "null: the preset's value", minimum=0.0)
    noise_std: float | None = setting(None, "null: the preset's value", minimum=0.0)
    pyld_lr: float | None = setting(None, "jempp's PYLD inner step size; null: the preset's", minimum=0.0)
    clamp: tuple[float, float] | None = setting(
        None,
        "[lo, hi] bounds for the samples (sadajem's clamp, jempp's inner steps, jem's chain); "
        "null: none for jem, FEATURE_CLAMP for jempp and sadajem",
    )

    def check(self) -> None:
        if self.clamp is not None and not self.clamp[0] < self.clamp[1]:
            raise ConfigError(f"sampling.clamp must be null or [lo, hi] with lo < hi, got {list(self.clamp)!r}")


@dataclass(frozen=True)
class EvalConfig(Section):
    """Evaluation settings."""

    NAME: ClassVar[str] = "eval"
    n_bins: int = setting(15, "equal-width bins of the ECE", minimum=1)


SECTIONS: tuple[type[Section], ...] = (TaskConfig, DataConfig, ModelConfig, TrainConfig, SamplingConfig, EvalConfig)


@dataclass(frozen=True)
class RunConfig:
    """A whole, checked run configuration: one typed object per section.

    ``RunConfig()`` is the paper's setting. :meth:`from_dict` reads a (partial) nested
    mapping such as a recipe file, :meth:`updated` returns a changed copy, and
    :meth:`to_dict` gives what ``config.yaml`` holds. Rules between sections (a buffer at
    least one batch large) are checked here, rules within a section by the section.
    """

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        for section in SECTIONS:
            value = getattr(self, section.NAME)
            if not isinstance(value, section):
                raise TypeError(f"RunConfig.{section.NAME} must be a {section.__name__}, got {type(value).__name__}")
        if self.train.uses_sampling and self.sampling.buffer_size < self.data.batch_size:
            raise ConfigError(
                f"sampling.buffer_size ({self.sampling.buffer_size}) must be at least data.batch_size "
                f"({self.data.batch_size})"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> RunConfig:
        """A checked config from a nested mapping ``{section: {key: value}}``; missing keys keep their defaults.

        ``where`` (a file name) prefixes errors about unknown sections and keys.
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix}a config must be a mapping of sections, got {type(data).__name__}")
        by_name = {section.NAME: section for section in SECTIONS}
        for name in data:
            if name not in by_name:
                raise ConfigError(f"{prefix}unknown section {name!r}; expected one of {sorted(by_name)}")
        sections = {
            name: section.from_mapping({} if data.get(name) is None else data[name], where)
            for name, section in by_name.items()
        }
        return cls(**sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every section's plain values, in the order of :data:`SECTIONS`."""
        return {section.NAME: getattr(self, section.NAME).to_dict() for section in SECTIONS}

    def updated(self, values: Mapping[str, Any]) -> RunConfig:
        """A checked copy with ``{"section.key": value}`` changes applied together."""
        data = self.to_dict()
        for dotted, value in values.items():
            section, _, key = dotted.partition(".")
            if section not in data or key not in data[section]:
                raise ConfigError(f"unknown config key {dotted!r}")
            data[section][key] = value
        return RunConfig.from_dict(data)

    def get(self, dotted: str) -> Any:
        """The value of ``"section.key"``."""
        section, _, key = dotted.partition(".")
        return getattr(getattr(self, section), key)

    @property
    def buffer_init(self) -> str:
        """The replay buffer's initialisation: sampling.init, or the method's own (:data:`DEFAULT_INIT`)."""
        if not self.train.uses_sampling:
            raise ConfigError("the softmax method draws no samples and has no replay buffer")
        return self.sampling.init or DEFAULT_INIT[self.train.method]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, bands, frames) of one training chunk: the model's and the replay buffer's input."""
        return (1, self.data.n_mels, self.data.chunk_frames)


def max_mel_bands() -> int:
    """The most log-Mel bands the feature recipe can resolve: the n_fft // 2 + 1 bins of its FFT.

    More bands than FFT bins only adds empty filters, and makes feature caches
    grow with n_mels for nothing.
    """
    from jemfast.data.features import FeatureRecipe

    return FeatureRecipe().n_fft // 2 + 1
