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
// then calls the specialisation, so every backend sees already-checked arguments.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdlib>
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
};

/// The serial reference backend: runs on the calling thread, in host memory.
struct serial_backend {
  static constexpr bool host_accessible = true;
  static constexpr const char* name() { return "serial"; }
  void fence() const {}
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
