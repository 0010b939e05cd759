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
#include "weft/core/math.hpp"
#include "weft/core/services.hpp"

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

/// A thread per item; `base` holds `stride` bytes of scratch per item.
template <class F>
__global__ void items_kernel(F f, std::int64_t n, char* base, std::size_t stride) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i, base ? static_cast<void*>(base + i * stride) : nullptr);
}

/// A thread per item; the smallest encoded failure by atomicMin (an integer: deterministic).
template <class F>
__global__ void first_failure_kernel(F f, std::int64_t n, unsigned long long* first) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::int64_t e = encode_failure(i, f(i));
  if (e != INT64_MAX) atomicMin(first, static_cast<unsigned long long>(e));
}

/// Items on the GPU, a thread each, running the same item functions as the CPU backends
/// (value checks, per-sequence rules); scratch is per_item bytes (64-aligned) for every item.
/// Correct, not fast: a family's heavy work launches its own kernels.
template <>
struct item_runner<cuda_backend> : item_runner_base<item_runner<cuda_backend>, cuda_backend> {
  using item_runner_base::run;
  static constexpr int threads = 128;

  static std::size_t scratch_bytes(const cuda_backend&, std::int64_t n, std::size_t per_item) {
    return per_item == 0 ? 0 : align_up(per_item, 64) * static_cast<std::size_t>(n > 0 ? n : 0);
  }

  template <class F>
  static void run(const cuda_backend& be, const char* label, std::int64_t n, std::size_t per_item, void* base,
                  const F& f) {
    if (n <= 0) return;
    items_kernel<<<static_cast<unsigned>(ceil_div<std::int64_t>(n, threads)), threads, 0, be.stream>>>(
        f, n, static_cast<char*>(base), align_up(per_item, 64));
    be.check_launch(label);
    if (per_item) be.fence();  // the scratch may be released on return
  }

  template <class F>
  static check_failure first_failure(const cuda_backend& be, const char* label, std::int64_t n, const F& f) {
    if (n <= 0) return {};
    scratch_buffer s = be.allocate(sizeof(unsigned long long));
    auto* first = static_cast<unsigned long long*>(s.data());
    const unsigned long long none = static_cast<unsigned long long>(INT64_MAX);
    cuda_check(cudaMemcpyAsync(first, &none, sizeof none, cudaMemcpyHostToDevice, be.stream),
               "cudaMemcpyAsync");
    first_failure_kernel<<<static_cast<unsigned>(ceil_div<std::int64_t>(n, threads)), threads, 0,
                           be.stream>>>(f, n, first);
    be.check_launch(label);
    unsigned long long h = none;
    be.copy_to_host_bytes(&h, first, sizeof h);
    return decode_failure(static_cast<std::int64_t>(h));
  }
};

}  // namespace detail

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
  detail::cuda_check(
      e, "cudaGetDeviceCount (an NVIDIA device node is present, but the CUDA runtime cannot use it)");
  return false;
}

}  // namespace weft
