"""The fused SGLD update: backends agree, the formula holds, noise is fresh, bad input is refused."""

import pytest
import torch
from conftest import HAS_CUDA, requires_cuda
from helpers import assert_close

from jemfast.backends import BackendUnavailableError, resolve_backend
from jemfast.ops import make_rng_state, random_normal, sgld_update_

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(0,), (1,), (7,), (33, 5), (3, 17, 19), (2, 1, 32, 45)]
OPTIONS = [
    dict(),
    dict(grad_clamp=0.05),
    dict(clamp=(-0.5, 0.75)),
    dict(grad_clamp=0.3, clamp=(-1.0, 1.0)),
]


def _device():
    return torch.device("cuda" if HAS_CUDA else "cpu")


def _inputs(shape, dtype, seed=0, device=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    grad = torch.randn(shape, generator=g).to(dtype)
    return x.to(device or _device()), grad.to(device or _device())


def _expected(x, grad, state, step_size, noise_std, grad_clamp=None, clamp=None):
    """The definition, computed in float64 from the reference noise."""
    z = random_normal(state.clone(), (x.numel(),), backend="torch").double().view(x.shape)
    g = grad.double()
    if grad_clamp is not None:
        g = g.clamp(-grad_clamp, grad_clamp)
    y = x.double() + step_size * g + noise_std * z
    if clamp is not None:
        y = y.clamp(*clamp)
    return y


# The extension's parameter sets need a GPU (the suite's `pytest -m gpu`); the others run anywhere.
CUDA_BACKEND = pytest.param("cuda", marks=pytest.mark.gpu)


def _fast_backends():
    return ["triton", CUDA_BACKEND] if HAS_CUDA else ["triton", "cpu"]


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "grad_clamp", "clamp", "both"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", _fast_backends())
def test_fast_backend_matches_torch_reference(backend, shape, dtype, options):
    from jemfast.backends import unavailable_reason

    x, grad = _inputs(shape, dtype)
    if unavailable_reason(backend, x.device) is not None:
        pytest.skip(unavailable_reason(backend, x.device))
    offset = 2**32 - 100  # the stream crosses into the counter's high word
    s_ref = torch.tensor([17, offset], device=x.device)
    s_tri = s_ref.clone()
    x_ref, x_tri = x.clone(), x.clone()
    sgld_update_(x_ref, grad, step_size=0.3, noise_std=0.1, rng_state=s_ref, backend="torch", **options)
    sgld_update_(x_tri, grad, step_size=0.3, noise_std=0.1, rng_state=s_tri, backend=backend, **options)
    # Same float32 arithmetic; an FMA or a 1-ulp noise difference can flip the last rounding.
    tol = {torch.float32: 2e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    assert_close(x_tri, x_ref, rtol=tol, atol=tol, name="x")
    assert torch.equal(s_ref, s_tri)
    assert int(s_ref[1]) == offset + x.numel()


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "grad_clamp", "clamp", "both"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reference_is_the_formula(dtype, options):
    x, grad = _inputs((5, 37), dtype, seed=1)
    state = make_rng_state(8, device=x.device)
    expected = _expected(x, grad, state, 0.7, 0.05, **options)
    sgld_update_(x, grad, step_size=0.7, noise_std=0.05, rng_state=state, backend="torch", **options)
    tol = {torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    assert_close(x, expected, rtol=tol, atol=tol, name="x")


def test_noise_statistics_of_the_update():
    n = 150_000
    x = torch.zeros(n)
    sgld_update_(x, torch.zeros(n), step_size=1.0, noise_std=0.5, rng_state=make_rng_state(3))
    assert abs(x.double().mean().item()) < 5 * 0.5 / n**0.5
    assert abs(x.double().std().item() - 0.5) < 5 * 0.5 / (2 * n) ** 0.5
    scipy_stats = pytest.importorskip("scipy.stats")
    assert scipy_stats.kstest((x / 0.5).numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("backend", ["torch", "triton", CUDA_BACKEND if HAS_CUDA else "cpu"])
def test_consecutive_calls_draw_fresh_noise_and_same_state_repeats(backend):
    dev = _device()
    state = make_rng_state(1, device=dev)
    a = torch.zeros(1000, device=dev)
    b = torch.zeros(1000, device=dev)
    zero = torch.zeros(1000, device=dev)
    sgld_update_(a, zero, step_size=0.0, noise_std=1.0, rng_state=state, backend=backend)
    sgld_update_(b, zero, step_size=0.0, noise_std=1.0, rng_state=state, backend=backend)
    assert not torch.equal(a, b)
    again = torch.zeros(1000, device=dev)
    sgld_update_(again, zero, step_size=0.0, noise_std=1.0, rng_state=make_rng_state(1, device=dev), backend=backend)
    assert torch.equal(a, again)
    assert state.tolist()[1] == 2000


def test_zero_noise_and_empty_tensors():
    x = torch.ones(10)
    state = make_rng_state(0)
    sgld_update_(x, torch.full((10,), 2.0), step_size=0.5, noise_std=0.0, rng_state=state)
    assert torch.equal(x, torch.full((10,), 2.0))
    empty = torch.empty(0, 3)
    assert sgld_update_(empty, torch.empty(0, 3), step_size=1.0, noise_std=1.0, rng_state=state) is empty
    assert state.tolist() == [0, 10]


def test_non_contiguous_x_uses_logical_order():
    base, grad = _inputs((6, 9), torch.float32)
    x = base.t()  # non-contiguous view
    g = grad.t()
    expected = x.contiguous()
    sgld_update_(expected, g.contiguous(), step_size=0.1, noise_std=0.2, rng_state=make_rng_state(4, device=x.device))
    sgld_update_(x, g, step_size=0.1, noise_std=0.2, rng_state=make_rng_state(4, device=x.device))
    assert torch.equal(x, expected)
    assert torch.equal(base.t(), expected)  # written through the view


BAD_CALLS = [
    (lambda x, g, s: dict(x=x, grad=g[:-1], rng_state=s), ValueError, "shape"),
    (lambda x, g, s: dict(x=x, grad=g.double(), rng_state=s), TypeError, "dtype"),
    (lambda x, g, s: dict(x=x.long(), grad=g.long(), rng_state=s), TypeError, "float32"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s.float()), TypeError, "int64"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s[:1]), ValueError, "shape"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s.to("meta")), ValueError, "meta"),
    (lambda x, g, s: dict(x=x, grad=g.to("meta"), rng_state=s), ValueError, "meta"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s, noise_std=-0.1), ValueError, "noise_std"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s, step_size=float("nan")), ValueError, "step_size"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s, grad_clamp=0.0), ValueError, "grad_clamp"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s, clamp=(1.0, -1.0)), ValueError, "clamp"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s, clamp=(1.0,)), ValueError, "clamp"),
    (lambda x, g, s: dict(x=x, grad=g, rng_state=s, backend="vulkan"), ValueError, "backend"),
]


@pytest.mark.parametrize("make, error, message", BAD_CALLS)
def test_bad_input_raises_and_modifies_nothing(make, error, message):
    x = torch.randn(4, 5)
    grad = torch.randn(4, 5)
    state = make_rng_state(9)
    kwargs = dict(step_size=0.1, noise_std=0.1)
    kwargs.update(make(x, grad, state))
    x_before, state_before = x.clone(), state.clone()
    with pytest.raises(error, match=message):
        sgld_update_(kwargs.pop("x"), kwargs.pop("grad"), **kwargs)
    assert torch.equal(x, x_before) and torch.equal(state, state_before)


def test_x_requiring_grad_is_refused():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires? grad"):
        sgld_update_(x, torch.randn(3), step_size=0.1, noise_std=0.0, rng_state=make_rng_state(0))


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only error message")
def test_unavailable_backend_says_why(monkeypatch):
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        sgld_update_(
            torch.zeros(2), torch.zeros(2), step_size=1.0, noise_std=0.0, rng_state=make_rng_state(0), backend="cuda"
        )
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        resolve_backend("triton", torch.device("cpu"))


def test_backend_choice_and_environment_override(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton serves CPU tensors only in its interpreter
    monkeypatch.delenv("JEMFAST_BACKEND", raising=False)
    assert resolve_backend(None, cpu) == "cpu"  # the numba kernels
    monkeypatch.setenv("JEMFAST_BACKEND", "triton")
    assert resolve_backend(None, cpu) == "triton"
    assert resolve_backend("torch", cpu) == "torch"  # an explicit name wins
    monkeypatch.setenv("JEMFAST_BACKEND", "nope")
    with pytest.raises(ValueError, match="JEMFAST_BACKEND"):
        resolve_backend(None, cpu)


def test_registered_op_passes_opcheck():
    x, grad = _inputs((4, 6), torch.float32, device=torch.device("cpu"))
    state = make_rng_state(0)
    torch.library.opcheck(
        torch.ops.jemfast.sgld_update_.default,
        (x, grad, state, 0.1, 0.2, None, None, None, "torch"),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_works_under_torch_compile():
    def step(x, grad, state):
        sgld_update_(x, grad, step_size=0.1, noise_std=0.2, rng_state=state, backend="torch")
        return x * 2

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x, grad = _inputs((8, 3), torch.float32, device=torch.device("cpu"))
    x_eager = x.clone()
    s1, s2 = make_rng_state(6), make_rng_state(6)
    out = compiled(x, grad, s1)
    expected = step(x_eager, grad, s2)
    assert torch.equal(out, expected) and torch.equal(x, x_eager) and torch.equal(s1, s2)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_backends_agree_on_cuda(dtype):
    from jemfast.backends import unavailable_reason

    x, grad = _inputs((3, 1000, 7), dtype)
    results = {}
    for backend in ("torch", "triton", "cuda"):
        if unavailable_reason(backend, x.device) is not None:
            continue
        y = x.clone()
        state = torch.tensor([5, 2**32 - 1000], device="cuda")
        sgld_update_(y, grad, step_size=0.2, noise_std=0.3, rng_state=state, grad_clamp=1.0, backend=backend)
        results[backend] = y
    tol = {torch.float32: 2e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    for name, y in results.items():
        assert_close(y, results["torch"], rtol=tol, atol=tol, name=name)


@requires_cuda
@pytest.mark.parametrize("backend", ["triton", "cuda", "torch"])
def test_graph_replays_draw_different_noise(backend):
    from jemfast.backends import unavailable_reason

    if unavailable_reason(backend, torch.device("cuda")) is not None:
        pytest.skip(unavailable_reason(backend, torch.device("cuda")))
    x = torch.zeros(4096, device="cuda")
    grad = torch.zeros_like(x)
    state = make_rng_state(2, device="cuda")
    sgld_update_(x, grad, step_size=0.0, noise_std=1.0, rng_state=state, backend=backend)  # warm-up/compile
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sgld_update_(x, grad, step_size=0.0, noise_std=1.0, rng_state=state, backend=backend)
    x.zero_()
    graph.replay()
    first = x.clone()
    x.zero_()
    graph.replay()
    assert not torch.equal(first, x)
    torch.cuda.synchronize()
    assert int(state[1]) == 3 * 4096
