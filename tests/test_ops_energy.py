"""The energy op: values and gradients against float64 torch.logsumexp, extremes, errors."""

import pytest
import torch
from conftest import HAS_CUDA, requires_cuda
from helpers import assert_close

from jemfast.ops import energy

BACKENDS = ["torch", "triton"]
SHAPES = [(1, 1), (5, 10), (64, 4), (3, 7, 6), (2, 1500)]  # 1500 columns: more than one column tile
TEMPERATURES = [1.0, 0.5, 3.7]
DTYPE_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _device():
    return torch.device("cuda" if HAS_CUDA else "cpu")


def _reference(logits64, t):
    return -t * torch.logsumexp(logits64 / t, dim=-1)


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_gradients_match_float64(backend, shape, temperature, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(shape, generator=g) * 4).to(dtype).to(_device()).requires_grad_(True)
    upstream = torch.randn(shape[:-1], generator=g).to(_device())
    e = energy(logits, temperature, backend=backend)
    (e.float() * upstream).sum().backward()
    ref_logits = logits.detach().double().requires_grad_(True)
    e_ref = _reference(ref_logits, temperature)
    (e_ref * upstream.double()).sum().backward()
    tol = DTYPE_TOL[dtype]
    assert e.dtype == dtype and e.shape == shape[:-1]
    assert_close(e, e_ref, rtol=tol, atol=tol * 10, name="energy")
    assert logits.grad.dtype == dtype
    assert_close(logits.grad, ref_logits.grad, rtol=tol, atol=tol, name="grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_magnitudes_are_stable(backend):
    logits = torch.tensor([[1e30, 1e30 - 1e24, -1e30], [-1e4, -1e4, -1e4], [8e4, 0.0, -8e4]], device=_device())
    e = energy(logits, 1.0, backend=backend)
    assert_close(e, _reference(logits.double(), 1.0), rtol=1e-6, atol=1e-3, name="energy")
    assert torch.isfinite(e).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_infinities_and_nan_behave_like_logsumexp(backend):
    inf, nan = float("inf"), float("nan")
    rows = [[-inf, -inf, -inf], [inf, 0.0, 1.0], [-inf, 2.0, -inf], [nan, 0.0, 1.0], [inf, -inf, 0.0]]
    logits = torch.tensor(rows, device=_device())
    expected = -torch.logsumexp(logits, dim=-1)
    got = energy(logits, backend=backend)
    assert_close(got, expected, name="energy")
    # Gradients: where torch.logsumexp's backward is finite, ours matches it.
    a = logits.clone().requires_grad_(True)
    energy(a, backend=backend).sum().backward()
    b = logits.clone().requires_grad_(True)
    (-torch.logsumexp(b, dim=-1)).sum().backward()
    finite_rows = torch.isfinite(b.grad).all(dim=1)
    assert_close(a.grad[finite_rows], b.grad[finite_rows], name="grad")


def test_float64_uses_the_exact_reference():
    logits = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(energy(logits, 2.0), _reference(logits, 2.0))


@pytest.mark.parametrize(
    "logits, temperature, error, message",
    [
        (torch.zeros(3, 0), 1.0, ValueError, "C >= 1"),
        (torch.zeros(()), 1.0, ValueError, "C >= 1"),
        (torch.zeros(3, 2, dtype=torch.int64), 1.0, TypeError, "floating"),
        (torch.zeros(3, 2), 0.0, ValueError, "temperature"),
        (torch.zeros(3, 2), -1.0, ValueError, "temperature"),
        (torch.zeros(3, 2), float("inf"), ValueError, "temperature"),
        ([1.0, 2.0], 1.0, TypeError, "tensor"),
    ],
)
def test_bad_input(logits, temperature, error, message):
    with pytest.raises(error, match=message):
        energy(logits, temperature)


def test_registered_op_passes_opcheck():
    logits = torch.randn(6, 5, requires_grad=True)
    torch.library.opcheck(
        torch.ops.jemfast.energy_forward.default,
        (logits, 1.5, "torch"),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


def test_works_under_torch_compile():
    def loss(logits):
        return energy(logits, 2.0, backend="torch").square().sum()

    logits = torch.randn(7, 4, requires_grad=True)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    out = compiled(logits)
    (grad,) = torch.autograd.grad(out, logits)
    logits2 = logits.detach().clone().requires_grad_(True)
    (grad2,) = torch.autograd.grad(loss(logits2), logits2)
    assert_close(grad, grad2, name="grad")


@requires_cuda
@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
def test_all_backends_agree_on_cuda(dtype):
    from jemfast.backends import unavailable_reason

    logits = (torch.randn(4096, 37, device="cuda") * 3).to(dtype)
    ref = _reference(logits.double(), 1.3)
    for backend in ("torch", "triton", "cuda"):
        if unavailable_reason(backend, logits.device) is not None:
            continue
        a = logits.clone().requires_grad_(True)
        e = energy(a, 1.3, backend=backend)
        e.float().sum().backward()
        tol = DTYPE_TOL[dtype]
        assert_close(e, ref, rtol=tol, atol=tol * 10, name=f"{backend} energy")
        b = logits.double().requires_grad_(True)
        _reference(b, 1.3).sum().backward()
        assert_close(a.grad, b.grad, rtol=tol, atol=tol, name=f"{backend} grad")
