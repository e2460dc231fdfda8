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
"""

from jemfast.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from jemfast.train.default_sampler import DefaultSampler
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
    "StepMetrics",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]
