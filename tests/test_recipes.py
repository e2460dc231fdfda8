"""Recipes: packaged configs, schema validation, overrides and the objects a config builds."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
import yaml

from jemfast.data import FeatureRecipe
from jemfast.recipes import (
    METHODS,
    SECTIONS,
    SEED_MAX,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    SamplingConfig,
    TrainConfig,
    apply_overrides,
    build_model,
    build_sampler,
    config_yaml,
    load_config,
    parse_override,
    recipe_names,
    resolve_device,
    save_config,
)
from jemfast.sampling import PRESETS


def buffer_init(config):
    return config.buffer_init


def test_packaged_recipes_are_the_papers_setting():
    assert {"age", "emotion", "language", "demo"} <= set(recipe_names())
    for task, chunk in (("age", 320), ("emotion", 192), ("language", 192)):
        config = load_config(task)
        assert config.task.name == task
        assert config.data.chunk_frames == chunk
        assert config.data.n_mels == 32
        assert (config.model.depth, config.model.width) == (28, 5)
        assert config.sampling.n_steps == 50
        assert config.sampling.buffer_size == 10000
        assert config.sampling.pyld_lr is None  # the jempp preset's
        train = config.train
        assert (train.lr, train.warmup_steps, train.milestones, train.gamma, train.epochs) == (
            0.1,
            1000,
            (40, 80, 120),
            0.2,
            150,
        )


def test_packaged_recipes_state_only_what_differs_from_the_defaults():
    # The defaults are the one source of every value; a recipe repeating one would hide a change to it.
    from importlib import resources

    defaults = RunConfig().to_dict()
    for name in recipe_names():
        text = (resources.files("jemfast") / "configs" / f"{name}.yaml").read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        repeated = [
            f"{section}.{key}"
            for section, values in data.items()
            for key, value in values.items()
            if value == defaults[section][key] and not (section, key, value) == ("data", "dir", None)
        ]
        assert not repeated, (name, repeated)


def test_every_field_is_typed_and_its_default_passes_its_own_checks():
    for section in SECTIONS:
        for key, spec in section.specs().items():
            assert spec.kind in (int, float, str, tuple), (section.NAME, key)
    assert RunConfig() == RunConfig.from_dict({}) == RunConfig.from_dict(RunConfig().to_dict())


def test_sections_check_themselves_when_made_directly():
    with pytest.raises(ConfigError, match=r"^train.lr must be >= 0.0, got -1.0$"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="model.depth must be 10, 16"):
        ModelConfig(depth=12)
    with pytest.raises(ConfigError, match="data.on_error must be one of raise, skip"):
        DataConfig(on_error="ignore")
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    assert TrainConfig(milestones=[3, 5]).milestones == (3, 5)
    with pytest.raises(ConfigError, match=r"sampling.buffer_size \(4\) must be at least data.batch_size"):
        RunConfig(sampling=SamplingConfig(buffer_size=4))
    with pytest.raises(TypeError, match="RunConfig.train must be a TrainConfig"):
        RunConfig(train={"lr": 0.1})


def test_configs_are_frozen_and_updated_as_checked_copies():
    import dataclasses

    config = load_config("demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 1.0
    changed = config.updated({"train.method": "softmax", "train.p_x_weight": None, "train.energy_l2": 0.0})
    assert changed.train.method == "softmax" and config.train.method == "jem"
    assert changed.train.generative_weight == 0.0 and config.train.generative_weight == 0.1
    with pytest.raises(ConfigError, match="train.lr must be >= 0.0"):
        config.updated({"train.lr": -1})
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        config.updated({"train.learning_rate": 1})


def test_the_generative_weight_must_match_the_method():
    assert load_config("language", method="jem").train.generative_weight == 1.0
    assert load_config("language", method="softmax").train.generative_weight == 0.0
    with pytest.raises(ConfigError, match="train.p_x_weight is 0.5 but the softmax method draws no samples"):
        load_config("language", ["train.p_x_weight=0.5"], method="softmax")
    with pytest.raises(ConfigError, match="train.p_x_weight is 0, which trains a softmax model"):
        load_config("language", ["train.p_x_weight=0"], method="jem")


@pytest.mark.parametrize("name", ["age", "demo", "calibration"])
def test_the_annotated_listing_reads_back_as_the_same_config(tmp_path, name):
    config = load_config(name, ["data.dir='my data: a/b'", "task.description='yes'"])
    assert config.task.description == "yes"
    text = config_yaml(config, annotate=True)
    assert "# an unusable audio file" in text and "data.dir" not in text
    path = tmp_path / "listed.yaml"
    path.write_text(text)
    assert load_config(path) == config


def test_on_error_is_a_data_key_that_defaults_to_raise():
    assert RunConfig().data.on_error == "raise"
    for name in recipe_names():
        assert load_config(name).data.on_error == "raise", name
    assert load_config("demo", ["data.on_error=skip"]).data.on_error == "skip"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train.epochs=3", ("train", "epochs", 3)),
        ("model.norm=null", ("model", "norm", None)),
        ("train.milestones=[2, 4]", ("train", "milestones", [2, 4])),
        ("train.lr=0.01", ("train", "lr", 0.01)),
        ("data.dir=/a/b=c", ("data", "dir", "/a/b=c")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train.epochs", "section.key=value"),
        ("epochs=3", "section.key"),
        ("training.epochs=3", "unknown section 'training'"),
        ("train.epoch=3", "unknown key train.epoch"),
        ("train.milestones={a: 1}", "scalar or a list"),
    ],
)
def test_bad_overrides_name_the_problem(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("{", r"\{")):
        parse_override(text)


def test_overrides_apply_and_numbers_are_accepted_for_floats():
    config = load_config("demo", ["train.epochs=3", "model.width=2", "train.lr=1", "train.weight_decay=5e-4"])
    assert config.train.epochs == 3 and config.model.width == 2
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.weight_decay == 5e-4
    untouched = load_config("demo")
    assert untouched.train.epochs != 3
    assert apply_overrides(untouched, ["train.seed=5"]).train.seed == 5
    assert untouched.train.seed == 0


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochs=two", "train.epochs must be an integer"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("train.epochs=true", "train.epochs must be an integer, got the boolean"),
        ("train.epochs=1.5", "train.epochs must be an integer"),
        ("train.method=adam", "train.method must be one of softmax, jem, jempp, sadajem"),
        ("model.depth=12", "model.depth must be 10, 16, 22, 28"),
        ("model.norm=layer", "model.norm must be one of batch, group"),
        ("train.milestones=[4, 2]", "train.milestones must be increasing"),
        ("train.milestones=[a]", "train.milestones must be a list of int"),
        ("train.device=tpu", "train.device must be auto, cpu, cuda"),
        ("sampling.init=zeros", "sampling.init must be one of uniform, normal, class_gaussian"),
        ("sampling.reinit_freq=2", "sampling.reinit_freq must be <= 1.0"),
        ("sampling.buffer_size=4", r"sampling.buffer_size \(4\) must be at least data.batch_size \(32\)"),
        ("train.lr=null", "train.lr must not be null"),
        ("data.on_error=ignore", "data.on_error must be one of raise, skip, got 'ignore'"),
        ("data.on_error=null", "data.on_error must not be null"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("demo", [override])


FLOAT_KEYS = [
    f"{section.NAME}.{key}" for section in SECTIONS for key, spec in section.specs().items() if spec.kind is float
]


def test_every_documented_float_key_is_a_float_field():
    documented = {
        "train.lr",
        "train.gamma",
        "train.energy_l2",
        "model.dropout",
        "sampling.noise_std",
        "train.p_x_weight",
        "sampling.step_size",
        "train.momentum",
        "train.weight_decay",
        "train.data_noise",
        "train.temperature",
        "sampling.reinit_freq",
        "sampling.pyld_lr",
    }
    assert documented <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} must be a finite number, got "):
        load_config("demo", [f"{key}={value}"])


@pytest.mark.parametrize("value", ["[-.inf, 4]", "[-4, .nan]", "[-4, .inf]"])
def test_non_finite_clamp_bounds_are_refused(value):
    with pytest.raises(ConfigError, match="^sampling.clamp must be a finite number"):
        load_config("demo", [f"sampling.clamp={value}"])


def test_an_integer_beyond_the_float_range_is_refused_for_a_float_key():
    with pytest.raises(ConfigError, match="^train.lr must be a finite number"):
        load_config("demo", [f"train.lr={10**400}"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.seed=-1", "train.seed must be >= 0, got -1"),
        (f"train.seed={10**23}", f"train.seed must be <= {2**63 - 2}, got {10**23}"),
        (f"train.seed={2**63 - 1}", f"train.seed must be <= {2**63 - 2}"),
        (f"train.epochs={10**30}", "train.epochs must be <= 9223372036854775807"),
        (f"sampling.buffer_size={2**63}", "sampling.buffer_size must be <= 9223372036854775807"),
    ],
)
def test_integers_out_of_range_are_refused_naming_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config("demo", [override])


@pytest.mark.parametrize("seed", [0, SEED_MAX])
def test_every_accepted_seed_seeds_every_generator_of_a_run(seed):
    config = load_config("demo", [f"train.seed={seed}", "sampling.buffer_size=40"], method="jem")
    seed = config.train.seed
    torch.manual_seed(seed)
    torch.Generator().manual_seed(seed)  # the training loader's shuffle
    np.random.default_rng([seed, 0, 0])  # ChunkDataset's chunk offsets
    sampler = build_sampler(config, build_model(config, 3), (1, 4, 8), 3, torch.device("cpu"))
    assert sampler.sample(2).shape == (2, 1, 4, 8)
    torch.manual_seed(0)


def test_n_mels_is_bounded_by_the_fft_bins_of_the_feature_recipe():
    bins = FeatureRecipe().n_fft // 2 + 1
    assert load_config("demo", [f"data.n_mels={bins}"]).data.n_mels == bins
    for n_mels in (bins + 1, 100000):
        with pytest.raises(ConfigError, match=f"^data.n_mels must be <= {bins} .*, got {n_mels}$"):
            load_config("demo", [f"data.n_mels={n_mels}"])


def test_unknown_keys_in_files_are_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key train.learning_rate"):
        load_config(path)
    path.write_text("optimiser:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="unknown section 'optimiser'"):
        load_config(path)
    path.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(path)
    path.write_text("train: {epochs: 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_partial_file_merges_over_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("task: {name: mine}\ntrain: {epochs: 2}\n")
    config = load_config(path)
    assert config.task.name == "mine" and config.train.epochs == 2
    assert config.model == RunConfig().model


def test_missing_recipe_and_unknown_method():
    with pytest.raises(ConfigError, match="neither a file nor a packaged recipe; recipes: age, calibration, demo"):
        load_config("no-such-recipe")
    with pytest.raises(ConfigError, match="unknown method 'ebm'"):
        load_config("demo", method="ebm")


def test_save_and_reload_round_trip(tmp_path):
    config = load_config("language", ["train.epochs=7", "data.dir=/data/x"])
    path = save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(path) == config
    assert list(yaml.safe_load(path.read_text())) == [section.NAME for section in SECTIONS]


def test_save_config_replaces_the_file_atomically(tmp_path, monkeypatch):
    path = save_config(load_config("demo"), tmp_path / "config.yaml")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_config(load_config("demo", ["train.epochs=7"]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_buffer_init_per_method():
    assert buffer_init(load_config("demo", method="jem")) == "normal"
    assert buffer_init(load_config("demo", method="sadajem")) == "normal"
    assert buffer_init(load_config("demo", method="jempp")) == "class_gaussian"
    assert buffer_init(load_config("demo", ["sampling.init=uniform"], method="jempp")) == "uniform"
    with pytest.raises(ConfigError, match="softmax"):
        buffer_init(load_config("demo", method="softmax"))


def test_build_model_follows_the_config():
    model = build_model(load_config("demo", ["model.width=2"]), n_classes=6)
    assert (model.depth, model.width, model.num_classes) == (10, 2, 6)
    assert model(torch.zeros(2, 1, 32, 16)).shape == (2, 6)


@pytest.mark.parametrize("method", METHODS)
def test_build_sampler_uses_the_preset_and_recipe_steps(method):
    overrides = ["sampling.n_steps=3", "sampling.buffer_size=40", "train.p_x_weight=null"]
    config = load_config("demo", overrides, method=method)
    model = build_model(config, n_classes=3)
    x = torch.randn(12, 1, 4, 8)
    y = torch.arange(12) % 3
    sampler = build_sampler(config, model, (1, 4, 8), 3, torch.device("cpu"), fit_batches=[(x, y)])
    if method == "softmax":
        assert sampler is None
        return
    assert sampler.n_steps == 3
    assert sampler.buffer.size == 40 and sampler.buffer.init == buffer_init(config)
    assert sampler.method == ("pyld" if method == "jempp" else "sgld")
    if method == "jempp":
        assert sampler.step.lr == PRESETS["jempp"].settings.step.lr == 0.2
        assert torch.allclose(sampler.buffer.init_mean[1], x[y == 1].mean(0))
    samples = sampler.sample(5)
    assert samples.shape == (5, 1, 4, 8) and torch.isfinite(samples).all()


@pytest.mark.parametrize("method, attribute", [("jem", "clamp"), ("sadajem", "clamp"), ("jempp", "step.clamp")])
def test_sampling_clamp_reaches_the_sampler(method, attribute):
    config = load_config("demo", ["sampling.clamp=[-3, 3]", "sampling.buffer_size=40"], method=method)
    assert config.sampling.clamp == (-3.0, 3.0)
    model = build_model(config, n_classes=3)
    x, y = torch.randn(12, 1, 4, 8), torch.arange(12) % 3
    sampler = build_sampler(config, model, (1, 4, 8), 3, torch.device("cpu"), fit_batches=[(x, y)])
    assert operator.attrgetter(attribute)(sampler) == (-3.0, 3.0)


@pytest.mark.parametrize("value", ["[3, -3]", "[1]", "[a, b]", "5"])
def test_bad_sampling_clamp_names_the_key(value):
    with pytest.raises(ConfigError, match="sampling.clamp"):
        load_config("demo", [f"sampling.clamp={value}"])


def test_resolve_device_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_refuses_a_cuda_device_the_machine_lacks():
    with pytest.raises(ConfigError, match="cuda:1000"):
        resolve_device("cuda:1000")


@pytest.mark.parametrize(
    "method, attribute, expected",
    [("jem", "clamp", None), ("sadajem", "clamp", (-4.0, 4.0)), ("jempp", "step.clamp", (-4.0, 4.0))],
)
def test_default_clamp_suits_normalised_features(method, attribute, expected):
    """The references' [-1, 1] is the range of images; normalised features need the data's range."""
    from jemfast.recipes import FEATURE_CLAMP

    config = load_config("demo", ["sampling.buffer_size=40"], method=method)
    assert config.sampling.clamp is None
    model = build_model(config, n_classes=3)
    x, y = torch.randn(12, 1, 4, 8), torch.arange(12) % 3
    sampler = build_sampler(config, model, (1, 4, 8), 3, torch.device("cpu"), fit_batches=[(x, y)])
    assert operator.attrgetter(attribute)(sampler) == expected
    assert FEATURE_CLAMP == (-4.0, 4.0)


def test_a_null_n_steps_reaches_the_presets_value():
    import torch

    from jemfast.models import WideResNet
    from jemfast.recipes import build_sampler, load_config
    from jemfast.sampling import PRESETS

    model = WideResNet(depth=10, width=1, num_classes=3)
    for method in ("jem", "jempp", "sadajem"):
        config = load_config("demo", [f"train.method={method}", "sampling.n_steps=null", "sampling.init=uniform"])
        sampler = build_sampler(config, model, (1, 16, 48), 3, torch.device("cpu"))
        assert sampler.n_steps == PRESETS[method].settings.n_steps, method
        config = load_config("demo", [f"train.method={method}", "sampling.n_steps=3", "sampling.init=uniform"])
        assert build_sampler(config, model, (1, 16, 48), 3, torch.device("cpu")).n_steps == 3


def test_overrides_apply_before_the_checks_so_they_can_mend_the_file_and_method():
    # demo.yaml sets p_x_weight 0.1, which --method softmax alone would make inconsistent.
    with pytest.raises(ConfigError, match="softmax method draws no samples"):
        load_config("demo", method="softmax")
    config = load_config("demo", ["train.p_x_weight=null", "train.energy_l2=0"], method="softmax")
    assert config.train.generative_weight == 0.0
