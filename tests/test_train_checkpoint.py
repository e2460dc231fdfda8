"""Checkpoints: exact resume (step-wise and mid-epoch in fit), safe loading, atomic writes, checksums."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch
from test_train_trainer import blobs, loader, mlp

from jemfast._leftovers import host_tag
from jemfast.train import (
    CheckpointError,
    DefaultSampler,
    JEMLoss,
    JEMTrainer,
    capture_rng_state,
    load_checkpoint,
    paper_optimizer,
    restore_rng_state,
    save_checkpoint,
)


def make_trainer(run_dir=None, model_seed=0, p_x_weight=1.0, **kwargs):
    model = mlp(model_seed)
    opt, sched = paper_optimizer(model, steps_per_epoch=6, lr=0.05, warmup_steps=4, milestones=(1,))
    return JEMTrainer(
        model,
        opt,
        scheduler=sched,
        run_dir=run_dir,
        objective=JEMLoss(p_x_weight=p_x_weight),
        sampler=DefaultSampler(buffer_size=64, options={"n_steps": 3}),
        progress=False,
        **kwargs,
    )


def batches(n_batches, seed=0):
    x, y = blobs(16 * n_batches, seed)
    return list(zip(x.split(16), y.split(16), strict=True))


def assert_same_parameters(a: JEMTrainer, b: JEMTrainer) -> None:
    for (name, p), q in zip(a.module.named_parameters(), b.module.parameters(), strict=True):
        assert torch.equal(p, q), f"parameter {name} differs"


@pytest.mark.parametrize("p_x_weight", [1.0, 0.0])
def test_steps_straight_equal_steps_with_resume(tmp_path, p_x_weight):
    data = batches(8, seed=1)
    torch.manual_seed(123)
    straight = make_trainer(p_x_weight=p_x_weight)
    for x, y in data:
        straight.step(x, y)

    torch.manual_seed(123)
    first = make_trainer(p_x_weight=p_x_weight)
    for x, y in data[:3]:
        first.step(x, y)
    first.save_checkpoint(tmp_path / "ck.pt")
    for x, y in data[3:5]:  # progress after the checkpoint must not leak into the resumed run
        first.step(x, y)

    torch.manual_seed(999)  # different initial weights and global RNG: all must come from the file
    resumed = make_trainer(model_seed=7, p_x_weight=p_x_weight)
    resumed.load_checkpoint(tmp_path / "ck.pt")
    assert resumed.step_count == 3
    for x, y in data[3:]:
        resumed.step(x, y)

    assert_same_parameters(straight, resumed)
    assert straight.scheduler.state_dict()["last_epoch"] == resumed.scheduler.state_dict()["last_epoch"]
    for s, r in zip(straight.optimizer.state.values(), resumed.optimizer.state.values(), strict=True):
        assert torch.equal(s["momentum_buffer"], r["momentum_buffer"])
    if p_x_weight > 0:
        assert torch.equal(straight.sampler.buffer.storage, resumed.sampler.buffer.storage)


class InterruptingLoader:
    """Wraps a DataLoader and raises KeyboardInterrupt before yielding batch ``at`` (0-based, global)."""

    def __init__(self, inner, at):
        self.inner, self.at, self.seen = inner, at, 0
        self.sampler, self.generator = inner.sampler, inner.generator

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        for batch in self.inner:
            if self.seen == self.at:
                raise KeyboardInterrupt
            self.seen += 1
            yield batch


@pytest.mark.parametrize("own_generator", [False, True])
def test_fit_interrupted_mid_epoch_resumes_exactly(tmp_path, own_generator):
    x, y = blobs(96, seed=2)

    def make_loader():
        ds = torch.utils.data.TensorDataset(x, y)
        gen = torch.Generator().manual_seed(5) if own_generator else None
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=gen)

    torch.manual_seed(11)
    straight = make_trainer(tmp_path / "a")
    straight.fit(make_loader(), epochs=3)

    torch.manual_seed(11)
    interrupted = make_trainer(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(InterruptingLoader(make_loader(), at=9), epochs=3)  # 3 batches into epoch 2
    assert interrupted.step_count == 9

    torch.manual_seed(0)
    resumed = make_trainer(tmp_path / "b", model_seed=3)
    history = resumed.fit(make_loader(), epochs=3, resume=True)
    assert [r["epoch"] for r in history] == [2, 3]
    assert resumed.step_count == straight.step_count == 18
    assert_same_parameters(straight, resumed)


def test_fit_resume_true_without_checkpoint_starts_fresh(tmp_path):
    trainer = make_trainer(tmp_path / "fresh", p_x_weight=0.0)
    x, y = blobs(32, seed=3)
    history = trainer.fit(loader(x, y, batch_size=16), epochs=1, resume=True)
    assert history[0]["epoch"] == 1 and history[0]["val_nll"] is None


class Payload:
    """Unpickling this object would create a file: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_with_pickled_payload_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    trainer = make_trainer(p_x_weight=0.0)
    state = trainer.state_dict()
    state["extra"] = Payload(marker)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="refusing"):
        trainer.load_checkpoint(path)
    assert not marker.exists()
    # A plain pickle (not a torch zip file) is refused too.
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"format": "jemfast.trainer/1", "x": Payload(marker)}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "plain.pt")
    assert not marker.exists()
    assert trainer.step_count == 0


def test_wrong_format_and_missing_file_are_refused(tmp_path):
    trainer = make_trainer(p_x_weight=0.0)
    save_checkpoint(tmp_path / "other.pt", {"weights": torch.ones(2)})
    with pytest.raises(CheckpointError, match="not a jemfast.trainer/1 checkpoint"):
        trainer.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.load_checkpoint(tmp_path / "nope.pt")


def test_save_is_atomic(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"value": torch.tensor([1.0])})
    with pytest.raises(Exception):  # noqa: B017 (whatever pickle raises for a lambda)
        save_checkpoint(path, {"value": lambda: None})  # cannot be pickled: the write fails midway
    assert torch.equal(load_checkpoint(path)["value"], torch.tensor([1.0]))
    assert os.listdir(path.parent) == ["last.pt"], "temporary files must be cleaned up"
    with pytest.raises(TypeError, match="state must be a dict"):
        save_checkpoint(path, [1, 2])


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    import random

    import numpy as np

    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])


def test_flipped_bytes_inside_tensor_data_are_detected(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"weights": torch.full((256,), 1.5), "epoch": 3})
    loaded = load_checkpoint(path)
    assert set(loaded) == {"weights", "epoch"}, "the checksum record is not part of the returned state"
    raw = bytearray(path.read_bytes())
    data = raw.find(torch.full((256,), 1.5).numpy().tobytes())
    assert data > 0, "tensor bytes not found in the file"
    raw[data + 512] ^= 0x10
    path.write_bytes(bytes(raw))
    assert not torch.equal(torch.load(path, weights_only=True)["weights"], torch.full((256,), 1.5))
    with pytest.raises(CheckpointError, match=r"ck\.pt.*corrupt.*SHA-256"):
        load_checkpoint(path)


def test_checkpoint_without_checksum_still_loads(tmp_path, caplog):
    path = tmp_path / "old.pt"
    torch.save({"weights": torch.ones(3), "step": 7}, path)
    with caplog.at_level(logging.DEBUG, logger="jemfast.train.checkpoint"):
        state = load_checkpoint(path)
    assert torch.equal(state["weights"], torch.ones(3)) and state["step"] == 7
    assert "no checksum" in caplog.text


def exited_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_files_of_killed_writers_are_removed_at_next_save(tmp_path):
    host, dead, live = host_tag(), exited_pid(), os.getppid()
    names = {
        "dead": f".last.pt.{host}-{dead}.k3j4h5g6.tmp",
        "dead_other_name": f".best.pt.{host}-{dead}.a1b2c3d4.tmp",
        "live": f".last.pt.{host}-{live}.z9y8x7w6.tmp",
        "other_host": f".last.pt.otherhost-{dead}.q1w2e3r4.tmp",
        "older_version_idle": ".last.pt.m5n6b7v8.tmp",
        "older_version_recent": ".last.pt.p0o9i8u7.tmp",
        "unrelated": "notes.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / names["older_version_idle"], (two_hours_ago, two_hours_ago))
    save_checkpoint(tmp_path / "last.pt", {"value": torch.ones(1)})
    left = {p.name for p in tmp_path.iterdir()}
    kept = {names[k] for k in ("live", "other_host", "older_version_recent", "unrelated")}
    assert left == kept | {"last.pt"}


def test_resume_at_an_epoch_boundary_is_exact_and_keeps_the_best_nll(tmp_path):
    """A run stopped after epoch 2 and resumed with a freshly built (reseeded) loader equals a straight run."""
    x, y = blobs(96, seed=4)
    xv, yv = blobs(48, seed=5)

    def make_loader():
        ds = torch.utils.data.TensorDataset(x, y)
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5))

    val = loader(xv, yv, shuffle=False)
    torch.manual_seed(11)
    straight = make_trainer(tmp_path / "a")
    straight.fit(make_loader(), epochs=4, val_loader=val)
    torch.manual_seed(11)
    first = make_trainer(tmp_path / "b")
    first.fit(make_loader(), epochs=2, val_loader=val)
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert state["best_val_nll"] == first.best_val_nll < float("inf")
    torch.manual_seed(0)
    resumed = make_trainer(tmp_path / "b", model_seed=3)
    resumed.fit(make_loader(), epochs=4, val_loader=val, resume=True)
    assert resumed.step_count == straight.step_count == 24
    assert_same_parameters(straight, resumed)


def test_a_checkpoint_missing_an_entry_is_refused_by_name(tmp_path):
    trainer = make_trainer(p_x_weight=0.0)
    trainer.step(*batches(1)[0])
    state = trainer.state_dict()
    del state["optimizer"]
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        make_trainer(p_x_weight=0.0).load_state_dict(state)


def test_trainer_states_are_recognised_by_format_and_keys():
    from jemfast.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEYS, check_trainer_state

    trainer = make_trainer(p_x_weight=0.0)
    state = trainer.state_dict()
    assert state["format"] == CHECKPOINT_FORMAT and set(CHECKPOINT_KEYS) <= set(state)
    check_trainer_state(state)
    with pytest.raises(CheckpointError, match=r"not a jemfast.trainer/1 checkpoint \(format = 'list'\)"):
        check_trainer_state([])
    with pytest.raises(CheckpointError, match=r"format = 'jemfast.trainer/0'"):
        check_trainer_state({**state, "format": "jemfast.trainer/0"})
    with pytest.raises(CheckpointError, match="lacks fit, ranks; a jemfast.trainer/1 checkpoint has model, "):
        check_trainer_state({k: v for k, v in state.items() if k not in ("fit", "ranks")})


def test_model_weights_come_from_a_trainer_state_or_a_plain_state_dict():
    from jemfast.train.checkpoint import model_weights

    source, own = mlp(1), mlp(2)
    state = make_trainer(p_x_weight=0.0).state_dict()
    assert model_weights(state, own.state_dict()) is state["model"]
    plain = source.state_dict()
    assert model_weights(plain, own.state_dict()) is plain
    with pytest.raises(ValueError, match=r"missing \['4.bias'\], unexpected \[\]"):
        model_weights({k: v for k, v in plain.items() if k != "4.bias"}, own.state_dict())
    with pytest.raises(ValueError, match=r"0.weight has shape \(32, 3\) in the source and \(32, 2\) here"):
        model_weights({**plain, "0.weight": torch.zeros(32, 3)}, own.state_dict())


def test_to_cpu_keeps_the_containers():
    from jemfast.train.checkpoint import to_cpu

    leaf = torch.ones(2, requires_grad=True)
    tree = {"a": [leaf, (leaf * 2, 3)], "b": None}
    out = to_cpu(tree)
    assert isinstance(out["a"], list) and isinstance(out["a"][1], tuple) and out["b"] is None
    assert not out["a"][0].requires_grad and out["a"][1][1] == 3
    assert torch.equal(out["a"][1][0], torch.full((2,), 2.0))
