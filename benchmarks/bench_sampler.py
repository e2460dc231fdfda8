"""SGLD chain throughput: jemfast's sampler against the JEM reference sample_q.

For each model configuration (the paper's WRN-28-5 on 1x32x192 at batch 64, and a
small WRN-16-2 on 1x32x192 at batch 16) it times one call of the sampler (buffer
draw, n_steps of forward + input gradient + update, write-back) for:

  (a) reference  - benchmarks/jem_reference.py: CPU buffer, eager fp32, host sync
  (b) eager      - jemfast SGLDSampler without CUDA graphs, fp32
  (c) graph      - jemfast with the chain captured in a CUDA graph (GPU only)
  (d) graph+bf16 - (c) plus bf16 autocast and a channels_last model (GPU only)
  (e) eager+cl   - (b) with a channels_last model (oneDNN's preferred layout on CPU)

and reports sample-steps per second (batch * n_steps / seconds), the speed-up over
(a), and the achieved FLOP rate: FLOPs of one chain step are counted with
torch.utils.flop_counter (forward + input gradient), and on known GPUs divided by
the dense peak of the arithmetic used (fp32 on CUDA cores / TF32 or bf16 tensor
cores) to give the fraction of the compute floor reached.

    python benchmarks/bench_sampler.py                 # sizes chosen for the device
    python benchmarks/bench_sampler.py --steps 50 --configs paper
"""

from __future__ import annotations

import argparse
import copy

import common
import torch

common.ensure_repo_importable()

from jem_reference import ReferenceSampleQ  # noqa: E402

from jemfast.models import wrn16_2, wrn28_5  # noqa: E402
from jemfast.sampling import ReplayBuffer, SGLDSampler  # noqa: E402

CONFIGS = {
    "paper": dict(model=wrn28_5, batch_size=64, shape=(1, 32, 192)),
    "small": dict(model=wrn16_2, batch_size=16, shape=(1, 32, 192)),
}

# Dense peak TFLOP/s by device-name substring (vendor datasheets, SXM parts):
# fp32 on CUDA cores, TF32 and bf16 on tensor cores.
PEAK_TFLOPS = {
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            # The chain is convolution-bound: cuDNN's TF32 switch (on by default) decides
            # whether fp32 convolutions run on tensor cores, not the matmul one.
            if precision == "fp32" and torch.backends.cudnn.allow_tf32:
                return peaks["tf32"]
            return peaks[precision]
    return None


def flops_per_step(model, x: torch.Tensor) -> int:
    """FLOPs of one chain step: forward pass plus the gradient with respect to the input."""
    from torch.utils.flop_counter import FlopCounterMode

    x = x.detach().clone().requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        # .backward() rather than autograd.grad: the counter's module hooks need it;
        # with the parameters frozen it computes the same input gradient only.
        with FlopCounterMode(display=False) as counter:
            torch.logsumexp(model(x), 1).sum().backward()
    finally:
        for p in params:
            p.requires_grad_(True)
    return counter.get_total_flops()


def bench_config(name, cfg, device, n_steps, variants):
    torch.manual_seed(0)
    model = cfg["model"](4).to(device)
    batch, shape = cfg["batch_size"], cfg["shape"]
    step_flops = flops_per_step(model, torch.randn(batch, *shape, device=device))
    records = []

    def record(variant, fn, precision):
        fn()  # warm-up (and capture for graph variants)
        timing = common.timeit(fn, device, min_run_time_s=0.5)
        seconds = timing["median_ms"] / 1e3
        rate = step_flops * n_steps / seconds
        peak = peak_tflops(device, precision)
        rec = {
            "config": name,
            "variant": variant,
            "batch_size": batch,
            "sample_shape": list(shape),
            "n_steps": n_steps,
            **timing,
            "sample_steps_per_s": batch * n_steps / seconds,
            "chain_steps_per_s": n_steps / seconds,
            "flops_per_step": step_flops,
            "achieved_tflops": rate / 1e12,
            "fraction_of_compute_floor": (rate / 1e12 / peak) if peak else None,
        }
        records.append(rec)
        print(
            f"{name:6s} {variant:12s} {rec['sample_steps_per_s']:12.1f} sample-steps/s  "
            f"{rec['achieved_tflops']:.3f} TFLOP/s"
        )

    if "reference" in variants:
        reference = ReferenceSampleQ(model, shape, 10000, n_steps, device)
        record("reference", lambda: reference(batch), "fp32")
    if "eager" in variants:
        sampler = SGLDSampler.preset(
            "jem", model, ReplayBuffer(shape, device=device, seed=0), n_steps=n_steps, cuda_graph=False, seed=0
        )
        record("eager", lambda: sampler.sample(batch), "fp32")
    if device.type == "cuda" and "graph" in variants:
        sampler = SGLDSampler.preset(
            "jem", model, ReplayBuffer(shape, device=device, seed=0), n_steps=n_steps, cuda_graph=True, seed=0
        )
        record("graph", lambda: sampler.sample(batch), "fp32")
    if "eager_cl" in variants:
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        sampler = SGLDSampler.preset(
            "jem", cl_model, ReplayBuffer(shape, device=device, seed=0), n_steps=n_steps, cuda_graph=False, seed=0
        )
        record("eager_cl", lambda: sampler.sample(batch), "fp32")
    if device.type == "cuda" and "graph_bf16" in variants:
        fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        sampler = SGLDSampler.preset(
            "jem", fast_model, ReplayBuffer(shape, device=device, seed=0), n_steps=n_steps, cuda_graph=True,
            amp_dtype=torch.bfloat16, seed=0,
        )  # fmt: skip
        record("graph_bf16", lambda: sampler.sample(batch), "bf16")
    base = next((r for r in records if r["variant"] == "reference"), None)
    for r in records:
        r["speedup_vs_reference"] = r["sample_steps_per_s"] / base["sample_steps_per_s"] if base else None
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=None, choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="SGLD steps per call (default 50 on GPU, 3 on CPU)")
    parser.add_argument("--variants", nargs="+", default=["reference", "eager", "eager_cl", "graph", "graph_bf16"])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n_steps = args.steps or (50 if gpu else 3)
    configs = args.configs or (["paper", "small"] if gpu else ["small", "paper"])
    results = None if args.no_write else common.RunResults("sampler", device)
    for name in configs:
        records = bench_config(name, CONFIGS[name], device, n_steps, args.variants)
        for r in records:
            if r["speedup_vs_reference"] is not None:
                print(f"{r['config']:6s} {r['variant']:12s} speed-up vs reference: {r['speedup_vs_reference']:.2f}x")
        if results is not None:  # after each configuration: a time limit keeps what was measured
            print("wrote", results.add(records))


if __name__ == "__main__":
    main()
