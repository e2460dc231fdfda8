// Log-sum-exp energy E = -T * logsumexp(logits / T) over the class dimension, and its backward.
#include <cmath>
#include <cstdint>

#include "dtype.cuh"
#include "kernels.h"

namespace jemfast {
namespace {

constexpr int kEnergyThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kEnergyThreads / kWarpSize;
// Rows up to this many classes get one warp each (JEM heads have 4..1000
// classes: a block per row would leave most of its threads idle); longer rows
// get a whole block so that one row's latency is spread over 8 warps.
constexpr int64_t kWarpPerRowMaxCols = 2048;

// Running log-sum-exp: sum = sum_j exp(v_j - max), so lse = max + log(sum).
// Equal maxima contribute exp(0) = 1 explicitly so that rows of -inf or +inf
// do not produce inf - inf: an all -inf row gives lse = -inf, a +inf entry
// gives +inf, and a NaN entry makes `sum` NaN, as in torch.logsumexp.
struct LseState {
  float max;
  float sum;
};

__device__ __forceinline__ void lse_push(LseState& state, float v) {
  if (v > state.max) {
    state.sum = state.sum * expf(state.max - v) + 1.0f;
    state.max = v;
  } else {
    state.sum += (v == state.max) ? 1.0f : expf(v - state.max);
  }
}

__device__ __forceinline__ LseState lse_merge(LseState a, LseState b) {
  const float max = fmaxf(a.max, b.max);
  const float sa = (a.max == max) ? a.sum : a.sum * expf(a.max - max);
  const float sb = (b.max == max) ? b.sum : b.sum * expf(b.max - max);
  return LseState{max, sa + sb};
}

__device__ __forceinline__ LseState warp_reduce(LseState state) {
#pragma unroll
  for (int lane_mask = kWarpSize / 2; lane_mask > 0; lane_mask /= 2) {
    LseState other;
    other.max = __shfl_xor_sync(0xffffffffu, state.max, lane_mask);
    other.sum = __shfl_xor_sync(0xffffffffu, state.sum, lane_mask);
    state = lse_merge(state, other);
  }
  return state;
}

// Maps rows onto threads: WARP_PER_ROW puts kWarpsPerBlock rows in a block,
// otherwise a block owns one row. Yields (row, first column, column stride).
template <bool WARP_PER_ROW>
struct RowMapping {
  int64_t row;
  int64_t first_col;
  int64_t col_stride;
  __device__ RowMapping() {
    if (WARP_PER_ROW) {
      row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
      first_col = threadIdx.x % kWarpSize;
      col_stride = kWarpSize;
    } else {
      row = blockIdx.x;
      first_col = threadIdx.x;
      col_stride = kEnergyThreads;
    }
  }
};

// energy[r] = -T * logsumexp(logits[r, :] / T), float32 arithmetic, one pass.
//
// Bytes moved: R * C * sizeof(T) read + 4 R written (E is float32); each element is
// read once (a running max replaces the two-pass max-then-sum of the eager
// torch.logsumexp, which also writes the shifted intermediate). Design: the
// online softmax normaliser (Milakov & Gimelshein, "Online normalizer
// calculation for softmax", 2018) with warp-shuffle merges of (max, sum) pairs.
template <typename T, bool WARP_PER_ROW>
__global__ void __launch_bounds__(kEnergyThreads)
    energy_forward_kernel(const T* __restrict__ logits, float* __restrict__ energy, int64_t rows, int64_t cols,
                          float temperature) {
  const RowMapping<WARP_PER_ROW> map;
  // Rows past the end still join the shuffles below (full-warp masks); they just load nothing.
  const bool active = map.row < rows;
  LseState state{-INFINITY, 0.0f};
  if (active) {
    const T* row_ptr = logits + map.row * cols;
    for (int64_t c = map.first_col; c < cols; c += map.col_stride) lse_push(state, to_float(row_ptr[c]) / temperature);
  }
  state = warp_reduce(state);
  if (!WARP_PER_ROW) {
    __shared__ LseState partial[kWarpsPerBlock];
    const int warp = threadIdx.x / kWarpSize;
    const int lane = threadIdx.x % kWarpSize;
    if (lane == 0) partial[warp] = state;
    __syncthreads();
    if (warp != 0) return;
    state = lane < kWarpsPerBlock ? partial[lane] : LseState{-INFINITY, 0.0f};
    state = warp_reduce(state);
  }
  if (active && threadIdx.x % kWarpSize == 0) {
    const float lse = state.max + logf(state.sum);
    energy[map.row] = -temperature * lse;
  }
}

// grad_logits[r, c] = -grad_energy[r] * exp(logits[r, c] / T - lse[r]), lse[r] = -energy[r] / T.
//
// One pass, recomputing softmax from the saved energy instead of saving it:
// bytes moved R * C * sizeof(T) read + R * C * sizeof(T) written + 8 R (float32 E and grad_E).
// Rows with an infinite lse give NaN where logits / T is also infinite, as
// torch.logsumexp's backward does.
template <typename T, bool WARP_PER_ROW>
__global__ void __launch_bounds__(kEnergyThreads)
    energy_backward_kernel(const float* __restrict__ grad_energy, const T* __restrict__ logits,
                           const float* __restrict__ energy, T* __restrict__ grad_logits, int64_t rows, int64_t cols,
                           float temperature) {
  const RowMapping<WARP_PER_ROW> map;
  if (map.row >= rows) return;
  const float lse = energy[map.row] / -temperature;
  const float grad = grad_energy[map.row];
  const T* row_in = logits + map.row * cols;
  T* row_out = grad_logits + map.row * cols;
  for (int64_t c = map.first_col; c < cols; c += map.col_stride) {
    const float soft = expf(to_float(row_in[c]) / temperature - lse);
    row_out[c] = from_float<T>(-(soft * grad));
  }
}

int64_t blocks_for_rows(int64_t rows, bool warp_per_row) {
  return warp_per_row ? (rows + kWarpsPerBlock - 1) / kWarpsPerBlock : rows;
}

}  // namespace

cudaError_t launch_energy_forward(const void* logits, float* energy, int64_t rows, int64_t cols, float temperature,
                                  ScalarKind kind, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || !(temperature > 0.0f)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool warp_per_row = cols <= kWarpPerRowMaxCols;
  const int64_t blocks = blocks_for_rows(rows, warp_per_row);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  return dispatch_scalar_kind(kind, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(logits);
    if (warp_per_row) {
      energy_forward_kernel<T, true><<<static_cast<unsigned>(blocks), kEnergyThreads, 0, stream>>>(in, energy, rows, cols,
                                                                                                 temperature);
    } else {
      energy_forward_kernel<T, false><<<static_cast<unsigned>(blocks), kEnergyThreads, 0, stream>>>(
          in, energy, rows, cols, temperature);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_energy_backward(const float* grad_energy, const void* logits, const float* energy,
                                   void* grad_logits, int64_t rows, int64_t cols, float temperature, ScalarKind kind,
                                   cudaStream_t stream) {
  if (rows < 0 || cols < 0 || !(temperature > 0.0f)) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  const bool warp_per_row = cols <= kWarpPerRowMaxCols;
  const int64_t blocks = blocks_for_rows(rows, warp_per_row);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  return dispatch_scalar_kind(kind, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(logits);
    T* out = static_cast<T*>(grad_logits);
    if (warp_per_row) {
      energy_backward_kernel<T, true><<<static_cast<unsigned>(blocks), kEnergyThreads, 0, stream>>>(
          grad_energy, in, energy, out, rows, cols, temperature);
    } else {
      energy_backward_kernel<T, false><<<static_cast<unsigned>(blocks), kEnergyThreads, 0, stream>>>(
          grad_energy, in, energy, out, rows, cols, temperature);
    }
    return cudaGetLastError();
  });
}

}  // namespace jemfast
