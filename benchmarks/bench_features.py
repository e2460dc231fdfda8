"""Log-Mel feature extraction throughput: librosa per utterance against batched torch.stft.

Measures utterances per second for the paper recipe (32 Mel bands, 25 ms
Hamming, 10 ms shift, CMVN) on utterances of ``--seconds`` seconds:

* ``librosa``: :func:`jemfast.data.features.logmel`, one utterance at a time (the cache builder's path, per worker);
* ``torch``: :class:`jemfast.data.features.TorchLogMel` on batches of ``--batch`` utterances, on CPU
  and, when a GPU is visible, on CUDA.

Results are appended as JSON to ``benchmarks/results/<device>/features.json``
(CPU runs under the CPU's name, GPU runs under the GPU's name).
"""

from __future__ import annotations

import argparse

import common

common.ensure_repo_importable()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from jemfast.data.features import FeatureRecipe, TorchLogMel, logmel  # noqa: E402


def make_waves(count: int, seconds: float, seed: int = 0) -> np.ndarray:
    """(count, samples) float32 amplitude-modulated noise; extraction cost does not depend on content."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * 16000)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * np.arange(samples) / 16000.0)
    return (0.1 * rng.standard_normal((count, samples)) * envelope).astype(np.float32)


def record(impl: str, device: str, batch: int, count: int, timing: dict, librosa_ms: float | None) -> dict:
    per_utt_ms = timing["median_ms"] / count
    return {
        "impl": impl,
        "device": device,
        "batch": batch,
        "utterances": count,
        **timing,
        "utt_per_s": 1e3 / per_utt_ms,
        "speedup_vs_librosa": None if librosa_ms is None else librosa_ms / timing["median_ms"],
    }


def bench_librosa(waves: np.ndarray, recipe: FeatureRecipe) -> dict:
    def run() -> None:
        for wave in waves:
            logmel(wave, recipe)

    return record("librosa", "cpu", 1, len(waves), common.timeit(run, "cpu"), None)


def bench_torch(waves: np.ndarray, recipe: FeatureRecipe, batch: int, device: torch.device, librosa_ms: float) -> dict:
    module = TorchLogMel(recipe).to(device)
    batches = [torch.from_numpy(waves[k : k + batch]).to(device) for k in range(0, len(waves), batch)]

    @torch.no_grad()
    def run() -> None:
        for x in batches:
            module(x)

    run()  # warm-up (cuFFT plans, allocator)
    return record("torch", device.type, batch, len(waves), common.timeit(run, device), librosa_ms)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args(argv)
    recipe = FeatureRecipe()
    waves = make_waves(args.utterances, args.seconds)

    cpu = torch.device("cpu")
    ref = bench_librosa(waves, recipe)
    cpu_records = [ref]
    print(f"features, {args.utterances} utterances of {args.seconds} s on {common.device_name(cpu)}")
    for batch in args.batch:
        cpu_records.append(bench_torch(waves, recipe, batch, cpu, ref["median_ms"]))
    gpu_records = []
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        for batch in args.batch:
            gpu_records.append(bench_torch(waves, recipe, batch, cuda, ref["median_ms"]))
    for r in cpu_records + gpu_records:
        speedup = "" if r["speedup_vs_librosa"] is None else f"  x{r['speedup_vs_librosa']:.2f} vs librosa"
        print(f"  {r['impl']:8s} {r['device']:5s} batch {r['batch']:4d} {r['utt_per_s']:10.1f} utt/s{speedup}")
    print(f"wrote {common.write_results('features', cpu_records, cpu)}")
    if gpu_records:
        print(f"wrote {common.write_results('features', gpu_records, torch.device('cuda'))}")


if __name__ == "__main__":
    main()
