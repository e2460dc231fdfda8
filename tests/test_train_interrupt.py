"""Ctrl-C during training: the step in flight completes before the interrupt lands."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch
from test_train_trainer import blobs, mlp
from torch import nn

from jemfast.train import DefaultSampler, JEMTrainer, load_checkpoint

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers live in the main thread only"
)


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler, as in a terminal. A process started in the background of a
    non-interactive shell inherits SIGINT ignored, and Python then installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class SigintDuringForward(nn.Module):
    """``mlp`` that sends itself SIGINT ``times`` times inside its ``at``-th training forward."""

    def __init__(self, at: int | None = None, times: int = 1):
        super().__init__()
        self.inner = mlp(0)
        self.at, self.times, self.train_forwards = at, times, 0

    def forward(self, x):
        if self.training:  # the sampler's chain runs in eval mode: count training forwards only
            self.train_forwards += 1
            if self.train_forwards == self.at:
                for _ in range(self.times):
                    os.kill(os.getpid(), signal.SIGINT)
                    # Python runs the handler at the next bytecode boundary; make sure the
                    # second signal is a separate delivery.
                    sum(range(1000))
        return self.inner(x)


def make_trainer(run_dir=None, **model_kwargs) -> JEMTrainer:
    model = SigintDuringForward(**model_kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return JEMTrainer(
        model,
        opt,
        run_dir=run_dir,
        sampler=DefaultSampler(buffer_size=64, options={"n_steps": 3}),
        progress=False,
        sync_every=2,
    )


def make_loader():
    x, y = blobs(96, seed=4)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)
    )


def test_ctrl_c_inside_a_step_lets_it_finish_then_resumes_exactly(tmp_path):
    torch.manual_seed(3)
    straight = make_trainer(tmp_path / "a")
    straight.fit(make_loader(), epochs=2)

    torch.manual_seed(3)
    interrupted = make_trainer(tmp_path / "b", at=8)  # the 8th step: 2 batches into epoch 2
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(make_loader(), epochs=2)
    assert interrupted.step_count == 8, "the step in flight must complete before the interrupt"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the SIGINT handler must be restored"
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert saved["step"] == 8 and saved["fit"]["batch_in_epoch"] == 2

    torch.manual_seed(0)
    resumed = make_trainer(tmp_path / "b")
    resumed.fit(make_loader(), epochs=2, resume=True)
    assert resumed.step_count == straight.step_count == 12
    for p, q in zip(straight.module.parameters(), resumed.module.parameters(), strict=True):
        assert torch.equal(p, q)
    # The interrupted epoch's training means cover all of its steps, not only those after the resume.
    from jemfast.train.run_log import read_epoch_records

    epoch_2 = {name: read_epoch_records(tmp_path / name / "metrics.jsonl")[-1] for name in ("a", "b")}
    assert epoch_2["a"]["train_ce"] == epoch_2["b"]["train_ce"]
    assert epoch_2["a"]["train_acc"] == epoch_2["b"]["train_acc"]


def test_second_ctrl_c_stops_at_once_and_writes_nothing(tmp_path):
    trainer = make_trainer(tmp_path / "c", at=3, times=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(make_loader(), epochs=2)
    assert trainer.step_count == 2, "the second Ctrl-C must stop inside step 3"
    assert not (tmp_path / "c" / "checkpoints" / "last.pt").exists(), "a torn step must not be checkpointed"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_step_outside_fit_also_defers_ctrl_c():
    trainer = make_trainer(at=2)
    x, y = blobs(32, seed=5)
    trainer.step(x[:16], y[:16])
    with pytest.raises(KeyboardInterrupt):
        trainer.step(x[16:], y[16:])
    assert trainer.step_count == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_foreign_sigint_handler_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        trainer = make_trainer(at=1)
        x, y = blobs(16, seed=6)
        trainer.step(x, y)  # the handler above swallows the signal; no KeyboardInterrupt
        assert seen == [signal.SIGINT] and trainer.step_count == 1
    finally:
        signal.signal(signal.SIGINT, previous)
