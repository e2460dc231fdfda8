"""JEMTrainer's constructor arguments (jemfast.train.arguments): checks by name, resolved values, warnings."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from jemfast.train import DefaultSampler, DivergenceGuard, JEMLoss, JEMTrainer
from jemfast.train.arguments import (
    check_options,
    device_argument,
    guard_argument,
    joint_forward_argument,
    objective_argument,
    sampler_argument,
)

VALID = {
    "scheduler": None,
    "amp_dtype": None,
    "grad_clip": None,
    "scheduler_interval": "step",
    "n_classes": None,
    "sync_every": None,
    "check_values": "auto",
    "data_noise": 0.0,
    "sample_shape": None,
}


def test_valid_options_pass():
    check_options(**VALID)
    check_options(
        **{
            **VALID,
            "amp_dtype": torch.bfloat16,
            "grad_clip": 1,
            "scheduler_interval": "epoch",
            "n_classes": 2,
            "sync_every": 25,
            "check_values": False,
            "data_noise": 0.03,
            "sample_shape": (1, 32, 192),
        }
    )


@pytest.mark.parametrize(
    "name, value, error, match",
    [
        ("scheduler", 1.0, TypeError, r"scheduler must be a learning-rate scheduler .* got float"),
        ("amp_dtype", torch.int8, ValueError, r"amp_dtype must be one of \(None, torch.float16, torch.bfloat16\)"),
        ("grad_clip", 0.0, ValueError, r"grad_clip must be a finite number > 0, got 0.0"),
        ("grad_clip", math.inf, ValueError, r"grad_clip must be a finite number > 0, got inf"),
        ("scheduler_interval", "batch", ValueError, r"scheduler_interval must be one of \('step', 'epoch'\)"),
        ("n_classes", 1, ValueError, r"n_classes must be an int >= 2, got 1"),
        ("n_classes", 3.0, ValueError, r"n_classes must be an int >= 2, got 3.0"),
        ("sync_every", 0, ValueError, r"sync_every must be an int >= 1, got 0"),
        ("sync_every", True, ValueError, r"sync_every must be an int >= 1, got True"),
        ("check_values", 1, ValueError, r"check_values must be one of \(True, False, 'auto'\), got 1"),
        ("data_noise", -0.1, ValueError, r"data_noise must be a finite number >= 0, got -0.1"),
        ("data_noise", math.nan, ValueError, r"data_noise must be a finite number >= 0, got nan"),
        ("sample_shape", (0,), ValueError, r"sample_shape must be a non-empty tuple of positive ints"),
        ("sample_shape", (), ValueError, r"sample_shape must be a non-empty tuple of positive ints"),
    ],
)
def test_each_option_is_checked_by_name(name, value, error, match):
    with pytest.raises(error, match=match):
        check_options(**{**VALID, name: value})


def test_device_defaults_to_the_first_parameters_device():
    assert device_argument(None, nn.Linear(2, 3)) == torch.device("cpu")
    assert device_argument(None, nn.ReLU()) == torch.device("cpu")  # no parameters
    assert device_argument("cpu", nn.Linear(2, 3)) == torch.device("cpu")


def test_joint_forward_follows_the_models_running_statistics():
    plain, normed = nn.Linear(2, 3), nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert joint_forward_argument(None, plain) is True
    assert joint_forward_argument(None, normed) is False
    assert joint_forward_argument(False, plain) is False
    with pytest.raises(ValueError, match="joint_forward=True needs a model without batch-norm"):
        joint_forward_argument(True, normed)
    with pytest.raises(ValueError, match=r"joint_forward must be one of \(None, True, False\), got 'yes'"):
        joint_forward_argument("yes", plain)


def test_guard_argument():
    guard = DivergenceGuard(max_rollbacks=2)
    assert guard_argument(guard) is guard
    assert guard_argument(True).enabled and guard_argument(True) == DivergenceGuard()
    assert not guard_argument(False).enabled and not guard_argument(None).enabled
    with pytest.raises(TypeError, match="guard must be a DivergenceGuard, bool or None, got str"):
        guard_argument("on")


def test_deprecated_keywords_are_taken_out_of_the_rest():
    deprecated = {"p_x_weight": 0.0, "buffer_size": 16, "other": 1}
    with pytest.warns(DeprecationWarning):
        objective = objective_argument(None, deprecated)
    with pytest.warns(DeprecationWarning):
        sampler, spec = sampler_argument(None, deprecated)
    assert objective == JEMLoss(p_x_weight=0.0)
    assert sampler is None and spec == DefaultSampler(buffer_size=16)
    assert deprecated == {"other": 1}, "only the keywords they replaced are taken"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert objective_argument(None, {}) == JEMLoss()
        assert sampler_argument(None, {}) == (None, DefaultSampler())


def test_deprecation_warnings_point_at_the_line_that_built_the_trainer():
    model = nn.Linear(2, 3)
    with pytest.warns(DeprecationWarning) as caught:
        JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), p_x_weight=0.0, buffer_size=8)
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name] * 2
