// float32 <-> storage-type conversions shared by the kernels. Arithmetic is
// always float32; values are rounded to nearest once, when stored.
#pragma once

#include <atomic>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.h"

namespace jemfast {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// Calls f(T{}) with T the storage type of `kind`; returns cudaErrorInvalidValue
// for a kind the kernels do not know.
template <typename F>
cudaError_t dispatch_scalar_kind(ScalarKind kind, F&& f) {
  switch (kind) {
    case ScalarKind::kFloat32:
      return f(float{});
    case ScalarKind::kBFloat16:
      return f(__nv_bfloat16{});
    case ScalarKind::kFloat16:
      return f(__half{});
  }
  return cudaErrorInvalidValue;
}

// Streaming multiprocessors of the current device, cached per device: grid
// sizing asks on every launch and the attribute query is not free.
inline int current_sm_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int count = 1;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count < 1) count = 1;
  if (cacheable) cache[device].store(count, std::memory_order_relaxed);
  return count;
}

}  // namespace jemfast
