// weft/backend/kokkos.hpp - the Kokkos backend: any execution space of the user's Kokkos.
//
//   weft::kokkos_backend<Kokkos::OpenMP> be{Kokkos::OpenMP()};
//   weft::reduce(be, weft::view_of(x), weft::plus{});
//
// Calls are ordered on the execution-space instance; be.fence() waits for them. Data must
// live in (or be accessible from) Exec's memory space. Kernels are labelled weft::<algo>.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <memory>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/tensor.hpp"

namespace weft {

template <class Exec = Kokkos::DefaultExecutionSpace>
struct kokkos_backend {
  using execution_space = Exec;
  using memory_space = typename Exec::memory_space;
  static constexpr bool host_accessible =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, memory_space>::accessible;

  Exec exec{};

  static constexpr const char* name() { return "kokkos"; }
  /// The execution space's own name ("OpenMP", "Serial", "Cuda", ...).
  static const char* space_name() { return Exec::name(); }
  int concurrency() const { return static_cast<int>(exec.concurrency()); }
  void fence() const { exec.fence(); }

  scratch_buffer allocate(std::size_t bytes) const {
    if (bytes == 0) return {};
    using view_t = Kokkos::View<char*, memory_space>;
    // Kokkos aligns views to 64 bytes (Kokkos::Impl::MEMORY_ALIGNMENT); weft's carvers
    // promise 256, so over-allocate and align the start.
    constexpr std::size_t align = 256;
    auto owner = std::make_shared<view_t>(
        Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("weft::scratch")), bytes + align);
    const auto base = reinterpret_cast<std::uintptr_t>(owner->data());
    void* data = reinterpret_cast<void*>((base + align - 1) / align * align);
    return scratch_buffer(data, bytes, std::move(owner));
  }
};

/// Adapts a Kokkos::View (any layout) to a weft::tensor_view of the same rank.
template <class View, class = std::enable_if_t<Kokkos::is_view<View>::value>>
auto view_of(const View& v) {
  using T = typename View::value_type;
  constexpr int R = static_cast<int>(View::rank);
  static_assert(R >= 1, "weft::view_of: rank-0 views are not supported");
  std::size_t s[R + 1] = {};
  v.stride(s);
  std::int64_t ext[R], str[R];
  for (int r = 0; r < R; ++r) {
    ext[r] = static_cast<std::int64_t>(v.extent(r));
    str[r] = static_cast<std::int64_t>(s[r]);
  }
  return tensor_view<T, R>(v.data(), ext, str);
}

}  // namespace weft
