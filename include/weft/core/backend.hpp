// weft/core/backend.hpp - the backend concept and the serial reference backend.
//
// A backend is a small value passed first to every call, like an execution policy:
//
//   weft::serial_backend{}                       plain loops, the readable definition
//   weft::kokkos_backend<Exec>{exec_instance}    weft/backend/kokkos.hpp
//   weft::cuda_backend{stream}                   weft/backend/cuda.cuh
//
// Each family declares `template <class Backend> struct <family>_impl;` and specialises it
// per backend: the serial specialisation beside the family's API, the fast ones in the
// family's kokkos.hpp / cuda.cuh. The public function validates its arguments once and
// then calls the specialisation, so every backend sees already-checked arguments
// (docs/architecture.md, docs/new-family.md).
//
// Ordering and a second execution resource (what overlap and ring schedules need):
//
//   auto ev = be.record_event();   // marks everything submitted to `be` so far
//   ev.synchronize();              // the host waits for it;  ev.ready(): has it happened?
//   other.wait_event(ev);          // work submitted to `other` later runs after it
//   auto side = be.second_resource();  // a backend value on an independent resource: a new
//                                  // CUDA stream, a Kokkos partition_space instance (Kokkos
//                                  // >= 4; the same instance before), the serial backend itself
//
// On the serial backend every call has finished when it returns, so its events are complete
// at once and its second resource is itself. Kokkos has no device-side event in its public
// API: its wait_event and ev.synchronize() fence the recorded instance (host-blocking, always
// correct). CUDA records a cudaEvent_t and waits on it device-side (cudaStreamWaitEvent).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "weft/core/error.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

template <class B>
concept backend = std::copy_constructible<B> && requires(const B& b, std::size_t n) {
  { B::name() } -> std::convertible_to<const char*>;
  b.fence();
  { b.allocate(n) } -> std::same_as<scratch_buffer>;
  { B::host_accessible } -> std::convertible_to<bool>;
  { b.record_event() } -> std::copy_constructible;
  b.wait_event(b.record_event());
  b.record_event().synchronize();
  { b.record_event().ready() } -> std::convertible_to<bool>;
  { b.second_resource() } -> std::same_as<B>;
  b.copy_to_host_bytes(static_cast<void*>(nullptr), static_cast<const void*>(nullptr), n);
};

/// The serial reference backend: runs on the calling thread, in host memory.
struct serial_backend {
  static constexpr bool host_accessible = true;
  static constexpr const char* name() { return "serial"; }
  void fence() const {}

  /// Every serial call has finished when it returns: its events are complete at once.
  struct event {
    void synchronize() const {}
    bool ready() const { return true; }
  };
  event record_event() const { return {}; }
  void wait_event(const event&) const {}
  /// The calling thread is the only resource: the second one is the same backend.
  serial_backend second_resource() const { return *this; }
  /// Copies bytes from the backend's memory space to host memory (here: both are the host).
  void copy_to_host_bytes(void* dst, const void* src, std::size_t bytes) const {
    if (bytes != 0) std::memcpy(dst, src, bytes);
  }

  scratch_buffer allocate(std::size_t bytes) const {
    if (bytes == 0) return {};
    void* p = ::operator new (bytes, std::align_val_t{detail::workspace_alignment});
    std::shared_ptr<void> owner(
        p, [](void* q) { ::operator delete (q, std::align_val_t{detail::workspace_alignment}); });
    return scratch_buffer(p, bytes, std::move(owner));
  }
};

static_assert(backend<serial_backend>);

namespace detail {
template <class>
inline constexpr bool dependent_false = false;
}  // namespace detail

}  // namespace weft
