"""JEMTrainer: drop-in Joint Energy-based Model training for any classifier.

One iteration (``JEMTrainer.step``)::

    x = x + data_noise * randn_like(x)                # the reference's Gaussian data noise
    x_neg = sampler.sample(B)                         # SGLD from the replay buffer, detached
    logits = model(cat[x, x_neg])                     # one forward (two with batch norm)
    loss = objective(logits[:B], y, logits[B:]).loss  # a JEMLoss (jemfast.train.objective): the paper's loss

followed by the optimizer (and step-wise scheduler) step. With
``objective=JEMLoss(p_x_weight=0.0)`` no sampling runs and the same code trains a plain
softmax classifier, the paper's baseline::

    trainer = JEMTrainer(model, optimizer, objective=JEMLoss(energy_l2=0.1),
                         sampler=DefaultSampler("jem", buffer_size=10000), scheduler=scheduler)
    baseline = JEMTrainer(model, optimizer, objective=JEMLoss(p_x_weight=0.0))

A :class:`~jemfast.train.DefaultSampler` (or None, its defaults) has the trainer build its
sampler; an ``SGLDSampler`` of your own is used as given.

Data and samples share one forward so DDP sees a single forward/backward per step;
a model with batch-norm layers gets two forwards instead (``joint_forward``), so data
and samples are normalised with their own batch statistics, as in the references.
Samples never move the running statistics that evaluation uses: their forward (and
the sampler's chain) runs under :func:`jemfast.sampling.frozen_norm_statistics`.

Host syncs happen only every ``sync_every`` steps: then step records are written,
the divergence guard checks its flag and the progress display updates.

This module is the loop. The steps around it have modules of their own in jemfast.train
(the package docstring lists them all): ``arguments`` (the constructor's arguments and its
deprecated keywords), ``batch_checks`` (a batch before its step), ``precision`` (autocast and
the optimizer update), ``evaluation`` (accuracy, NLL, ECE; validation at an epoch end),
``data_position`` (where a fit stands in its data) and ``checkpoint`` (files, RNG states and
the format of :meth:`JEMTrainer.state_dict`).

Run directory layout (``run_dir``)::

    metrics.jsonl          config / step / epoch / rollback records (see jemfast.train.run_log)
    checkpoints/last.pt    written at every epoch end, every ``checkpoint_every`` steps and
                           on KeyboardInterrupt; ``fit(resume=True)`` continues from it
    checkpoints/best.pt    the state with the lowest validation NLL so far
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from jemfast._checks import check_int, check_number
from jemfast.ops.philox import derive_seed
from jemfast.profiling import nvtx_range
from jemfast.sampling.norm_stats import frozen_norm_statistics
from jemfast.train import distributed as dist_utils
from jemfast.train.arguments import (
    check_options,
    device_argument,
    guard_argument,
    joint_forward_argument,
    objective_argument,
    sampler_argument,
)
from jemfast.train.batch_checks import check_batch, check_batch_values, infer_n_classes
from jemfast.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng_state,
    check_trainer_state,
    clone_state,
    load_checkpoint,
    model_weights,
    restore_rng_state,
    save_checkpoint,
    to_cpu,
)
from jemfast.train.data_position import epoch_batches, epoch_start
from jemfast.train.default_sampler import DefaultSampler
from jemfast.train.evaluation import NonFiniteLogits, evaluate_model, guarded_validation
from jemfast.train.guard import DivergenceError, DivergenceGuard, weights_not_finite
from jemfast.train.interrupt import StepInterrupts
from jemfast.train.objective import JEMLoss
from jemfast.train.precision import autocast, grad_scaler, optimizer_update
from jemfast.train.run_log import RunLog
from jemfast.train.schedule import scale_learning_rates
from jemfast.train.step_metrics import StepClock, StepMetrics, step_records

if TYPE_CHECKING:
    from jemfast.sampling.sampler import SGLDSampler

__all__ = ["JEMTrainer", "NonFiniteLogits"]

logger = logging.getLogger(__name__)

# Random streams a trainer seeds, each keyed by derive_seed(seed, rank, stream, ...) so that
# no two (rank, stream) pairs share a key (seed + rank + k would: rank r's k+1 is rank r+1's k).
_BUFFER_STREAM, _NOISE_STREAM, _ROLLBACK_STREAM, _RESUME_STREAM, _RANK_STREAM = range(5)


class JEMTrainer:
    """Trains a classifier ``model: (N, *sample_shape) -> (N, C) logits`` as a JEM.

    Args:
        model: any classifier module, optionally wrapped in DistributedDataParallel.
        optimizer: a torch optimizer over the model's parameters (see :func:`paper_optimizer`).
        sampler: where the samples x~ come from. An ``SGLDSampler`` over the *underlying*
            module; a :class:`DefaultSampler`, the settings of a sampler the trainer builds
            itself (a replay buffer of ``sample_shape`` rows on ``device``), here when
            ``sample_shape`` is given, else at the first step, shaped like its batch; or None
            for ``DefaultSampler()`` (the JEM preset, 10000 rows). Unused when the objective
            draws no samples (``p_x_weight == 0``).
        objective: the loss, a :class:`JEMLoss` (its weights and energy temperature); None is
            ``JEMLoss()``. ``JEMLoss(p_x_weight=0.0)`` trains the softmax baseline.
        scheduler: learning-rate scheduler, stepped after every optimizer step
            (``scheduler_interval="step"``) or every epoch (``"epoch"``).
        run_dir: directory for metrics.jsonl and checkpoints/; None writes nothing.
        amp_dtype: None (fp32), torch.bfloat16 or torch.float16 (with a gradient scaler on CUDA).
            Prefer bfloat16: torch's GradScaler reads its inf check on the host, one sync
            per step that float16 training cannot avoid.
        grad_clip: max global gradient norm, or None.
        n_classes: number of classes; None infers it from one no-grad eval forward of the first batch.
        device: where training runs; None uses the model's parameters' device.
        sync_every: steps between host syncs (logging, guard check); None: 1 on CPU, 25 on GPU.
        guard: a :class:`DivergenceGuard`, True for the defaults, or False/None for none.
        seed: the default sampler's buffer and noise, rollback reseeds and (under DDP) a given
            sampler's streams get keys derived from (seed, rank, stream) by
            :func:`jemfast.ops.derive_seed`.
        check_values: check inputs for NaN/Inf and labels for range before a step: "auto" checks
            CPU tensors only (``fit`` checks every batch before moving it to the device), True
            always (a host sync per step on a GPU), False never.
        progress: force (True) or suppress (False) the tqdm bar; None uses it on a terminal.
        joint_forward: run data and samples through the model as one batch (one forward,
            one backward). None (default) does so unless the model has batch-norm layers:
            then data and samples go through separate forwards, so each is normalised with
            its own batch statistics, as in the JEM++ and SADA-JEM references, and only the
            data's forward updates the running statistics. True is refused for a model
            with running statistics (samples would enter them).
        data_noise: standard deviation of Gaussian noise added to every training input,
            in the input's units (the JEM reference adds 0.03 to images in [-1, 1]; see
            the recipes for the value on normalised log-Mel features). 0 adds none.
        sample_shape: the shape of one input, e.g. ``(1, 32, 192)`` (channel, log-Mel bands,
            frames). Given, the default sampler is built with the trainer and every batch must
            have it; None takes it from the first batch.

    Deprecated keywords, each still accepted with a DeprecationWarning: ``p_x_weight``,
    ``p_y_weight``, ``energy_l2``, ``temperature`` (use ``objective=JEMLoss(...)``; a number
    as the 4th positional argument is taken as ``p_x_weight``) and ``buffer_size``,
    ``sampler_preset``, ``sampler_options`` (use ``sampler=DefaultSampler(buffer_size=...,
    preset=..., options=...)``; with a given ``SGLDSampler`` they have no effect).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sampler: SGLDSampler | DefaultSampler | None = None,
        objective: JEMLoss | None = None,
        scheduler: Any = None,
        run_dir: str | Path | None = None,
        *,
        amp_dtype: torch.dtype | None = None,
        grad_clip: float | None = None,
        scheduler_interval: str = "step",
        n_classes: int | None = None,
        device: str | torch.device | None = None,
        sync_every: int | None = None,
        guard: DivergenceGuard | bool | None = True,
        seed: int = 0,
        check_values: bool | str = "auto",
        progress: bool | None = None,
        joint_forward: bool | None = None,
        data_noise: float = 0.0,
        sample_shape: tuple[int, ...] | None = None,
        **deprecated: Any,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.objective = objective_argument(objective, deprecated)
        self.sampler, self.default_sampler = sampler_argument(sampler, deprecated)
        if deprecated:
            raise TypeError(f"JEMTrainer got an unexpected keyword argument {next(iter(deprecated))!r}")
        check_options(
            scheduler=scheduler,
            amp_dtype=amp_dtype,
            grad_clip=grad_clip,
            scheduler_interval=scheduler_interval,
            n_classes=n_classes,
            sync_every=sync_every,
            check_values=check_values,
            data_noise=data_noise,
            sample_shape=sample_shape,
        )
        self.model = model
        self.module = dist_utils.unwrap_model(model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.amp_dtype = amp_dtype
        self.grad_clip = grad_clip
        self.n_classes = n_classes
        self.device = device_argument(device, self.module)
        self.sync_every = sync_every or (25 if self.device.type == "cuda" else 1)
        self.guard = guard_argument(guard)
        self.seed = int(seed)
        self.check_values = check_values
        self.joint_forward = joint_forward_argument(joint_forward, self.module)
        self.data_noise = float(data_noise)
        self._setup_distributed()
        self.log = RunLog(run_dir, enabled=self.rank == 0, progress=progress)
        self.run_dir = self.log.run_dir
        self._init_state(sample_shape)
        if self.uses_sampling and self.sampler is None and self._sample_shape is not None:
            self._build_default_sampler(self._sample_shape, self.device)

    # ------------------------------------------------------------------ set-up steps
    def _setup_distributed(self) -> None:
        self.rank = dist_utils.get_rank()
        self.world_size = dist_utils.get_world_size()
        if self.sampler is not None and self.world_size > 1 and hasattr(self.sampler, "reseed"):
            # Ranks built from one script share every seed; without this, their chains would be
            # identical copies and the extra ranks would add no samples.
            self.sampler.reseed(derive_seed(self.seed, self.rank, _RANK_STREAM))
        if self.world_size > 1 and self.device.type == "cuda" and self.device.index is not None:
            # NCCL's object collectives (checkpoints, pooled validation) use the current
            # device; under torchrun it must be this rank's.
            torch.cuda.set_device(self.device)

    def _init_state(self, sample_shape: tuple[int, ...] | None) -> None:
        """The state of a run that has not started: counters, the guard's snapshot, pending records."""
        self._interrupts = StepInterrupts()
        self.step_count = 0
        self.epoch = 0
        self.rollbacks = 0
        self.lr_scale = 1.0
        self.best_val_nll = math.inf
        self._sample_shape: tuple[int, ...] | None = tuple(sample_shape) if sample_shape is not None else None
        self._pending_sampler_state: dict | None = None
        self._reseed_after_load: int | None = None
        self._snapshot: dict | None = None
        self._snapshot_step = -1
        # True while the snapshot equals the current state (taken since the last change), so a
        # checkpoint can say "current" instead of storing a second copy.
        self._snapshot_is_current = False
        self._pending: list[StepMetrics] = []
        self._epoch_sums: torch.Tensor | None = None
        self._fit_state: dict[str, Any] = epoch_start()  # see jemfast.train.data_position
        self._clock = StepClock(self.device)
        self._scaler = grad_scaler(self.device, self.amp_dtype)

    # ------------------------------------------------------------------ properties
    @property
    def uses_sampling(self) -> bool:
        """True when a step draws samples (``objective.p_x_weight > 0``)."""
        return self.objective.uses_samples

    @property
    def p_x_weight(self) -> float:
        """The objective's weight of log p(x) (read-only: ``objective.p_x_weight``)."""
        return self.objective.p_x_weight

    @property
    def p_y_weight(self) -> float:
        """The objective's weight of log p(y | x) (read-only: ``objective.p_y_weight``)."""
        return self.objective.p_y_weight

    @property
    def energy_l2(self) -> float:
        """The objective's weight of the energies' L2 penalty (read-only: ``objective.energy_l2``)."""
        return self.objective.energy_l2

    @property
    def temperature(self) -> float:
        """The energy temperature T (read-only: ``objective.temperature``)."""
        return self.objective.temperature

    def _active_sampler(self) -> bool:
        return self.uses_sampling and self.sampler is not None

    def config(self) -> dict[str, Any]:
        """Plain-value description of the trainer's settings (the ``"config"`` record of metrics.jsonl)."""
        if self.sampler is not None:
            sampler = type(self.sampler).__name__
        else:
            sampler = self.default_sampler.describe() if self.uses_sampling else None
        if self.default_sampler is not None:
            buffer_size = self.default_sampler.buffer_size
        else:
            buffer_size = getattr(getattr(self.sampler, "buffer", None), "size", None)
        return {
            "model": type(self.module).__name__,
            "optimizer": type(self.optimizer).__name__,
            "optimizer_defaults": {
                k: v for k, v in self.optimizer.defaults.items() if isinstance(v, (int, float, bool))
            },
            "scheduler": type(self.scheduler).__name__ if self.scheduler is not None else None,
            "scheduler_interval": self.scheduler_interval,
            "sampler": sampler,
            "p_x_weight": self.p_x_weight,
            "p_y_weight": self.p_y_weight,
            "energy_l2": self.energy_l2,
            "amp_dtype": str(self.amp_dtype) if self.amp_dtype is not None else None,
            "grad_clip": self.grad_clip,
            "temperature": self.temperature,
            "joint_forward": self.joint_forward,
            "data_noise": self.data_noise,
            "n_classes": self.n_classes,
            "device": str(self.device),
            "world_size": self.world_size,
            "sync_every": self.sync_every,
            "buffer_size": buffer_size,
            "seed": self.seed,
            "guard": {
                k: getattr(self.guard, k)
                for k in ("gap_threshold", "loss_threshold", "max_rollbacks", "lr_factor", "snapshot_every", "enabled")
            },
        }

    # ------------------------------------------------------------------ batch checks
    def validate_batch(self, x: Any, y: Any, check_values: bool | None = None) -> None:
        """Raise TypeError/ValueError for a malformed batch; changes no state but ``n_classes``.

        Args:
            x: (N, *sample_shape) floating tensor.
            y: (N,) integer class labels in [0, n_classes).
            check_values: look at the values (NaN/Inf, label range); None follows ``check_values``.

        See :mod:`jemfast.train.batch_checks`.
        """
        sample_shape = self._sample_shape
        if sample_shape is None and self.uses_sampling and self.sampler is not None:
            sample_shape = tuple(getattr(getattr(self.sampler, "buffer", None), "sample_shape", ()) or ()) or None
        check_batch(x, y, sample_shape)
        if check_values is None:
            check_values = self.check_values is True or (self.check_values == "auto" and x.device.type == "cpu")
        if self.n_classes is None:
            self.n_classes = infer_n_classes(self.module, x, self.device, check_finite=bool(check_values))
        if check_values:
            check_batch_values(x, y, self.n_classes)

    # ------------------------------------------------------------------ sampler
    def _build_default_sampler(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.sampler = self.default_sampler.build(
            self.module,
            shape,
            device,
            buffer_seed=derive_seed(self.seed, self.rank, _BUFFER_STREAM),
            noise_seed=derive_seed(self.seed, self.rank, _NOISE_STREAM),
            temperature=self.temperature,
            amp_dtype=self.amp_dtype,
        )

    def _prepare_sampler(self, x: torch.Tensor) -> None:
        if self.sampler is None:
            self._build_default_sampler(tuple(x.shape[1:]), x.device)
        if self._pending_sampler_state is not None:
            state, reseed = self._pending_sampler_state, self._reseed_after_load
            self._pending_sampler_state = self._reseed_after_load = None
            self._load_sampler_state(state, reseed)

    # ------------------------------------------------------------------ one iteration
    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepMetrics:
        """One training iteration on the batch ``x: (N, *sample_shape)``, ``y: (N,)``.

        Returns:
            A mapping ``name -> float`` (see :class:`StepMetrics`); values are read from the
            device only when accessed, so ignoring them costs no host sync.

        Raises:
            TypeError/ValueError: malformed batch, before any state changes.
            DivergenceError: the divergence guard ran out of rollbacks.
        """
        self.validate_batch(x, y)
        with self._interrupts.step(), nvtx_range("train/step"):
            return self._train_step(x, y)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepMetrics:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True).long()
        if self._sample_shape is None:
            self._sample_shape = tuple(x.shape[1:])
        if self.data_noise > 0:
            x = x + self.data_noise * torch.randn_like(x)
        if self.uses_sampling:
            self._prepare_sampler(x)
        if self.guard.enabled and self._snapshot is None:
            self._take_snapshot()

        t_start = self._clock.mark()
        t_sampled = None
        batch = x.shape[0]
        x_neg = None
        if self.uses_sampling:
            x_neg = self.sampler.sample(batch).to(x.dtype)
            t_sampled = self._clock.mark()

        self.model.train()
        with autocast(self.device, self.amp_dtype):
            if x_neg is None:
                logits_all = self.model(x)
            elif self.joint_forward:
                logits_all = self.model(torch.cat([x, x_neg], 0))
            else:
                # The samples' forward goes through the unwrapped module: under DDP the
                # gradients of both forwards meet in each parameter's accumulator before
                # its all-reduce hook fires, so one backward still syncs once.
                logits_data = self.model(x)
                with frozen_norm_statistics(self.module):
                    logits_all = torch.cat([logits_data, self.module(x_neg)], 0)
        if not logits_all.is_floating_point():
            raise TypeError(
                f"the model returned {logits_all.dtype} logits; a JEM needs floating-point logits "
                "(the energy and its input gradient are taken from them)"
            )
        logits = logits_all[:batch]
        terms = self.objective(logits, y, logits_all[batch:] if self.uses_sampling else None)
        loss, ce, e_data, e_samples = terms.loss, terms.ce, terms.e_data, terms.e_samples
        gap = terms.e_gap if self.uses_sampling else None

        optimizer_update(loss, self.model, self.optimizer, scaler=self._scaler, grad_clip=self.grad_clip)
        lr = self._current_lr()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        t_end = self._clock.mark()

        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
            values = torch.stack([ce, acc, e_data, e_samples, terms.e_gap, loss]).detach()
        self.guard.observe(loss, gap)
        self.step_count += 1
        self._snapshot_is_current = False
        metrics = StepMetrics(self.step_count, self.epoch, values, lr, self._clock, (t_start, t_sampled, t_end))
        self._pending.append(metrics)
        sums = torch.stack([ce.detach(), acc, torch.ones((), device=self.device)])
        self._epoch_sums = sums if self._epoch_sums is None else self._epoch_sums + sums
        if self.step_count % self.sync_every == 0:
            self.sync()
        return metrics

    # ------------------------------------------------------------------ sync, guard
    def sync(self) -> None:
        """Write pending step records, check the divergence guard and update the display.

        Called every ``sync_every`` steps and at the end of each epoch; the only host sync
        of the training loop.
        """
        pending, self._pending = self._pending, []
        if pending:
            for record in step_records(pending):
                self.log.write(record)
            self.log.progress(len(pending), dict(pending[-1].materialise()))
        if not self.guard.enabled:
            return
        flag = self.guard.pending_flag()
        self.guard.reset()
        bad = torch.zeros((), dtype=torch.bool, device=self.device) if flag is None else flag
        bad = (bad | weights_not_finite(self.module, self.device)).to(torch.uint8)
        if self.world_size > 1:
            bad = dist_utils.all_reduce_max_(bad.clone())
        if bool(bad):
            self._rollback("non-finite or exploding loss / energy gap, or non-finite weights")
        elif self.step_count - self._snapshot_step >= self.guard.snapshot_every:
            self._take_snapshot()

    # One state path: the optimisation state below is what a rollback restores and the core of
    # every checkpoint (state_dict adds counters, the fit position and per-rank sampler/RNG states).
    def _optimisation_state(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "step": self.step_count,
            "lr_scale": self.lr_scale,
        }

    def _load_optimisation_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self._scaler is not None and state["scaler"] is not None:
            self._scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.lr_scale = float(state["lr_scale"])

    def _load_sampler_state(self, state: dict[str, Any] | None, reseed: int | None = None) -> None:
        """Load (and optionally reseed) the sampler now, or on the first batch if it is not built yet."""
        if state is None:
            return
        if self.sampler is None:
            self._pending_sampler_state, self._reseed_after_load = state, reseed
            return
        self.sampler.load_state_dict(state)
        if reseed is not None:
            self.sampler.reseed(reseed)

    def _take_snapshot(self) -> None:
        sampler = self.sampler.state_dict() if self._active_sampler() else self._pending_sampler_state
        self._snapshot = clone_state({**self._optimisation_state(), "sampler": sampler})
        self._snapshot_step = self.step_count
        self._snapshot_is_current = True

    def scale_learning_rates(self, ratio: float) -> None:
        """Multiply every learning rate by ``ratio``: the optimizer's, and the scheduler's base
        rates, so the rest of the schedule follows (e.g. a resumed run with a new peak rate)."""
        ratio = check_number("ratio", ratio, positive=True)
        self._snapshot_is_current = False
        scale_learning_rates(self.optimizer, self.scheduler, ratio)
        self._retake_snapshot()

    def set_optimizer_options(self, **options: float) -> None:
        """Set options such as ``momentum`` or ``weight_decay`` in every optimizer parameter group
        (e.g. a resumed run with new settings). Unknown options raise ValueError."""
        for key, value in options.items():
            if any(key not in group for group in self.optimizer.param_groups):
                raise ValueError(f"the optimizer has no option {key!r}")
            for group in self.optimizer.param_groups:
                group[key] = value
        self._retake_snapshot()

    def _retake_snapshot(self) -> None:
        # The user changed how the run optimises: a rollback must return to a state that
        # trains with the new settings, not to one saved before they were given.
        if self._snapshot is not None:
            self._take_snapshot()

    def _rollback(self, reason: str) -> None:
        failed_step = self.step_count
        if self.rollbacks >= self.guard.max_rollbacks:
            raise DivergenceError(
                f"training diverged at step {failed_step} ({reason}) after {self.rollbacks} rollback(s); "
                f"the guard allows max_rollbacks={self.guard.max_rollbacks}. Lower the learning rate or the "
                f"SGLD step size, or raise DivergenceGuard.max_rollbacks (train.max_rollbacks in a recipe)"
            )
        self.rollbacks += 1
        new_scale = self.lr_scale * self.guard.lr_factor
        snapshot = clone_state(self._snapshot)
        self._load_optimisation_state(snapshot)
        self._load_sampler_state(snapshot["sampler"])
        scale_learning_rates(self.optimizer, self.scheduler, new_scale / self.lr_scale)
        self.lr_scale = new_scale
        self._pending.clear()
        self._epoch_sums = None  # the rolled-back steps no longer count towards the epoch's means
        if self._active_sampler():
            self.sampler.reseed(derive_seed(self.seed, self.rank, _ROLLBACK_STREAM, self.rollbacks))
        self._snapshot_is_current = False
        record = {
            "kind": "rollback",
            "step": failed_step,
            "restored_step": self.step_count,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "lr": self._current_lr(),
            "reason": reason,
        }
        self.log.write(record)
        logger.warning(
            "divergence at step %d (%s): rolled back to step %d, learning rate x%.3g (rollback %d of %d)",
            failed_step,
            reason,
            self.step_count,
            self.lr_scale,
            self.rollbacks,
            self.guard.max_rollbacks,
        )

    # ------------------------------------------------------------------ checkpoints
    def _rank_state(self) -> dict[str, Any]:
        sampler_state = self.sampler.state_dict() if self._active_sampler() else self._pending_sampler_state
        state = {"sampler": to_cpu(sampler_state), "rng": capture_rng_state()}
        if self._snapshot is not None and not self._snapshot_is_current:
            state["snapshot_sampler"] = to_cpu(self._snapshot["sampler"])
        return state

    def _guard_snapshot_entry(self) -> Any:
        """The divergence guard's snapshot for a checkpoint: None, "current" (it is the state
        being saved) or ``{"step", "state"}`` with its optimisation state. Without it a resumed
        run would roll back to a different state than an uninterrupted one."""
        if self._snapshot is None:
            return None
        if self._snapshot_is_current:
            return "current"
        state = {k: v for k, v in self._snapshot.items() if k != "sampler"}
        return {"step": self._snapshot_step, "state": to_cpu(state)}

    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, scheduler, scaler, each rank's sampler
        (replay buffer included) and RNG states, counters and the guard's tallies.

        Under DDP, ``gather=True`` is a collective (every rank must call it); ``gather=False``
        keeps only this rank's sampler/RNG entry (other ranks are reseeded on resume).
        """
        own = self._rank_state()
        ranks = dist_utils.all_gather_objects(own) if gather else [own]
        return {
            "format": CHECKPOINT_FORMAT,
            **self._optimisation_state(),
            "epoch": self.epoch,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "best_val_nll": self.best_val_nll,
            "n_classes": self.n_classes,
            "sample_shape": list(self._sample_shape) if self._sample_shape is not None else None,
            "fit": {
                "batch_in_epoch": self._fit_state["batch_in_epoch"],
                "epoch_rng": self._fit_state["epoch_rng"],
                "epoch_gen": self._fit_state["epoch_gen"],
                "next_gen": self._fit_state.get("next_gen"),
                "epoch_sums": self._epoch_sums.tolist() if self._epoch_sums is not None else None,
            },
            "guard_snapshot": self._guard_snapshot_entry(),
            "world_size": len(ranks),
            "ranks": ranks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. This rank takes entry ``rank`` of the saved per-rank
        states; with more ranks than were saved, a rank takes entry ``rank % saved`` and its
        sampler is reseeded so its chains differ."""
        check_trainer_state(state)
        if self._pending:
            self.sync()
        self._load_optimisation_state(state)
        self.epoch = int(state["epoch"])
        self.rollbacks = int(state["rollbacks"])
        self.best_val_nll = float(state["best_val_nll"])
        if state["n_classes"] is not None:
            self.n_classes = int(state["n_classes"])
        if state["sample_shape"] is not None:
            self._sample_shape = tuple(state["sample_shape"])
        fit = dict(state["fit"])
        epoch_sums = fit.pop("epoch_sums", None)  # absent from older checkpoints
        self._fit_state = fit
        ranks = state["ranks"]
        own = ranks[self.rank % len(ranks)]
        # A rank beyond those saved starts from another rank's chains: reseed so they differ.
        reseed = None if self.rank < len(ranks) else derive_seed(self.seed, self.rank, _RESUME_STREAM)
        self._load_sampler_state(own["sampler"], reseed)
        restore_rng_state(own["rng"])
        self._restore_guard_snapshot(state.get("guard_snapshot"), own.get("snapshot_sampler"))
        self.guard.reset()
        self._epoch_sums = (
            torch.tensor(epoch_sums, dtype=torch.float32, device=self.device) if epoch_sums is not None else None
        )

    def _restore_guard_snapshot(self, entry: Any, sampler_state: dict | None) -> None:
        """Take back the snapshot a checkpoint was saved with (see :meth:`_guard_snapshot_entry`);
        older checkpoints have none, and the first step then takes one."""
        self._snapshot, self._snapshot_step, self._snapshot_is_current = None, -1, False
        if not self.guard.enabled or entry is None:
            return
        if entry == "current":
            self._take_snapshot()
        elif isinstance(entry, dict) and "step" in entry and "state" in entry:
            self._snapshot = {**entry["state"], "sampler": sampler_state}
            self._snapshot_step = int(entry["step"])
        else:
            raise CheckpointError(f"checkpoint's guard_snapshot entry is malformed: {type(entry).__name__}")

    def save_checkpoint(self, path: str | Path, gather: bool = True) -> Path | None:
        """Write :meth:`state_dict` atomically to ``path`` from rank 0 (a collective under DDP
        when ``gather``). Returns the path on rank 0, None elsewhere."""
        state = self.state_dict(gather=gather)
        written = save_checkpoint(path, state) if self.rank == 0 else None
        if gather:
            dist_utils.barrier()
        return written

    def init_model_from(self, source: str | Path | dict[str, Any]) -> None:
        """Start from another run's weights: energy fine-tuning of a trained classifier.

        Only the model's weights (and batch-norm statistics) are taken; the optimizer,
        scheduler, sampler, counters and random streams stay this trainer's own, so the
        run that follows is a fresh run from those weights.

        Args:
            source: a jemfast checkpoint file (``checkpoints/best.pt`` of a softmax run, say),
                a checkpoint dict, or a plain ``state_dict`` of the model.

        Raises:
            ValueError: this trainer has already taken a step (use ``fit(resume=...)`` to
                continue a run), or the weights do not fit the model (names the first mismatch).
            CheckpointError: the file is missing or unsafe.
        """
        if self.step_count > 0:
            raise ValueError(f"init_model_from starts a run; this trainer is already at step {self.step_count}")
        state = load_checkpoint(source, map_location="cpu") if isinstance(source, (str, Path)) else source
        if not isinstance(state, dict):
            raise ValueError(f"init_model_from expects a checkpoint or a state_dict, got {type(state).__name__}")
        self.module.load_state_dict(model_weights(state, self.module.state_dict()))
        self._snapshot = None
        self._snapshot_step = -1
        self._snapshot_is_current = False
        logger.info("initialised the model from %s", source if isinstance(source, (str, Path)) else "a state dict")

    def load_checkpoint(self, path: str | Path) -> None:
        """Resume from a file written by :meth:`save_checkpoint` (safe loading, no code runs)."""
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        logger.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step_count)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Accuracy (percent), NLL (nats) and ECE (percent) of the model on ``loader``.

        Under DDP every rank evaluates the batches its loader yields and the logits of all
        ranks are pooled (see :func:`jemfast.train.evaluation.evaluate_model`).
        """
        return evaluate_model(
            self.module, loader, device=self.device, amp_dtype=self.amp_dtype, world_size=self.world_size
        )

    # ------------------------------------------------------------------ fit
    def _checkpoint_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints"

    def fit(
        self,
        train_loader: Iterable,
        epochs: int,
        val_loader: Iterable | None = None,
        *,
        resume: bool | str | Path = False,
        checkpoint_every: int | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        config: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete (counting epochs done before a resume).

        Args:
            train_loader: iterable of ``(x, y, ...)`` batches, CPU tensors preferred (they are
                checked before the transfer).
            epochs: total number of epochs.
            val_loader: evaluated at each epoch end (val_acc, val_nll, val_ece).
            resume: True continues from ``run_dir/checkpoints/last.pt`` if it exists; a path
                continues from that file.
            checkpoint_every: also write last.pt every this many steps.
            callback: called with each epoch record.
            config: extra plain values for the ``"config"`` record of metrics.jsonl.

        Returns:
            The epoch records of this call, in order.

        Ctrl-C lets the current step finish, then writes a resumable last.pt and re-raises
        the KeyboardInterrupt; a second Ctrl-C within the same step stops at once and writes
        nothing (see jemfast.train.interrupt).
        """
        check_int("epochs", epochs, minimum=1)
        if checkpoint_every is not None:
            check_int("checkpoint_every", checkpoint_every, minimum=1)
        ckpt_dir = self._checkpoint_dir()
        if resume:
            path = Path(resume) if not isinstance(resume, bool) else (ckpt_dir / "last.pt" if ckpt_dir else None)
            if path is None:
                raise ValueError("resume=True needs a run_dir (or pass the checkpoint path)")
            if path.is_file():
                self.load_checkpoint(path)
            elif not isinstance(resume, bool):
                raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
        self.log.write_config({**self.config(), **(config or {})})
        history: list[dict[str, Any]] = []
        try:
            with self._interrupts.listening():
                while self.epoch < epochs:
                    history.append(self._run_epoch(train_loader, val_loader, checkpoint_every, callback))
        except KeyboardInterrupt:
            self.log.close_bar()
            if self._interrupts.torn:
                logger.warning(
                    "interrupted in the middle of step %d: that state is inconsistent, so no checkpoint "
                    "was written from it%s",
                    self.step_count + 1,
                    f"; {ckpt_dir / 'last.pt'} holds the last complete one" if ckpt_dir else "",
                )
            elif ckpt_dir is not None:
                # Other ranks may be gone already; never block on a collective here. A single
                # process checks the steps since the last sync first (a rollback may follow).
                try:
                    if self.world_size == 1:
                        self.sync()
                except DivergenceError as exc:
                    logger.warning(
                        "interrupted after a divergence the guard could not roll back (%s); no "
                        "checkpoint was written from it",
                        exc,
                    )
                else:
                    self.save_checkpoint(ckpt_dir / "last.pt", gather=False)
                    logger.warning(
                        "interrupted at step %d; resumable checkpoint written to %s",
                        self.step_count,
                        ckpt_dir / "last.pt",
                    )
            raise
        finally:
            self.log.close_bar()
        return history

    def _run_epoch(self, train_loader, val_loader, checkpoint_every, callback) -> dict[str, Any]:
        started = time.perf_counter()
        total = len(train_loader) if hasattr(train_loader, "__len__") else None
        self.log.start_epoch(self.epoch, total)
        if self._fit_state["batch_in_epoch"] == 0:  # else a resumed epoch keeps the sums saved with it
            self._epoch_sums = None
        for batch in epoch_batches(train_loader, self.epoch, self._fit_state):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise TypeError(f"train_loader must yield (x, y, ...) batches, got {type(batch).__name__}")
            x, y = batch[0], batch[1]
            self.validate_batch(x, y, check_values=self.check_values is not False)
            with self._interrupts.step():  # Ctrl-C lands between steps, never inside one
                self._train_step(x, y)
                self._fit_state["batch_in_epoch"] += 1
            if checkpoint_every and self.step_count % checkpoint_every == 0 and self.run_dir is not None:
                self.sync()  # a checkpoint holds only weights the guard has checked
                if self.step_count % checkpoint_every == 0:  # not rolled back to another step
                    self.save_checkpoint(self._checkpoint_dir() / "last.pt")
        self.sync()
        if self._fit_state["batch_in_epoch"] == 0:
            raise ValueError("train_loader yielded no batches")
        # None when a rollback at the epoch's last sync discarded every counted step.
        sums = self._epoch_sums.clone() if self._epoch_sums is not None else torch.zeros(3, device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(sums)
        ce_sum, acc_sum, count = sums.tolist()
        self.epoch += 1
        # The position records where the loader's generator stands: a run resumed here sets it
        # back, so its shuffles equal a straight run's (the loader itself is rebuilt, reseeded).
        self._fit_state = epoch_start(train_loader)
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
            self._snapshot_is_current = False
        val = {}
        if val_loader is not None:
            val = guarded_validation(lambda: self.evaluate(val_loader), self.guard, self._rollback)
        if self.guard.enabled and self.step_count > self._snapshot_step:
            # An epoch that passed the guard and validation is a good place to roll back to:
            # short runs would otherwise only ever have the step-0 snapshot.
            self._take_snapshot()
        record = {
            "kind": "epoch",
            "epoch": self.epoch,
            "step": self.step_count,
            "val_acc": val.get("acc"),
            "val_nll": val.get("nll"),
            "val_ece": val.get("ece"),
            "train_ce": ce_sum / count if count else None,
            "train_acc": 100.0 * acc_sum / count if count else None,
            "lr": self._current_lr(),
            "rollbacks": self.rollbacks,
            "time_s": time.perf_counter() - started,
        }
        self.log.write(record)
        logger.info("epoch %d: %s", self.epoch, {k: v for k, v in record.items() if isinstance(v, float)})
        ckpt_dir = self._checkpoint_dir()
        nll = val.get("nll")
        improved = nll is not None and nll < self.best_val_nll
        if improved:  # before last.pt is written, so a resumed run knows its best so far
            self.best_val_nll = nll
        if ckpt_dir is not None:
            self.save_checkpoint(ckpt_dir / "last.pt")
            if improved:
                self.save_checkpoint(ckpt_dir / "best.pt")
        if callback is not None:
            callback(record)
        return record

    def close(self) -> None:
        """Flush pending records and close the metrics file."""
        self.sync()
        self.log.close()
