"""Training: the drop-in JEM trainer, the paper's optimiser recipe and safe checkpoints.

>>> optimizer, scheduler = paper_optimizer(model, steps_per_epoch=len(train_loader))
>>> trainer = JEMTrainer(model, optimizer, scheduler=scheduler, run_dir="runs/demo")
>>> history = trainer.fit(train_loader, epochs=150, val_loader=val_loader)
"""

from jemfast.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from jemfast.train.guard import DivergenceError, DivergenceGuard
from jemfast.train.schedule import WarmupStepDecay, paper_optimizer
from jemfast.train.step_metrics import StepMetrics
from jemfast.train.trainer import JEMTrainer

__all__ = [
    "JEMTrainer",
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
