"""OOD scores and detection metrics against hand-computed values and brute force."""

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from jemfast.calibration import (
    auroc,
    energy_score,
    fpr_at_tpr,
    input_gradient_norm,
    max_softmax_probability,
    ood_metrics,
)


def test_energy_score_by_hand():
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0], [1000.0, 1000.0]])
    np.testing.assert_allclose(energy_score(logits), [math.log(2), math.log(4), 1000 + math.log(2)], rtol=1e-15)
    # T log sum exp(z / T) with T = 2 on [0, 0]: 2 log 2.
    np.testing.assert_allclose(energy_score(logits[:1], temperature=2.0), [2 * math.log(2)], rtol=1e-15)


def test_energy_score_torch_path_matches_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64, generator=g).requires_grad_(True)
    scores = energy_score(logits, temperature=0.5)
    # atol: a score near 0 leaves a relative error of a few ulps of its terms.
    np.testing.assert_allclose(
        scores.detach().numpy(), energy_score(logits.detach().numpy(), temperature=0.5), rtol=1e-14, atol=1e-15
    )
    scores.sum().backward()
    # d/dz of T logsumexp(z / T) is softmax(z / T).
    torch.testing.assert_close(logits.grad, torch.softmax(logits.detach() / 0.5, dim=1))


def test_max_softmax_probability_by_hand():
    logits = np.array([[0.0, math.log(3.0)], [0.0, 0.0]])
    np.testing.assert_allclose(max_softmax_probability(logits), [0.75, 0.5], rtol=1e-15)
    out = max_softmax_probability(torch.from_numpy(logits).float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.75, 0.5]))


def test_input_gradient_norm_of_a_linear_model_by_hand():
    weight = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], dtype=torch.float64)
    model = torch.nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(weight)
    x = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    # grad_x logsumexp(W x) = W^T softmax(W x).
    expected = (torch.softmax(x @ weight.T, dim=1) @ weight).norm(dim=1)
    got = input_gradient_norm(model, x)
    torch.testing.assert_close(got, expected)
    assert not got.requires_grad and model.weight.grad is None
    assert not x.requires_grad


def test_input_gradient_norm_handles_image_shaped_inputs():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.randn(4, 1, 3, 4)
    norms = input_gradient_norm(model, x, temperature=2.0)
    assert norms.shape == (4,) and torch.isfinite(norms).all() and (norms > 0).all()
    with pytest.raises(ValueError, match=r"expected logits of shape \(4, C\)"):
        input_gradient_norm(torch.nn.Flatten(0), x)
    with pytest.raises(TypeError, match="floating-point tensor"):
        input_gradient_norm(model, x.long())


def test_auroc_by_hand():
    assert auroc([0.9, 0.4], [0.5, 0.1]) == 0.75  # 3 of 4 pairs ordered correctly
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 2.0], [1.0]) == 0.75  # a tie counts one half
    assert auroc([5.0] * 3, [5.0] * 4) == 0.5


def test_auroc_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    s_in = rng.integers(0, 6, size=40).astype(float)
    s_out = rng.integers(0, 5, size=30).astype(float)
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(s_in, s_out)]
    assert math.isclose(auroc(s_in, s_out), sum(pairs) / len(pairs), rel_tol=1e-12)
    assert math.isclose(auroc(torch.from_numpy(s_in), torch.from_numpy(s_out)), sum(pairs) / len(pairs), rel_tol=1e-12)


def test_fpr_at_tpr_by_hand():
    s_in = np.arange(1, 101, dtype=float)  # the 95th highest is 6: 95 of 100 scores are >= 6
    s_out = np.array([5.5, 6.0, 7.0, 0.0])
    assert fpr_at_tpr(s_in, s_out) == 0.5
    assert fpr_at_tpr(s_in, s_out, tpr=1.0) == 0.75  # threshold 1 accepts all but 0.0
    assert fpr_at_tpr(s_in, np.array([200.0, -1.0]), tpr=0.01) == 0.5  # threshold 100
    m = ood_metrics(s_in, s_out)
    assert m["fpr_at_tpr"] == 50.0 and 0 <= m["auroc"] <= 100


def test_in_distribution_scores_higher_for_energy_and_msp():
    rng = np.random.default_rng(1)
    confident = rng.normal(size=(200, 5)) + 6.0 * np.eye(5)[rng.integers(0, 5, 200)]
    diffuse = rng.normal(size=(200, 5)) * 0.5
    for score in (energy_score, max_softmax_probability):
        assert auroc(score(confident), score(diffuse)) > 0.95
        assert fpr_at_tpr(score(confident), score(diffuse)) < 0.2


def test_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match=r"scores_out\[1\] is NaN"):
        auroc([1.0], [0.0, float("nan")])
    with pytest.raises(ValueError, match="tpr must be a finite number > 0 and <= 1, got 0.0"):
        fpr_at_tpr([1.0], [0.0], tpr=0.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0.0"):
        energy_score(np.zeros((2, 2)), temperature=0.0)
    with pytest.raises(ValueError, match=r"logits\[0, 1\] = nan"):
        energy_score(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        max_softmax_probability(torch.zeros(3))


@requires_cuda
def test_scores_on_cuda():
    model = torch.nn.Linear(6, 4).cuda()
    x = torch.randn(5, 6, device="cuda")
    norms = input_gradient_norm(model, x)
    assert norms.is_cuda
    torch.testing.assert_close(norms.cpu(), input_gradient_norm(model.cpu(), x.cpu()), rtol=1e-4, atol=1e-5)
    logits = torch.randn(5, 4, device="cuda")
    assert energy_score(logits).is_cuda and max_softmax_probability(logits).is_cuda
