// weft/backend/cuda.cuh - the native CUDA backend.
//
//   cudaStream_t s; cudaStreamCreate(&s);
//   weft::cuda_backend be{s};
//
// Calls are ordered on `stream`; be.fence() synchronises it. Data must be device memory
// (or managed memory). Scratch comes from cudaMallocAsync on the stream.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"

namespace weft {

namespace detail {
inline void cuda_check(cudaError_t e, const char* operation) {
  if (e != cudaSuccess) {
    throw backend_error("cuda", operation, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
  }
}
}  // namespace detail

struct cuda_backend {
  static constexpr bool host_accessible = false;

  cudaStream_t stream = nullptr;

  static constexpr const char* name() { return "cuda"; }
  void fence() const { detail::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }

  scratch_buffer allocate(std::size_t bytes) const {
    if (bytes == 0) return {};
    void* p = nullptr;
    detail::cuda_check(cudaMallocAsync(&p, bytes, stream), "cudaMallocAsync");
    cudaStream_t s = stream;
    std::shared_ptr<void> owner(p, [s](void* q) { cudaFreeAsync(q, s); });
    return scratch_buffer(p, bytes, std::move(owner));
  }

  /// Checks the last kernel launch.
  void check_launch(const char* kernel) const { detail::cuda_check(cudaGetLastError(), kernel); }
};

static_assert(backend<cuda_backend>);

/// True when at least one CUDA device can be used (false on machines without a GPU).
inline bool cuda_device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

}  // namespace weft
