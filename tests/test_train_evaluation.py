"""Evaluation of the model being trained (jemfast.train.evaluation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jemfast.train import DivergenceError, DivergenceGuard
from jemfast.train.evaluation import NonFiniteLogits, evaluate_model, guarded_validation

CPU = torch.device("cpu")


def test_nonfinite_logits_is_importable_where_it_was():
    from jemfast.train import NonFiniteLogits as from_package
    from jemfast.train.trainer import NonFiniteLogits as from_trainer

    assert from_package is from_trainer is NonFiniteLogits
    assert issubclass(NonFiniteLogits, ValueError)


def test_scores_a_perfect_classifier_and_restores_the_mode():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(10 * torch.eye(3))
    x = torch.eye(3).repeat(4, 1)
    y = torch.arange(3).repeat(4)
    result = evaluate_model(model, [(x[:6], y[:6]), (x[6:], y[6:], "extra")], device=CPU)
    assert result["acc"] == pytest.approx(100.0)
    assert 0 < result["nll"] < 1e-3
    assert model.training
    model.eval()
    evaluate_model(model, [(x, y)], device=CPU, amp_dtype=torch.bfloat16)
    assert not model.training


def test_refuses_nonfinite_logits_and_empty_loaders():
    model = nn.Linear(2, 3)
    x = torch.randn(5, 2)
    x[3] = math.inf
    with pytest.raises(NonFiniteLogits, match="validation example 3"):
        evaluate_model(model, [(x, torch.zeros(5, dtype=torch.long))], device=CPU)
    with pytest.raises(ValueError, match="yielded no batches"):
        evaluate_model(model, [], device=CPU)


def test_guarded_validation_rolls_back_until_the_model_is_sane():
    results = iter([{"nll": math.inf}, {"nll": 5e3}, {"nll": 0.5}])
    rollbacks = []

    def evaluate():
        result = next(results)
        if result["nll"] == math.inf:
            raise NonFiniteLogits("blown up")
        return result

    val = guarded_validation(evaluate, DivergenceGuard(), rollbacks.append)
    assert val == {"nll": 0.5}
    assert rollbacks == ["validation NLL inf (threshold 1000)", "validation NLL 5e+03 (threshold 1000)"]


def test_guarded_validation_without_a_guard_returns_what_it_got():
    def rollback(reason):
        raise AssertionError("no rollback without a guard")

    assert guarded_validation(lambda: {"nll": 1e9}, DivergenceGuard(enabled=False), rollback) == {"nll": 1e9}


def test_guarded_validation_stops_when_the_rollbacks_run_out():
    guard = DivergenceGuard(max_rollbacks=1)
    count = []

    def rollback(reason):
        if len(count) == guard.max_rollbacks:
            raise DivergenceError("out of rollbacks")
        count.append(reason)

    with pytest.raises(DivergenceError, match="out of rollbacks"):
        guarded_validation(lambda: {"nll": 1e9}, guard, rollback)
    assert len(count) == 1
