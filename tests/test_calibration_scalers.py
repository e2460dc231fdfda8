"""Post-hoc calibrators: known temperatures recovered, NLL lowered, edge cases, state round trips."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from jemfast.calibration import (
    LogisticScaling,
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
    load_calibrator,
    negative_log_likelihood,
)


def sample_labels(calibrated_logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels drawn from softmax(calibrated_logits), so those logits are calibrated by construction."""
    p = np.exp(calibrated_logits - calibrated_logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random(p.shape[0])[:, None]
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)


def overconfident_split(n: int, c: int, temperature: float, seed: int):
    """Logits that are ``temperature`` times too large, with labels drawn from the calibrated ones."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(size=(n, c)) * 2.0
    return calibrated * temperature, sample_labels(calibrated, rng)


CALIBRATORS = {
    "temperature": TemperatureScaling,
    "vector": VectorScaling,
    "matrix": MatrixScaling,
    "matrix_l2": lambda: MatrixScaling(l2=1e-2),
    "logistic": LogisticScaling,
    "logistic_vector": lambda: LogisticScaling(vector_scale=True),
    "logistic_balanced": lambda: LogisticScaling(balanced=True),
}


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_calibrators_lower_nll_on_held_out_data(name):
    dev_logits, dev_labels = overconfident_split(3000, 5, 3.0, seed=0)
    test_logits, test_labels = overconfident_split(3000, 5, 3.0, seed=1)
    calibrator = CALIBRATORS[name]().fit(dev_logits, dev_labels)
    before = negative_log_likelihood(test_labels, logits=test_logits)
    after = negative_log_likelihood(test_labels, logits=calibrator.transform(test_logits))
    assert after < 0.8 * before, (before, after)
    # The fit is a minimum on its own data: it beats the identity map.
    assert negative_log_likelihood(dev_labels, logits=calibrator.transform(dev_logits)) < negative_log_likelihood(
        dev_labels, logits=dev_logits
    )


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_temperature_scaling_recovers_a_known_temperature(true_temperature):
    logits, labels = overconfident_split(20000, 5, true_temperature, seed=2)
    ts = TemperatureScaling().fit(logits, labels)
    assert abs(ts.temperature / true_temperature - 1) < 0.04, ts.temperature


def test_temperature_fit_is_the_exact_minimum():
    logits, labels = overconfident_split(500, 4, 2.0, seed=3)
    t = TemperatureScaling().fit(logits, labels).temperature
    # The derivative of the NLL in 1/T vanishes at the fit: E_p[z] = z_y on average.
    z = torch.from_numpy(logits)
    beta = torch.tensor(1.0 / t, dtype=torch.float64, requires_grad=True)
    nll = torch.nn.functional.cross_entropy(z * beta, torch.from_numpy(labels))
    (grad,) = torch.autograd.grad(nll, beta)
    assert abs(grad.item()) < 1e-10

    def nll_at(temp):
        return negative_log_likelihood(labels, logits=logits / temp)

    assert nll_at(t) < nll_at(t * 1.001) and nll_at(t) < nll_at(t / 1.001)


def test_logistic_scaling_recovers_scale_and_bias():
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(20000, 4)) * 3.0
    true_bias = np.array([0.5, -0.5, 0.0, 1.0])
    labels = sample_labels(0.4 * raw + true_bias, rng)
    ls = LogisticScaling().fit(raw, labels)
    assert abs(ls.scale - 0.4) < 0.02
    # Softmax is unchanged by a common shift, so only differences of biases are identified.
    np.testing.assert_allclose(ls.bias - ls.bias.mean(), true_bias - true_bias.mean(), atol=0.08)


def test_balanced_logistic_scaling_minimises_the_class_balanced_objective():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2000, 3)) * 3.0
    labels = sample_labels(logits / 2.0 + np.array([1.5, 0.0, -1.0]), rng)
    ls = LogisticScaling(balanced=True).fit(logits, labels)
    counts = np.bincount(labels, minlength=3)
    weights = torch.from_numpy(1.0 / counts[labels])
    a = torch.tensor([ls.scale], dtype=torch.float64, requires_grad=True)
    b = torch.from_numpy(ls.bias.copy()).requires_grad_(True)
    nll = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits) * a + b, torch.from_numpy(labels), reduction="none"
    )
    loss = (weights * nll).sum() / weights.sum()
    grads = torch.autograd.grad(loss, (a, b))
    assert max(g.abs().max().item() for g in grads) < 1e-6
    # It differs from the unweighted fit on imbalanced data.
    plain = LogisticScaling().fit(logits, labels)
    assert np.abs((ls.bias - ls.bias.mean()) - (plain.bias - plain.bias.mean())).max() > 0.05


def test_temperature_scaling_with_every_example_correct(caplog):
    logits = np.array([[4.0, 0.0], [0.0, 3.0], [5.0, 1.0]])
    labels = np.array([0, 1, 0])
    with caplog.at_level(logging.WARNING, logger="jemfast.calibration.scalers"):
        ts = TemperatureScaling(min_temperature=0.05).fit(logits, labels)
    assert ts.temperature == 0.05
    assert "minimum" in caplog.text
    assert np.isfinite(ts.transform(logits)).all()


def test_temperature_scaling_no_better_than_chance(caplog):
    logits = np.array([[5.0, 0.0], [0.0, 5.0]])
    labels = np.array([1, 0])
    with caplog.at_level(logging.WARNING, logger="jemfast.calibration.scalers"):
        ts = TemperatureScaling(max_temperature=50.0).fit(logits, labels)
    assert ts.temperature == 50.0
    assert "chance" in caplog.text
    # Constant logits carry no information, and any temperature leaves them unchanged.
    ts = TemperatureScaling().fit(np.zeros((3, 4)), np.array([0, 1, 2]))
    assert ts.temperature == 1.0


def test_transform_keeps_the_type_family():
    logits, labels = overconfident_split(400, 3, 2.0, seed=6)
    ts = TemperatureScaling().fit(torch.from_numpy(logits).float(), torch.from_numpy(labels))
    out = ts.transform(torch.from_numpy(logits).float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(logits / ts.temperature).float())
    out_np = ts.transform(logits)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float64
    np.testing.assert_allclose(out_np, logits / ts.temperature, rtol=1e-15)


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_state_round_trips_through_json(name, tmp_path):
    logits, labels = overconfident_split(600, 4, 2.0, seed=7)
    fitted = CALIBRATORS[name]().fit(logits, labels)
    state = json.loads(json.dumps(fitted.state_dict()))
    restored = type(fitted)()
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.transform(logits), fitted.transform(logits))

    path = fitted.save(tmp_path / "cal.json")
    from_class = type(fitted).load(path)
    np.testing.assert_array_equal(from_class.transform(logits), fitted.transform(logits))
    instance = type(fitted)()
    assert instance.load(path) is instance
    np.testing.assert_array_equal(instance.transform(logits), fitted.transform(logits))
    generic = load_calibrator(path)
    assert type(generic) is type(fitted)
    np.testing.assert_array_equal(generic.transform(logits), fitted.transform(logits))


def test_temperature_is_exposed_and_saved(tmp_path):
    ts = TemperatureScaling().fit(*overconfident_split(300, 3, 2.0, seed=8))
    saved = json.loads(ts.save(tmp_path / "ts.json").read_text())
    assert saved["type"] == "TemperatureScaling" and saved["temperature"] == ts.temperature


def test_unfitted_and_mismatched_use_is_an_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().transform(np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="not fitted"):
        VectorScaling().state_dict()
    vs = VectorScaling().fit(*overconfident_split(200, 3, 2.0, seed=9))
    with pytest.raises(ValueError, match="logits have 4 classes; this calibrator was fitted on 3"):
        vs.transform(np.zeros((2, 4)))


def test_bad_fit_input_is_rejected_before_any_state_changes():
    ts = TemperatureScaling().fit(*overconfident_split(200, 3, 2.0, seed=10))
    t = ts.temperature
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels has 3 entries but logits has 4 rows"):
        ts.fit(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels\[1\] = 3 is out of range"):
        ts.fit(logits, np.array([0, 3, 1, 1]))
    logits[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"logits\[2, 0\] = nan"):
        ts.fit(logits, np.array([0, 1, 2, 1]))
    assert ts.temperature == t


def test_bad_state_is_rejected_before_any_state_changes(tmp_path):
    ts = TemperatureScaling().fit(*overconfident_split(200, 3, 2.0, seed=11))
    t = ts.temperature
    with pytest.raises(ValueError, match=r"state\['temperature'\] must be a finite number > 0, got -1.0"):
        ts.load_state_dict({"type": "TemperatureScaling", "n_classes": 3, "temperature": -1.0})
    with pytest.raises(ValueError, match="expected 'TemperatureScaling'"):
        ts.load_state_dict({"type": "VectorScaling", "n_classes": 3, "scale": [1, 1, 1], "bias": [0, 0, 0]})
    assert ts.temperature == t
    with pytest.raises(ValueError, match="3 finite numbers"):
        VectorScaling().load_state_dict({"type": "VectorScaling", "n_classes": 3, "scale": [1, 1], "bias": [0, 0, 0]})
    (tmp_path / "odd.json").write_text(json.dumps({"type": "Platt"}))
    with pytest.raises(ValueError, match="calibrator type 'Platt'"):
        load_calibrator(tmp_path / "odd.json")
    with pytest.raises(ValueError, match="min_temperature < max_temperature"):
        TemperatureScaling(min_temperature=2.0, max_temperature=1.0)
    assert math.isfinite(t)


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_matrix_scaling_fit_is_a_stationary_point(l2):
    logits, labels = overconfident_split(1500, 4, 2.0, seed=12)
    ms = MatrixScaling(l2=l2).fit(logits, labels)
    weight = torch.from_numpy(ms.weight.copy()).requires_grad_(True)
    bias = torch.from_numpy(ms.bias.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits) @ weight.T + bias, torch.from_numpy(labels))
    off = weight[~torch.eye(4, dtype=torch.bool)]
    loss = loss + l2 * ((off**2).mean() + (bias**2).mean())
    grads = torch.autograd.grad(loss, (weight, bias))
    assert max(g.abs().max().item() for g in grads) < 1e-6


@requires_cuda
def test_cuda_tensors_in_and_out():
    logits, labels = overconfident_split(500, 3, 2.0, seed=13)
    z = torch.from_numpy(logits).float().cuda()
    y = torch.from_numpy(labels).cuda()
    for calibrator in (TemperatureScaling(), LogisticScaling(), MatrixScaling()):
        out = calibrator.fit(z, y).transform(z)
        assert out.is_cuda and out.dtype == torch.float32
        np.testing.assert_allclose(out.cpu().numpy(), calibrator.transform(logits), rtol=1e-6, atol=1e-6)
    assert negative_log_likelihood(y, logits=out) < negative_log_likelihood(y, logits=z)
