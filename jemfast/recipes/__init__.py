"""Training recipes: typed run configurations, YAML files that state what differs, and what a config builds.

Three modules, one job each::

    config.py   RunConfig and its sections (TaskConfig, DataConfig, ModelConfig, TrainConfig,
                SamplingConfig, EvalConfig): types, defaults (the paper's setting) and checks
    files.py    recipe files by package name or path, section.key=value overrides, config.yaml
    build.py    device, WideResNet, SGD schedule and sampler from a RunConfig

:func:`load_config` reads a recipe ("age", "emotion", "language", "demo",
"calibration", or a path) over the defaults, applies ``section.key=value`` overrides
(values parsed as YAML scalars) and returns a checked :class:`RunConfig`: unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the key.

Methods: ``softmax`` trains with ``p_x_weight = 0`` (no sampling); ``jem``, ``jempp`` and
``sadajem`` sample with their reference's preset (:data:`jemfast.sampling.PRESETS`) where
the recipe's sampling values are null, and initialise the replay buffer their own way
(:data:`DEFAULT_INIT`).
"""

from jemfast.recipes.build import (
    amp_dtype,
    build_model,
    build_optimizer,
    build_sampler,
    resolve_device,
    sampler_settings,
)
from jemfast.recipes.config import (
    DEFAULT_INIT,
    ENERGY_METHODS,
    FEATURE_CLAMP,
    METHODS,
    SECTIONS,
    SEED_MAX,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    SamplingConfig,
    TaskConfig,
    TrainConfig,
    max_mel_bands,
)
from jemfast.recipes.files import (
    CONFIG_NAME,
    apply_overrides,
    config_yaml,
    load_config,
    parse_override,
    read_config_file,
    recipe_names,
    recipe_path,
    save_config,
)

__all__ = [
    "CONFIG_NAME",
    "ConfigError",
    "DEFAULT_INIT",
    "ENERGY_METHODS",
    "FEATURE_CLAMP",
    "METHODS",
    "SECTIONS",
    "SEED_MAX",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "SamplingConfig",
    "TaskConfig",
    "TrainConfig",
    "amp_dtype",
    "apply_overrides",
    "build_model",
    "build_optimizer",
    "build_sampler",
    "config_yaml",
    "load_config",
    "max_mel_bands",
    "parse_override",
    "read_config_file",
    "recipe_names",
    "recipe_path",
    "resolve_device",
    "sampler_settings",
    "save_config",
]
