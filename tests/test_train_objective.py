"""jem_objective and JEMLoss: the paper's loss, term by term, against a direct computation."""

import math

import pytest
import torch

from jemfast.train.objective import JEMLoss, jem_objective


def _direct(logits, y, samples, p_y, p_x, l2, t):
    e = -t * torch.logsumexp(logits.double() / t, 1)
    e_s = -t * torch.logsumexp(samples.double() / t, 1)
    ce = -torch.log_softmax(logits.double(), 1)[torch.arange(len(y)), y].mean()
    return p_y * ce + p_x * (e.mean() - e_s.mean()) + l2 * (e.pow(2).mean() + e_s.pow(2).mean())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_matches_the_equations(temperature):
    g = torch.Generator().manual_seed(0)
    logits, samples = torch.randn(6, 4, generator=g) * 3, torch.randn(5, 4, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    out = jem_objective(logits, y, samples, p_y_weight=0.7, p_x_weight=0.3, energy_l2=0.1, temperature=temperature)
    expected = _direct(logits, y, samples, 0.7, 0.3, 0.1, temperature)
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(out.e_gap) == pytest.approx(float(out.e_data - out.e_samples))


def test_p_x_term_lowers_data_energy_and_raises_sample_energy():
    logits = torch.zeros(3, 4, requires_grad=True)
    samples = torch.zeros(3, 4, requires_grad=True)
    out = jem_objective(logits, torch.zeros(3, dtype=torch.long), samples, p_y_weight=0.0, p_x_weight=1.0)
    out.loss.backward()
    # Gradient descent moves data logits up (E(x) down) and sample logits down (E(x~) up).
    assert (logits.grad < 0).all() and (samples.grad > 0).all()


def test_without_samples_it_is_cross_entropy_plus_optional_l2():
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    plain = jem_objective(logits, y)
    assert float(plain.loss) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    assert math.isnan(float(plain.e_samples)) and math.isnan(float(plain.e_gap))
    with_l2 = jem_objective(logits, y, energy_l2=0.5)
    e = -torch.logsumexp(logits, 1)
    assert float(with_l2.loss - plain.loss) == pytest.approx(float(0.5 * e.pow(2).mean()), rel=1e-5)


@pytest.mark.parametrize("with_samples", [True, False])
def test_jem_loss_equals_jem_objective_with_the_same_settings(with_samples):
    g = torch.Generator().manual_seed(1)
    logits, samples = torch.randn(6, 4, generator=g) * 3, torch.randn(5, 4, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    settings = dict(p_y_weight=0.7, p_x_weight=0.3, energy_l2=0.1, temperature=0.5)
    samples = samples if with_samples else None
    out = JEMLoss(**settings)(logits, y, samples)
    expected = jem_objective(logits, y, samples, **settings)
    for name in ("loss", "ce", "e_data", "e_samples", "e_gap"):  # bit-identical (NaN without samples)
        torch.testing.assert_close(getattr(out, name), getattr(expected, name), rtol=0, atol=0, equal_nan=True)
    default = JEMLoss()(logits, y, samples)
    assert torch.equal(default.loss, jem_objective(logits, y, samples).loss)


def test_jem_loss_settings():
    loss = JEMLoss(p_x_weight=0, energy_l2=1)
    assert loss.p_x_weight == 0.0 and isinstance(loss.p_x_weight, float) and isinstance(loss.energy_l2, float)
    assert not loss.uses_samples and JEMLoss().uses_samples
    assert JEMLoss(p_x_weight=0) == JEMLoss(p_x_weight=0.0) and hash(JEMLoss()) == hash(JEMLoss())
    with pytest.raises(AttributeError):
        loss.p_x_weight = 1.0  # frozen


@pytest.mark.parametrize(
    "field, value",
    [
        ("p_y_weight", -0.5),
        ("p_x_weight", float("nan")),
        ("p_x_weight", True),
        ("energy_l2", float("inf")),
        ("energy_l2", "0.1"),
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("temperature", float("inf")),
        ("temperature", False),
    ],
)
def test_jem_loss_refuses_bad_settings_by_name(field, value):
    with pytest.raises(ValueError, match=rf"JEMLoss\.{field} must be a finite number .*got {value!r}"):
        JEMLoss(**{field: value})
