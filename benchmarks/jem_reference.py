"""A faithful re-implementation of the JEM reference sampler (wgrathwohl/JEM, train_wrn_ebm.py).

It keeps the reference's costs, since they are what jemfast is measured against:
the replay buffer is a CPU tensor; each call draws buffer rows and re-initialises
5% of them uniformly in [-1, 1] on the CPU, moves them to the device, runs eager
fp32 SGLD (``x.data += sgld_lr * grad + sgld_std * randn_like(x)`` with
``grad = d/dx logsumexp f(x)`` from ``autograd.grad(..., retain_graph=True)``),
with the model in eval mode and its parameters still requiring grad, then copies
the samples back into the CPU buffer (a host sync).
"""

from __future__ import annotations

import torch


class ReferenceSampleQ:
    """The JEM reference's ``sample_q`` (unconditional) with its CPU replay buffer."""

    def __init__(self, model, sample_shape, buffer_size, n_steps, device, sgld_lr=1.0, sgld_std=0.01, reinit_freq=0.05):
        self.model, self.device = model, torch.device(device)
        self.n_steps, self.sgld_lr, self.sgld_std, self.reinit_freq = n_steps, sgld_lr, sgld_std, reinit_freq
        self.sample_shape = tuple(sample_shape)
        self.buffer = torch.empty(buffer_size, *self.sample_shape).uniform_(-1, 1)

    def _initial_samples(self, batch_size):
        idx = torch.randint(0, self.buffer.shape[0], (batch_size,))
        fresh = torch.empty(batch_size, *self.sample_shape).uniform_(-1, 1)
        reinit = (torch.rand(batch_size) < self.reinit_freq).float().view(-1, *([1] * len(self.sample_shape)))
        start = reinit * fresh + (1 - reinit) * self.buffer[idx]
        return start.to(self.device), idx

    def __call__(self, batch_size: int) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        x, idx = self._initial_samples(batch_size)
        x.requires_grad_(True)
        for _ in range(self.n_steps):
            log_px = torch.logsumexp(self.model(x), 1).sum()
            grad = torch.autograd.grad(log_px, [x], retain_graph=True)[0]
            x.data += self.sgld_lr * grad + self.sgld_std * torch.randn_like(x)
        self.model.train(was_training)
        x = x.detach()
        self.buffer[idx] = x.cpu()
        return x
