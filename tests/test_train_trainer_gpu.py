"""JEMTrainer on a GPU: each device path of a real training loop, a few steps each.

What these cover that the sampler's own GPU tests do not: the captured chain inside
``JEMTrainer.fit`` while a pinned, multi-worker DataLoader runs (its pin-memory thread
allocates page-locked memory during capture), bf16 and fp16 autocast (fp16 with the
gradient scaler), and captures on two devices in one process.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import requires_cuda

from jemfast.models import WideResNet
from jemfast.sampling import ReplayBuffer, SGLDSampler
from jemfast.train import DefaultSampler, JEMLoss, JEMTrainer, paper_optimizer

pytestmark = [requires_cuda, pytest.mark.gpu]

N_CLASSES = 4
SHAPE = (1, 16, 48)  # one channel of 16 log-Mel bands x 48 frames


def _data(n: int = 96, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = torch.randn(n, *SHAPE, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float() * 0.3
    return torch.utils.data.TensorDataset(x, y)


def _pinned_loader(num_workers: int = 2) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _data(),
        batch_size=16,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=True,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def _trainer(amp_dtype=None, norm="batch", cuda_graph=True, device="cuda") -> JEMTrainer:
    torch.manual_seed(0)
    model = WideResNet(depth=10, width=1, num_classes=N_CLASSES, norm=norm).to(device)
    optimizer, scheduler = paper_optimizer(model, steps_per_epoch=6, lr=0.05, warmup_steps=2, milestones=())
    return JEMTrainer(
        model,
        optimizer,
        scheduler=scheduler,
        amp_dtype=amp_dtype,
        sampler=DefaultSampler(buffer_size=64, options={"n_steps": 3, "cuda_graph": cuda_graph}),
        objective=JEMLoss(energy_l2=0.1),
        seed=0,
        device=device,
        progress=False,
    )


def _assert_trained(trainer: JEMTrainer, before: list[torch.Tensor]) -> None:
    after = [p.detach() for p in trainer.module.parameters()]
    assert all(torch.isfinite(p).all() for p in after), "non-finite weights after training"
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), "no weight changed"


def test_captured_chain_survives_a_pinned_multiworker_loader():
    """The first training step captures the chain while the pin-memory thread allocates."""
    trainer = _trainer()
    before = [p.detach().clone() for p in trainer.module.parameters()]
    history = trainer.fit(_pinned_loader(num_workers=2), epochs=2)
    assert trainer.sampler._graphs is not None and trainer.sampler._graphs.captures >= 1
    assert all(math.isfinite(h["train_ce"]) for h in history)
    _assert_trained(trainer, before)


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_each_precision_trains_with_a_captured_sampler(amp_dtype):
    trainer = _trainer(amp_dtype=amp_dtype)
    before = [p.detach().clone() for p in trainer.module.parameters()]
    loader = _pinned_loader(num_workers=0)
    for x, y in loader:
        metrics = trainer.step(x.cuda(non_blocking=True), y.cuda(non_blocking=True))
        assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["e_gap"]), dict(metrics)
    assert (trainer._scaler is not None) == (amp_dtype == torch.float16)
    if trainer._scaler is not None:
        assert trainer._scaler.get_scale() > 0
    assert trainer.sampler._graphs.captures >= 1
    _assert_trained(trainer, before)


def test_captured_and_eager_trainers_agree():
    """Same seeds, same batches: the captured chain trains the same model as the eager one."""
    results = []
    for cuda_graph in (True, False):
        torch.backends.cudnn.deterministic = True
        trainer = _trainer(norm=None, cuda_graph=cuda_graph)
        for x, y in _pinned_loader(num_workers=0):
            trainer.step(x.cuda(), y.cuda())
        results.append([p.detach().clone() for p in trainer.module.parameters()])
    for graph_p, eager_p in zip(*results, strict=True):
        torch.testing.assert_close(graph_p, eager_p, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_captures_on_two_devices_use_each_devices_stream():
    """A capture on cuda:1 after one on cuda:0 replays the same samples as eager on cuda:1."""
    samples = {}
    for device in ("cuda:0", "cuda:1"):
        torch.manual_seed(0)
        model = WideResNet(depth=10, width=1, num_classes=N_CLASSES).to(device).eval()
        for cuda_graph in (True, False):
            buffer = ReplayBuffer(SHAPE, size=32, seed=1, device=device)
            sampler = SGLDSampler(model, buffer, n_steps=3, seed=2, cuda_graph=cuda_graph)
            samples[device, cuda_graph] = sampler.sample(8)
    for device in ("cuda:0", "cuda:1"):
        torch.testing.assert_close(samples[device, True], samples[device, False], rtol=1e-4, atol=1e-5)
        assert samples[device, True].device == torch.device(device)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_step_times_are_measured_on_the_trainers_device():
    trainer = _trainer(device="cuda:1")
    with torch.cuda.device(0):  # the current device is not the trainer's
        x, y = next(iter(_pinned_loader(num_workers=0)))
        metrics = trainer.step(x.to("cuda:1"), y.to("cuda:1"))
        assert metrics["step_time_s"] > 0 and metrics["step_time_s"] >= metrics["sample_time_s"] > 0
