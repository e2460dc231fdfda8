"""Tests for jemfast.sampling.buffer.ReplayBuffer: draws, re-initialisation, partitions, init fitting, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from helpers import assert_close
from scipy import stats

from jemfast.ops import make_rng_state, random_uniform
from jemfast.sampling.buffer import STD_FLOOR, ReplayBuffer

CPU = torch.device("cpu")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality: a buffer's storage starts uninitialised and may hold NaN patterns."""
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


SENTINEL = 7.0  # outside the support of every init used here, so stored rows are recognisable


def fill(buf: ReplayBuffer, value: float) -> None:
    rows = torch.arange(buf.size, device=buf.device)
    buf.write(rows, torch.full((buf.size, *buf.sample_shape), value, device=buf.device))


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(n * p * (1 - p)) + 1


# ----------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(size=10, n_classes=3), ValueError, r"size=10 must be divisible by n_classes=3"),
        (dict(init="gaussian"), ValueError, r"init must be one of .*, got 'gaussian'"),
        (dict(reinit_freq=1.5), ValueError, r"reinit_freq must be a finite number in \[0, 1\], got 1.5"),
        (dict(reinit_freq=-0.1), ValueError, r"reinit_freq"),
        (dict(size=0), ValueError, r"size must be an int >= 1"),
        (dict(n_classes=0), ValueError, r"n_classes must be an int >= 1"),
        (dict(dtype=torch.int64), TypeError, r"floating"),
        (dict(sample_shape=(3, 0)), ValueError, r"sample_shape"),
        (dict(sample_shape=5), TypeError, r"sample_shape"),
    ],
)
def test_constructor_validation(kwargs, error, pattern):
    args = dict(sample_shape=(2, 3), size=12, device=CPU, seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        ReplayBuffer(**args)


def test_layout_and_dtype():
    buf = ReplayBuffer((1, 4, 5), size=40, n_classes=4, device=CPU, dtype=torch.float64, seed=1)
    assert buf.storage.shape == (40, 1, 4, 5) and buf.storage.dtype == torch.float64
    assert buf.partition_size == 10 and len(buf) == 40
    x0, idx = buf.sample(6)
    assert x0.shape == (6, 1, 4, 5) and x0.dtype == torch.float64 and x0.device == CPU
    assert idx.shape == (6,) and idx.dtype == torch.int64


# ------------------------------------------------------------------- init laws
@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_initial_contents_follow_the_init_distribution(init):
    buf = ReplayBuffer((3, 5), size=400, init=init, device=CPU, seed=3)
    values = buf.storage.flatten().double().numpy()
    cdf = stats.uniform(loc=-1, scale=2).cdf if init == "uniform" else stats.norm.cdf
    assert stats.kstest(values, cdf).pvalue > 1e-3
    if init == "uniform":
        assert values.min() >= -1 and values.max() < 1
    n = values.size
    # Var(x^2) is E[x^4] - E[x^2]^2: 1/5 - 1/9 for U[-1, 1), 3 - 1 for N(0, 1).
    expected_var, var_of_square = (1 / 3, 4 / 45) if init == "uniform" else (1.0, 2.0)
    assert abs(values.mean()) < 5 * math.sqrt(expected_var / n)
    assert abs(values.var() - expected_var) < 5 * math.sqrt(var_of_square / n)


@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_reinitialised_rows_follow_the_init_distribution(init):
    buf = ReplayBuffer((4,), size=16, init=init, reinit_freq=1.0, device=CPU, seed=4)
    fill(buf, SENTINEL)
    x0, _ = buf.sample(1500)
    values = x0.flatten().double().numpy()
    assert not np.any(values == SENTINEL)
    cdf = stats.uniform(loc=-1, scale=2).cdf if init == "uniform" else stats.norm.cdf
    assert stats.kstest(values, cdf).pvalue > 1e-3


# ---------------------------------------------------------- re-initialisation
@pytest.mark.parametrize("reinit_freq", [0.05, 0.3])
@pytest.mark.parametrize("conditional", [False, True])
def test_reinit_fraction_is_binomial(reinit_freq, conditional):
    buf = ReplayBuffer((2,), size=60, n_classes=3, reinit_freq=reinit_freq, device=CPU, seed=5)
    fill(buf, SENTINEL)
    batch, draws = 400, 10
    reinitialised = 0
    for i in range(draws):
        y = torch.full((batch,), i % 3, dtype=torch.int64) if conditional else None
        x0, _ = buf.sample(batch, y)
        fresh = (x0 != SENTINEL).all(dim=1)
        stored = (x0 == SENTINEL).all(dim=1)
        assert torch.all(fresh | stored), "each row is either stored or wholly fresh"
        reinitialised += int(fresh.sum())
    n = batch * draws
    assert abs(reinitialised - n * reinit_freq) < binomial_bound(n, reinit_freq)


@pytest.mark.parametrize("reinit_freq,expected", [(0.0, 0), (1.0, 1)])
def test_reinit_extremes(reinit_freq, expected):
    buf = ReplayBuffer((3,), size=10, reinit_freq=reinit_freq, device=CPU, seed=6)
    fill(buf, SENTINEL)
    x0, _ = buf.sample(200)
    fresh = (x0 != SENTINEL).all(dim=1)
    assert torch.all(fresh == bool(expected))


# ------------------------------------------------------------- index draws
def test_unconditional_indices_are_uniform_over_the_buffer():
    buf = ReplayBuffer((1,), size=50, n_classes=5, device=CPU, seed=7)
    counts = torch.zeros(50)
    for _ in range(10):
        _, idx = buf.sample(1000)
        assert idx.min() >= 0 and idx.max() < 50
        counts += torch.bincount(idx, minlength=50)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def test_conditional_indices_stay_in_their_partition_and_cover_it():
    n_classes, size = 4, 40
    buf = ReplayBuffer((1,), size=size, n_classes=n_classes, device=CPU, seed=8)
    y = torch.arange(n_classes).repeat_interleave(500)
    _, idx = buf.sample(y.numel(), y)
    part = size // n_classes
    assert torch.equal(torch.div(idx, part, rounding_mode="floor"), y)
    for c in range(n_classes):
        counts = torch.bincount(idx[y == c] - c * part, minlength=part)
        assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def test_indices_come_from_the_buffer_stream():
    seed, size, batch = 11, 97, 13
    buf = ReplayBuffer((2,), size=size, device=CPU, seed=seed)
    # The buffer's own initial fill consumes the stream first: replay it to the same point.
    state = buf.rng_state.clone()
    _, idx = buf.sample(batch)
    u = random_uniform(state, (batch,))
    assert torch.equal(idx, (u * size).long())


# --------------------------------------------------------------- write back
def test_write_is_visible_to_the_next_sample():
    buf = ReplayBuffer((2, 3), size=8, n_classes=2, reinit_freq=0.0, device=CPU, seed=9)
    rows = torch.arange(8)
    values = torch.arange(8, dtype=torch.float32).view(8, 1, 1).expand(8, 2, 3).clone()
    buf.write(rows, values)
    x0, idx = buf.sample(64)
    assert_close(x0, values[idx], name="stored rows")
    # A chain's results written back replace exactly the rows it came from.
    buf.write(idx[:5], x0[:5] + 100)
    x1, idx1 = buf.sample(256)
    expected = values.clone()
    expected[idx[:5]] += 100
    assert_close(x1, expected[idx1], name="rows after write-back")


def test_sample_returns_a_copy_not_a_view():
    buf = ReplayBuffer((4,), size=6, reinit_freq=0.0, device=CPU, seed=10)
    before = buf.storage.clone()
    x0, _ = buf.sample(10)
    x0.add_(5.0)
    assert same_bits(buf.storage, before)
    assert x0.data_ptr() != buf.storage.data_ptr()


def test_write_casts_and_detaches():
    buf = ReplayBuffer((2,), size=4, device=CPU, dtype=torch.bfloat16, seed=0)
    x = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    buf.write(torch.tensor([1, 3]), x * 2)
    assert buf.storage.dtype == torch.bfloat16 and not buf.storage.requires_grad
    assert torch.all(buf.storage[[1, 3]] == 2)


# --------------------------------------------------------------- fit_init
def make_labelled_data(n_classes=3, per_class=(50, 80, 65), shape=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(n_classes):
        x = rng.normal(loc=3.0 * c - 2, scale=0.5 + c, size=(per_class[c], *shape))
        xs.append(x)
        ys.append(np.full(per_class[c], c))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(y))
    return x[order], y[order]


def batches_of(x: np.ndarray, y: np.ndarray | None, sizes=(17, 40, 1, 100)):
    start, i = 0, 0
    while start < len(x):
        stop = min(start + sizes[i % len(sizes)], len(x))
        xb = torch.from_numpy(x[start:stop]).float()
        yield xb if y is None else (xb, torch.from_numpy(y[start:stop]))
        start, i = stop, i + 1


@pytest.mark.parametrize("partitioned", [True, False])
def test_fit_init_matches_numpy_mean_and_std(partitioned):
    x, y = make_labelled_data()
    buf = ReplayBuffer((2, 3), size=30, n_classes=3 if partitioned else None, init="class_gaussian", device=CPU, seed=1)
    buf.fit_init(batches_of(x, y), n_classes=None if partitioned else 3)
    assert buf.init_mean.shape == (3, 2, 3) and buf.init_mean.dtype == torch.float32
    x32 = x.astype(np.float32).astype(np.float64)  # the batches were cast to float32
    for c in range(3):
        assert_close(buf.init_mean[c], torch.from_numpy(x32[y == c].mean(axis=0)).float(), name=f"mean[{c}]")
        assert_close(buf.init_std[c], torch.from_numpy(x32[y == c].std(axis=0)).float(), name=f"std[{c}]")


def test_fit_init_unlabelled_gives_a_single_gaussian():
    x, _ = make_labelled_data()
    buf = ReplayBuffer((2, 3), size=30, n_classes=3, init="class_gaussian", device=CPU, seed=1)
    buf.fit_init(batches_of(x, None))
    x32 = x.astype(np.float32).astype(np.float64)
    assert buf.init_mean.shape == (1, 2, 3)
    assert_close(buf.init_mean[0], torch.from_numpy(x32.mean(axis=0)).float(), name="mean")
    assert_close(buf.init_std[0], torch.from_numpy(x32.std(axis=0)).float(), name="std")
    x0, _ = buf.sample(8, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    assert torch.isfinite(x0).all()


def test_fit_init_infers_class_count_and_floors_std():
    buf = ReplayBuffer((2,), size=10, init="class_gaussian", device=CPU, seed=2)
    x = torch.tensor([[1.0, 2.0], [1.0, 4.0], [5.0, 6.0], [5.0, 8.0]])
    buf.fit_init([(x[:2], torch.tensor([0, 0])), (x[2:], torch.tensor([1, 1]))])
    assert buf.init_mean.shape == (2, 2)
    assert_close(buf.init_mean, torch.tensor([[1.0, 3.0], [5.0, 7.0]]), name="mean")
    assert_close(buf.init_std, torch.tensor([[STD_FLOOR, 1.0], [STD_FLOOR, 1.0]]), name="std")


def test_class_gaussian_fills_and_reinitialises_by_partition():
    n_classes, size = 3, 300
    shape = (4,)
    means = torch.tensor([-20.0, 0.0, 20.0])
    buf = ReplayBuffer(
        shape, size=size, n_classes=n_classes, init="class_gaussian", reinit_freq=1.0, device=CPU, seed=3
    )
    with pytest.raises(RuntimeError, match="fit_init"):
        buf.sample(2)
    data = []
    gen = torch.Generator().manual_seed(0)
    for c in range(n_classes):
        xc = means[c] + 0.5 * torch.randn(400, *shape, generator=gen)
        data.append((xc, torch.full((400,), c)))
    buf.fit_init(data)
    part = size // n_classes
    for c in range(n_classes):
        rows = buf.storage[c * part : (c + 1) * part]
        assert (rows - means[c]).abs().max() < 4, f"partition {c} was filled from its class Gaussian"
    # Conditional re-init draws from y's Gaussian: standardised values are N(0, 1).
    y = torch.arange(n_classes).repeat_interleave(300)
    x0, _ = buf.sample(y.numel(), y)
    z = (x0 - buf.init_mean[y]) / buf.init_std[y]
    assert stats.kstest(z.flatten().double().numpy(), stats.norm.cdf).pvalue > 1e-3
    # Unconditional re-init of a partitioned buffer uses the drawn row's class.
    x0, idx = buf.sample(600)
    row_class = torch.div(idx, part, rounding_mode="floor")
    assert torch.all((x0 - means[row_class].unsqueeze(1)).abs() < 4)


def test_class_gaussian_without_partitions_draws_a_random_class_per_row():
    buf = ReplayBuffer((3,), size=20, init="class_gaussian", reinit_freq=1.0, device=CPU, seed=4)
    x = torch.cat([torch.full((10, 3), -50.0), torch.full((10, 3), 50.0)])
    x = x + 0.1 * torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
    buf.fit_init([(x, torch.tensor([0] * 10 + [1] * 10))])
    n = 4000
    x0, _ = buf.sample(n)
    high = (x0 > 0).all(dim=1)
    low = (x0 < 0).all(dim=1)
    assert torch.all(high | low), "a row comes wholly from one class Gaussian"
    assert abs(int(high.sum()) - n / 2) < binomial_bound(n, 0.5)


@pytest.mark.parametrize(
    "batches,kwargs,error,pattern",
    [
        ([], {}, ValueError, "no batches"),
        ([(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))], {}, ValueError, r"no samples of classes \[2\]"),
        ([(torch.zeros(2, 2), torch.tensor([0, 3]))], {}, ValueError, "label 3 is out of range"),
        ([(torch.zeros(2, 2), torch.tensor([0, -1]))], {}, ValueError, "label -1 is out of range"),
        ([(torch.zeros(2, 3), torch.tensor([0, 1]))], {}, ValueError, r"shape \(2, 3\)"),
        ([(torch.zeros(2, 2), torch.tensor([0, 1, 2]))], {}, ValueError, r"y has shape \(3,\)"),
        ([(torch.zeros(2, 2), torch.tensor([0.0, 1.0]))], {}, TypeError, "integer"),
        ([torch.zeros(2, 2), (torch.zeros(2, 2), torch.tensor([0, 1]))], {}, ValueError, "mixes"),
        ([(torch.zeros(2, 2), torch.tensor([0, 1]))], {"n_classes": 4}, ValueError, "contradicts"),
    ],
)
def test_fit_init_errors_change_nothing(batches, kwargs, error, pattern):
    buf = ReplayBuffer((2,), size=9, n_classes=3, init="class_gaussian", device=CPU, seed=5)
    before = buf.storage.clone()
    with pytest.raises(error, match=pattern):
        buf.fit_init(batches, **kwargs)
    assert buf.init_mean is None and buf.init_std is None and not buf.filled
    assert same_bits(buf.storage, before)


def test_init_from_tensor_fills_partitions_with_their_class():
    buf = ReplayBuffer((2,), size=300, n_classes=3, reinit_freq=0.0, device=CPU, seed=6)
    x = torch.arange(6, dtype=torch.float32).view(6, 1).expand(6, 2).contiguous()
    y = torch.tensor([2, 0, 1, 0, 2, 1])
    buf.init_from_tensor(x, y)
    for c in range(3):
        rows = buf.storage[c * 100 : (c + 1) * 100, 0]
        members = x[y == c, 0]
        assert torch.isin(rows, members).all(), f"partition {c} holds only class-{c} samples"
        assert torch.isin(members, rows).all(), f"partition {c} uses every class-{c} sample"
    x0, idx = buf.sample(10)
    assert_close(x0, buf.storage[idx], name="sampled rows")


def test_init_from_tensor_without_partitions_and_errors():
    buf = ReplayBuffer((2,), size=50, device=CPU, seed=7)
    x = torch.randn(5, 2)
    buf.init_from_tensor(x)
    matches = (buf.storage.unsqueeze(1) == x.unsqueeze(0)).all(dim=2)
    assert torch.all(matches.sum(dim=1) == 1) and torch.all(matches.any(dim=0))
    partitioned = ReplayBuffer((2,), size=6, n_classes=3, device=CPU, seed=7)
    before = partitioned.storage.clone()
    with pytest.raises(ValueError, match="needs labels"):
        partitioned.init_from_tensor(x)
    with pytest.raises(ValueError, match=r"no samples of classes \[2\]"):
        partitioned.init_from_tensor(x, torch.tensor([0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match="x has shape"):
        partitioned.init_from_tensor(torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64))
    assert same_bits(partitioned.storage, before)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "batch_size,y,error,pattern",
    [
        (0, None, ValueError, "batch_size must be an int >= 1"),
        (-3, None, ValueError, "batch_size"),
        (2.0, None, TypeError, "batch_size must be an int"),
        (3, torch.tensor([0, 1, 2], dtype=torch.int32), TypeError, "torch.int64"),
        (3, torch.tensor([0, 1]), ValueError, r"y must have shape \(3,\)"),
        (2, torch.tensor([[0, 1]]), ValueError, r"y must have shape \(2,\)"),
        (2, torch.tensor([0, 3]), ValueError, r"y contains 3, expected values in \[0, 3\)"),
        (2, torch.tensor([-1, 0]), ValueError, r"y contains -1"),
        (2, torch.zeros(2, dtype=torch.int64, device="meta"), ValueError, "expected the buffer's device"),
        (2, [0, 1], TypeError, "torch.Tensor"),
    ],
)
def test_sample_rejects_bad_input_without_consuming_randomness(batch_size, y, error, pattern):
    buf = ReplayBuffer((2,), size=12, n_classes=3, device=CPU, seed=6)
    state = buf.rng_state.clone()
    with pytest.raises(error, match=pattern):
        buf.sample(batch_size, y)
    assert torch.equal(buf.rng_state, state)


def test_conditional_sample_needs_partitions():
    buf = ReplayBuffer((2,), size=12, device=CPU, seed=6)
    with pytest.raises(ValueError, match="n_classes"):
        buf.sample(2, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "idx,x,error,pattern",
    [
        (torch.tensor([0, 1]), torch.zeros(3, 2), ValueError, r"x has shape \(3, 2\), expected \(2, 2\)"),
        (torch.tensor([0, 1]), torch.zeros(2, 3), ValueError, r"expected \(2, 2\)"),
        (torch.tensor([0, 1], dtype=torch.int32), torch.zeros(2, 2), TypeError, "int64"),
        (torch.tensor([0, 12]), torch.zeros(2, 2), ValueError, r"idx contains 12, expected values in \[0, 12\)"),
        (torch.tensor([-1, 0]), torch.zeros(2, 2), ValueError, r"idx contains -1"),
        (torch.tensor([0, 1]), torch.zeros(2, 2, dtype=torch.int64), TypeError, "floating"),
        (torch.tensor([0, 1]), np.zeros((2, 2)), TypeError, "torch.Tensor"),
    ],
)
def test_write_rejects_bad_input_without_changes(idx, x, error, pattern):
    buf = ReplayBuffer((2,), size=12, device=CPU, seed=7)
    before = buf.storage.clone()
    with pytest.raises(error, match=pattern):
        buf.write(idx, x)
    assert same_bits(buf.storage, before)


# ------------------------------------------------------------ state / seeds
def test_state_round_trip_reproduces_draws(tmp_path):
    x, y = make_labelled_data()
    buf = ReplayBuffer((2, 3), size=30, n_classes=3, init="class_gaussian", reinit_freq=0.4, device=CPU, seed=8)
    buf.fit_init(batches_of(x, y))
    buf.write(torch.tensor([0, 5]), torch.full((2, 2, 3), 9.0))
    path = tmp_path / "buffer.pt"
    torch.save(buf.state_dict(), path)
    labels = torch.tensor([0, 2, 1, 1, 2, 0, 0])
    expected = [buf.sample(7, labels), buf.sample(5)]

    restored = ReplayBuffer((2, 3), size=30, n_classes=3, init="class_gaussian", reinit_freq=0.1, device=CPU, seed=99)
    storage_ptr = restored.storage.data_ptr()
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.storage.data_ptr() == storage_ptr, "loading copies in place"
    assert restored.reinit_freq == 0.4 and restored.filled
    assert_close(restored.init_mean, buf.init_mean, name="init_mean")
    assert_close(restored.init_std, buf.init_std, name="init_std")
    for (x_exp, idx_exp), (x_got, idx_got) in zip(
        expected, [restored.sample(7, labels), restored.sample(5)], strict=True
    ):
        assert torch.equal(idx_got, idx_exp)
        assert torch.equal(x_got, x_exp)


def test_state_dict_is_a_snapshot():
    buf = ReplayBuffer((2,), size=10, device=CPU, seed=9)
    state = buf.state_dict()
    buf.sample(4)
    buf.write(torch.tensor([0]), torch.full((1, 2), 3.0))
    assert not torch.equal(state["rng_state"], buf.rng_state)
    assert not torch.equal(state["storage"], buf.storage)


@pytest.mark.parametrize(
    "other_kwargs,pattern",
    [
        (dict(size=20), "size=20"),
        (dict(sample_shape=(3,)), "sample_shape"),
        (dict(n_classes=2), "n_classes"),
        (dict(init="normal"), "init='normal'"),
    ],
)
def test_load_state_dict_rejects_mismatches_before_changing_anything(other_kwargs, pattern):
    args = dict(sample_shape=(2,), size=10, device=CPU, seed=10)
    source = ReplayBuffer(**{**args, **other_kwargs})
    target = ReplayBuffer(**args)
    before_storage, before_rng = target.storage.clone(), target.rng_state.clone()
    with pytest.raises(ValueError, match=pattern):
        target.load_state_dict(source.state_dict())
    assert same_bits(target.storage, before_storage) and torch.equal(target.rng_state, before_rng)


def test_load_state_dict_rejects_bad_tensors():
    buf = ReplayBuffer((2,), size=10, device=CPU, seed=11)
    state = buf.state_dict()
    with pytest.raises(ValueError, match=r"storage has shape \(9, 2\)"):
        buf.load_state_dict({**state, "storage": torch.zeros(9, 2)})
    with pytest.raises(ValueError, match="missing keys"):
        buf.load_state_dict({k: v for k, v in state.items() if k != "rng_state"})
    with pytest.raises(ValueError, match="init_mean holds"):
        buf.load_state_dict({**state, "init_mean": torch.zeros(0, 2), "init_std": torch.zeros(0, 2)})


def test_reseed_and_seed_reproduce_draws():
    a = ReplayBuffer((3,), size=50, device=CPU, seed=12)
    b = ReplayBuffer((3,), size=50, device=CPU, seed=12)
    assert torch.equal(a.storage, b.storage)
    xa, ia = a.sample(9)
    xb, ib = b.sample(9)
    assert torch.equal(ia, ib) and torch.equal(xa, xb)
    a.reseed(5)
    b.reseed(5)
    assert torch.equal(a.rng_state, make_rng_state(5, CPU))
    assert torch.equal(a.sample(9)[1], b.sample(9)[1])
    assert not torch.equal(a.sample(9)[1], ia), "the stream moved on"
    torch.manual_seed(0)
    c = ReplayBuffer((3,), size=50, device=CPU)
    torch.manual_seed(0)
    d = ReplayBuffer((3,), size=50, device=CPU)
    assert torch.equal(c.storage, d.storage)


# ------------------------------------------------------------------ CUDA
@requires_cuda
def test_sample_and_write_do_not_sync_with_the_host():
    buf = ReplayBuffer((1, 8, 16), size=100, n_classes=4, device="cuda", seed=0)
    y = torch.arange(4, device="cuda").repeat(8)
    buf.sample(32, y)  # warm-up: first calls may load kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x0, idx = buf.sample(32, y)
        buf.write(idx, x0 + 1)
        buf.sample(32)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@requires_cuda
def test_sample_and_write_capture_into_a_cuda_graph():
    buf = ReplayBuffer((1, 8, 16), size=64, n_classes=4, reinit_freq=0.5, device="cuda", seed=1)
    y = torch.arange(4, device="cuda").repeat(4)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up on a side stream, as graph capture requires
            x0, idx = buf.sample(16, y)
            buf.write(idx, x0 * 0.5)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x0, idx = buf.sample(16, y)
        buf.write(idx, x0 * 0.5)
    seen = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        seen.append(idx.clone())
        part = buf.partition_size
        assert torch.equal(torch.div(idx, part, rounding_mode="floor"), y)
        once = torch.bincount(idx, minlength=buf.size)[idx] == 1  # repeated rows keep one unspecified value
        assert_close(buf.storage[idx[once]], x0[once] * 0.5, name="write-back inside the graph")
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2]), "replays draw fresh indices"
