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
#include "weft/core/services.hpp"
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

  /// Kokkos' public API has no event: this one holds the recorded instance, and waiting for it
  /// fences that instance (everything submitted to it so far, and possibly more: never less).
  struct event {
    Exec exec{};
    void synchronize() const { exec.fence(); }
    /// No non-blocking query exists in Kokkos: fences, then answers true.
    bool ready() const {
      exec.fence();
      return true;
    }
  };
  event record_event() const { return event{exec}; }
  /// Orders later work on this backend after `ev` (on the host: fences the recorded instance).
  template <class Event>
  void wait_event(const Event& ev) const {
    ev.synchronize();
  }
  /// A backend on an independent instance of Exec: Kokkos::Experimental::partition_space
  /// (Kokkos >= 4); before Kokkos 4 the same instance, so work on the two stays in order.
  kokkos_backend second_resource() const {
#if defined(KOKKOS_VERSION) && KOKKOS_VERSION >= 40000
    auto parts = Kokkos::Experimental::partition_space(exec, 1, 1);
    return kokkos_backend{parts[1]};
#else
    return *this;
#endif
  }

  /// Copies bytes from Exec's memory space to host memory, ordered on the instance, and waits.
  void copy_to_host_bytes(void* dst, const void* src, std::size_t bytes) const {
    if (bytes == 0) return;
    using unmanaged = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
    Kokkos::View<char*, Kokkos::HostSpace, unmanaged> h(static_cast<char*>(dst), bytes);
    Kokkos::View<const char*, memory_space, unmanaged> d(static_cast<const char*>(src), bytes);
    Kokkos::deep_copy(exec, h, d);
    exec.fence();
  }

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

namespace detail {

/// Items in a parallel_for over the execution space (dynamic schedule: items of one call can
/// differ in cost several-fold); each worker owns a slice of scratch picked by a UniqueToken.
/// On device execution spaces this is one thread per item: correct, not fast.
template <class Exec>
struct item_runner<kokkos_backend<Exec>>
    : item_runner_base<item_runner<kokkos_backend<Exec>>, kokkos_backend<Exec>> {
  using backend_t = kokkos_backend<Exec>;
  using item_runner_base<item_runner<kokkos_backend<Exec>>, kokkos_backend<Exec>>::run;
  using token_t = Kokkos::Experimental::UniqueToken<Exec, Kokkos::Experimental::UniqueTokenScope::Instance>;

  /// One item's worth of scratch for each worker the instance can run at once.
  static std::size_t scratch_bytes(const backend_t& be, std::int64_t, std::size_t per_item) {
    return per_item == 0 ? 0 : static_cast<std::size_t>(token_t(be.exec).size()) * align_up(per_item);
  }

  template <class F>
  static void run(const backend_t& be, const char* label, std::int64_t n, std::size_t per_item, void* base,
                  const F& f) {
    if (n <= 0) return;
    const std::size_t stride = align_up(per_item);
    const token_t token(be.exec);
    char* b = static_cast<char*>(base);
    Kokkos::parallel_for(
        label, Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Dynamic>>(be.exec, 0, n),
        KOKKOS_LAMBDA(std::int64_t i) {
          const auto id = token.acquire();
          isa_call(f, i, b ? static_cast<void*>(b + static_cast<std::size_t>(id) * stride) : nullptr);
          token.release(id);
        });
    be.exec.fence();  // the scratch may be released on return
  }

  template <class F>
  static check_failure first_failure(const backend_t& be, const char* label, std::int64_t n, const F& f) {
    if (n <= 0) return {};
    std::int64_t first = INT64_MAX;
    Kokkos::parallel_reduce(
        label, Kokkos::RangePolicy<Exec>(be.exec, 0, n),
        KOKKOS_LAMBDA(std::int64_t i, std::int64_t & acc) {
          int c = 0;
          isa_call([&](std::int64_t j) { c = f(j); }, i);
          const std::int64_t e = encode_failure(i, c);
          acc = e < acc ? e : acc;
        },
        Kokkos::Min<std::int64_t>(first));
    be.exec.fence();
    return decode_failure(first);
  }
};

}  // namespace detail

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
