"""Capture keys (CPU) and the generic graph cache (GPU): what makes a captured chain re-capture."""

import pytest
import torch
from conftest import requires_cuda
from torch import nn

from jemfast.cuda_graphs import GraphCache, attribute_key
from jemfast.sampling import ReplayBuffer, SGLDSampler


def _sampler(device="cpu", **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.SiLU(), nn.Linear(16, 3)).to(device)
    buffer = ReplayBuffer((4,), size=32, seed=0, device=device)
    return SGLDSampler(model, buffer, n_steps=2, seed=1, cuda_graph=device != "cpu", **options)


def test_every_sampler_setting_is_in_the_key():
    sampler = _sampler()
    key = sampler.capture_key()
    assert sampler.capture_key() == key  # stable while nothing changes
    for name, value in [
        ("n_steps", 3),
        ("step_size", 0.5),
        ("noise_std", 0.0),
        ("temperature", 2.0),
        ("clamp", (-1.0, 1.0)),
        ("amp_dtype", torch.bfloat16),
        ("backend", "torch"),
    ]:
        old = getattr(sampler, name)
        setattr(sampler, name, value)
        assert sampler.capture_key() != key, name
        setattr(sampler, name, old)
    assert sampler.capture_key() == key
    sampler.some_future_option = 7  # an attribute nobody listed still counts
    assert sampler.capture_key() != key


def test_model_and_buffer_identity_and_modes_are_in_the_key():
    sampler = _sampler()
    key = sampler.capture_key()
    sampler.model.train(not sampler.model.training)
    assert sampler.capture_key() != key
    sampler.model.train(not sampler.model.training)
    sampler.model[0].weight = nn.Parameter(sampler.model[0].weight.detach().clone())  # new storage
    assert sampler.capture_key() != key
    key = sampler.capture_key()
    with torch.no_grad():
        sampler.model[0].weight.add_(1.0)  # in-place: the graph reads the new values, no re-capture
    assert sampler.capture_key() == key
    sampler.buffer.storage = sampler.buffer.storage.clone()
    assert sampler.capture_key() != key
    key = sampler.capture_key()
    sampler.buffer.reseed(5)  # in place
    assert sampler.capture_key() == key
    with torch.no_grad():
        assert sampler.capture_key() != key  # grad mode is part of it


def test_attribute_key_refuses_what_it_cannot_key():
    class Holder:
        def __init__(self):
            self.fine = 1
            self.opaque = object()

    with pytest.raises(TypeError, match="'opaque'.*capture_key"):
        attribute_key(Holder())
    assert attribute_key(Holder(), skip=("opaque",)) == (("fine", 1),)


@requires_cuda
@pytest.mark.gpu
def test_graph_cache_replays_with_fresh_inputs_and_recaptures_on_a_new_key():
    cache = GraphCache("doubling", torch.device("cuda"))
    fn = lambda x, warmup: x * 2  # noqa: E731
    x = torch.arange(4.0, device="cuda")
    assert torch.equal(cache.run("k", (4,), fn, x), x * 2)
    assert torch.equal(cache.run("k", (4,), fn, x + 1), (x + 1) * 2)  # static input refreshed
    assert cache.captures == 1
    cache.run("k2", (4,), fn, x)
    assert cache.captures == 2
