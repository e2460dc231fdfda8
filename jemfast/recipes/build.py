"""What a checked :class:`~jemfast.recipes.config.RunConfig` builds: device, model, optimizer, sampler.

Each builder reads named fields of the config and passes them on by name, so a value
can be followed from the recipe file to the object that uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from jemfast.recipes.config import FEATURE_CLAMP, ConfigError, RunConfig

__all__ = ["resolve_device", "amp_dtype", "build_model", "build_optimizer", "sampler_settings", "build_sampler"]


def resolve_device(name: str):
    """``torch.device`` for train.device; "auto" is CUDA when available, else CPU.

    A CUDA device is also made the current one: CUDA graphs, Triton launches and
    NCCL collectives follow the current device, not the tensors'.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device is {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
        if device.index is not None:
            torch.cuda.set_device(device)
    return device


def amp_dtype(config: RunConfig):
    """torch dtype of train.amp (None for full float32)."""
    import torch

    return {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.train.amp]


def build_model(config: RunConfig, n_classes: int):
    """The config's WideResNet for ``n_classes`` classes; input (N, 1, n_mels, frames), output (N, n_classes)."""
    from jemfast.models import WideResNet

    model = config.model
    return WideResNet(
        depth=model.depth,
        width=model.width,
        num_classes=n_classes,
        in_channels=1,
        norm=model.norm,
        dropout=model.dropout,
    )


def build_optimizer(config: RunConfig, model, steps_per_epoch: int):
    """SGD with the paper's warm-up and step decay (:func:`jemfast.train.paper_optimizer`) from train.*."""
    from jemfast.train import paper_optimizer

    train = config.train
    return paper_optimizer(
        model,
        steps_per_epoch=steps_per_epoch,
        lr=train.lr,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_steps,
        milestones=list(train.milestones),
        gamma=train.gamma,
    )


def sampler_settings(config: RunConfig):
    """The method's :class:`~jemfast.sampling.SamplerSettings`: its preset with the recipe's non-null values.

    sampling.n_steps, step_size and noise_std replace the preset's; sampling.pyld_lr
    replaces jempp's inner step size; sampling.clamp (else :data:`FEATURE_CLAMP` for jempp
    and sadajem) bounds jempp's inner steps and the other methods' samples.
    """
    import dataclasses

    from jemfast.sampling import PRESETS

    method, sampling = config.train.method, config.sampling
    if not config.train.uses_sampling:
        raise ConfigError("the softmax method draws no samples and has no sampler")
    settings = PRESETS[method].settings
    changes = {key: getattr(sampling, key) for key in ("n_steps", "step_size", "noise_std")}
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
    clamp = sampling.clamp if sampling.clamp is not None else (None if method == "jem" else FEATURE_CLAMP)
    if method == "jempp":  # PYLD: the clamp and the learning rate belong to the inner steps
        lr = sampling.pyld_lr if sampling.pyld_lr is not None else settings.step.lr
        return dataclasses.replace(settings, step=dataclasses.replace(settings.step, lr=lr, clamp=clamp))
    return dataclasses.replace(settings, clamp=clamp) if clamp is not None else settings


def build_sampler(
    config: RunConfig,
    model,
    sample_shape: Sequence[int],
    n_classes: int,
    device,
    fit_batches: Iterable[Any] | None = None,
):
    """The method's SGLDSampler over ``model`` with a replay buffer of ``sample_shape`` samples on ``device``.

    ``fit_batches`` ((x, y) batches of training chunks) feed the class_gaussian
    initialisation, which fits one diagonal Gaussian per class; without them
    that buffer stays unfilled until a checkpoint's buffer state is loaded
    (a resumed run). ``sample_shape`` is one sample's shape, ``config.sample_shape`` for
    the recipe's chunks. Returns None for softmax.
    """
    from jemfast.sampling import ReplayBuffer, SGLDSampler

    if not config.train.uses_sampling:
        return None
    seed, init = config.train.seed, config.buffer_init
    buffer = ReplayBuffer(
        tuple(sample_shape),
        size=config.sampling.buffer_size,
        n_classes=None,
        init=init,
        reinit_freq=config.sampling.reinit_freq,
        device=device,
        seed=seed,
    )
    if init == "class_gaussian" and fit_batches is not None:
        buffer.fit_init(fit_batches, n_classes=n_classes)
    return SGLDSampler.from_settings(
        model,
        buffer,
        sampler_settings(config),
        seed=seed + 1,
        amp_dtype=amp_dtype(config),
        temperature=config.train.temperature,
    )
