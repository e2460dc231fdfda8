"""Counter-based random numbers: Philox4x32-10 against Triton and known answers, and their statistics."""

import math

import pytest
import torch
from conftest import HAS_CUDA, requires_cuda
from helpers import assert_close

from jemfast.backends import torch_ref
from jemfast.ops import make_rng_state, random_normal, random_uniform

triton = pytest.importorskip("triton")
tl = triton.language

# Seeds covering the key words: small, high word set, negative (all high bits set).
SEEDS = [0, 1234, 2**40 + 7, -5, 2**63 - 1]


@triton.jit
def _triton_randn_kernel(normal_ptr, words_ptr, seed, offset, N: tl.constexpr):
    """Reference draws from Triton's own tl.randn / tl.randint4x with 32-bit offsets."""
    i = tl.arange(0, N)
    counter = offset + i  # int32: Triton's Philox4x32 path
    tl.store(normal_ptr + i, tl.randn(seed, counter))
    r0, r1, r2, r3 = tl.randint4x(seed, counter)
    tl.store(words_ptr + 4 * i, r0)
    tl.store(words_ptr + 4 * i + 1, r1)
    tl.store(words_ptr + 4 * i + 2, r2)
    tl.store(words_ptr + 4 * i + 3, r3)


def _device():
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offset", [0, 977, 2**31 - 50, 2**32 - 300])
def test_reference_matches_triton_randn_for_32bit_counters(seed, offset):
    n = 256
    dev = _device()
    normals = torch.empty(n, dtype=torch.float32, device=dev)
    words = torch.empty(4 * n, dtype=torch.int32, device=dev)
    signed_offset = offset - 2**32 if offset >= 2**31 else offset
    _triton_randn_kernel[(1,)](normals, words, seed, signed_offset, N=n)
    state = torch.tensor([seed, offset], dtype=torch.int64, device=dev)
    valid = min(n, 2**32 - offset)  # tl's 32-bit counter wraps there; ours carries into c1
    ref_words = torch.stack(torch_ref.philox_words(state, n), dim=1).reshape(-1)
    got_words = words.to(torch.int64) & 0xFFFFFFFF
    assert torch.equal(got_words[: 4 * valid].cpu(), ref_words[: 4 * valid].cpu()), "words differ from tl.randint4x"
    assert_close(torch_ref.random_normal(state, n)[:valid], normals[:valid], rtol=0, atol=1e-6, name="normal")


def test_philox_known_answers():
    """Known-answer vectors of Philox4x32-10 (Salmon et al. 2011, Random123's kat_vectors)."""
    m = 0xFFFFFFFF

    def run(ctr, key):
        c = [torch.tensor([v], dtype=torch.int64) for v in ctr]
        k = [torch.tensor([v], dtype=torch.int64) for v in key]
        return [int(w) for w in torch_ref.philox4x32_10(*c, *k)]

    assert run([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert run([m, m, m, m], [m, m]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert run([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == [
        0xD16CFE09,
        0x94FDCCEB,
        0x5001E420,
        0x24126EA1,
    ]


@pytest.mark.parametrize("offset", [0, 2**32 - 100, 2**40 + 3, 2**62])
@pytest.mark.parametrize("n", [1, 129, 4099])
@pytest.mark.parametrize("backend", ["triton"] if HAS_CUDA else ["triton", "cpu"])  # the extension has no fill kernel
def test_fast_backends_draw_the_same_numbers_as_the_reference(backend, offset, n):
    dev = _device()
    for draw, exact in ((random_uniform, True), (random_normal, False)):
        s_torch = torch.tensor([99, offset], dtype=torch.int64, device=dev)
        s_triton = s_torch.clone()
        a = draw(s_torch, (n,), backend="torch")
        b = draw(s_triton, (n,), backend=backend)
        if exact:
            assert torch.equal(a, b)
        else:
            assert_close(b, a, rtol=0, atol=1e-6, name=draw.__name__)
        assert torch.equal(s_torch, s_triton)
        assert int(s_torch[1]) == offset + n


def test_counter_carries_into_the_high_word():
    """Counters 2**32 + k must differ from counters k (the high word is part of the counter)."""
    low = random_uniform(torch.tensor([7, 0]), (64,))
    high = random_uniform(torch.tensor([7, 2**32]), (64,))
    assert not torch.equal(low, high)


def test_normal_statistics():
    n = 200_000
    z = random_normal(make_rng_state(2024), (n,)).double()
    se = 1 / math.sqrt(n)
    assert abs(z.mean().item()) < 5 * se
    assert abs(z.var().item() - 1.0) < 5 * math.sqrt(2.0 / n)
    assert abs((z**3).mean().item()) < 5 * math.sqrt(15.0 / n)  # skewness 0
    assert abs((z**4).mean().item() - 3.0) < 5 * math.sqrt(96.0 / n)  # kurtosis 3
    scipy_stats = pytest.importorskip("scipy.stats")
    assert scipy_stats.kstest(z.numpy(), "norm").pvalue > 1e-3


def test_uniform_statistics():
    n = 200_000
    u = random_uniform(make_rng_state(11), (n,)).double()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert scipy_stats.kstest(u.numpy(), "uniform").pvalue > 1e-3


def test_same_state_same_numbers_and_consecutive_draws_differ():
    s1, s2 = make_rng_state(5), make_rng_state(5)
    a1, a2 = random_normal(s1, (100,)), random_normal(s2, (100,))
    assert torch.equal(a1, a2)
    b1 = random_normal(s1, (100,))
    assert not torch.equal(a1, b1)
    # Drawing 100 then 100 is the same stream as drawing 200 at once.
    assert torch.equal(torch.cat([a1, b1]), random_normal(make_rng_state(5), (200,)))


def test_make_rng_state_from_generator_and_errors():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(make_rng_state(g1), make_rng_state(g2))
    state = make_rng_state(42)
    assert state.dtype == torch.int64 and state.tolist() == [42, 0]
    with pytest.raises(TypeError, match="seed"):
        make_rng_state(1.5)
    with pytest.raises(ValueError, match=r"seed must be an int in \[-9223372036854775808, 9223372036854775807\]"):
        make_rng_state(2**64)
    with pytest.raises(TypeError, match="int64"):
        random_normal(torch.tensor([1.0, 0.0]), (3,))
    with pytest.raises(ValueError, match="shape"):
        random_normal(torch.tensor([1, 0, 0]), (3,))


@requires_cuda
def test_random_graph_replays_draw_fresh_numbers():
    state = make_rng_state(1, device="cuda")
    out = torch.empty(1000, device="cuda")
    random_normal(state, (1000,))  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out.copy_(random_normal(state, (1000,)))
    graph.replay()
    first = out.clone()
    graph.replay()
    assert not torch.equal(first, out)


def test_derived_seeds_are_far_apart_across_ranks_and_streams():
    from jemfast.ops import derive_seed

    keys = {derive_seed(0, rank, stream, k) for rank in range(8) for stream in range(5) for k in range(4)}
    assert len(keys) == 8 * 5 * 4
    assert all(0 <= key < 2**63 for key in keys)
    assert derive_seed(3, 1) == derive_seed(3, 1)
    ordered = sorted(keys)
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) > 2**32  # no stream runs into another
    with pytest.raises(TypeError):
        derive_seed(1.5)
