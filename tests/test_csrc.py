"""Tests of the CUDA sources (csrc/) and their loader, jemfast.backends.cuda_ext.

Without a GPU: every kernel file must compile with nvcc for sm_90, the Philox /
Box-Muller header is built into a host program and checked against an
independent numpy implementation of the noise spec (and against Triton's own
``tl.randint4x`` / ``tl.randn`` in the interpreter), and the torch binding is
syntax-checked against the installed torch headers. With a GPU and a built
extension: the kernels are compared with the PyTorch reference.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from helpers import assert_close

from jemfast._cuda_home import resolve_cuda_home
from jemfast.backends import cuda_ext

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
CU_FILES = sorted(CSRC.glob("*.cu"))

# The toolkit the extension build uses (setup.py and the GPU suite resolve CUDA_HOME
# the same way), so these checks pass only where the real build finds its headers.
CUDA_HOME = resolve_cuda_home()
NVCC = (
    str(Path(CUDA_HOME) / "bin" / "nvcc")
    if CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").is_file()
    else shutil.which("nvcc")
)
GXX = shutil.which("g++")

# ---------------------------------------------------------------------------
# Independent implementation of the noise spec (numpy uint64 arithmetic).
# ---------------------------------------------------------------------------

_M32 = np.uint64(0xFFFFFFFF)
_ROUND_A = np.uint64(0xD2511F53)
_ROUND_B = np.uint64(0xCD9E8D57)
_KEY_A = np.uint64(0x9E3779B9)
_KEY_B = np.uint64(0xBB67AE85)


def philox_spec(seeds: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Philox4x32-10 words (N, 4) as uint64 for uint64 seeds and counters (N,)."""
    c0 = counters & _M32
    c1 = counters >> np.uint64(32)
    c2 = np.zeros_like(counters)
    c3 = np.zeros_like(counters)
    k0 = seeds & _M32
    k1 = seeds >> np.uint64(32)
    for _ in range(10):
        prod_a = _ROUND_A * c0  # < 2**64: exact in uint64
        prod_b = _ROUND_B * c2
        c0, c1, c2, c3 = (
            (prod_b >> np.uint64(32)) ^ c1 ^ k0,
            prod_b & _M32,
            (prod_a >> np.uint64(32)) ^ c3 ^ k1,
            prod_a & _M32,
        )
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return np.stack([c0, c1, c2, c3], axis=1)


def uniform_spec(words: np.ndarray) -> np.ndarray:
    """Triton's uint_to_uniform_float for 32-bit words, float32."""
    v = words.astype(np.uint32).view(np.int32)
    v = np.where(v < 0, ~v, v)
    return v.astype(np.float32) * np.float32(4.6566127342e-10)


def normal_spec(u0: np.ndarray, u1: np.ndarray) -> np.ndarray:
    """Box-Muller from float32 uniforms; the angle in float32, the rest in float64."""
    radial = np.maximum(np.float32(1.0e-7), u0).astype(np.float64)
    theta = (np.float32(6.283185307179586) * u1).astype(np.float64)
    return np.sqrt(-2.0 * np.log(radial)) * np.cos(theta)


def test_philox_spec_known_answer():
    # Philox4x32-10 with zero counter and key, from the Random123 known-answer
    # tests (kat_vectors: "philox4x32 10 0 0 0 0 0 0"), checks the round order.
    words = philox_spec(np.array([0], dtype=np.uint64), np.array([0], dtype=np.uint64))
    assert [int(w) for w in words[0]] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


# Seeds and counters around the 32-bit boundaries, where the high words matter.
EDGE_SEEDS = [0, 1, 42, 2**32 - 1, 2**32, 2**32 + 17, 2**63 - 1, 0xDEADBEEFCAFEBABE, 2**64 - 1]
EDGE_COUNTERS = [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 3, 2**40 + 123, 2**63 + 7, 2**64 - 1]


def _cases() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    seeds = [s for s in EDGE_SEEDS for _ in EDGE_COUNTERS]
    counters = [c for _ in EDGE_SEEDS for c in EDGE_COUNTERS]
    seeds += [int(s) for s in rng.integers(0, 2**63, size=200, dtype=np.int64)]
    counters += [int(c) for c in rng.integers(0, 2**63, size=200, dtype=np.int64)]
    return np.array(seeds, dtype=np.uint64), np.array(counters, dtype=np.uint64)


# ---------------------------------------------------------------------------
# Host program built from csrc/philox.cuh.
# ---------------------------------------------------------------------------

_HOST_PROGRAM = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "philox.cuh"

static uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// stdin: lines "seed counter"; stdout: r0 r1 r2 r3 u0 u1 z z_direct lo hi (hex; floats as bits).
int main() {
  unsigned long long seed, counter;
  while (std::scanf("%llu %llu", &seed, &counter) == 2) {
    const jemfast::PhiloxWords w = jemfast::philox_at(seed, counter);
    const float u0 = jemfast::uint32_to_uniform(w.r0);
    const float u1 = jemfast::uint32_to_uniform(w.r1);
    const float z = jemfast::box_muller(u0, u1);
    const float z_direct = jemfast::philox_normal(seed, counter);
    // Counter words of `counter` rebuilt from counter - 7 plus a step of 7, as the kernels do.
    const uint64_t base = counter - 7u;
    uint32_t lo, hi;
    jemfast::counter_words_after(static_cast<uint32_t>(base), static_cast<uint32_t>(base >> 32), 7u, &lo, &hi);
    std::printf("%x %x %x %x %x %x %x %x %x %x\n", w.r0, w.r1, w.r2, w.r3, bits(u0), bits(u1), bits(z),
                bits(z_direct), lo, hi);
  }
  return 0;
}
"""


def _as_float32(bits: np.ndarray) -> np.ndarray:
    return bits.astype(np.uint32).view(np.float32)


def _build_host_program(compiler: str, tmp_path: Path) -> Path:
    exe = tmp_path / f"philox_host_{compiler.replace('+', 'x')}"
    if compiler == "nvcc":
        if NVCC is None:
            pytest.skip("nvcc is not on PATH")
        # As a .cu file, so the functions are compiled as __host__ __device__.
        source = tmp_path / "philox_host.cu"
        cmd = [NVCC, "-std=c++17", "-O2", "-I", str(CSRC), str(source), "-o", str(exe)]
    else:
        if GXX is None:
            pytest.skip("g++ is not on PATH")
        source = tmp_path / "philox_host.cpp"
        cmd = [GXX, "-std=c++17", "-O2", "-I", str(CSRC), str(source), "-o", str(exe)]
    source.write_text(_HOST_PROGRAM)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return exe


def _run_host_program(exe: Path, seeds: np.ndarray, counters: np.ndarray) -> np.ndarray:
    stdin = "".join(f"{int(s)} {int(c)}\n" for s, c in zip(seeds, counters, strict=True))
    result = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [[int(field, 16) for field in line.split()] for line in result.stdout.splitlines()]
    out = np.array(rows, dtype=np.uint64)
    assert out.shape == (len(seeds), 10)
    return out


@pytest.mark.parametrize("compiler", ["nvcc", "g++"])
def test_philox_header_matches_spec_on_host(compiler, tmp_path):
    exe = _build_host_program(compiler, tmp_path)
    seeds, counters = _cases()
    out = _run_host_program(exe, seeds, counters)

    words = philox_spec(seeds, counters)
    mismatch = np.nonzero((out[:, :4] != words).any(axis=1))[0]
    assert mismatch.size == 0, (
        f"Philox words differ for {mismatch.size} cases, first seed={int(seeds[mismatch[0]])} "
        f"counter={int(counters[mismatch[0]])}: got {[hex(int(v)) for v in out[mismatch[0], :4]]}, "
        f"expected {[hex(int(v)) for v in words[mismatch[0]]]}"
    )

    u0, u1 = uniform_spec(words[:, 0]), uniform_spec(words[:, 1])
    np.testing.assert_array_equal(_as_float32(out[:, 4]), u0, err_msg="uniform from r0")
    np.testing.assert_array_equal(_as_float32(out[:, 5]), u1, err_msg="uniform from r1")
    assert ((u0 >= 0) & (u0 < 1)).all() and ((u1 >= 0) & (u1 < 1)).all()

    z_expected = normal_spec(u0, u1)
    z = _as_float32(out[:, 6]).astype(np.float64)
    np.testing.assert_allclose(z, z_expected, rtol=1e-6, atol=1e-6, err_msg="Box-Muller normal")
    np.testing.assert_array_equal(out[:, 7], out[:, 6], err_msg="philox_normal vs its parts")

    np.testing.assert_array_equal(out[:, 8], counters & _M32, err_msg="counter low word after a step")
    np.testing.assert_array_equal(out[:, 9], counters >> np.uint64(32), err_msg="counter high word after a step")


def test_philox_spec_matches_triton_interpreter():
    """The numpy spec equals Triton's tl.randint4x / tl.randn for 32-bit offsets."""
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device or TRITON_INTERPRET=1 to run Triton")
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def _philox_probe_kernel(seed, offsets_ptr, words_ptr, normal_ptr, N: tl.constexpr):
        idx = tl.arange(0, N)
        offsets = tl.load(offsets_ptr + idx)
        r0, r1, r2, r3 = tl.randint4x(seed, offsets)
        tl.store(words_ptr + idx * 4 + 0, r0.to(tl.int64))
        tl.store(words_ptr + idx * 4 + 1, r1.to(tl.int64))
        tl.store(words_ptr + idx * 4 + 2, r2.to(tl.int64))
        tl.store(words_ptr + idx * 4 + 3, r3.to(tl.int64))
        tl.store(normal_ptr + idx, tl.randn(seed, offsets))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    offsets = [0, 1, 2, 3, 1000, 12345, 2**20 + 1, 2**31 - 1]
    counters = np.array(offsets, dtype=np.uint64)
    offsets_t = torch.tensor(offsets, dtype=torch.int32, device=device)
    for seed in (0, 42, 2**32 + 17, 0x7EADBEEFCAFEBABE):
        words_t = torch.zeros(len(offsets), 4, dtype=torch.int64, device=device)
        normal_t = torch.zeros(len(offsets), dtype=torch.float32, device=device)
        _philox_probe_kernel[(1,)](seed, offsets_t, words_t, normal_t, N=len(offsets))
        words = philox_spec(np.full(len(offsets), seed, dtype=np.uint64), counters)
        got = words_t.cpu().numpy().astype(np.uint64) & _M32
        np.testing.assert_array_equal(got, words, err_msg=f"Triton randint4x, seed {seed}")
        z = normal_spec(uniform_spec(words[:, 0]), uniform_spec(words[:, 1]))
        np.testing.assert_allclose(normal_t.cpu().double().numpy(), z, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Compilation of the CUDA sources and the binding.
# ---------------------------------------------------------------------------


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CU_FILES, ids=[p.name for p in CU_FILES])
def test_cu_file_compiles_for_sm90(source, tmp_path):
    # Same nvcc flags as setup.py (no --use_fast_math), plus warnings as errors in our code.
    cmd = [
        NVCC,
        "-arch=sm_90",
        "-O3",
        "-std=c++17",
        "--expt-relaxed-constexpr",
        "-Xcompiler",
        "-Wall",
        "-I",
        str(CSRC),
        "-c",
        str(source),
        "-o",
        str(tmp_path / (source.stem + ".o")),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    assert (tmp_path / (source.stem + ".o")).stat().st_size > 0
    assert "warning" not in result.stderr.lower(), result.stderr


# ptxas -v prints, per kernel: "Compiling entry function '<name>' for 'sm_90'", then
# "<n> bytes stack frame, <n> bytes spill stores, <n> bytes spill loads" and
# "Used <n> registers, ...".
_PTXAS_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\w+)'")
_PTXAS_FRAME = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads"
)
_PTXAS_REGS = re.compile(r"Used (?P<regs>\d+) registers")
# sgld_update_kernel<T, VEC> as nvcc mangles it: T is f (float), 13__nv_bfloat16 or 6__half.
_SGLD_INSTANCE = re.compile(r"sgld_update_kernelI(?P<type>f|13__nv_bfloat16|6__half)Li(?P<vec>\d+)E")
_SGLD_TYPE_NAMES = {"f": "float32", "13__nv_bfloat16": "bfloat16", "6__half": "float16"}
# Every sgld_update_kernel the launcher instantiates: the 16-byte pack and the scalar fallback.
_SGLD_INSTANCES = {("float32", 4), ("float32", 1), ("bfloat16", 8), ("bfloat16", 1), ("float16", 8), ("float16", 1)}
# 256-thread blocks: <= 64 registers per thread keeps >= 4 blocks (32 warps) resident per SM.
_SGLD_MAX_REGISTERS_SM90 = 64


def _ptxas_resources(stderr: str) -> dict[str, dict[str, int]]:
    """Per kernel (mangled name): stack, spill stores/loads (bytes) and registers, from ``ptxas -v``."""
    kernels: dict[str, dict[str, int]] = {}
    current = None
    for line in stderr.splitlines():
        if match := _PTXAS_ENTRY.search(line):
            current = kernels.setdefault(match["name"], {})
        elif current is not None and (match := _PTXAS_FRAME.search(line)):
            current.update(stack=int(match["stack"]), stores=int(match["stores"]), loads=int(match["loads"]))
        elif current is not None and (match := _PTXAS_REGS.search(line)):
            current["registers"] = int(match["regs"])
    return kernels


def _nvcc_supports(arch: str) -> bool:
    result = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, timeout=60)
    return result.returncode == 0 and f"compute_{arch.removeprefix('sm_')}" in result.stdout.split()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ["sm_90", "sm_100"])
@pytest.mark.parametrize("source", CU_FILES, ids=[p.name for p in CU_FILES])
def test_kernels_do_not_spill(source, arch, tmp_path):
    """No kernel instantiation spills registers to local memory (ptxas -v, setup.py's flags).

    sgld_update_kernel<bf16, 8> used to spill one hoisted Philox round key on sm_90
    (4 B stored, 32 B loaded per pack); csrc/README.md has the story.
    """
    if not _nvcc_supports(arch):
        pytest.skip(f"this nvcc cannot compile for {arch}")
    cmd = [NVCC, f"-arch={arch}", "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", "-Xptxas", "-v"]
    cmd += ["-I", str(CSRC), "-c", str(source), "-o", str(tmp_path / (source.stem + ".o"))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    kernels = _ptxas_resources(result.stderr)
    assert kernels, f"no ptxas -v report in:\n{result.stderr}"
    for name, res in kernels.items():
        assert {"stores", "loads", "registers"} <= res.keys(), f"incomplete ptxas report for {name}: {res}"
    spilling = {name: res for name, res in kernels.items() if res["stores"] or res["loads"]}
    assert not spilling, f"{arch}: kernels spill registers: {spilling}"

    if source.name != "sgld_update.cu":
        return
    sgld = {}
    for name, res in kernels.items():
        if match := _SGLD_INSTANCE.search(name):
            sgld[(_SGLD_TYPE_NAMES[match["type"]], int(match["vec"]))] = res
    assert set(sgld) == _SGLD_INSTANCES, f"sgld_update_kernel instantiations: {sorted(sgld)}"
    if arch == "sm_90":
        heavy = {k: r["registers"] for k, r in sgld.items() if r["registers"] > _SGLD_MAX_REGISTERS_SM90}
        assert not heavy, f"sm_90 occupancy below 4 blocks of 256 threads: {heavy} registers"


def test_csrc_has_kernels_and_binding():
    names = {p.name for p in CSRC.iterdir()}
    assert {"philox.cuh", "sgld_update.cu", "energy.cu", "binding.cpp"} <= names


def _cuda_include_dir() -> Path | None:
    if CUDA_HOME is None or not (Path(CUDA_HOME) / "include" / "cuda_runtime_api.h").is_file():
        return None
    return Path(CUDA_HOME) / "include"


def test_binding_syntax_against_torch_headers(tmp_path):
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    from torch.utils.cpp_extension import include_paths

    cuda_include = _cuda_include_dir()
    if cuda_include is None:
        pytest.skip("CUDA headers (cuda_runtime_api.h) not found; set CUDA_HOME")
    torch_includes = [Path(p) for p in include_paths()]
    if not any((p / "c10" / "cuda" / "CUDAGuard.h").is_file() for p in torch_includes):
        pytest.skip(f"torch {torch.__version__} ships no c10/cuda headers")
    extra = []
    # CPU builds of torch ship c10/cuda headers but not the one CMake generates for them.
    if not any((p / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").is_file() for p in torch_includes):
        shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
        shim.mkdir(parents=True)
        (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        extra.append(tmp_path / "shim")
    includes = [CSRC, *extra, cuda_include, Path(sysconfig.get_paths()["include"]), *torch_includes]
    cmd = [GXX, "-std=c++17", "-fsyntax-only", "-w", "-DTORCH_EXTENSION_NAME=_C"]
    cmd += [f"-I{p}" for p in includes] + [str(CSRC / "binding.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"g++ -fsyntax-only failed:\n{result.stderr[-4000:]}"


# ---------------------------------------------------------------------------
# Loader behaviour without the extension.
# ---------------------------------------------------------------------------


def test_loader_reports_missing_extension(caplog, monkeypatch):
    if cuda_ext.is_available():
        pytest.skip("jemfast._C is built here")
    reason = cuda_ext.unavailable_reason()
    assert "jemfast._C" in reason and reason
    monkeypatch.setattr(cuda_ext, "_warned", False)
    x = torch.zeros(4)
    with caplog.at_level(logging.WARNING, logger=cuda_ext.__name__):
        for _ in range(2):
            with pytest.raises(RuntimeError, match="CUDA backend is unavailable"):
                cuda_ext.sgld_update_(x, x, torch.zeros(2, dtype=torch.int64), 0.1, 0.01, None, None)
    warnings = [r for r in caplog.records if r.name == cuda_ext.__name__]
    assert len(warnings) == 1, "the missing extension must be logged exactly once"
    assert reason in warnings[0].getMessage()


def test_importing_loader_does_not_initialise_cuda():
    code = (
        "import torch, jemfast.backends.cuda_ext as c; "
        "assert not torch.cuda.is_initialized(); "
        "import sys; assert 'jemfast._C' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# GPU: the kernels against the PyTorch reference.
# ---------------------------------------------------------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SGLD_SHAPES = [(1,), (3,), (17,), (1000,), (4099,), (3, 5, 7), (64, 1, 32, 33), (2**20 + 3,)]
OFFSETS = [0, 2**32 - 5, 2**40 + 3]


@pytest.fixture
def cuda_backend():
    if not cuda_ext.is_available():
        pytest.skip(cuda_ext.unavailable_reason())
    return cuda_ext


def _sgld_pair(shape, dtype, offset, *, grad_clamp=None, clamp=None, seed=7, misalign=False):
    """Runs the CUDA and torch backends on the same input; returns (x_cuda, x_ref, state_cuda, state_ref)."""
    from jemfast import ops

    gen = torch.Generator(device="cuda").manual_seed(hash((shape, offset)) % 2**31)
    n = math.prod(shape)
    pad = 1 if misalign else 0
    x_buf = torch.randn(n + pad, generator=gen, device="cuda").to(dtype)
    x0 = x_buf[pad:].view(shape)
    grad = (3 * torch.randn(n, generator=gen, device="cuda")).to(dtype).view(shape)
    states = []
    results = []
    for backend in ("cuda", "torch"):
        x = x0.clone() if not misalign else torch.empty(n + 1, dtype=dtype, device="cuda")[1:].view(shape).copy_(x0)
        state = ops.make_rng_state(seed, device="cuda")
        state[1] = offset
        ops.sgld_update_(
            x,
            grad,
            step_size=0.05,
            noise_std=0.01,
            rng_state=state,
            grad_clamp=grad_clamp,
            clamp=clamp,
            backend=backend,
        )
        results.append(x)
        states.append(state)
    return results[0], results[1], states[0], states[1]


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SGLD_SHAPES, ids=str)
@pytest.mark.parametrize("offset", OFFSETS)
def test_sgld_cuda_matches_reference(cuda_backend, shape, dtype, offset):
    x_cuda, x_ref, state_cuda, state_ref = _sgld_pair(shape, dtype, offset)
    assert_close(x_cuda, x_ref, name=f"sgld x {dtype} {shape}")
    n = math.prod(shape)
    assert state_cuda.tolist() == state_ref.tolist() == [7, offset + n]


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("misalign", [False, True])
def test_sgld_cuda_clamps_and_unaligned_views(cuda_backend, dtype, misalign):
    x_cuda, x_ref, _, _ = _sgld_pair((4099,), dtype, 5, grad_clamp=0.5, clamp=(-1.0, 1.0), misalign=misalign)
    assert_close(x_cuda, x_ref, name="clamped sgld x")
    assert x_cuda.float().abs().max().item() <= 1.0


@requires_cuda
def test_sgld_cuda_noise_is_the_reference_noise(cuda_backend):
    from jemfast.backends import torch_ref

    n = 3 * 2**16 + 5
    state = torch.tensor([123456789012345, 2**32 - 1000], dtype=torch.int64, device="cuda")
    expected = torch_ref.random_normal(state.clone(), n)
    x = torch.zeros(n, device="cuda")
    cuda_backend.sgld_update_(x, torch.zeros_like(x), state, 0.0, 1.0, None, None)
    assert_close(x, expected, rtol=1e-6, atol=1e-6, name="noise")
    assert state.tolist() == [123456789012345, 2**32 - 1000 + n]
    # Statistics: a standard normal.
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1.0) < 0.02


@requires_cuda
def test_sgld_cuda_empty_is_a_no_op(cuda_backend):
    x = torch.empty(0, device="cuda")
    state = torch.tensor([1, 5], dtype=torch.int64, device="cuda")
    cuda_backend.sgld_update_(x, x, state, 0.1, 0.1, None, None)
    assert state.tolist() == [1, 5]


@requires_cuda
def test_sgld_cuda_under_graph_replay_draws_fresh_noise(cuda_backend):
    from jemfast.backends import torch_ref

    n = 10_001
    x = torch.zeros(n, device="cuda")
    grad = torch.zeros_like(x)
    state = torch.tensor([99, 0], dtype=torch.int64, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside capture
        cuda_backend.sgld_update_(x, grad, state, 0.0, 1.0, None, None)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        cuda_backend.sgld_update_(x, grad, state, 0.0, 1.0, None, None)
    x.zero_()
    state.copy_(torch.tensor([99, 0]))
    graph.replay()
    first = x.clone()
    x.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert state.tolist() == [99, 2 * n]
    assert_close(first, torch_ref.random_normal(torch.tensor([99, 0], device="cuda"), n), rtol=1e-6, atol=1e-6)
    assert_close(x, torch_ref.random_normal(torch.tensor([99, n], device="cuda"), n), rtol=1e-6, atol=1e-6)


@requires_cuda
def test_sgld_cuda_matches_triton_noise(cuda_backend):
    pytest.importorskip("triton")
    from jemfast import ops

    n = 2**16 + 7
    outs = []
    for backend in ("cuda", "triton"):
        x = torch.zeros(n, device="cuda")
        state = ops.make_rng_state(2024, device="cuda")
        state[1] = 2**32 - 11
        ops.sgld_update_(x, torch.zeros_like(x), step_size=0.0, noise_std=1.0, rng_state=state, backend=backend)
        outs.append(x)
    assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6, name="cuda vs triton noise")


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_energy_backward_op_writes_logits_dtype(backend, dtype):
    """jemfast::energy_backward returns the logits' dtype: the fused kernels round once on
    the store, with no float32 (R, C) gradient cast back afterwards (runs on CPU; Triton
    in its interpreter). The CUDA backend's kernel has always stored T;
    test_energy_cuda_forward_backward checks its dtype and values on a GPU."""
    import jemfast._ops  # noqa: F401  (registers torch.ops.jemfast)
    from jemfast.backends import torch_ref, unavailable_reason

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if (reason := unavailable_reason(backend, device)) is not None:
        pytest.skip(reason)
    gen = torch.Generator().manual_seed(5)
    logits = (3 * torch.randn(9, 37, generator=gen)).to(dtype).to(device)
    grad_e = torch.randn(9, generator=gen).to(device)
    e = torch.ops.jemfast.energy_forward(logits, 1.5, backend)
    grad = torch.ops.jemfast.energy_backward(grad_e, logits, e, 1.5, backend)
    assert grad.dtype == dtype and grad.shape == logits.shape
    # One rounding of the float32 gradient (Triton's exp may differ from torch's by an ulp
    # before it, hence the dtype's tolerance rather than equality).
    assert_close(grad, torch_ref.energy_backward(grad_e, logits, e, 1.5).to(dtype), name="grad_logits")
    if backend == "torch":
        torch.library.opcheck(
            torch.ops.jemfast.energy_backward.default,
            (grad_e, logits, e, 1.5, backend),
            test_utils=("test_schema", "test_faketensor"),
        )


ENERGY_SHAPES = [(1, 1), (5, 3), (64 * 50, 10), (4096, 1000), (7, 2049), (3, 5000)]


def _energy_reference(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return -temperature * torch.logsumexp(logits.double() / temperature, dim=-1)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ENERGY_SHAPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_cuda_forward_backward(cuda_backend, shape, dtype, temperature):
    gen = torch.Generator(device="cuda").manual_seed(shape[0] * 31 + shape[1])
    logits = (4 * torch.randn(shape, generator=gen, device="cuda")).to(dtype)
    energy = cuda_backend.energy_forward(logits, temperature)
    expected = _energy_reference(logits, temperature)
    assert energy.dtype == torch.float32 and energy.shape == (shape[0],)
    assert_close(energy, expected, rtol=1e-5, atol=1e-5, name="energy")

    grad_e = torch.randn(shape[0], generator=gen, device="cuda")
    grad = cuda_backend.energy_backward(grad_e, logits, energy, temperature)
    reference_input = logits.double().requires_grad_(True)
    _energy_reference(reference_input, temperature).backward(grad_e.double())
    assert grad.dtype == dtype and grad.shape == shape
    assert_close(grad, reference_input.grad.to(dtype), name="grad_logits")


@requires_cuda
@pytest.mark.parametrize("cols", [10, 5000])
def test_energy_cuda_large_magnitudes_and_infinities(cuda_backend, cols):
    logits = torch.randn(6, cols, device="cuda") * 3e4
    logits[1] = float("-inf")
    logits[2, cols // 2] = float("inf")
    logits[3, 0] = float("nan")
    logits[4, 1:] = float("-inf")
    energy = cuda_backend.energy_forward(logits, 1.5)
    expected = -1.5 * torch.logsumexp(logits.double() / 1.5, dim=-1)
    assert energy[1].item() == math.inf and energy[2].item() == -math.inf and math.isnan(energy[3].item())
    assert_close(energy, expected, rtol=1e-6, atol=1e-3, name="energy with infinities")


@requires_cuda
def test_energy_op_cuda_backend_autograd(cuda_backend):
    from jemfast import ops

    logits = torch.randn(33, 10, device="cuda", requires_grad=True)
    ops.energy(logits, temperature=2.0, backend="cuda").sum().backward()
    reference = logits.detach().double().requires_grad_(True)
    _energy_reference(reference, 2.0).sum().backward()
    assert_close(logits.grad, reference.grad.float(), name="grad through ops.energy")
