"""JEMTrainer: learning with JEM on and off, metrics, logs, input validation."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from jemfast.train import DefaultSampler, JEMLoss, JEMTrainer, paper_optimizer

N_CLASSES = 3
DIM = 2


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian blobs in [-1, 1]^2 (the range of a uniform buffer)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    angle = y.float() * (2 * math.pi / N_CLASSES)
    centres = 0.6 * torch.stack([angle.cos(), angle.sin()], 1)
    return centres + 0.12 * torch.randn(n, DIM, generator=g), y


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, N_CLASSES))


def loader(x, y, batch_size=32, shuffle=True, seed=0):
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed)
    )


def read_records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_softmax_baseline_learns_and_logs(tmp_path):
    x, y = blobs(384, seed=1)
    xv, yv = blobs(192, seed=2)
    model = mlp()
    opt, sched = paper_optimizer(model, steps_per_epoch=12, lr=0.1, warmup_steps=10, milestones=(3,))
    trainer = JEMTrainer(
        model, opt, objective=JEMLoss(p_x_weight=0.0), scheduler=sched, run_dir=tmp_path / "run", progress=False
    )
    history = trainer.fit(loader(x, y), epochs=4, val_loader=loader(xv, yv, shuffle=False))
    assert len(history) == 4
    assert trainer.sampler is None, "no sampler may be built for the softmax baseline"
    assert history[-1]["val_acc"] > 90.0, history[-1]
    epochs = read_records(tmp_path / "run", "epoch")
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    for key in ("epoch", "step", "val_acc", "val_nll", "val_ece", "train_ce", "lr"):
        assert isinstance(epochs[-1][key], (int, float)), key
    steps = read_records(tmp_path / "run", "step")
    assert [r["step"] for r in steps] == list(range(1, 49))
    for key in ("ce", "acc", "e_data", "e_samples", "e_gap", "lr", "sample_time_s", "step_time_s"):
        assert key in steps[0], key
    assert steps[0]["e_samples"] is None  # no sampling in the baseline
    # lr after the first optimizer step of warm-up, then the decay at epoch 3 (step 36)
    assert steps[0]["lr"] == pytest.approx(0.1 / 10)
    assert steps[36]["lr"] == pytest.approx(0.1 * 0.2)
    (config,) = read_records(tmp_path / "run", "config")
    assert config["p_x_weight"] == 0.0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_step_returns_lazy_float_metrics():
    x, y = blobs(16, seed=3)
    model = mlp()
    trainer = JEMTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.05), objective=JEMLoss(p_x_weight=0.0), sync_every=4
    )
    metrics = trainer.step(x, y)
    assert trainer.step_count == 1
    assert isinstance(metrics["ce"], float) and metrics["ce"] > 0
    assert 0.0 <= metrics["acc"] <= 100.0
    assert metrics["step"] == 1.0 and metrics["lr"] == 0.05
    assert metrics["step_time_s"] >= 0 and metrics["sample_time_s"] == 0.0
    assert math.isnan(metrics["e_samples"])
    expected_e = -torch.logsumexp(model(x), 1).mean().item()  # after the update, so only close
    assert abs(metrics["e_data"] - expected_e) < 0.5


def test_step_records_are_read_in_one_transfer():
    from jemfast.train.step_metrics import step_records

    x, y = blobs(16, seed=3)
    model = mlp()
    trainer = JEMTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.05), objective=JEMLoss(p_x_weight=0.0), sync_every=4
    )
    metrics = [trainer.step(x[:8], y[:8]), trainer.step(x[8:], y[8:])]
    records = step_records(metrics)
    assert [(r["kind"], r["step"], r["epoch"]) for r in records] == [("step", 1, 0), ("step", 2, 0)]
    assert all(type(r["step"]) is int and type(r["epoch"]) is int for r in records)
    assert records[1]["ce"] == metrics[1]["ce"] and step_records([]) == []


@pytest.mark.parametrize(
    "make_batch, error, match",
    [
        (lambda x, y: (x, y + 5), ValueError, r"labels must lie in \[0, 3\)"),
        (lambda x, y: (x, y - 1 - y), ValueError, r"labels must lie in \[0, 3\)"),
        (lambda x, y: (x.index_fill(0, torch.tensor([3]), float("nan")), y), ValueError, "NaN or Inf"),
        (lambda x, y: (x, y[:-1]), ValueError, r"y must have shape \(N,\)"),
        (lambda x, y: (x[:, :1], y), ValueError, "sample shape"),
        (lambda x, y: (x[0], y), ValueError, "at least 2 dims"),
        (lambda x, y: (x, y.float()), TypeError, "integer dtype"),
        (lambda x, y: (x.long(), y), TypeError, "floating dtype"),
        (lambda x, y: (x.numpy(), y), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_raises_before_any_state_changes(make_batch, error, match):
    x, y = blobs(16, seed=4)
    model = mlp()
    trainer = JEMTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), objective=JEMLoss(p_x_weight=0.0)
    )
    trainer.step(x, y)  # fixes the sample shape and n_classes
    params = [p.detach().clone() for p in model.parameters()]
    opt_state = {k: v["momentum_buffer"].clone() for k, v in trainer.optimizer.state.items()}
    bad_x, bad_y = make_batch(x, y)
    with pytest.raises(error, match=match):
        trainer.step(bad_x, bad_y)
    assert trainer.step_count == 1
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    for k, v in trainer.optimizer.state.items():
        assert torch.equal(v["momentum_buffer"], opt_state[k])


def test_model_with_wrong_output_shape_is_reported():
    model = nn.Linear(DIM, 1)
    trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), objective=JEMLoss(p_x_weight=0.0))
    with pytest.raises(ValueError, match="C >= 2"):
        trainer.step(*blobs(8, seed=5))


def test_constructor_rejects_bad_settings():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="amp_dtype"):
        JEMTrainer(model, opt, amp_dtype=torch.int8)
    with pytest.raises(TypeError, match="optimizer"):
        JEMTrainer(model, "sgd")
    with pytest.raises(TypeError, match="objective must be a JEMLoss .* got dict"):
        JEMTrainer(model, opt, objective={"p_x_weight": 0.0})
    with pytest.raises(TypeError, match="unexpected keyword argument 'p_x_weigth'"):
        JEMTrainer(model, opt, p_x_weigth=0.0)
    with pytest.raises(TypeError, match="scheduler must be a learning-rate scheduler .* got float"):
        JEMTrainer(model, opt, None, JEMLoss(), 1.0)  # the old positional order: p_y_weight where scheduler is


@pytest.mark.parametrize(
    "field, value, bound",
    [
        ("p_x_weight", -1.0, ">= 0"),
        ("p_y_weight", float("nan"), ">= 0"),
        ("energy_l2", True, ">= 0"),
        ("temperature", 0.0, "> 0"),
    ],
)
def test_objective_settings_are_checked_by_name(field, value, bound):
    with pytest.raises(ValueError, match=rf"JEMLoss\.{field} must be a finite number {bound}, got {value!r}"):
        JEMLoss(**{field: value})
    model = mlp()
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=rf"JEMLoss\.{field} must"):
        JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), **{field: value})  # the deprecated keyword


@pytest.mark.parametrize(
    "settings, error, match",
    [
        ({"preset": "jem++"}, ValueError, r"DefaultSampler\.preset must be one of \('jem', 'jempp', 'sadajem'\)"),
        ({"buffer_size": 0}, ValueError, r"DefaultSampler\.buffer_size must be a positive int, got 0"),
        ({"buffer_size": 64.0}, ValueError, r"DefaultSampler\.buffer_size must be a positive int, got 64.0"),
        ({"options": [("n_steps", 2)]}, TypeError, r"DefaultSampler\.options must be a mapping"),
    ],
)
def test_default_sampler_settings_are_checked_by_name(settings, error, match):
    with pytest.raises(error, match=match):
        DefaultSampler(**settings)


def test_default_sampler_is_frozen_and_copyable():
    import copy
    import pickle

    options = {"n_steps": 2}
    spec = DefaultSampler("sadajem", buffer_size=48, options=options)
    options["n_steps"] = 7  # the spec keeps its own copy
    assert spec.options == {"n_steps": 2}
    with pytest.raises(TypeError):
        spec.options["n_steps"] = 3
    with pytest.raises(AttributeError):
        spec.buffer_size = 1
    assert pickle.loads(pickle.dumps(spec)) == spec == copy.deepcopy(spec)
    assert hash(spec) == hash(DefaultSampler("sadajem", buffer_size=48, options={"n_steps": 2}))
    assert repr(spec) == "DefaultSampler(preset='sadajem', buffer_size=48, options={'n_steps': 2})"


def _three_steps(*args, **kwargs) -> JEMTrainer:
    """A trainer built with ``args`` and ``kwargs`` after three steps on fixed batches."""
    model = mlp()
    trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), *args, **kwargs)
    x, y = blobs(48, seed=15)
    torch.manual_seed(0)
    for i in range(3):
        trainer.step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    return trainer


def _assert_same_training(a: JEMTrainer, b: JEMTrainer) -> None:
    for p, q in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (a.sampler is None) == (b.sampler is None)
    if a.sampler is not None:
        assert torch.equal(a.sampler.buffer.storage, b.sampler.buffer.storage)
    assert a.config() == b.config()


SMALL = {"buffer_size": 32, "options": {"n_steps": 2}}


@pytest.mark.parametrize(
    "old, new, replacement",
    [
        ({"p_x_weight": 0.0}, {"objective": JEMLoss(p_x_weight=0.0)}, r"objective=JEMLoss\(p_x_weight=0.0\)"),
        ({"p_y_weight": 0.5}, {"objective": JEMLoss(p_y_weight=0.5)}, r"objective=JEMLoss\(p_y_weight=0.5\)"),
        ({"energy_l2": 0.1}, {"objective": JEMLoss(energy_l2=0.1)}, r"objective=JEMLoss\(energy_l2=0.1\)"),
        ({"temperature": 2.0}, {"objective": JEMLoss(temperature=2.0)}, r"objective=JEMLoss\(temperature=2.0\)"),
        (
            {"p_x_weight": 0.5, "energy_l2": 0.1},
            {"objective": JEMLoss(p_x_weight=0.5, energy_l2=0.1)},
            r"objective=JEMLoss\(p_x_weight=0.5, energy_l2=0.1\)",
        ),
    ],
)
def test_deprecated_objective_keywords_warn_and_train_like_a_jem_loss(old, new, replacement):
    sampler = DefaultSampler(**SMALL)
    with pytest.warns(DeprecationWarning, match=replacement) as caught:
        deprecated = _three_steps(sampler=sampler, **old)
    assert len([w for w in caught if w.category is DeprecationWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        current = _three_steps(sampler=sampler, **new)
    _assert_same_training(deprecated, current)
    assert deprecated.objective == current.objective
    for name in old:  # the trainer's read-only views of its objective
        assert getattr(deprecated, name) == getattr(current, name) == old[name]


def test_a_number_in_the_objective_position_is_the_deprecated_p_x_weight():
    """``JEMTrainer(model, optimizer, sampler, 0.0)``: p_x_weight was the 4th positional parameter."""
    with pytest.warns(DeprecationWarning, match=r"4th positional argument .* objective=JEMLoss\(p_x_weight=0.0\)"):
        deprecated = _three_steps(None, 0.0)
    _assert_same_training(deprecated, _three_steps(objective=JEMLoss(p_x_weight=0.0)))
    assert deprecated.sampler is None and deprecated.p_x_weight == 0.0


@pytest.mark.parametrize(
    "old, new, replacement",
    [
        ({"buffer_size": 48}, DefaultSampler(buffer_size=48), r"sampler=DefaultSampler\(buffer_size=48\)"),
        (
            {"sampler_options": {"n_steps": 2}},
            DefaultSampler(options={"n_steps": 2}),
            r"sampler=DefaultSampler\(options=\{'n_steps': 2\}\)",
        ),
        (
            {"sampler_preset": "sadajem", "buffer_size": 32},
            DefaultSampler("sadajem", buffer_size=32),
            r"sampler=DefaultSampler\(preset='sadajem', buffer_size=32\)",
        ),
        ({"sampler_options": None, "buffer_size": 32}, DefaultSampler(buffer_size=32), r"Sampler\(buffer_size=32\)"),
    ],
)
def test_deprecated_sampler_keywords_warn_and_train_like_a_default_sampler(old, new, replacement):
    with pytest.warns(DeprecationWarning, match=replacement) as caught:
        deprecated = _three_steps(**old)
    assert len([w for w in caught if w.category is DeprecationWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        current = _three_steps(sampler=new)
    assert deprecated.default_sampler == new
    _assert_same_training(deprecated, current)


def test_settings_given_twice_are_refused():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"objective=JEMLoss\(.*\) and p_x_weight=, energy_l2=; give the settings"):
        JEMTrainer(model, opt, objective=JEMLoss(), p_x_weight=0.0, energy_l2=0.1)
    with pytest.raises(ValueError, match=r"sampler=DefaultSampler\(.*\) and buffer_size=; give the settings"):
        JEMTrainer(model, opt, sampler=DefaultSampler(), buffer_size=64)
    with pytest.raises(ValueError, match=r"and sampler_preset=, sampler_options="):
        JEMTrainer(model, opt, sampler=DefaultSampler(), sampler_preset="jem", sampler_options={})
    with pytest.raises(TypeError, match="p_x_weight twice"):
        JEMTrainer(model, opt, None, 0.0, p_x_weight=0.0)


def test_deprecated_buffer_keywords_with_a_given_sampler_warn_and_change_nothing():
    """The pipeline's call until it moves: its own SGLDSampler and ``buffer_size=`` (always ignored then)."""
    from jemfast.sampling import ReplayBuffer, SGLDSampler

    model = mlp()
    sampler = SGLDSampler.preset("jem", model, ReplayBuffer((DIM,), size=40, seed=0, device="cpu"), n_steps=2, seed=0)
    with pytest.warns(DeprecationWarning, match=r"buffer_size=\) is deprecated and has no effect with a given sampler"):
        trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), sampler=sampler, buffer_size=64)
    assert trainer.sampler is sampler and trainer.default_sampler is None
    assert trainer.config()["sampler"] == "SGLDSampler" and trainer.config()["buffer_size"] == 40


def test_config_record_describes_the_objective_and_the_sampler():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = DefaultSampler("sadajem", buffer_size=48)
    config = JEMTrainer(model, opt, spec, JEMLoss(energy_l2=0.1, temperature=2.0)).config()
    assert config["sampler"] == "default:sadajem" and config["buffer_size"] == 48  # built at the first step
    weights = {k: config[k] for k in ("p_x_weight", "p_y_weight", "energy_l2", "temperature")}
    assert weights == {"p_x_weight": 1.0, "p_y_weight": 1.0, "energy_l2": 0.1, "temperature": 2.0}
    built = JEMTrainer(model, opt, spec, sample_shape=(DIM,))
    assert built.config()["sampler"] == "SGLDSampler" and built.config()["buffer_size"] == 48
    assert len(built.sampler.buffer) == 48
    baseline = JEMTrainer(model, opt, objective=JEMLoss(p_x_weight=0.0)).config()
    assert baseline["sampler"] is None and baseline["buffer_size"] == 10000


def test_jem_learns_with_default_sampler(tmp_path):
    x, y = blobs(384, seed=6)
    xv, yv = blobs(192, seed=7)
    model = mlp()
    opt, sched = paper_optimizer(model, steps_per_epoch=12, lr=0.05, warmup_steps=10, milestones=())
    trainer = JEMTrainer(
        model,
        opt,
        scheduler=sched,
        run_dir=tmp_path / "run",
        sampler=DefaultSampler(buffer_size=256, options={"n_steps": 5}),
        objective=JEMLoss(energy_l2=0.1),
        progress=False,
    )
    history = trainer.fit(loader(x, y), epochs=4, val_loader=loader(xv, yv, shuffle=False))
    assert trainer.sampler is not None and trainer.sampler.buffer.sample_shape == (DIM,)
    assert trainer.sampler.n_steps == 5
    assert history[-1]["val_acc"] > 90.0, history[-1]
    steps = read_records(tmp_path / "run", "step")
    assert all(r["e_samples"] is not None for r in steps)
    last = steps[-1]
    assert last["e_gap"] == pytest.approx(last["e_data"] - last["e_samples"], abs=1e-5)
    assert last["sample_time_s"] > 0 and last["step_time_s"] >= last["sample_time_s"]
    assert not read_records(tmp_path / "run", "rollback")


def test_p_x_weight_zero_never_samples():
    class Exploding:
        model = None

        def sample(self, *args, **kwargs):
            raise AssertionError("sampler must not run with p_x_weight=0")

    model = mlp()
    trainer = JEMTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sampler=Exploding(), objective=JEMLoss(p_x_weight=0.0)
    )
    trainer.step(*blobs(8, seed=8))
    assert trainer.step_count == 1


def test_batch_must_match_a_given_samplers_buffer():
    from jemfast.sampling.buffer import ReplayBuffer
    from jemfast.sampling.sampler import SGLDSampler

    model = mlp()
    sampler = SGLDSampler.preset("jem", model, ReplayBuffer((5,), size=32, seed=0, device="cpu"), n_steps=2, seed=0)
    trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), sampler=sampler)
    with pytest.raises(ValueError, match=r"set up for \(5,\)"):
        trainer.step(*blobs(8, seed=9))
    assert trainer.step_count == 0


def test_bfloat16_autocast_on_cpu_trains():
    x, y = blobs(64, seed=10)
    model = mlp()
    trainer = JEMTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        amp_dtype=torch.bfloat16,
        sampler=DefaultSampler(buffer_size=64, options={"n_steps": 2}),
        grad_clip=1.0,
    )
    first = trainer.step(x[:32], y[:32])
    second = trainer.step(x[32:], y[32:])
    assert math.isfinite(first["loss"]) and math.isfinite(second["e_gap"])


def test_batch_norm_models_normalise_data_and_samples_separately():
    """With batch norm (JEM++ / SADA-JEM models) the data's logits must not depend on the samples."""
    from jemfast.sampling import ReplayBuffer, SGLDSampler

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    sampler = SGLDSampler(model, ReplayBuffer((2,), size=32, seed=0, device="cpu"), n_steps=1, seed=0)
    trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.01), sampler=sampler, progress=False)
    assert trainer.joint_forward is False
    x, y = torch.randn(6, 2), torch.randint(0, 3, (6,))
    seen.clear()
    trainer.step(x, y)
    # the sampler's chain forwards are 6 wide too, so look at the last two forwards: data, then samples
    assert seen[-2:] == [6, 6]
    plain = nn.Sequential(nn.Linear(2, 3))
    assert JEMTrainer(plain, torch.optim.SGD(plain.parameters(), lr=0.01), progress=False).joint_forward is True
    with pytest.raises(ValueError, match="joint_forward"):
        JEMTrainer(plain, torch.optim.SGD(plain.parameters(), lr=0.01), joint_forward="yes")


def test_plain_progress_lines_are_throttled(caplog):
    """Without a terminal, progress goes to logging at most every LOG_INTERVAL_S seconds."""
    import logging

    model = nn.Sequential(nn.Linear(2, 3))
    trainer = JEMTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.01), objective=JEMLoss(p_x_weight=0.0), progress=False
    )
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    with caplog.at_level(logging.INFO, logger="jemfast.train.run_log"):
        for _ in range(5):
            trainer.step(x, y)
    lines = [r.getMessage() for r in caplog.records if r.name == "jemfast.train.run_log"]
    assert len(lines) == 1 and lines[0].startswith("step 1:")


def test_init_model_from_takes_weights_only(tmp_path):
    source = mlp(seed=1)
    opt = torch.optim.SGD(source.parameters(), lr=0.1)
    trained = JEMTrainer(source, opt, objective=JEMLoss(p_x_weight=0.0), run_dir=tmp_path / "src", progress=False)
    trained.fit(loader(*blobs(64, seed=1)), epochs=1)
    target = mlp(seed=2)
    trainer = JEMTrainer(target, torch.optim.SGD(target.parameters(), lr=0.1), progress=False)
    trainer.init_model_from(tmp_path / "src" / "checkpoints" / "last.pt")
    for p, q in zip(source.parameters(), target.parameters(), strict=True):
        assert torch.equal(p, q)
    assert trainer.step_count == 0 and trainer.epoch == 0
    trainer.init_model_from(source.state_dict())  # a plain state_dict works too
    wider = nn.Sequential(nn.Linear(DIM, 64), nn.SiLU(), nn.Linear(64, 32), nn.SiLU(), nn.Linear(32, N_CLASSES))
    other = JEMTrainer(wider, torch.optim.SGD(wider.parameters(), lr=0.1), progress=False)
    with pytest.raises(ValueError, match=r"0.weight has shape \(32, 2\) in the source"):
        other.init_model_from(source.state_dict())
    trainer.step(*blobs(8, seed=3))
    with pytest.raises(ValueError, match="already at step 1"):
        trainer.init_model_from(source.state_dict())


def test_data_noise_is_added_to_training_inputs_only():
    seen = []
    model = mlp()
    model[0].register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    trainer = JEMTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        objective=JEMLoss(p_x_weight=0.0),
        data_noise=0.5,
        progress=False,
    )
    x, y = blobs(256, seed=4)
    trainer.step(x, y)
    noise = seen[-1] - x
    assert 0.45 < float(noise.std()) < 0.55 and abs(float(noise.mean())) < 0.05
    seen.clear()
    trainer.evaluate([(x, y)])
    assert torch.equal(seen[-1], x), "evaluation must see clean inputs"
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="data_noise"):
            JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), data_noise=bad)


def test_integer_logits_are_refused_clearly():
    class Rounding(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mlp()

        def forward(self, x):
            return self.inner(x).round().long()

    model = Rounding()
    trainer = JEMTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), objective=JEMLoss(p_x_weight=0.0), progress=False
    )
    with pytest.raises(TypeError, match="torch.int64 logits"):
        trainer.step(*blobs(8, seed=5))


def test_each_step_is_an_nvtx_range_when_profiling(monkeypatch):
    """``train/step`` (listed in jemfast.profiling) is emitted around every training step."""
    from jemfast import profiling

    names = []
    monkeypatch.setattr(profiling._Range, "_push_pop", (names.append, lambda: None))
    monkeypatch.setattr(profiling, "_enabled", True)
    model = mlp()
    trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), objective=JEMLoss(p_x_weight=0.0))
    trainer.step(*blobs(8, seed=11))
    assert names.count("train/step") == 1


def test_given_a_sample_shape_the_default_sampler_is_built_with_the_trainer():
    model = mlp()
    trainer = JEMTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        sampler=DefaultSampler(buffer_size=64, options={"n_steps": 2}),
        sample_shape=(DIM,),
        seed=3,
    )
    assert trainer.sampler is not None and trainer.sampler.buffer.sample_shape == (DIM,)
    # The same streams as a sampler built lazily at the first batch: building consumes no global RNG.
    lazy_model = mlp()
    lazy = JEMTrainer(
        lazy_model,
        torch.optim.SGD(lazy_model.parameters(), lr=0.05),
        sampler=DefaultSampler(buffer_size=64, options={"n_steps": 2}),
        seed=3,
    )
    x, y = blobs(32, seed=12)
    torch.manual_seed(0)
    trainer.step(x, y)
    torch.manual_seed(0)
    lazy.step(x, y)
    for a, b in zip(model.parameters(), lazy_model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="set up for"):
        trainer.step(torch.zeros(4, DIM + 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="sample_shape"):
        JEMTrainer(mlp(), torch.optim.SGD(mlp().parameters(), lr=0.1), sample_shape=(0,))


def _state_bytes(trainer):
    import io

    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("save_after", [2, 3, 5])
def test_resume_rolls_back_to_the_same_snapshot_as_an_uninterrupted_run(save_after):
    """The guard's snapshot travels with the checkpoint: a rollback soon after a resume
    restores what the uninterrupted run restores (step 3 here), not the resumed state."""
    from jemfast.train import DivergenceGuard

    x, y = blobs(8 * 9, seed=13)
    batches = [(x[i * 8 : (i + 1) * 8].clone(), y[i * 8 : (i + 1) * 8]) for i in range(9)]
    batches[5] = (batches[5][0] * 1e12, batches[5][1])  # step 6 explodes: its loss passes 1e8

    def trainer():
        model = mlp()
        return JEMTrainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
            sampler=DefaultSampler(buffer_size=32, options={"n_steps": 2}),
            seed=1,
            sample_shape=(DIM,),
            guard=DivergenceGuard(snapshot_every=3),
        )

    straight = trainer()
    saved = None
    for i, (xb, yb) in enumerate(batches, 1):
        straight.step(xb, yb)
        if i == save_after:
            saved = _state_bytes(straight)
    assert straight.rollbacks == 1

    resumed = trainer()
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for xb, yb in batches[save_after:]:
        resumed.step(xb, yb)
    assert resumed.rollbacks == 1 and resumed.step_count == straight.step_count
    for a, b in zip(straight.module.parameters(), resumed.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(straight.sampler.buffer.storage, resumed.sampler.buffer.storage)


def test_new_optimizer_settings_after_a_resume_survive_a_rollback():
    """A rollback after ``--resume --set train.lr/momentum`` trains with the new settings."""
    from jemfast.train import DivergenceGuard

    x, y = blobs(8 * 5, seed=14)
    batches = [(x[i * 8 : (i + 1) * 8].clone(), y[i * 8 : (i + 1) * 8]) for i in range(5)]
    batches[2] = (batches[2][0] * 1e12, batches[2][1])  # the first step after the resume explodes

    def trainer():
        model = mlp()
        return JEMTrainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
            sampler=DefaultSampler(buffer_size=32, options={"n_steps": 2}),
            seed=1,
            sample_shape=(DIM,),
            guard=DivergenceGuard(snapshot_every=1, lr_factor=0.5),
        )

    first = trainer()
    for xb, yb in batches[:2]:
        first.step(xb, yb)
    resumed = trainer()
    resumed.load_state_dict(torch.load(_state_bytes(first), weights_only=True))
    resumed.scale_learning_rates(0.1)
    resumed.set_optimizer_options(momentum=0.5)
    for xb, yb in batches[2:]:
        resumed.step(xb, yb)
    assert resumed.rollbacks == 1
    group = resumed.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.05 * 0.1 * 0.5) and group["momentum"] == 0.5
    with pytest.raises(ValueError, match="no option 'betas'"):
        resumed.set_optimizer_options(betas=(0.9, 0.99))
