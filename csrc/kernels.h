// Host launchers for jemfast's CUDA kernels.
//
// Plain CUDA types only (no torch headers), so the .cu files compile with a
// bare nvcc and the torch binding (binding.cpp) stays a thin shim that checks
// tensors, picks the stream and calls these. Every launcher is asynchronous on
// `stream`, never synchronises with the host and returns the launch status.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace jemfast {

// Element types the kernels accept; the binding maps torch dtypes onto these.
enum class ScalarKind : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

struct SgldParams {
  float step_size;
  float noise_std;
  bool has_grad_clamp;
  float grad_clamp;  // gradient clipped to [-grad_clamp, grad_clamp] when has_grad_clamp
  bool has_clamp;
  float clamp_lo;  // result clipped to [clamp_lo, clamp_hi] when has_clamp
  float clamp_hi;
};

// In-place SGLD step on `numel` contiguous elements of `x` (see sgld_update.cu):
//   x <- clip(x + step_size * clip(grad) + noise_std * z, clamp),  z = philox_normal(seed, offset + i)
// `rng_state` is a device pointer to int64 [seed, offset]; the offset is
// advanced by `numel` on the device, after the update, in stream order.
cudaError_t launch_sgld_update(void* x, const void* grad, int64_t* rng_state, int64_t numel, ScalarKind kind,
                               const SgldParams& params, cudaStream_t stream);

// energy[r] = -T * logsumexp(logits[r, :] / T) for row-major (rows, cols) logits of `kind`;
// `energy` is float32 (rows,): the backward recomputes the softmax from it, so
// it is kept at full precision whatever the logits' dtype.
cudaError_t launch_energy_forward(const void* logits, float* energy, int64_t rows, int64_t cols, float temperature,
                                  ScalarKind kind, cudaStream_t stream);

// grad_logits[r, c] = -grad_energy[r] * exp(logits[r, c] / T + energy[r] / T);
// grad_energy, energy: float32 (rows,); logits, grad_logits: (rows, cols) of `kind`.
cudaError_t launch_energy_backward(const float* grad_energy, const void* logits, const float* energy,
                                   void* grad_logits, int64_t rows, int64_t cols, float temperature, ScalarKind kind,
                                   cudaStream_t stream);

}  // namespace jemfast
