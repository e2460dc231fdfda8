"""Benchmark of the fused SGLD update, per backend, against eager PyTorch and a device copy.

For every size (and dtype) it times

* ``copy``:  ``x.copy_(y)``, the device-to-device copy bandwidth (reads and writes
  ``2 * numel * itemsize`` bytes);
* ``eager``: the JEM reference step ``x.data += lr * g + std * torch.randn_like(x)``;
* ``ops/<backend>``: ``jemfast.ops.sgld_update_(..., backend=<backend>)`` for every
  available backend (the user-facing call: validation + custom-op dispatch);
* ``kernel/cuda``: ``jemfast.backends.cuda_ext.sgld_update_`` directly (the kernel
  the bandwidth target is about).

Throughput is reported for the fused op's minimal traffic,
``GB/s = 3 * numel * itemsize / time`` (read x, read grad, write x: 12 bytes per
element in float32), for every variant including ``eager`` (which really moves
more), so the numbers compare as speed. The copy's own GB/s uses its 2 * numel *
itemsize. ``fraction_of_copy`` = fused GB/s / copy GB/s; the target is >= 0.9 for
the CUDA kernel at 2**26 float32 elements on an H100.

Usage: ``python benchmarks/bench_sgld_update.py [--sizes 16 20 26] [--dtypes float32 bfloat16]``
(sizes are log2 element counts). Results go to benchmarks/results/<device>/sgld_update.json,
written after each (dtype, size), so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse

import common
import torch

common.ensure_repo_importable()

from jemfast import ops  # noqa: E402
from jemfast.backends import unavailable_reason  # noqa: E402

STEP_SIZE = 1.0
NOISE_STD = 0.01
TARGET_LOG2_SIZE = 26
TARGET_FRACTION_OF_COPY = 0.9
BYTES_FORMULA = "3 * numel * itemsize (read x, read grad, write x)"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bench_size(numel: int, dtype: torch.dtype, device: torch.device, backends: list[str]) -> list[dict]:
    """Records for one (size, dtype)."""
    x = torch.randn(numel, device=device).to(dtype)
    grad = torch.randn(numel, device=device).to(dtype)
    other = torch.empty_like(x)
    state = ops.make_rng_state(0, device=device)
    fused_bytes = 3 * numel * x.element_size()
    copy_bytes = 2 * numel * x.element_size()

    def eager() -> None:
        x.data += STEP_SIZE * grad + NOISE_STD * torch.randn_like(x)

    variants: dict[str, object] = {"copy": lambda: other.copy_(x), "eager": eager}
    for name in backends:
        variants[f"ops/{name}"] = lambda name=name: ops.sgld_update_(
            x, grad, step_size=STEP_SIZE, noise_std=NOISE_STD, rng_state=state, backend=name
        )
    if "cuda" in backends:
        from jemfast.backends import cuda_ext

        variants["kernel/cuda"] = lambda: cuda_ext.sgld_update_(x, grad, state, STEP_SIZE, NOISE_STD, None, None)

    timings = {name: common.timeit(fn, device) for name, fn in variants.items()}
    copy_gbps = common.gbytes_per_s(copy_bytes, timings["copy"]["median_ms"])
    eager_ms = timings["eager"]["median_ms"]
    records = []
    for name, timing in timings.items():
        is_copy = name == "copy"
        gbps = common.gbytes_per_s(copy_bytes if is_copy else fused_bytes, timing["median_ms"])
        records.append(
            {
                "op": "sgld_update_",
                "variant": name,
                "numel": numel,
                "log2_numel": numel.bit_length() - 1,
                "dtype": str(dtype).removeprefix("torch."),
                **timing,
                "gbps": gbps,
                "bytes_formula": "2 * numel * itemsize (read y, write x)" if is_copy else BYTES_FORMULA,
                "copy_gbps": copy_gbps,
                "fraction_of_copy": gbps / copy_gbps,
                "speedup_vs_eager": eager_ms / timing["median_ms"],
            }
        )
    return records


def main(argv: list[str] | None = None) -> None:
    device = common.default_device()
    on_gpu = device.type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[16, 20, 24, 26] if on_gpu else [12, 16, 20], help="log2 sizes"
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"] if on_gpu else ["float32"]
    )
    args = parser.parse_args(argv)
    max_log2 = 28 if on_gpu else 20
    if any(s < 0 or s > max_log2 for s in args.sizes):
        parser.error(f"--sizes must be log2 sizes in [0, {max_log2}] on {device.type}, got {args.sizes}")

    backends = common.available_backends(device)
    print(f"sgld_update_ on {common.device_name(device)}; backends: {', '.join(backends)}")
    if on_gpu and "cuda" not in backends:
        print(f"  (cuda backend skipped: {unavailable_reason('cuda', device)})")
    # Written after each (dtype, size): a run stopped by a time limit keeps what it measured.
    results = common.RunResults("sgld_update", device)
    for dtype_name in args.dtypes:
        for log2 in args.sizes:
            size_records = bench_size(2**log2, DTYPES[dtype_name], device, backends)
            for r in size_records:
                print(
                    f"  {dtype_name:8s} 2**{log2:<2d} {r['variant']:12s} {r['median_ms']:9.4f} ms "
                    f"{r['gbps']:8.1f} GB/s  {r['fraction_of_copy']:5.2f} of copy  "
                    f"x{r['speedup_vs_eager']:.2f} vs eager"
                )
                if r["variant"] == "kernel/cuda" and r["log2_numel"] == TARGET_LOG2_SIZE and r["dtype"] == "float32":
                    r["target_fraction_of_copy"] = TARGET_FRACTION_OF_COPY
                    r["target_met"] = r["fraction_of_copy"] >= TARGET_FRACTION_OF_COPY
                    print(
                        f"target: CUDA kernel at 2**{TARGET_LOG2_SIZE} float32 reaches {r['fraction_of_copy']:.3f} "
                        f"of copy bandwidth (target {TARGET_FRACTION_OF_COPY}): "
                        f"{'met' if r['target_met'] else 'NOT met'}"
                    )
            print(f"wrote {results.add(size_records)}")


if __name__ == "__main__":
    main()
