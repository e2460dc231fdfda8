// Fused in-place SGLD update with in-kernel Gaussian noise.
#include <atomic>
#include <cstdint>

#include "dtype.cuh"
#include "kernels.h"
#include "philox.cuh"

namespace jemfast {
namespace {

constexpr int kSgldThreads = 256;
// Minimum resident blocks per SM promised to ptxas in __launch_bounds__. Stating 1
// (rather than leaving it out) matters: without it ptxas 13.0 for sm_90 budgets
// sgld_update_kernel<bf16, 8> to 48 registers (5 blocks of 256 threads) and spills
// one hoisted Philox round key to meet that budget (4 B stored once, reloaded 8
// times per pack: one LDL per element). With 1 it allocates 55 registers and
// spills nothing, and on sm_90 every instantiation stays at <= 64 registers, i.e.
// >= 4 resident blocks (32 warps per SM); tests/test_csrc.py checks both. Only
// register allocation changes: the PTX is identical apart from .minnctapersm, so
// the arithmetic, and the noise, are bit-for-bit the same. Measurements (and the
// sm_100 numbers) in csrc/README.md.
constexpr int kSgldMinBlocksPerSm = 1;

// One 16-byte access worth of elements.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// x[i] <- clip(x[i] + step_size * clip(grad[i], +-grad_clamp) + noise_std * z_i, [lo, hi])
//
// z_i = philox_normal(seed, offset + i) with [seed, offset] read from
// `rng_state` on the device, so a CUDA graph that captured this launch draws
// fresh noise on every replay (a host scalar would be frozen at capture).
// Arithmetic is float32; x is rounded to its dtype once, on the store.
//
// Bytes moved: reads x and grad once and writes x once: 3 * sizeof(T) per
// element (12 B in float32, 6 B in bfloat16/float16), the same traffic as the
// unfused expression's first kernel alone. No noise tensor is materialised:
// the eager JEM step `x += lr * g + std * randn_like(x)` moves ~5x the bytes
// over four kernels.
//
// Design: the memory-bound elementwise pattern (16-byte vector loads and
// stores, grid-stride loop over a grid sized to the resident blocks, as in
// PyTorch's vectorised elementwise kernels) with counter-based noise so each
// element's normal depends only on its index (Salmon et al., SC 2011; the
// same scheme as PyTorch's Philox dropout and Triton's tl.randn). One Philox
// call per element (the third and fourth words are dropped, matching
// tl.randn) keeps the element -> counter map identical to the Triton and
// PyTorch backends; the integer work per element is ~17 IMAD.WIDE/IMAD.HI and
// ~23 LOP3 on sm_90 (the first round folds to constants because c2 = c3 = 0).
// The whole element costs ~140-150 issued instructions, which makes the kernel
// issue-bound rather than HBM-bound on Hopper: see csrc/README.md.
template <typename T, int VEC>
__global__ void __launch_bounds__(kSgldThreads, kSgldMinBlocksPerSm)
    sgld_update_kernel(T* __restrict__ x, const T* __restrict__ grad, const int64_t* __restrict__ rng_state,
                       int64_t numel, SgldParams params) {
  const uint64_t seed = static_cast<uint64_t>(rng_state[0]);
  const uint64_t offset = static_cast<uint64_t>(rng_state[1]);

  auto update = [&](float xv, float gv, uint32_t counter_lo, uint32_t counter_hi) -> float {
    if (params.has_grad_clamp) gv = fminf(fmaxf(gv, -params.grad_clamp), params.grad_clamp);
    float y = xv + params.step_size * gv;
    // The reference skips the noise term when noise_std == 0 (keeps -0.0 as is).
    if (params.noise_std != 0.0f) {
      const PhiloxWords w = philox4x32_10(counter_lo, counter_hi, 0u, 0u, static_cast<uint32_t>(seed),
                                          static_cast<uint32_t>(seed >> 32));
      y += params.noise_std * box_muller(uint32_to_uniform(w.r0), uint32_to_uniform(w.r1));
    }
    if (params.has_clamp) y = fminf(fmaxf(y, params.clamp_lo), params.clamp_hi);
    return y;
  };

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t num_packs = numel / VEC;
  using PackT = Pack<T, VEC>;
  PackT* x_packs = reinterpret_cast<PackT*>(x);
  const PackT* grad_packs = reinterpret_cast<const PackT*>(grad);

  for (int64_t p = first; p < num_packs; p += stride) {
    PackT xp = x_packs[p];
    const PackT gp = grad_packs[p];
    // 64-bit counter of the pack's first element; the others differ only in
    // the low word (plus a carry), which saves 64-bit adds per element.
    const uint64_t base = offset + static_cast<uint64_t>(p) * VEC;
    const uint32_t base_lo = static_cast<uint32_t>(base);
    const uint32_t base_hi = static_cast<uint32_t>(base >> 32);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      uint32_t lo, hi;
      counter_words_after(base_lo, base_hi, static_cast<uint32_t>(j), &lo, &hi);
      xp.v[j] = from_float<T>(update(to_float(xp.v[j]), to_float(gp.v[j]), lo, hi));
    }
    x_packs[p] = xp;
  }

  // Tail of fewer than VEC elements, one per thread.
  const int64_t i = num_packs * VEC + first;
  if (i < numel) {
    const uint64_t counter = offset + static_cast<uint64_t>(i);
    x[i] = from_float<T>(update(to_float(x[i]), to_float(grad[i]), static_cast<uint32_t>(counter),
                                static_cast<uint32_t>(counter >> 32)));
  }
}

// rng_state[1] += count, after the update in stream order: a separate launch is
// the grid-wide barrier that guarantees every block has read the old offset.
__global__ void advance_offset_kernel(int64_t* rng_state, int64_t count) {
  rng_state[1] = static_cast<int64_t>(static_cast<uint64_t>(rng_state[1]) + static_cast<uint64_t>(count));
}

template <typename T, int VEC>
cudaError_t launch_sgld_typed(T* x, const T* grad, int64_t* rng_state, int64_t numel, const SgldParams& params,
                              cudaStream_t stream) {
  const int64_t work_items = numel / VEC + 1;  // packs plus at most one tail element per thread
  // The occupancy query costs a driver call; it depends only on the kernel and the
  // architecture, so it is asked once per instantiation (one GPU model per process).
  static std::atomic<int> cached_blocks_per_sm{0};
  int blocks_per_sm = cached_blocks_per_sm.load(std::memory_order_relaxed);
  if (blocks_per_sm < 1) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, sgld_update_kernel<T, VEC>, kSgldThreads, 0) !=
            cudaSuccess ||
        blocks_per_sm < 1) {
      blocks_per_sm = 1;
    } else {
      cached_blocks_per_sm.store(blocks_per_sm, std::memory_order_relaxed);
    }
  }
  const int64_t resident = static_cast<int64_t>(current_sm_count()) * blocks_per_sm;
  const int64_t needed = (work_items + kSgldThreads - 1) / kSgldThreads;
  const int64_t blocks = needed < resident ? needed : resident;
  sgld_update_kernel<T, VEC><<<static_cast<unsigned>(blocks), kSgldThreads, 0, stream>>>(x, grad, rng_state, numel,
                                                                                          params);
  return cudaGetLastError();
}

bool is_aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

cudaError_t launch_sgld_update(void* x, const void* grad, int64_t* rng_state, int64_t numel, ScalarKind kind,
                               const SgldParams& params, cudaStream_t stream) {
  if (numel < 0 || (numel > 0 && (x == nullptr || grad == nullptr)) || rng_state == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (numel == 0) return cudaSuccess;
  cudaError_t status = dispatch_scalar_kind(kind, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    T* xt = static_cast<T*>(x);
    const T* gt = static_cast<const T*>(grad);
    // Views with a storage offset may break 16-byte alignment: fall back to scalar accesses.
    if (is_aligned(x, 16) && is_aligned(grad, 16)) {
      return launch_sgld_typed<T, kVec>(xt, gt, rng_state, numel, params, stream);
    }
    return launch_sgld_typed<T, 1>(xt, gt, rng_state, numel, params, stream);
  });
  if (status != cudaSuccess) return status;
  advance_offset_kernel<<<1, 1, 0, stream>>>(rng_state, numel);
  return cudaGetLastError();
}

}  // namespace jemfast
