"""Benchmark of the log-sum-exp energy (forward + backward), per backend, against eager torch.logsumexp.

For every logits shape (R, C) and dtype it times ``E = energy(logits, T)`` followed
by ``E.backward(g)``:

* ``eager``: ``(-T * torch.logsumexp(logits / T, dim=-1)).backward(g)``;
* ``ops/<backend>``: ``jemfast.ops.energy(logits, T, backend=<backend>)`` then backward;

and the forward alone (``fwd`` variants). Shapes follow the JEM setting: a
50-step SGLD chain on a batch of 64 with 10 classes gives (64 * 50, 10); a
1000-class head gives (4096, 1000).

GB/s uses the minimal traffic: forward ``R * C * itemsize`` (read logits),
forward + backward ``3 * R * C * itemsize`` (read logits twice, write grad),
ignoring the O(R) vectors. Results go to benchmarks/results/<device>/energy.json,
written after each (dtype, shape), so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse

import common
import torch

common.ensure_repo_importable()

from jemfast import ops  # noqa: E402

TEMPERATURE = 1.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GPU_SHAPES = [(64 * 50, 10), (4096, 1000), (256, 32000)]
CPU_SHAPES = [(64 * 50, 10), (512, 1000)]


def bench_shape(rows: int, cols: int, dtype: torch.dtype, device: torch.device, backends: list[str]) -> list[dict]:
    """Records for one (shape, dtype)."""
    logits = torch.randn(rows, cols, device=device).mul_(4).to(dtype).requires_grad_(True)
    grad_e = torch.randn(rows, device=device).to(dtype)
    itemsize = logits.element_size()

    def eager_energy(x: torch.Tensor) -> torch.Tensor:
        return -TEMPERATURE * torch.logsumexp(x / TEMPERATURE, dim=-1)

    energy_fns = {"eager": eager_energy}
    for name in backends:
        energy_fns[f"ops/{name}"] = lambda x, name=name: ops.energy(x, TEMPERATURE, backend=name)

    records = []
    for pass_name, num_bytes in (("fwd", rows * cols * itemsize), ("fwd+bwd", 3 * rows * cols * itemsize)):
        timings = {}
        for name, energy_fn in energy_fns.items():
            if pass_name == "fwd":

                def run(energy_fn=energy_fn) -> None:
                    with torch.no_grad():
                        energy_fn(logits)

            else:

                def run(energy_fn=energy_fn) -> None:
                    logits.grad = None
                    energy_fn(logits).backward(grad_e)

            timings[name] = common.timeit(run, device)
        eager_ms = timings["eager"]["median_ms"]
        for name, timing in timings.items():
            records.append(
                {
                    "op": "energy",
                    "pass": pass_name,
                    "variant": name,
                    "rows": rows,
                    "cols": cols,
                    "dtype": str(dtype).removeprefix("torch."),
                    **timing,
                    "gbps": common.gbytes_per_s(num_bytes, timing["median_ms"]),
                    "bytes_formula": "R * C * itemsize" if pass_name == "fwd" else "3 * R * C * itemsize",
                    "speedup_vs_eager": eager_ms / timing["median_ms"],
                }
            )
    return records


def main(argv: list[str] | None = None) -> None:
    device = common.default_device()
    on_gpu = device.type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=sorted(DTYPES),
        default=["float32", "bfloat16"] if on_gpu else ["float32"],
    )
    args = parser.parse_args(argv)
    backends = common.available_backends(device, skip=("cpu",))
    print(f"energy on {common.device_name(device)}; backends: {', '.join(backends)}")
    # Written after each (dtype, shape): a run stopped by a time limit keeps what it measured.
    results = common.RunResults("energy", device)
    for dtype_name in args.dtypes:
        for rows, cols in GPU_SHAPES if on_gpu else CPU_SHAPES:
            shape_records = bench_shape(rows, cols, DTYPES[dtype_name], device, backends)
            for r in shape_records:
                print(
                    f"  {dtype_name:8s} ({rows}, {cols}) {r['pass']:7s} {r['variant']:11s} {r['median_ms']:9.4f} ms "
                    f"{r['gbps']:8.1f} GB/s  x{r['speedup_vs_eager']:.2f} vs eager"
                )
            print(f"wrote {results.add(shape_records)}")


if __name__ == "__main__":
    main()
