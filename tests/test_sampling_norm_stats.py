"""Batch-norm running statistics see data only: the sampler's chain, the trainer's negatives, re-estimation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from jemfast.sampling import (
    LangevinStep,
    PYLDStep,
    ReplayBuffer,
    SGLDSampler,
    frozen_norm_statistics,
    reestimate_norm_statistics,
)
from jemfast.train import JEMTrainer

N_CLASSES = 4
DIM = 16


def bn_model(seed: int = 0, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(DIM, 32),
        nn.BatchNorm1d(32),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(32, 32),
        nn.BatchNorm1d(32),
        nn.SiLU(),
        nn.Linear(32, N_CLASSES),
    )


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes in 16 dimensions, offset and scaled well away from a U[-1, 1] replay buffer."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    centres = 2.0 * torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(123))
    return 3.0 + centres[y] + 1.5 * torch.randn(n, DIM, generator=g), y


def statistics(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers()]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("mode", ["eval", "train", "keep"])
@pytest.mark.parametrize("step_kind", ["sgld", "pyld"])
def test_the_chain_never_moves_running_statistics(mode, step_kind):
    model = bn_model()
    model.train()
    before = statistics(model)
    step = PYLDStep(layer=model[0]) if step_kind == "pyld" else LangevinStep()
    sampler = SGLDSampler(
        model,
        ReplayBuffer((DIM,), size=64, seed=1, device="cpu"),
        n_steps=3,
        seed=2,
        model_mode=mode,
        step=step,
    )
    sampler.sample(16)
    for b, a in zip(before, statistics(model), strict=True):
        assert torch.equal(a, b), "an SGLD chain changed a batch-norm buffer"
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_train_mode_chains_still_normalise_with_batch_statistics():
    """Freezing the running statistics must not turn train-mode sampling into eval-mode sampling."""
    model = bn_model()
    runs = {}
    for mode in ("train", "eval"):
        sampler = SGLDSampler(
            model, ReplayBuffer((DIM,), size=64, seed=1, device="cpu"), n_steps=3, seed=2, model_mode=mode
        )
        runs[mode] = sampler.sample(16)
    assert not torch.allclose(runs["train"], runs["eval"])


def test_frozen_statistics_restore_flags_even_after_an_error():
    model = bn_model()
    untracked = nn.BatchNorm1d(4, track_running_stats=False)
    model.append(untracked)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_norm_statistics(model):
            assert not model[1].track_running_stats
            raise RuntimeError("boom")
    assert model[1].track_running_stats and model[5].track_running_stats
    assert untracked.track_running_stats is False


def test_reestimation_gives_the_statistics_of_the_data():
    model = nn.Sequential(nn.BatchNorm1d(DIM), nn.Linear(DIM, 3))
    x, _ = data(96, seed=3)
    model.eval()
    batches = [x[:32], (x[32:64], None), x[64:]]
    assert reestimate_norm_statistics(model, batches) == 96
    assert not model.training  # mode restored
    assert model[0].momentum == 0.1
    torch.testing.assert_close(model[0].running_mean, x.mean(0), rtol=0, atol=1e-5)
    # equal batches: the mean of the per-batch unbiased variances
    var = torch.stack([x[k : k + 32].var(0) for k in (0, 32, 64)]).mean(0)
    torch.testing.assert_close(model[0].running_var, var, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no data"):
        reestimate_norm_statistics(model, [])


def test_a_trainer_step_updates_statistics_from_the_data_alone():
    model = bn_model(dropout=0.0)  # train-mode chains draw dropout masks from the global generator
    reference = copy.deepcopy(model)
    sampler = SGLDSampler.preset(
        "sadajem", model, ReplayBuffer((DIM,), size=64, seed=1, device="cpu"), n_steps=2, seed=4
    )
    trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.0), sampler=sampler, progress=False)
    x, y = data(16, seed=5)
    trainer.step(x, y)
    reference.train()
    with torch.no_grad():
        reference(x)
    for (name, a), b in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(a, b), f"{name} differs from a forward of the data alone"


def test_joint_forward_is_refused_for_models_with_running_statistics():
    model = bn_model()
    with pytest.raises(ValueError, match="joint_forward=True"):
        JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), joint_forward=True)


@pytest.mark.parametrize("preset", ["jem", "sadajem"])
def test_the_evaluated_model_is_the_trained_one(preset):
    """Eval-mode accuracy of a JEM-trained batch-norm model matches its accuracy with statistics of data only."""
    x, y = data(512, seed=6)
    model = bn_model(seed=1)
    buffer = ReplayBuffer((DIM,), size=256, seed=1, device="cpu", init="uniform")
    sampler = SGLDSampler.preset(preset, model, buffer, n_steps=5, seed=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = JEMTrainer(model, opt, sampler=sampler, progress=False, guard=False)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    trainer.fit(loader, epochs=3)
    as_trained = accuracy(model, x, y)
    repaired = copy.deepcopy(model)
    reestimate_norm_statistics(repaired, [x[k : k + 32] for k in range(0, len(x), 32)])
    assert accuracy(repaired, x, y) > 60.0, "the model did not learn; the comparison would say nothing"
    assert abs(as_trained - accuracy(repaired, x, y)) <= 1.0
