// Thin torch binding of the CUDA kernels as the Python module jemfast._C.
//
// Checks devices, dtypes and layouts, launches on the current CUDA stream (so
// the ops record correctly under CUDA graph capture) and turns CUDA errors
// into Python exceptions. User-facing validation lives in jemfast/ops; the
// checks here guard the raw pointers the kernels receive.
#include <optional>
#include <utility>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include "kernels.h"

namespace {

jemfast::ScalarKind scalar_kind_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return jemfast::ScalarKind::kFloat32;
    case at::kBFloat16:
      return jemfast::ScalarKind::kBFloat16;
    case at::kHalf:
      return jemfast::ScalarKind::kFloat16;
    default:
      TORCH_CHECK(false, name, " must be float32, bfloat16 or float16, got ", t.scalar_type());
  }
}

void check_cuda_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_same_device(const at::Tensor& t, const at::Tensor& reference, const char* name) {
  TORCH_CHECK(t.device() == reference.device(), name, " must be on ", reference.device(), ", got ", t.device());
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, what, " failed: ", cudaGetErrorString(status));
}

void sgld_update_(at::Tensor x, const at::Tensor& grad, at::Tensor rng_state, double step_size, double noise_std,
                  std::optional<double> grad_clamp, std::optional<std::pair<double, double>> clamp) {
  check_cuda_tensor(x, "x");
  check_cuda_tensor(grad, "grad");
  check_cuda_tensor(rng_state, "rng_state");
  check_same_device(grad, x, "grad");
  check_same_device(rng_state, x, "rng_state");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "grad must have x's dtype ", x.scalar_type(), ", got ",
              grad.scalar_type());
  TORCH_CHECK(grad.numel() == x.numel(), "grad must have ", x.numel(), " elements like x, got ", grad.numel());
  TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
              "rng_state must be an int64 tensor [seed, offset] of 2 elements, got ", rng_state.scalar_type(),
              " with ", rng_state.numel(), " elements");
  const jemfast::ScalarKind kind = scalar_kind_of(x, "x");

  jemfast::SgldParams params{};
  params.step_size = static_cast<float>(step_size);
  params.noise_std = static_cast<float>(noise_std);
  params.has_grad_clamp = grad_clamp.has_value();
  params.grad_clamp = grad_clamp.has_value() ? static_cast<float>(*grad_clamp) : 0.0f;
  params.has_clamp = clamp.has_value();
  params.clamp_lo = clamp.has_value() ? static_cast<float>(clamp->first) : 0.0f;
  params.clamp_hi = clamp.has_value() ? static_cast<float>(clamp->second) : 0.0f;

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  check_launch(jemfast::launch_sgld_update(x.data_ptr(), grad.data_ptr(), rng_state.data_ptr<int64_t>(), x.numel(),
                                           kind, params, stream),
               "sgld_update_ kernel launch");
}

at::Tensor energy_forward(const at::Tensor& logits, double temperature) {
  check_cuda_tensor(logits, "logits");
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D (rows, classes), got shape ", logits.sizes());
  TORCH_CHECK(temperature > 0.0, "temperature must be > 0, got ", temperature);
  const jemfast::ScalarKind kind = scalar_kind_of(logits, "logits");
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor energy = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  check_launch(jemfast::launch_energy_forward(logits.data_ptr(), energy.data_ptr<float>(), logits.size(0), logits.size(1),
                                              static_cast<float>(temperature), kind, stream),
               "energy_forward kernel launch");
  return energy;
}

at::Tensor energy_backward(const at::Tensor& grad_energy, const at::Tensor& logits, const at::Tensor& energy,
                           double temperature) {
  check_cuda_tensor(logits, "logits");
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D (rows, classes), got shape ", logits.sizes());
  TORCH_CHECK(temperature > 0.0, "temperature must be > 0, got ", temperature);
  TORCH_CHECK(grad_energy.numel() == logits.size(0) && energy.numel() == logits.size(0), "grad_energy and energy must have ",
              logits.size(0), " elements (one per row), got ", grad_energy.numel(), " and ", energy.numel());
  check_same_device(grad_energy, logits, "grad_energy");
  check_same_device(energy, logits, "energy");
  const jemfast::ScalarKind kind = scalar_kind_of(logits, "logits");
  const c10::cuda::CUDAGuard guard(logits.device());
  // The kernel reads float32 E and grad_E; autograd may hand in an expanded
  // (stride-0) or lower-precision grad. Both have only `rows` elements, so
  // normalising them here is cheap.
  const at::Tensor grad_energy_c = grad_energy.to(at::kFloat).contiguous();
  const at::Tensor energy_c = energy.to(at::kFloat).contiguous();
  at::Tensor grad_logits = at::empty_like(logits);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  check_launch(jemfast::launch_energy_backward(grad_energy_c.data_ptr<float>(), logits.data_ptr(), energy_c.data_ptr<float>(),
                                               grad_logits.data_ptr(), logits.size(0), logits.size(1),
                                               static_cast<float>(temperature), kind, stream),
               "energy_backward kernel launch");
  return grad_logits;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "jemfast CUDA kernels: fused SGLD update with Philox noise, log-sum-exp energy";
  m.def("sgld_update_", &sgld_update_, "In-place SGLD step with in-kernel Philox noise; advances rng_state[1]",
        pybind11::arg("x"), pybind11::arg("grad"), pybind11::arg("rng_state"), pybind11::arg("step_size"),
        pybind11::arg("noise_std"), pybind11::arg("grad_clamp") = pybind11::none(),
        pybind11::arg("clamp") = pybind11::none());
  m.def("energy_forward", &energy_forward, "E = -T * logsumexp(logits / T) per row, float32 (R,)", pybind11::arg("logits"),
        pybind11::arg("temperature"));
  m.def("energy_backward", &energy_backward, "dE/dlogits times grad_energy, (R, C) in logits' dtype", pybind11::arg("grad_energy"),
        pybind11::arg("logits"), pybind11::arg("energy"), pybind11::arg("temperature"));
}
