"""The sampler's step strategies (jemfast.sampling.steps): validation, binding, capture keys,
results unchanged from the sampler's earlier method="pyld" branch, and a user-defined step."""

import dataclasses
import math
from typing import ClassVar

import pytest
import torch
from helpers import assert_close
from torch import nn

from jemfast.cuda_graphs import attribute_key, module_key
from jemfast.ops.sgld import SGLDSettings
from jemfast.sampling import LangevinStep, PYLDStep, ReplayBuffer, SGLDSampler
from jemfast.sampling.steps import ChainStep


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("inner_steps", -1, "inner_steps must be an int >= 0, got -1"),
        ("inner_steps", True, "inner_steps must be an int >= 0, got True"),
        ("inner_steps", 2.5, "inner_steps must be an int >= 0, got 2.5"),
        ("lr", math.inf, "lr must be a finite number, got inf"),
        ("lr", None, "lr must be a finite number, got None"),
        ("grad_clamp", 0, "grad_clamp must be a finite number > 0, got 0"),
        ("grad_clamp", -1.0, "grad_clamp must be a finite number > 0, got -1.0"),
        ("clamp", (1.0, -1.0), r"clamp must be None or a \(lo, hi\) pair with lo <= hi, got \(1.0, -1.0\)"),
        ("clamp", 1.0, "clamp must be None or a .lo, hi. pair, got 1.0"),
        ("clamp", (-1.0, math.nan), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \(-1.0, nan\)"),
        ("layer", "conv", "layer must be a torch.nn.Module or None, got 'conv'"),
    ],
)
def test_pyld_step_errors_name_the_field_and_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        PYLDStep(**{field: value})


def test_pyld_step_defaults_normalisation_and_equality():
    step = PYLDStep(inner_steps=5, lr=1, grad_clamp=1, clamp=[-1, 1])
    assert step == PYLDStep(lr=1.0) and hash(step) == hash(PYLDStep(lr=1.0))
    assert (step.lr, step.grad_clamp, step.clamp) == (1.0, 1.0, (-1.0, 1.0)) and isinstance(step.clamp, tuple)
    assert PYLDStep() == PYLDStep(inner_steps=5, lr=0.2, grad_clamp=1.0, clamp=(-1.0, 1.0), layer=None)
    assert PYLDStep(grad_clamp=None, clamp=None).clamp is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.lr = 0.1
    assert LangevinStep() == LangevinStep() and LangevinStep.name == "sgld" and PYLDStep.name == "pyld"
    assert isinstance(LangevinStep(), ChainStep) and isinstance(PYLDStep(), ChainStep)


def test_bind_fills_in_the_first_layer_only_when_none_is_given():
    model = nn.Sequential(nn.Linear(2, 3))
    assert LangevinStep().bind(model) == LangevinStep()
    with pytest.raises(ValueError, match="first_layer"):
        PYLDStep().bind(model)
    model.first_layer = model[0]
    assert PYLDStep(lr=0.1).bind(model) == PYLDStep(lr=0.1, layer=model[0])
    other = nn.Linear(2, 3)
    step = PYLDStep(layer=other)
    assert step.bind(model) is step


def test_capture_keys_cover_every_field_and_the_layer_tensors():
    layer = nn.Linear(2, 3)
    step = PYLDStep(layer=layer)
    assert step.capture_key() == PYLDStep(layer=layer).capture_key()
    assert module_key(layer) in dict(step.capture_key()[1]).values()
    for field, value in [("inner_steps", 1), ("lr", 0.5), ("grad_clamp", 2.0), ("clamp", None), ("layer", None)]:
        assert dataclasses.replace(step, **{field: value}).capture_key() != step.capture_key(), field
    key = step.capture_key()
    layer.weight = nn.Parameter(layer.weight.detach().clone())  # reallocated: a graph would read stale memory
    assert step.capture_key() != key
    assert LangevinStep().capture_key() != PYLDStep().capture_key()

    class Holder:  # attribute_key, which builds the sampler's key, accepts both strategies
        def __init__(self, step):
            self.step = step

    assert attribute_key(Holder(LangevinStep())) != attribute_key(Holder(step))


def _updates(step, **settings):
    model = nn.Sequential(nn.Linear(2, 3))
    sampler = SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), step=step.bind(model), **settings)
    return sampler.settings.step.updates(sampler)


def test_updates_are_the_checked_scalars_of_each_update():
    assert _updates(LangevinStep(), step_size=0.5, noise_std=0.1, grad_clamp=2.0, clamp=(-1, 1)) == {
        "langevin": SGLDSettings(0.5, 0.1, 2.0, -1.0, 1.0)
    }
    step = PYLDStep(inner_steps=2, lr=0.25, grad_clamp=0.5, clamp=(-0.5, 0.5), layer=nn.Linear(2, 3))
    assert _updates(step, step_size=0.5, noise_std=0.1, grad_clamp=2.0, clamp=(-1, 1)) == {
        "full": SGLDSettings(0.5, 0.0, 2.0, -1.0, 1.0),
        "inner": SGLDSettings(0.25, 0.0, 0.5, -0.5, 0.5),
        "inner_last": SGLDSettings(0.25, 0.1, 0.5, -0.5, 0.5),
        "noise": SGLDSettings(0.0, 0.1),
    }


# --------------------------------------------------------------------- unchanged results
# Expected outputs were computed by the sampler before the step strategies existed
# (commit 29af853, SGLDSampler(..., method="pyld", pyld_*=...)). The model's weights,
# the starts and every step size are multiples of powers of two and the labels make
# log p linear in the logits, so every operation of the noise-free chain is exact in
# float32 and the outputs are bit-identical on any machine and backend.
def _dyadic_model():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-8, 9, p.shape, generator=g).float() / 8)
    return model


def _dyadic_chain(noise_std, inner_steps, labels, backend):
    model = _dyadic_model()
    x0 = torch.randint(-64, 65, (4, 3), generator=torch.Generator().manual_seed(1)).float() / 64
    step = PYLDStep(inner_steps=inner_steps, lr=0.03125, grad_clamp=0.125, clamp=(-0.875, 0.875), layer=model[0])
    sampler = SGLDSampler(
        model, ReplayBuffer((3,), size=8, seed=0, device="cpu"), n_steps=2, step_size=0.0625, noise_std=noise_std,
        grad_clamp=0.5, clamp=(-1.0, 1.0), step=step, seed=3, backend=backend,
    )  # fmt: skip
    return sampler.run_chain(x0, torch.tensor([0, 1, 1, 0]) if labels else None)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_a_pyld_chain_is_bit_identical_to_the_sampler_before_step_strategies(backend):
    from jemfast.backends import unavailable_reason

    if reason := unavailable_reason(backend, torch.device("cpu")):
        pytest.skip(reason)
    expected = torch.tensor(
        [[3584, -1888, -3200], [-1184, -1792, -1312], [-1432, 2208, 1056], [3584, 2528, 1072]], dtype=torch.float32
    )
    assert torch.equal(_dyadic_chain(0.0, 3, True, backend), expected / 4096)


@pytest.mark.parametrize(
    "inner_steps, labels, expected",
    [
        (  # noise in the last inner step; log p = logsumexp
            3,
            False,
            [
                [0.875, -0.49330583214759827, -0.8140724897384644],
                [-0.4052780866622925, -0.40037277340888977, -0.33038529753685],
                [-0.40486136078834534, 0.5578575730323792, 0.284635066986084],
                [0.875, 0.6088281273841858, 0.230510875582695],
            ],
        ),
        (  # no inner steps: the noise-only update (unclipped, as before: 1.008 > 1)
            0,
            True,
            [
                [0.920324444770813, -0.4956284761428833, -0.7662041187286377],
                [-0.3326606750488281, -0.466374009847641, -0.35437434911727905],
                [-0.389961838722229, 0.48984336853027344, 0.26644736528396606],
                [1.0082038640975952, 0.5798289775848389, 0.288845419883728],
            ],
        ),
    ],
)
def test_a_noisy_pyld_chain_matches_the_sampler_before_step_strategies(inner_steps, labels, expected):
    # Gaussian noise and logsumexp use transcendental functions whose last bit may differ
    # between CPUs; the values here were bit-identical to the earlier sampler's on the
    # machine that recorded them.
    got = _dyadic_chain(0.01, inner_steps, labels, "torch")
    assert_close(got, torch.tensor(expected), rtol=0, atol=1e-6, name="x")


# --------------------------------------------------------------------- a user-defined step
@dataclasses.dataclass(frozen=True)
class GradientAscentStep:
    """A deterministic step: x <- x + rate * grad_x log p(x), through the sampler's helpers."""

    name: ClassVar[str] = "ascent"
    rate: float = 0.1

    def bind(self, model):
        return self

    def updates(self, sampler):
        return {"ascent": SGLDSettings.checked(self.rate, 0.0)}

    def run(self, sampler, x, y, updates, backend):
        updates["ascent"].apply_(x, sampler.input_gradient(x, y).contiguous(), sampler.rng_state, backend)

    def capture_key(self):
        return type(self).__name__, self.rate


def test_any_step_with_the_interface_runs_in_the_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))
    x0 = torch.randn(6, 2)
    sampler = SGLDSampler(model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=3, step=GradientAscentStep(0.2))
    assert sampler.method == "ascent"
    got = sampler.run_chain(x0.clone())
    expected = SGLDSampler(
        model, ReplayBuffer((2,), size=8, device="cpu"), n_steps=3, step_size=0.2, noise_std=0.0
    ).run_chain(x0.clone())
    assert torch.equal(got, expected)
