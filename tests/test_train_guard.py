"""Divergence guard: an injected learning-rate spike is rolled back and training recovers."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_trainer import blobs, mlp

from jemfast.train import DefaultSampler, DivergenceError, DivergenceGuard, JEMLoss, JEMTrainer


def make_trainer(run_dir, guard, sync_every=1):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return JEMTrainer(
        model,
        opt,
        run_dir=run_dir,
        guard=guard,
        sampler=DefaultSampler(buffer_size=128, options={"n_steps": 3}),
        sync_every=sync_every,
        progress=False,
    )


def spike(trainer, factor=1e6):
    for group in trainer.optimizer.param_groups:
        group["lr"] *= factor


@pytest.mark.parametrize("sync_every", [1, 4])
def test_learning_rate_spike_is_rolled_back_and_training_recovers(tmp_path, sync_every):
    x, y = blobs(512, seed=1)
    data = list(zip(x.split(32), y.split(32), strict=True))
    guard = DivergenceGuard(gap_threshold=1e4, loss_threshold=1e4, snapshot_every=4, lr_factor=0.5, max_rollbacks=2)
    trainer = make_trainer(tmp_path / "run", guard, sync_every)
    for xb, yb in data[:8]:
        trainer.step(xb, yb)
    assert trainer._snapshot_step == 8

    spike(trainer)
    trainer.step(*data[8])  # the update with the huge learning rate
    for xb, yb in data[9:12]:  # the following steps see the blown-up model
        trainer.step(xb, yb)
    assert trainer.rollbacks == 1
    # Rolled back to the snapshot taken at step 8, with the learning rate halved.
    assert trainer.lr_scale == 0.5
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    if sync_every == 1:
        assert trainer.step_count < 12
    for _ in range(3):
        for xb, yb in data:
            trainer.step(xb, yb)
    trainer.close()
    assert trainer.rollbacks == 1
    params = torch.cat([p.detach().flatten() for p in trainer.module.parameters()])
    assert torch.isfinite(params).all()
    xv, yv = blobs(256, seed=2)
    with torch.no_grad():
        acc = (trainer.module(xv).argmax(1) == yv).float().mean().item()
    assert acc > 0.9
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rollbacks = [r for r in records if r["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["restored_step"] == 8 and rollbacks[0]["lr_scale"] == 0.5


def test_rollbacks_are_bounded(tmp_path):
    x, y = blobs(64, seed=3)
    guard = DivergenceGuard(gap_threshold=1e4, loss_threshold=1e4, snapshot_every=2, lr_factor=1.0, max_rollbacks=1)
    trainer = make_trainer(None, guard)
    trainer.step(x[:32], y[:32])
    trainer.step(x[32:], y[32:])
    with pytest.raises(DivergenceError, match="max_rollbacks=1"):
        for _ in range(20):
            spike(trainer, 1e8)
            trainer.step(x[:32], y[:32])
    assert trainer.rollbacks == 1


def test_nan_loss_triggers_rollback_even_for_the_softmax_baseline():
    x, y = blobs(64, seed=4)
    model = mlp()
    trainer = JEMTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        objective=JEMLoss(p_x_weight=0.0),
        guard=DivergenceGuard(snapshot_every=1),
        progress=False,
    )
    trainer.step(x[:32], y[:32])
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    trainer.step(x[32:], y[32:])
    assert trainer.rollbacks == 1 and trainer.step_count == 1
    assert torch.isfinite(model[0].weight).all()


def test_guard_settings_are_validated():
    with pytest.raises(ValueError, match="lr_factor"):
        DivergenceGuard(lr_factor=0.0)
    with pytest.raises(ValueError, match="gap_threshold"):
        DivergenceGuard(gap_threshold=-1.0)
    with pytest.raises(ValueError, match="max_rollbacks"):
        DivergenceGuard(max_rollbacks=-1)


def test_an_epoch_that_passed_the_guard_is_the_rollback_point(tmp_path):
    """Short runs (fewer steps than snapshot_every) must not fall back to step 0."""
    x, y = blobs(256, seed=5)
    loader = list(zip(x.split(32), y.split(32), strict=True))  # 8 steps per epoch
    guard = DivergenceGuard(gap_threshold=1e4, loss_threshold=1e4, snapshot_every=1000, lr_factor=0.5)
    trainer = make_trainer(tmp_path / "run", guard)
    trainer.fit(loader, epochs=1)
    assert trainer._snapshot_step == 8
    spike(trainer)
    for xb, yb in loader[:3]:
        trainer.step(xb, yb)
    trainer.close()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rollbacks = [r for r in records if r["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["restored_step"] == 8


# ------------------------------------------------------------------ the guard checks weights and validation
def _guarded_trainer(run_dir, optimizer_factory, **kwargs):
    from test_train_trainer import mlp

    from jemfast.train import JEMTrainer

    model = mlp()
    return JEMTrainer(
        model, optimizer_factory(model), objective=JEMLoss(p_x_weight=0.0), run_dir=run_dir, progress=False, **kwargs
    )


def test_nan_weights_behind_a_finite_loss_are_never_snapshotted(tmp_path):
    """SGD with NaN momentum: the first step is finite, the second leaves NaN weights behind a finite loss."""
    from test_train_trainer import blobs, loader

    from jemfast.train import DivergenceError, load_checkpoint

    trainer = _guarded_trainer(
        tmp_path / "run", lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=float("nan"))
    )
    x, y = blobs(64, seed=1)
    with pytest.raises(DivergenceError):
        trainer.fit(loader(x, y, batch_size=8), epochs=3, val_loader=loader(x, y, shuffle=False))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    if last.is_file():
        for name, tensor in load_checkpoint(last)["model"].items():
            assert torch.isfinite(tensor).all(), f"{name} is not finite in last.pt"
    assert all(torch.isfinite(p).all() for p in trainer._snapshot["model"].values())


def test_checkpoints_between_syncs_hold_checked_weights_only(tmp_path):
    from test_train_trainer import blobs, loader

    from jemfast.train import DivergenceError, load_checkpoint

    saved = []
    trainer = _guarded_trainer(tmp_path / "run", lambda m: torch.optim.SGD(m.parameters(), lr=1e30), sync_every=5)
    original = trainer.save_checkpoint

    def record(path, gather=True):
        saved.append({k: v.clone() for k, v in trainer.module.state_dict().items()})
        return original(path, gather)

    trainer.save_checkpoint = record
    x, y = blobs(64, seed=2)
    with pytest.raises(DivergenceError):
        trainer.fit(loader(x, y, batch_size=8), epochs=2, checkpoint_every=1)
    for state in saved:
        assert all(torch.isfinite(t).all() for t in state.values()), "a checkpoint held unchecked NaN weights"
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").is_file() or all(
        torch.isfinite(t).all() for t in load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"].values()
    )


def test_blown_up_validation_rolls_back_instead_of_crashing(tmp_path):
    from test_train_trainer import blobs, loader

    x, y = blobs(64, seed=3)
    trainer = _guarded_trainer(None, lambda m: torch.optim.SGD(m.parameters(), lr=0.05))
    original = trainer.evaluate
    calls = {"n": 0}

    def evaluate(loader_):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's validation sees a blown-up model
            return {"acc": 10.0, "nll": 9.7e6, "ece": 80.0}
        return original(loader_)

    trainer.evaluate = evaluate
    history = trainer.fit(loader(x, y, batch_size=8), epochs=3, val_loader=loader(x, y, shuffle=False))
    assert trainer.rollbacks == 1
    assert all(r["val_nll"] < 1e3 for r in history)


def test_weights_not_finite_is_a_device_flag():
    from torch import nn

    from jemfast.train.guard import weights_not_finite

    model = mlp()
    cpu = torch.device("cpu")
    flag = weights_not_finite(model, cpu)
    assert flag.dtype == torch.bool and flag.shape == () and not bool(flag)
    with torch.no_grad():
        model[2].bias[1] = float("nan")
    assert bool(weights_not_finite(model, cpu))
    assert not bool(weights_not_finite(nn.ReLU(), cpu))  # no parameters
