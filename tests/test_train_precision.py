"""Training precision (jemfast.train.precision): autocast, the gradient scaler, the optimizer update."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from jemfast.train.precision import autocast, grad_scaler, optimizer_update

CPU = torch.device("cpu")


def test_autocast_and_scaler_by_dtype():
    assert isinstance(autocast(CPU, None), contextlib.nullcontext)
    with autocast(CPU, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert grad_scaler(CPU, None) is None
    assert grad_scaler(CPU, torch.float16) is None, "a scaler only for float16 on CUDA"
    assert grad_scaler(torch.device("cuda"), torch.bfloat16) is None


def _model_and_loss(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    loss = (model(torch.randn(8, 3)) * 100).pow(2).mean()
    return model, loss


def test_update_equals_the_plain_steps_with_clipping():
    model, loss = _model_and_loss()
    reference, reference_loss = _model_and_loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # stale gradients are zeroed first

    optimizer_update(loss, model, optimizer, grad_clip=0.5)

    reference_loss.backward()
    nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    reference_optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert norm <= 0.5 + 1e-6


def test_update_without_clipping():
    model, loss = _model_and_loss()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer_update(loss, model, torch.optim.SGD(model.parameters(), lr=1e-3))
    grads = [p.grad for p in model.parameters()]
    for p, q, g in zip(model.parameters(), before, grads, strict=True):
        assert torch.allclose(p, q - 1e-3 * g)
