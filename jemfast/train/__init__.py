"""Training: the drop-in JEM trainer, its objective, the paper's optimiser recipe and safe checkpoints.

>>> optimizer, scheduler = paper_optimizer(model, steps_per_epoch=len(train_loader))
>>> trainer = JEMTrainer(model, optimizer, scheduler=scheduler, run_dir="runs/demo")
>>> history = trainer.fit(train_loader, epochs=150, val_loader=val_loader)

The objective and the sampler the trainer builds are typed settings::

    trainer = JEMTrainer(
        model,
        optimizer,
        sampler=DefaultSampler("jem", buffer_size=10000, options={"n_steps": 20}),
        objective=JEMLoss(p_x_weight=1.0, energy_l2=0.0, temperature=1.0),
    )
    baseline = JEMTrainer(model, optimizer, objective=JEMLoss(p_x_weight=0.0))  # softmax, no sampling

Modules, one job each::

    trainer          JEMTrainer: the training loop (step, sync, rollback, fit) and its state
    objective        the loss: JEMLoss, jem_objective
    default_sampler  the sampler a trainer builds when given none: DefaultSampler
    arguments        the trainer's constructor arguments, checked; its deprecated keywords
    batch_checks     a training batch's types, shapes and values, before its step
    precision        autocast, the float16 gradient scaler, the optimizer update
    guard            divergence checks: DivergenceGuard (the trainer rolls back)
    evaluation       accuracy / NLL / ECE on a loader; validation at an epoch end
    data_position    where a fit stands in its data, so a resume sees a straight run's batches
    checkpoint       safe checkpoint files, RNG states, the trainer's checkpoint format
    step_metrics     per-step metrics kept on the device until read
    run_log          metrics.jsonl and the progress display
    interrupt        Ctrl-C between steps, never inside one
    schedule         the paper's learning-rate schedule; rescaling a run's rates
    distributed      torch.distributed helpers (no-ops in one process)
"""

from jemfast.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from jemfast.train.default_sampler import DefaultSampler
from jemfast.train.evaluation import NonFiniteLogits
from jemfast.train.guard import DivergenceError, DivergenceGuard
from jemfast.train.objective import JEMLoss, JEMObjective, jem_objective
from jemfast.train.schedule import WarmupStepDecay, paper_optimizer
from jemfast.train.step_metrics import StepMetrics
from jemfast.train.trainer import JEMTrainer

__all__ = [
    "JEMTrainer",
    "JEMLoss",
    "JEMObjective",
    "jem_objective",
    "DefaultSampler",
    "paper_optimizer",
    "WarmupStepDecay",
    "DivergenceGuard",
    "DivergenceError",
    "NonFiniteLogits",
    "StepMetrics",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]
