"""paper_optimizer: SGD settings, linear warm-up, decay at epoch milestones, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jemfast.train import WarmupStepDecay, paper_optimizer


def lrs(optimizer, scheduler, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_paper_recipe():
    model = nn.Linear(3, 2)
    opt, sched = paper_optimizer(model, steps_per_epoch=100)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and group["momentum"] == 0.9 and group["weight_decay"] > 0
    seen = lrs(opt, sched, 12001)
    assert seen[0] == pytest.approx(0.1 / 1000)
    assert seen[499] == pytest.approx(0.05)
    assert seen[999] == pytest.approx(0.1) and seen[3999] == pytest.approx(0.1)
    assert seen[4000] == pytest.approx(0.02)  # epoch 40
    assert seen[8000] == pytest.approx(0.004)  # epoch 80
    assert seen[12000] == pytest.approx(0.0008)  # epoch 120
    assert all(b >= a for a, b in zip(seen[:999], seen[1:1000], strict=True)), "warm-up must be increasing"


def test_schedule_state_round_trips():
    model = nn.Linear(3, 2)
    opt, sched = paper_optimizer(model, steps_per_epoch=5, warmup_steps=3, milestones=(2,))
    lrs(opt, sched, 7)
    state = sched.state_dict()
    opt2, sched2 = paper_optimizer(nn.Linear(3, 2), steps_per_epoch=5, warmup_steps=3, milestones=(2,))
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert lrs(opt, sched, 6) == lrs(opt2, sched2, 6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps_per_epoch=0), "steps_per_epoch"),
        (dict(steps_per_epoch=10, warmup_steps=-1), "warmup_steps"),
        (dict(steps_per_epoch=10, milestones=(80, 40)), "milestones"),
        (dict(steps_per_epoch=10, lr=0.0), "lr"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paper_optimizer(nn.Linear(3, 2), **kwargs)


def test_factor_without_warmup():
    factor = WarmupStepDecay(0, (1, 2), 0.5, steps_per_epoch=10)
    assert [factor(s) for s in (0, 9, 10, 19, 20)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_scaling_learning_rates_moves_the_rest_of_the_schedule():
    from jemfast.train.schedule import scale_learning_rates

    model = nn.Linear(2, 2)
    optimizer, scheduler = paper_optimizer(model, steps_per_epoch=2, lr=0.1, warmup_steps=2, milestones=(2,))
    reference, reference_scheduler = paper_optimizer(
        nn.Linear(2, 2), steps_per_epoch=2, lr=0.05, warmup_steps=2, milestones=(2,)
    )
    lrs(optimizer, scheduler, 1)
    lrs(reference, reference_scheduler, 1)
    scale_learning_rates(optimizer, scheduler, 0.5)
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.05)
    assert lrs(optimizer, scheduler, 6) == pytest.approx(lrs(reference, reference_scheduler, 6))
    plain = torch.optim.SGD(model.parameters(), lr=0.2)
    scale_learning_rates(plain, None, 0.25)
    assert plain.param_groups[0]["lr"] == pytest.approx(0.05) and "initial_lr" not in plain.param_groups[0]
