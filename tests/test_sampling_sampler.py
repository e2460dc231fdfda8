"""SGLDSampler: Langevin correctness, effect on a trained classifier, no leaked state, PYLD, graphs."""

import pytest
import torch
from conftest import requires_cuda
from helpers import assert_close
from torch import nn

from jemfast.ops import random_normal
from jemfast.profiling import nvtx_range
from jemfast.sampling import PRESETS, ReplayBuffer, SGLDSampler


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
    sampler = SGLDSampler(
        model, buffer, n_steps=3, step_size=0.5, noise_std=noise_std, method="pyld", pyld_layer=model[0],
        pyld_inner_steps=4, pyld_lr=0.2, pyld_grad_clamp=1.0, pyld_clamp=(-1.0, 1.0), seed=11,
    )  # fmt: skip
    got = sampler.run_chain(x0.clone())
    assert all(p.grad is None for p in model.parameters())  # no weight gradient was computed
    expected = _manual_pyld(model, model[0], x0, 3, 0.5, 4, 0.2, 1.0, noise_std, 11)
    assert_close(got, expected, rtol=1e-5, atol=1e-6, name="x")


def test_pyld_needs_a_first_layer():
    model = nn.Linear(2, 3)
    with pytest.raises(ValueError, match="first_layer"):
        SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), method="pyld")


def test_presets_carry_the_reference_defaults():
    model = nn.Linear(2, 3)
    model.first_layer = model
    jem = SGLDSampler.preset("jem", model, ReplayBuffer((2,), size=8, device="cpu"))
    assert (jem.n_steps, jem.step_size, jem.noise_std, jem.model_mode) == (20, 1.0, 0.01, "eval")
    jempp = SGLDSampler.preset("jempp", model, ReplayBuffer((2,), size=8, device="cpu"))
    assert (jempp.method, jempp.pyld_lr, jempp.noise_std, jempp.model_mode) == ("pyld", 0.2, 0.0, "train")
    sada = SGLDSampler.preset("sadajem", model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=7)
    assert (sada.n_steps, sada.grad_clamp, sada.clamp, sada.noise_std) == (7, 1.0, (-1.0, 1.0), 0.0)
    assert set(PRESETS) == {"jem", "jempp", "sadajem"}
    with pytest.raises(ValueError, match="preset"):
        SGLDSampler.preset("ebm", model, ReplayBuffer((2,), size=8, device="cpu"))


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
        (dict(method="hmc"), "method"),
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
        return sampler._input_gradient(x.clone(), None)

    g32, g16 = gradient(None), gradient(torch.float16)
    assert (g32.abs() < 6.1e-5).float().mean() > 0.9  # the premise: mostly subnormal in float16
    flushed = int(((g16 == 0) & (g32 != 0)).sum())
    assert flushed == 0, f"{flushed} of {g32.numel()} input-gradient entries flushed to zero under float16"
    assert float((g16 - g32).norm() / g32.norm()) < 0.05
    if method == "pyld":  # the PYLD step uses the same scaled gradient and costate
        x16 = x.clone()
        SGLDSampler(
            model,
            buffer,
            n_steps=1,
            seed=0,
            cuda_graph=False,
            amp_dtype=torch.float16,
            method="pyld",
            noise_std=0.0,
            step_size=1e4,
            pyld_lr=1e4,
            pyld_inner_steps=1,
        ).run_chain(x16)
        x32 = x.clone()
        SGLDSampler(
            model,
            buffer,
            n_steps=1,
            seed=0,
            cuda_graph=False,
            method="pyld",
            noise_std=0.0,
            step_size=1e4,
            pyld_lr=1e4,
            pyld_inner_steps=1,
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
    with pytest.raises(ValueError, match="step_size must be finite"):
        sampler.step_size = float("nan")
        sampler.run_chain(torch.zeros(4, 2))
