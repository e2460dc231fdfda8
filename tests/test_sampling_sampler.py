"""SGLDSampler: Langevin correctness, effect on a trained classifier, no leaked state, PYLD, settings,
presets, the deprecated keywords, graphs. The step strategies themselves: tests/test_sampling_steps.py."""

import dataclasses
import math

import pytest
import torch
from conftest import requires_cuda
from helpers import assert_close
from torch import nn

from jemfast.ops import random_normal
from jemfast.profiling import nvtx_range
from jemfast.sampling import PRESETS, LangevinStep, PYLDStep, ReplayBuffer, SamplerPreset, SamplerSettings, SGLDSampler


class GaussianLogDensity(nn.Module):
    """One logit equal to log N(x; mean, cov) + const, so logsumexp(f(x)) is a Gaussian log density."""

    def __init__(self, mean, precision):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("precision", torch.as_tensor(precision, dtype=torch.float32))

    def forward(self, x):
        d = x - self.mean
        return (-0.5 * ((d @ self.precision) * d).sum(dim=1)).unsqueeze(1)


def test_langevin_reproduces_a_known_gaussian():
    """With step = eps**2 / 2 and noise = eps, SGLD is the unadjusted Langevin algorithm.

    Its stationary covariance along a precision eigenvalue lam is 1 / (lam * (1 - h * lam / 2)),
    h = eps**2 / 2: within 1.5% of the target here, so 6% tolerances leave room for
    the Monte Carlo error of 4000 chains.
    """
    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    model = GaussianLogDensity(mean, torch.linalg.inv(cov))
    eps = 0.2
    buffer = ReplayBuffer((2,), size=16, init="normal", seed=0, device="cpu")
    sampler = SGLDSampler(model, buffer, n_steps=300, step_size=eps**2 / 2, noise_std=eps, seed=1, cuda_graph=False)
    x0 = mean + 2 * torch.randn(3000, 2, generator=torch.Generator().manual_seed(0))
    x = sampler.run_chain(x0).double()
    assert_close(x.mean(0), mean.double(), rtol=0, atol=0.06, name="mean")
    assert_close(torch.cov(x.T), cov.double(), rtol=0.08, atol=0.03, name="covariance")


def _blobs(n_per_class=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    x = torch.cat([c + 0.6 * torch.randn(n_per_class, 2, generator=g) for c in centers])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x, y


@pytest.fixture(scope="module")
def toy_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = _blobs()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_sampling_lowers_energy_of_random_starts(toy_classifier):
    buffer = ReplayBuffer((2,), size=256, init="uniform", reinit_freq=0.0, seed=3, device="cpu")
    sampler = SGLDSampler(toy_classifier, buffer, n_steps=30, step_size=0.05, noise_std=0.01, seed=4)
    x0 = torch.rand(256, 2) * 8 - 4
    with torch.no_grad():
        e0 = -torch.logsumexp(toy_classifier(x0), 1)
    x = sampler.run_chain(x0.clone())
    with torch.no_grad():
        e1 = -torch.logsumexp(toy_classifier(x), 1)
    assert e1.mean() < e0.mean() - 0.5


def test_conditional_sampling_raises_the_class_probability(toy_classifier):
    buffer = ReplayBuffer((2,), size=300, n_classes=3, init="uniform", reinit_freq=0.0, seed=5, device="cpu")
    sampler = SGLDSampler(toy_classifier, buffer, n_steps=30, step_size=0.05, noise_std=0.01, seed=6)
    y = torch.full((100,), 2, dtype=torch.int64)
    x0 = torch.rand(100, 2) * 8 - 4
    with torch.no_grad():
        p0 = toy_classifier(x0).softmax(1)[:, 2].mean()
    x = sampler.run_chain(x0.clone(), y)
    with torch.no_grad():
        p1 = toy_classifier(x).softmax(1)[:, 2].mean()
    assert p1 > p0 + 0.2


def test_sample_writes_back_and_returns_buffer_dtype(toy_classifier):
    buffer = ReplayBuffer((2,), size=8, init="uniform", reinit_freq=0.0, seed=0, device="cpu")
    sampler = SGLDSampler(toy_classifier, buffer, n_steps=2, step_size=0.1, noise_std=0.01, seed=0)
    sampler.sample(1)  # fills the buffer
    before = buffer.storage.clone()
    x = sampler.sample(8)
    assert x.shape == (8, 2) and x.dtype == buffer.dtype and not x.requires_grad
    after = buffer.storage
    changed = ~(after == before).all(dim=1)
    assert changed.any()
    # every changed row now holds one of the returned samples (repeated indices keep one)
    assert all((x == row).all(dim=1).any() for row in after[changed])


def test_no_state_leaks_out_of_sample():
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)  # a user-frozen parameter stays frozen
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    model.train()
    model[1].eval()  # mixed modes are restored exactly
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    for mode in ("eval", "train", "keep"):
        buffer = ReplayBuffer((2,), size=32, seed=0, device="cpu")
        SGLDSampler(model, buffer, n_steps=3, model_mode=mode, seed=0).sample(16)
        assert [p.requires_grad for p in model.parameters()] == flags
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())


def test_model_sees_the_requested_mode():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            seen.append((self.training, any(p.requires_grad for p in self.parameters())))
            return self.lin(x)

    model = Probe().train()
    SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=2, model_mode="eval").sample(4)
    assert seen == [(False, False), (False, False)]
    assert model.training


def _manual_pyld(model, first_layer, x, n_steps, step_size, inner_steps, lr, eps, noise_std, seed):
    """A straightforward PYLD loop (JEM++), written with plain autograd, for comparison.

    Noise: every update call of the sampler consumes x.numel() counters (noise or not),
    so the last inner step of outer step o uses counters from n * (o * (1 + K) + K).
    """
    x = x.clone()
    n = x.numel()
    for o in range(n_steps):
        x_in = x.clone().requires_grad_(True)
        out = {}
        handle = first_layer.register_forward_hook(lambda m, i, h, out=out: out.setdefault("h", h))
        logits = model(x_in)
        handle.remove()
        out["h"].retain_grad()
        torch.logsumexp(logits, 1).sum().backward()
        costate = out["h"].grad.detach()
        x = x + step_size * x_in.grad
        for k in range(inner_steps):
            x_in = x.clone().requires_grad_(True)
            (first_layer(x_in) * costate).sum().backward()
            x = x + lr * torch.clamp(x_in.grad, -eps, eps)
            if k == inner_steps - 1 and noise_std > 0:
                state = torch.tensor([seed, n * (o * (1 + inner_steps) + inner_steps)])
                x = x + noise_std * random_normal(state, x.shape)
            x = torch.clamp(x, -1, 1)
    return x


@pytest.mark.parametrize("noise_std", [0.0, 0.01])
def test_pyld_matches_a_straightforward_reimplementation(noise_std):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 5, 3))
    x0 = torch.rand(5, 1, 6, 5) * 2 - 1
    buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
    step = PYLDStep(inner_steps=4, lr=0.2, grad_clamp=1.0, clamp=(-1.0, 1.0), layer=model[0])
    sampler = SGLDSampler(model, buffer, n_steps=3, step_size=0.5, noise_std=noise_std, step=step, seed=11)
    got = sampler.run_chain(x0.clone())
    assert all(p.grad is None for p in model.parameters())  # no weight gradient was computed
    expected = _manual_pyld(model, model[0], x0, 3, 0.5, 4, 0.2, 1.0, noise_std, 11)
    assert_close(got, expected, rtol=1e-5, atol=1e-6, name="x")


def test_pyld_needs_a_first_layer():
    model = nn.Linear(2, 3)
    with pytest.raises(ValueError, match="first_layer"):
        SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), step=PYLDStep())
    with pytest.raises(ValueError, match="first_layer"):
        SGLDSampler.preset("jempp", model, ReplayBuffer((2,), size=8, device="cpu"))


class FirstLayerNet(nn.Module):
    """A classifier with a ``.first_layer``, as PYLD's default layer (jemfast's WideResNet has one)."""

    def __init__(self, first_layer: nn.Module, head: nn.Module):
        super().__init__()
        self.first_layer = first_layer
        self.head = head

    def forward(self, x):
        return self.head(torch.tanh(self.first_layer(x)))


def _first_layer_model():
    return FirstLayerNet(nn.Linear(2, 4), nn.Linear(4, 3))


def test_presets_carry_the_reference_defaults():
    model = _first_layer_model()
    jem = SGLDSampler.preset("jem", model, ReplayBuffer((2,), size=8, device="cpu"))
    assert (jem.n_steps, jem.step_size, jem.noise_std, jem.model_mode) == (20, 1.0, 0.01, "eval")
    assert jem.step == LangevinStep() and jem.method == "sgld"
    jempp = SGLDSampler.preset("jempp", model, ReplayBuffer((2,), size=8, device="cpu"))
    assert (jempp.method, jempp.step.lr, jempp.noise_std, jempp.model_mode) == ("pyld", 0.2, 0.0, "train")
    assert jempp.step == PYLDStep(inner_steps=5, lr=0.2, grad_clamp=1.0, clamp=(-1.0, 1.0), layer=model.first_layer)
    sada = SGLDSampler.preset("sadajem", model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=7)
    assert (sada.n_steps, sada.grad_clamp, sada.clamp, sada.noise_std) == (7, 1.0, (-1.0, 1.0), 0.0)
    assert set(PRESETS) == {"jem", "jempp", "sadajem"}
    with pytest.raises(ValueError, match="preset"):
        SGLDSampler.preset("ebm", model, ReplayBuffer((2,), size=8, device="cpu"))


@pytest.mark.parametrize("name", ["jem", "jempp", "sadajem"])
def test_a_preset_sampler_runs_the_presets_settings(name):
    model = _first_layer_model()
    sampler = SGLDSampler.preset(name, model, ReplayBuffer((2,), size=8, device="cpu"))
    preset = PRESETS[name]
    assert isinstance(preset, SamplerPreset) and preset.reference and preset.note
    # the sampler binds a PYLD step's layer to the model's first layer; nothing else differs
    assert dataclasses.replace(sampler.settings, step=preset.settings.step) == preset.settings
    if isinstance(preset.settings.step, PYLDStep):
        assert sampler.step == dataclasses.replace(preset.settings.step, layer=model.first_layer)
    else:
        assert sampler.settings == preset.settings


def test_preset_overrides_are_settings_fields_or_runtime_options():
    model = _first_layer_model()
    buffer = ReplayBuffer((2,), size=8, device="cpu")
    step = PYLDStep(inner_steps=2, lr=0.1, layer=model.first_layer)
    sampler = SGLDSampler.preset("jempp", model, buffer, n_steps=3, clamp=(-2, 2), step=step, temperature=2.0, seed=1)
    expected = dataclasses.replace(PRESETS["jempp"].settings, n_steps=3, clamp=(-2.0, 2.0), step=step)
    assert sampler.settings == expected and sampler.temperature == 2.0
    with pytest.raises(TypeError, match="'n_stpes'"):
        SGLDSampler.preset("jem", model, buffer, n_stpes=3)


def test_from_settings_is_the_constructor_with_settings():
    model = _first_layer_model()
    settings = SamplerSettings(n_steps=3, step_size=0.5, noise_std=0.1, grad_clamp=2, clamp=(-1, 1), step=PYLDStep())
    a = SGLDSampler.from_settings(model, ReplayBuffer((2,), size=8, device="cpu"), settings, seed=3, temperature=2.0)
    b = SGLDSampler(
        model, ReplayBuffer((2,), size=8, device="cpu"), 3, 0.5, 0.1, 2.0, (-1.0, 1.0), temperature=2.0,
        step=PYLDStep(layer=model.first_layer), seed=3,
    )  # fmt: skip
    assert a.settings == b.settings == dataclasses.replace(settings, step=PYLDStep(layer=model.first_layer))
    x0 = torch.rand(4, 2)
    assert torch.equal(a.run_chain(x0.clone()), b.run_chain(x0.clone()))
    with pytest.raises(TypeError, match="SamplerSettings"):
        SGLDSampler.from_settings(model, ReplayBuffer((2,), size=8, device="cpu"), {"n_steps": 3})
    with pytest.raises(TypeError, match="n_steps"):
        SGLDSampler.from_settings(model, ReplayBuffer((2,), size=8, device="cpu"), settings, n_steps=3)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_steps", -1, "n_steps must be an int >= 0, got -1"),
        ("n_steps", 2.0, "n_steps must be an int >= 0, got 2.0"),
        ("step_size", math.nan, "step_size must be a finite number, got nan"),
        ("step_size", "1", "step_size must be a finite number, got '1'"),
        ("noise_std", -0.5, "noise_std must be a finite number >= 0, got -0.5"),
        ("grad_clamp", 0.0, "grad_clamp must be a finite number > 0, got 0.0"),
        ("clamp", (1.0, -1.0), r"clamp must be None or a \(lo, hi\) pair with lo <= hi, got \(1.0, -1.0\)"),
        ("clamp", (0.0,), r"clamp must be None or a \(lo, hi\) pair, got \(0.0,\)"),
        ("clamp", (0.0, math.inf), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \(0.0, inf\)"),
        ("model_mode", "test", "model_mode must be one of .*, got 'test'"),
        ("step", "pyld", "step must be a chain step .*, got 'pyld'"),
    ],
)
def test_settings_errors_name_the_field_and_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplerSettings(**{field: value})
    sampler = SGLDSampler(nn.Linear(2, 3), ReplayBuffer((2,), size=8, device="cpu"))
    before = sampler.settings
    with pytest.raises(ValueError, match=message):
        setattr(sampler, field, value)
    assert sampler.settings is before  # a refused assignment changes nothing


def test_settings_are_frozen_and_normalised():
    settings = SamplerSettings(step_size=1, grad_clamp=2, clamp=[-1, 1])
    assert (settings.step_size, settings.grad_clamp, settings.clamp) == (1.0, 2.0, (-1.0, 1.0))
    assert isinstance(settings.step_size, float) and isinstance(settings.clamp, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_steps = 3
    assert SamplerSettings() == SamplerSettings(50, 1.0, 0.01, None, None, "eval", LangevinStep())


def test_assigning_a_setting_replaces_the_settings():
    model = _first_layer_model()
    sampler = SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=2)
    sampler.n_steps = 4
    sampler.clamp = [-1, 1]
    assert sampler.settings == SamplerSettings(n_steps=4, clamp=(-1.0, 1.0))
    sampler.step = PYLDStep(lr=0.1)  # bound to the model's first layer like a constructor argument
    assert sampler.settings.step == PYLDStep(lr=0.1, layer=model.first_layer) and sampler.method == "pyld"
    sampler.settings = SamplerSettings(step=PYLDStep())
    assert sampler.step.layer is model.first_layer
    with pytest.raises(TypeError, match="SamplerSettings"):
        sampler.settings = {"n_steps": 3}


def test_the_capture_key_follows_every_setting_and_the_step():
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))
    model.first_layer = model[0]
    sampler = SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=2, seed=0)
    key = sampler.capture_key()
    pyld = PYLDStep(layer=model[0])
    changes = [
        ("n_steps", 3),
        ("step_size", 0.5),
        ("noise_std", 0.0),
        ("grad_clamp", 1.0),
        ("clamp", (-1.0, 1.0)),
        ("model_mode", "train"),
        ("step", pyld),
    ]
    for name, value in changes:
        old = getattr(sampler, name)
        setattr(sampler, name, value)
        assert sampler.capture_key() != key, name
        setattr(sampler, name, old)
        assert sampler.capture_key() == key, name
    sampler.step = pyld
    key = sampler.capture_key()
    for field, value in [("inner_steps", 2), ("lr", 0.1), ("grad_clamp", None), ("clamp", None), ("layer", model[2])]:
        sampler.step = dataclasses.replace(pyld, **{field: value})
        assert sampler.capture_key() != key, field
    sampler.step = pyld
    assert sampler.capture_key() == key


def test_state_round_trip_reproduces_samples(toy_classifier):
    def make():
        return SGLDSampler(toy_classifier, ReplayBuffer((2,), size=64, seed=1, device="cpu"), n_steps=3, seed=2)

    a = make()
    a.sample(16)
    state = a.state_dict()
    first = a.sample(16)
    b = make()
    b.load_state_dict(state)
    assert torch.equal(b.sample(16), first)
    a.reseed(5)
    b.reseed(5)
    assert torch.equal(a.sample(4), b.sample(4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_mode="test"), "model_mode"),
        (dict(step="pyld"), "step"),
        (dict(grad_clamp=-1.0), "grad_clamp"),
        (dict(clamp=(1.0, 0.0)), "clamp"),
        (dict(cuda_graph="yes"), "cuda_graph"),
        (dict(temperature=0.0), "temperature"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(n_steps=-1), "n_steps"),
        (dict(amp_dtype=torch.int8), "amp_dtype"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGLDSampler(nn.Linear(2, 3), ReplayBuffer((2,), size=8, device="cpu"), **kwargs)


def test_bad_sample_calls(toy_classifier):
    sampler = SGLDSampler(toy_classifier, ReplayBuffer((2,), size=9, n_classes=3, device="cpu"), n_steps=1)
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(0)
    with pytest.raises(ValueError, match="int64"):
        sampler.sample(4, torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(4, torch.zeros(5, dtype=torch.int64))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            SGLDSampler(toy_classifier, ReplayBuffer((2,), size=8, device="cpu"), cuda_graph=True)


def test_nvtx_ranges_are_free_when_off_and_work_when_on():
    assert nvtx_range("x", enabled=False) is nvtx_range("y", enabled=False)
    with nvtx_range("sgld/test", enabled=True):
        pass
    SGLDSampler(nn.Linear(2, 3), ReplayBuffer((2,), size=8, device="cpu"), n_steps=2, nvtx=True).sample(4)


# --------------------------------------------------------------------- CUDA graphs (GPU only)
def _cuda_setup(seed=0, amp_dtype=None, n_classes=None):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).cuda()
    buffer = ReplayBuffer((1, 16, 24), size=128, n_classes=n_classes, seed=1, device="cuda")
    return model, buffer


@requires_cuda
@pytest.mark.parametrize("conditional", [False, True])
def test_graph_and_eager_agree(conditional):
    model, buf_g = _cuda_setup(n_classes=4 if conditional else None)
    _, buf_e = _cuda_setup(n_classes=4 if conditional else None)
    graph = SGLDSampler(model, buf_g, n_steps=5, step_size=0.5, seed=3, cuda_graph=True)
    eager = SGLDSampler(model, buf_e, n_steps=5, step_size=0.5, seed=3, cuda_graph=False)
    y = torch.randint(0, 4, (16,), device="cuda") if conditional else None
    for _ in range(3):
        assert_close(graph.sample(16, y), eager.sample(16, y), rtol=1e-4, atol=1e-5, name="samples")
    assert_close(buf_g.storage, buf_e.storage, rtol=1e-4, atol=1e-5, name="buffer")
    assert graph._graphs.captures == 1


@requires_cuda
def test_graph_replays_draw_fresh_noise_and_see_optimizer_updates():
    model, buf = _cuda_setup()
    sampler = SGLDSampler(model, buf, n_steps=3, seed=0, cuda_graph=True)
    a, b = sampler.sample(8), sampler.sample(8)
    assert not torch.equal(a, b)
    # An in-place parameter update must change what the next replay computes.
    _, buf2 = _cuda_setup()
    twin = SGLDSampler(model, buf2, n_steps=3, seed=0, cuda_graph=False)
    twin.sample(8), twin.sample(8)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    assert_close(sampler.sample(8), twin.sample(8), rtol=1e-4, atol=1e-5, name="after update")


@requires_cuda
def test_stale_captures_are_recaptured():
    model, buf = _cuda_setup()
    sampler = SGLDSampler(model, buf, n_steps=2, seed=0, cuda_graph=True)
    sampler.sample(8)
    model.float()  # no change: no re-capture
    sampler.sample(8)
    assert sampler._graphs.captures == 1
    model[0].weight = nn.Parameter(model[0].weight.detach().clone())  # reallocated parameter
    sampler.sample(8)
    assert sampler._graphs.captures == 2
    model.train(not model.training)
    sampler.sample(8)
    assert sampler._graphs.captures == 3


@requires_cuda
def test_pyld_graph_and_eager_agree_and_a_new_step_recaptures():
    model, buf_g = _cuda_setup()
    _, buf_e = _cuda_setup()
    step = PYLDStep(inner_steps=2, lr=0.1, layer=model[0])
    graph = SGLDSampler(model, buf_g, n_steps=3, step_size=0.5, step=step, seed=3, cuda_graph=True)
    eager = SGLDSampler(model, buf_e, n_steps=3, step_size=0.5, step=step, seed=3, cuda_graph=False)
    for _ in range(2):
        assert_close(graph.sample(16), eager.sample(16), rtol=1e-4, atol=1e-5, name="samples")
    assert graph._graphs.captures == 1
    graph.step = eager.step = dataclasses.replace(step, lr=0.05)
    assert_close(graph.sample(16), eager.sample(16), rtol=1e-4, atol=1e-5, name="samples after the change")
    assert graph._graphs.captures == 2
    graph.n_steps = eager.n_steps = 2
    assert_close(graph.sample(16), eager.sample(16), rtol=1e-4, atol=1e-5, name="samples after n_steps")
    assert graph._graphs.captures == 3


@requires_cuda
def test_bf16_autocast_inside_the_graph():
    model, buf = _cuda_setup()
    sampler = SGLDSampler(model, buf, n_steps=3, seed=0, cuda_graph=True, amp_dtype=torch.bfloat16)
    x = sampler.sample(8)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()


@requires_cuda
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
def test_graph_and_eager_agree_on_every_backend(backend):
    from jemfast.backends import unavailable_reason

    reason = unavailable_reason(backend, torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    model, buf_g = _cuda_setup()
    _, buf_e = _cuda_setup()
    graph = SGLDSampler(model, buf_g, n_steps=4, seed=5, cuda_graph=True, backend=backend)
    eager = SGLDSampler(model, buf_e, n_steps=4, seed=5, cuda_graph=False, backend=backend)
    for _ in range(2):
        assert_close(graph.sample(16), eager.sample(16), rtol=1e-4, atol=1e-5, name=f"samples ({backend})")


@requires_cuda
def test_graph_and_eager_chains_leave_batch_norm_statistics_alone():
    # Train-mode sampling (the JEM++ / SADA-JEM presets) normalises with the samples'
    # batch statistics but must never write them into the running statistics, neither
    # eagerly nor in the captured graph (nor in the capture's warm-up).
    import copy

    def bn_model():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4),
        ).cuda()

    model_g = bn_model()
    model_e = copy.deepcopy(model_g)
    _, buf_g = _cuda_setup()
    _, buf_e = _cuda_setup()
    graph = SGLDSampler(model_g, buf_g, n_steps=3, seed=2, cuda_graph=True, model_mode="train")
    eager = SGLDSampler(model_e, buf_e, n_steps=3, seed=2, cuda_graph=False, model_mode="train")
    for _ in range(2):
        assert_close(graph.sample(16), eager.sample(16), rtol=1e-4, atol=1e-5, name="samples")
    for bn in (model_g[1], model_e[1]):
        assert bn.num_batches_tracked.item() == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_graph_capture_on_a_device_that_is_not_current():
    torch.cuda.set_device(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16 * 24, 4)).to("cuda:1")
    buf = ReplayBuffer((1, 16, 24), size=64, seed=1, device="cuda:1")
    x = SGLDSampler(model, buf, n_steps=3, seed=0, cuda_graph=True).sample(8)
    assert x.device == torch.device("cuda:1") and torch.isfinite(x).all()
    assert torch.cuda.current_device() == 0


@pytest.mark.parametrize("method", ["sgld", "pyld"])
def test_float16_input_gradients_do_not_underflow(method):
    """log p's input gradient lies mostly below float16's normal range; the sampler scales it.

    CPU autocast runs float16 convolutions, so this checks the scaling here; without it
    a fraction of a percent of the gradient is flushed to zero.
    """
    from jemfast.models import WideResNet

    torch.manual_seed(0)
    model = WideResNet(depth=10, width=1, num_classes=10, norm=None).eval()
    x = torch.rand(2, 1, 32, 192, generator=torch.Generator().manual_seed(1)) * 2 - 1
    buffer = ReplayBuffer((1, 32, 192), size=4, init="uniform", seed=0, device="cpu")

    def gradient(amp_dtype):
        sampler = SGLDSampler(model, buffer, n_steps=1, seed=0, cuda_graph=False, amp_dtype=amp_dtype)
        return sampler.input_gradient(x.clone(), None)

    g32, g16 = gradient(None), gradient(torch.float16)
    assert (g32.abs() < 6.1e-5).float().mean() > 0.9  # the premise: mostly subnormal in float16
    flushed = int(((g16 == 0) & (g32 != 0)).sum())
    assert flushed == 0, f"{flushed} of {g32.numel()} input-gradient entries flushed to zero under float16"
    assert float((g16 - g32).norm() / g32.norm()) < 0.05
    if method == "pyld":  # the PYLD step uses the same scaled gradient and costate
        step = PYLDStep(inner_steps=1, lr=1e4)
        x16 = x.clone()
        SGLDSampler(
            model, buffer, n_steps=1, step_size=1e4, noise_std=0.0, amp_dtype=torch.float16, step=step, seed=0,
            cuda_graph=False,
        ).run_chain(x16)  # fmt: skip
        x32 = x.clone()
        SGLDSampler(
            model, buffer, n_steps=1, step_size=1e4, noise_std=0.0, step=step, seed=0, cuda_graph=False
        ).run_chain(x32)
        assert float((x16 - x32).norm() / (x32 - x).norm()) < 0.1


def test_run_chain_checks_its_input_once_for_the_whole_chain():
    """The chain calls the update op without sgld_update_'s per-call checks, so it makes them itself."""
    model = nn.Linear(2, 3)
    sampler = SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=2, seed=0)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        sampler.run_chain(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        sampler.run_chain(torch.zeros(2, 4).t())
    with pytest.raises(ValueError, match="step_size must be a finite number"):  # settings are checked when set
        sampler.step_size = float("nan")


# --------------------------------------------------------------------- deprecated keywords (method=, pyld_*=)
def _pyld_setup():
    torch.manual_seed(0)
    model = FirstLayerNet(nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 5, 3)))
    x0 = torch.rand(5, 1, 6, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return model, x0


def _chain(model, x0, **options):
    buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
    sampler = SGLDSampler(model, buffer, n_steps=2, step_size=0.5, noise_std=0.01, seed=3, **options)
    return sampler, sampler.run_chain(x0.clone())


@pytest.mark.parametrize(
    "keyword, field, value",
    [
        ("pyld_layer", "layer", "conv"),
        ("pyld_inner_steps", "inner_steps", 2),
        ("pyld_lr", "lr", 0.1),
        ("pyld_grad_clamp", "grad_clamp", 0.5),
        ("pyld_clamp", "clamp", (-0.8, 0.8)),
    ],
)
def test_each_deprecated_pyld_keyword_warns_and_builds_the_same_step(keyword, field, value):
    model, x0 = _pyld_setup()
    value = model.first_layer if value == "conv" else value
    with pytest.warns(DeprecationWarning) as record:
        old, got = _chain(model, x0, method="pyld", **{keyword: value})
    assert sorted(str(w.message) for w in record) == [
        "method='pyld' is deprecated; pass step=PYLDStep(...)",
        f"{keyword} is deprecated; pass step=PYLDStep({field}=...)",
    ]
    new, expected = _chain(model, x0, step=PYLDStep(**{field: value}))
    assert old.settings == new.settings
    assert torch.equal(got, expected)


@pytest.mark.parametrize("method, step", [("pyld", PYLDStep()), ("sgld", LangevinStep())])
def test_deprecated_method_keyword_warns_and_builds_the_same_step(method, step):
    model, x0 = _pyld_setup()
    with pytest.warns(DeprecationWarning, match=f"method='{method}' is deprecated; pass step="):
        old, got = _chain(model, x0, method=method)
    new, expected = _chain(model, x0, step=step)
    assert old.settings == new.settings and old.method == method
    assert torch.equal(got, expected)


def test_deprecated_pyld_keywords_leave_an_sgld_chain_alone_as_before():
    model, x0 = _pyld_setup()
    with pytest.warns(DeprecationWarning, match=r"pyld_lr is deprecated; .* no effect on an SGLD chain"):
        old, got = _chain(model, x0, pyld_lr=0.1)
    new, expected = _chain(model, x0)
    assert old.step == LangevinStep() and torch.equal(got, expected)


def test_deprecated_preset_overrides_replace_fields_of_the_presets_step():
    model, x0 = _pyld_setup()

    def run(**overrides):
        buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
        sampler = SGLDSampler.preset("jempp", model, buffer, n_steps=2, noise_std=0.01, seed=3, **overrides)
        return sampler, sampler.run_chain(x0.clone())

    with pytest.warns(DeprecationWarning) as record:
        old, got = run(pyld_lr=0.1, pyld_clamp=(-3, 3))
    assert sorted(str(w.message) for w in record) == [
        "pyld_clamp is deprecated; pass step=PYLDStep(clamp=...)",
        "pyld_lr is deprecated; pass step=PYLDStep(lr=...)",
    ]
    step = dataclasses.replace(PRESETS["jempp"].settings.step, lr=0.1, clamp=(-3.0, 3.0))
    new, expected = run(step=step)
    assert old.settings == new.settings and old.step.lr == 0.1 and old.step.inner_steps == 5
    assert torch.equal(got, expected)
    buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
    with pytest.warns(DeprecationWarning, match="method='pyld'"):
        assert SGLDSampler.preset("jem", model, buffer, method="pyld").step == PYLDStep(layer=model.first_layer)


def test_deprecated_keywords_refuse_a_step_too_and_unknown_keywords():
    model, x0 = _pyld_setup()
    buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
    with pytest.raises(ValueError, match="pass step= or the deprecated pyld_lr, not both"):
        SGLDSampler(model, buffer, step=PYLDStep(), pyld_lr=0.1)
    with pytest.raises(ValueError, match="not both"):
        SGLDSampler.preset("jempp", model, buffer, step=PYLDStep(), pyld_lr=0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        SGLDSampler(model, buffer, method="hmc")
    with pytest.raises(TypeError, match="'pyld_rl', 'stepsize'"):
        SGLDSampler(model, buffer, stepsize=0.1, pyld_rl=0.1)


def test_deprecated_pyld_attributes_read_the_step():
    model, _ = _pyld_setup()
    buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
    sampler = SGLDSampler(model, buffer, step=PYLDStep(lr=0.1, clamp=(-3, 3)))
    with pytest.warns(DeprecationWarning, match=r"sampler.pyld_lr is deprecated; read sampler.step.lr"):
        assert sampler.pyld_lr == 0.1
    with pytest.warns(DeprecationWarning, match="pyld_clamp"):
        assert sampler.pyld_clamp == (-3.0, 3.0)
    with pytest.warns(DeprecationWarning), pytest.raises(AttributeError, match="not a PYLDStep"):
        SGLDSampler(model, buffer).pyld_lr  # noqa: B018


def test_deprecated_preset_indexing_reads_the_preset():
    with pytest.warns(DeprecationWarning, match=r"PRESETS\[name\].settings"):
        keywords, source = PRESETS["jempp"]
    assert keywords["n_steps"] == 5 and keywords["step"] == PRESETS["jempp"].settings.step
    assert source.reference == PRESETS["jempp"].reference
    model, x0 = _pyld_setup()
    buffer = ReplayBuffer((1, 6, 5), size=8, seed=0, device="cpu")
    assert SGLDSampler(model, buffer, **keywords).settings == SGLDSampler.preset("jempp", model, buffer).settings
