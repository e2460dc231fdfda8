"""Checks of a training batch (jemfast.train.batch_checks)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jemfast.train.batch_checks import check_batch, check_batch_values, infer_n_classes

X, Y = torch.randn(4, 2), torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize(
    "x, y, sample_shape, error, match",
    [
        (X.numpy(), Y, None, TypeError, "x must be a torch.Tensor, got ndarray"),
        (X, Y.tolist(), None, TypeError, "y must be a torch.Tensor of class indices, got list"),
        (X.long(), Y, None, TypeError, "x must have a floating dtype"),
        (X, Y.float(), None, TypeError, "y must have an integer dtype"),
        (X, Y.bool(), None, TypeError, "y must have an integer dtype"),
        (X[0], Y, None, ValueError, "at least 2 dims"),
        (X[:0], Y[:0], None, ValueError, r"empty batch \(N = 0\)"),
        (X, Y[:3], None, ValueError, r"y must have shape \(N,\) = \(4,\) to match x, got \(3,\)"),
        (X, Y, (3,), ValueError, r"x has sample shape \(2,\), but .* was set up for \(3,\)"),
    ],
)
def test_malformed_batches_are_refused(x, y, sample_shape, error, match):
    with pytest.raises(error, match=match):
        check_batch(x, y, sample_shape)


def test_a_well_formed_batch_passes():
    check_batch(X, Y)
    check_batch(X, Y, (2,))
    check_batch(X.double(), Y.int(), (2,))


def test_values_are_checked():
    check_batch_values(X, Y, 3)
    bad = X.clone()
    bad[2, 1] = math.inf
    with pytest.raises(ValueError, match=r"NaN or Inf values \(first in example 2\)"):
        check_batch_values(bad, Y, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got values in \[0, 2\]"):
        check_batch_values(X, Y, 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values in \[-1, 2\]"):
        check_batch_values(X, torch.tensor([0, -1, 2, 1]), 3)


def test_n_classes_are_inferred_in_eval_mode_and_the_mode_is_restored():
    model = nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5))
    before = model[1].running_mean.clone()
    assert model.training
    assert infer_n_classes(model, X, torch.device("cpu")) == 5
    assert model.training
    assert torch.equal(model[1].running_mean, before), "eval mode leaves the running statistics alone"
    model.eval()
    assert infer_n_classes(model, X[:1], torch.device("cpu")) == 5
    assert not model.training


def test_inference_refuses_models_that_are_not_classifiers():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="C >= 2"):
        infer_n_classes(nn.Linear(2, 1), X, cpu)
    with pytest.raises(ValueError, match=r"for a batch of 2 it returned \(6,\)"):
        infer_n_classes(nn.Sequential(nn.Linear(2, 3), nn.Flatten(0)), X, cpu)

    class IntegerLogits(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3, dtype=torch.long)

    with pytest.raises(TypeError, match="floating-point logits"):
        infer_n_classes(IntegerLogits(), X, cpu)
    bad = X.clone()
    bad[0, 0] = math.nan
    assert infer_n_classes(nn.Linear(2, 3), bad, cpu) == 3
    with pytest.raises(ValueError, match="x contains NaN or Inf values"):
        infer_n_classes(nn.Linear(2, 3), bad, cpu, check_finite=True)
