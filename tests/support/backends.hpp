// Test support: the list of backends built, and buffers in each backend's memory space.
#pragma once

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "support/gpu_cases.hpp"
#include "weft/weft.hpp"

#if WEFT_TEST_KOKKOS
#include "weft/kokkos.hpp"
#endif
#if WEFT_TEST_CUDA
#include "weft/cuda.cuh"
#endif

namespace weft_test {

/// Runs f and expects a weft::invalid_argument that names `arg`.
template <class F>
void expect_bad(const std::string& arg, F&& f) {
  INFO("expected a complaint about '" << arg << "'");
  try {
    f();
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    INFO(e.what());
    CHECK(e.argument() == arg);
  }
}

/// Every backend this test executable exercises; TEMPLATE_LIST_TEST_CASE runs each. A CUDA twin
/// (the same source compiled by nvcc) runs the CUDA backend only: its serial cases would repeat
/// the host executable's, at twice the compile time.
#if WEFT_TEST_CUDA
using backends = std::tuple<weft::cuda_backend>;
#else
using backends = std::tuple<weft::serial_backend
#if WEFT_TEST_KOKKOS
                            ,
                            weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>
#endif
                            >;
#endif

/// Only the fast backends (for tests that compare a fast path with the serial reference).
using fast_backends = std::tuple<
#if WEFT_TEST_KOKKOS
    weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>
#endif
#if WEFT_TEST_KOKKOS && WEFT_TEST_CUDA
    ,
#endif
#if WEFT_TEST_CUDA
    weft::cuda_backend
#endif
    >;

/// A backend instance; SKIPs the test case when the backend cannot run here (a machine without
/// a GPU). A GPU machine whose CUDA runtime fails throws (weft::backend_error): the case fails.
template <class B>
B make_backend() {
#if WEFT_TEST_CUDA
  if constexpr (std::is_same_v<B, weft::cuda_backend>) {
    if (!weft::cuda_device_available()) SKIP("no CUDA device on this machine");
    ++cuda_cases_run();
  }
#endif
  return B{};
}

/// An array in the backend's memory space, filled from and read back to host vectors.
template <class B, class T>
class buffer {
 public:
  buffer(const B& be, const std::vector<T>& host) : be_(be), n_(host.size()) {
    if constexpr (B::host_accessible) {
      host_ = host;
    } else {
#if WEFT_TEST_CUDA
      void* p = nullptr;
      weft::detail::cuda_check(cudaMalloc(&p, std::max<std::size_t>(1, n_ * sizeof(T))), "cudaMalloc");
      dev_ = static_cast<T*>(p);
      weft::detail::cuda_check(cudaMemcpy(dev_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice),
                               "cudaMemcpy");
#endif
    }
  }
  buffer(const B& be, std::size_t n, const T& fill = T{}) : buffer(be, std::vector<T>(n, fill)) {}
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  ~buffer() {
#if WEFT_TEST_CUDA
    if (dev_) cudaFree(dev_);
#endif
  }

  T* data() {
    return B::host_accessible ? host_.data() : dev_;
  }
  const T* data() const {
    return B::host_accessible ? host_.data() : dev_;
  }
  std::size_t size() const {
    return n_;
  }

  std::vector<T> to_host() const {
    be_.fence();
    if constexpr (B::host_accessible) {
      return host_;
    } else {
      std::vector<T> h(n_);
#if WEFT_TEST_CUDA
      weft::detail::cuda_check(cudaMemcpy(h.data(), dev_, n_ * sizeof(T), cudaMemcpyDeviceToHost),
                               "cudaMemcpy");
#endif
      return h;
    }
  }

 private:
  B be_;
  std::size_t n_;
  std::vector<T> host_;
  T* dev_ = nullptr;
};

/// Bitwise equality of two arrays (for determinism tests).
template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/// Deterministic pseudo-random numbers for test data (splitmix64).
struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0,1)
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

}  // namespace weft_test
