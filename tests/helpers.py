"""Assertion helpers shared by the tests."""

from __future__ import annotations

import torch

# Tolerances tied to the dtype the result is stored in.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
    torch.float16: dict(rtol=2e-3, atol=1e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, rtol=None, atol=None, name="value") -> None:
    """Like torch.testing.assert_close, but the message shows where values differ.

    Tolerances default to those of ``actual.dtype``. NaNs must match NaNs and
    infinities must match exactly.
    """
    tol = TOLERANCES.get(actual.dtype, TOLERANCES[torch.float32])
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    both_nan = torch.isnan(a) & torch.isnan(e)
    same_inf = torch.isinf(a) & torch.isinf(e) & (a == e)
    err = (a - e).abs()
    bad = ~(both_nan | same_inf) & ~(err <= atol + rtol * e.abs())
    if bad.any():
        idx = bad.nonzero()
        first = [tuple(i.tolist()) for i in idx[:5]]
        lines = [f"  at {i}: got {a[i].item()!r}, expected {e[i].item()!r}" for i in first]
        finite_err = torch.where(bad, err, torch.zeros_like(err))
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {a.numel()} elements differ (rtol={rtol}, atol={atol}); "
            f"max abs error {finite_err.max().item():.3e}\n" + "\n".join(lines)
        )
