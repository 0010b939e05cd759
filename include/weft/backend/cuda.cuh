// weft/backend/cuda.cuh - the native CUDA backend.
//
//   cudaStream_t s; cudaStreamCreate(&s);
//   weft::cuda_backend be{s};
//
// Calls are ordered on `stream`; be.fence() synchronises it. Data must be device memory
// (or managed memory). Scratch comes from cudaMallocAsync on the stream.
#pragma once

#include <cuda_runtime.h>
#if defined(__linux__)
#include <unistd.h>
#endif

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
  /// Keeps a stream this backend made (second_resource) alive; empty for the caller's stream.
  std::shared_ptr<CUstream_st> owned_stream{};

  static constexpr const char* name() { return "cuda"; }
  void fence() const { detail::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }

  /// A cudaEvent_t recorded on the stream (timing disabled), destroyed with the last copy.
  struct event {
    std::shared_ptr<CUevent_st> handle;
    void synchronize() const {
      detail::cuda_check(cudaEventSynchronize(handle.get()), "cudaEventSynchronize");
    }
    bool ready() const {
      const cudaError_t e = cudaEventQuery(handle.get());
      if (e == cudaErrorNotReady) return false;
      detail::cuda_check(e, "cudaEventQuery");
      return true;
    }
  };
  event record_event() const {
    cudaEvent_t e = nullptr;
    detail::cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    event ev{std::shared_ptr<CUevent_st>(e, [](cudaEvent_t q) { cudaEventDestroy(q); })};
    detail::cuda_check(cudaEventRecord(e, stream), "cudaEventRecord");
    return ev;
  }
  /// Later work on this stream waits for `ev` on the device (the host does not block).
  void wait_event(const event& ev) const {
    detail::cuda_check(cudaStreamWaitEvent(stream, ev.handle.get(), 0), "cudaStreamWaitEvent");
  }
  /// A backend on a new non-blocking stream of the current device (freed with its last copy).
  cuda_backend second_resource() const {
    cudaStream_t s = nullptr;
    detail::cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    return cuda_backend{s, std::shared_ptr<CUstream_st>(s, [](cudaStream_t q) { cudaStreamDestroy(q); })};
  }

  /// Copies `bytes` from device (or managed) memory to host memory, ordered on the stream,
  /// and waits for them.
  void copy_to_host_bytes(void* dst, const void* src, std::size_t bytes) const {
    if (bytes == 0) return;
    detail::cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    fence();
  }

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

namespace detail {
/// Whether the machine has an NVIDIA device node (Linux: /dev/nvidiactl or /dev/nvidia0).
inline bool nvidia_device_node_present() {
#if defined(__linux__)
  return ::access("/dev/nvidiactl", F_OK) == 0 || ::access("/dev/nvidia0", F_OK) == 0;
#else
  return false;
#endif
}
}  // namespace detail

/// True when at least one CUDA device can be used; false on a machine without one
/// (cudaErrorNoDevice, or no driver at all: cudaErrorInsufficientDriver with no NVIDIA device
/// node). Any other failure, or a missing driver on a machine that has an NVIDIA device node,
/// throws weft::backend_error: a GPU machine whose runtime is broken must not pass for a
/// machine without a GPU (tests would skip instead of failing).
inline bool cuda_device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) return n > 0;
  (void)cudaGetLastError();  // clear the sticky error
  if (e == cudaErrorNoDevice) return false;
  if (e == cudaErrorInsufficientDriver && !detail::nvidia_device_node_present()) return false;
  detail::cuda_check(e, "cudaGetDeviceCount (an NVIDIA device node is present, but the CUDA runtime cannot use it)");
  return false;
}

}  // namespace weft
