"""Training iterations per second: JEMTrainer against the JEM reference training iteration.

The reference is a re-implementation of one iteration of wgrathwohl/JEM's
train_wrn_ebm.py as it behaves: the replay buffer lives on the CPU; sample_q draws
buffer rows (5% re-initialised uniformly in [-1, 1]), moves them to the device, runs
eager fp32 SGLD (x += sgld_lr * d/dx logsumexp f(x) + sgld_std * noise) with the model
in eval mode and writes the samples back to the CPU buffer; the loss takes separate
forwards for E(data), E(samples) and the classifier's logits, and ``L.abs().item()``
(the reference's divergence check) syncs the host every step.

JEMTrainer runs the same model, batch and number of SGLD steps with its defaults
(device-resident buffer, fused update, CUDA graphs on a GPU, one joint forward, host
syncs every ``sync_every`` steps), in fp32 and, on a GPU, with bf16 autocast.

    python benchmarks/bench_trainer.py                       # sizes chosen for the device
    python benchmarks/bench_trainer.py --model wrn28_5 --batch-size 64 --frames 192 --sgld-steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import common
import torch
import torch.nn.functional as F
from jem_reference import ReferenceSampleQ

common.ensure_repo_importable()

from jemfast.models import wideresnet  # noqa: E402
from jemfast.sampling.buffer import ReplayBuffer  # noqa: E402
from jemfast.sampling.sampler import SGLDSampler  # noqa: E402
from jemfast.train import JEMTrainer  # noqa: E402


class ReferenceIteration:
    """One JEM reference training iteration (unconditional sample_q, CPU buffer, eager fp32)."""

    def __init__(self, model, optimizer, sample_shape, buffer_size, n_steps, device):
        self.model, self.optimizer = model, optimizer
        self.sample_q = ReferenceSampleQ(model, sample_shape, buffer_size, n_steps, device)

    def step(self, x, y):
        x_q = self.sample_q(x.shape[0])
        f_p = torch.logsumexp(self.model(x), 1).mean()
        f_q = torch.logsumexp(self.model(x_q), 1).mean()
        loss = -(f_p - f_q) + F.cross_entropy(self.model(x), y)
        if loss.abs().item() > 1e8:
            raise RuntimeError("reference iteration diverged")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iterations_per_second(step, batches, device, warmup, iters, repeats):
    """Median over ``repeats`` rounds of ``iters`` iterations/second, after ``warmup`` iterations."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    _sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(iters):
            step(*batches[i % len(batches)])
        _sync(device)
        rates.append(iters / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, choices=["wrn16_2", "wrn28_5"])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="time frames T of the (1, 32, T) inputs")
    parser.add_argument("--sgld-steps", type=int, default=None)
    parser.add_argument("--buffer-size", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the records only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    model_name = args.model or ("wrn28_5" if gpu else "wrn16_2")
    batch_size = args.batch_size or (64 if gpu else 8)
    frames = args.frames or (192 if gpu else 32)
    sgld_steps = args.sgld_steps or (50 if gpu else 5)
    iters = args.iters or (5 if gpu else 2)
    sample_shape = (1, 32, frames)

    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(batch_size, *sample_shape, generator=g).to(device),
            torch.randint(0, args.classes, (batch_size,), generator=g).to(device),
        )
        for _ in range(4)
    ]

    def fresh_model():
        torch.manual_seed(0)
        model = getattr(wideresnet, model_name)(args.classes).to(device)
        return model, torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    config = {
        "model": model_name,
        "batch_size": batch_size,
        "sample_shape": list(sample_shape),
        "sgld_steps": sgld_steps,
        "buffer_size": args.buffer_size,
        "iters": iters,
        "repeats": args.repeats,
    }
    records = []
    results = None if args.no_write else common.RunResults("trainer", device)

    def keep(record):  # written at once: a time limit keeps what was measured
        records.append(record)
        if results is not None:
            results.add([record])

    model, opt = fresh_model()
    reference = ReferenceIteration(model, opt, sample_shape, args.buffer_size, sgld_steps, device)
    ref_rate = iterations_per_second(reference.step, batches, device, 2, iters, args.repeats)
    keep(
        {
            "name": "trainer_iteration",
            "impl": "jem_reference",
            "amp": None,
            **config,
            "its_per_s": ref_rate[0],
            "its_per_s_min": ref_rate[1],
            "its_per_s_max": ref_rate[2],
            "speedup_vs_reference": 1.0,
        }
    )

    for amp in [None, torch.bfloat16] if gpu else [None]:
        model, opt = fresh_model()
        buffer = ReplayBuffer(sample_shape, size=args.buffer_size, device=device, seed=0)
        sampler = SGLDSampler.preset("jem", model, buffer, n_steps=sgld_steps, amp_dtype=amp, seed=1)
        trainer = JEMTrainer(model, opt, sampler=sampler, amp_dtype=amp, progress=False, n_classes=args.classes)
        rate = iterations_per_second(trainer.step, batches, device, 3, iters, args.repeats)
        trainer.sync()
        keep(
            {
                "name": "trainer_iteration",
                "impl": "jemfast_trainer",
                "amp": str(amp).replace("torch.", "") if amp else None,
                **config,
                "its_per_s": rate[0],
                "its_per_s_min": rate[1],
                "its_per_s_max": rate[2],
                "speedup_vs_reference": rate[0] / ref_rate[0],
            }
        )

    for r in records:
        print(
            f"{common.device_name(device)} {r['impl']:>16} amp={r['amp']}: {r['its_per_s']:.3f} it/s "
            f"(x{r['speedup_vs_reference']:.2f} vs reference)"
        )
    if results is not None:
        print("results:", results.path)
    return records


if __name__ == "__main__":
    main()
