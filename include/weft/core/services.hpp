// weft/core/services.hpp - backend services every family uses, written once.
//
//   copy_to_host(be, view) -> std::vector      a small view (offsets, an initial state) on the host
//   item_runner<Backend>                        n independent items with per-item scratch:
//     ::scratch_bytes(be, n, per_item)            the workspace run() needs
//     ::run(be, label, n, per_item, base, f)      f(i, scratch) for i in [0, n); scratch is
//                                                 per_item bytes owned by the running worker
//     ::run(be, label, n, per_item, ws, fn, f)    the same, acquiring the scratch (caller's
//                                                 `.workspace` when given, else the backend's)
//     ::first_failure(be, label, n, f)            the smallest i with f(i) != 0, and f(i): a value
//                                                 check as a backend pass (codes 1..15)
//   any_element(be, label, view, pred)          true when pred(x) holds for an element of view
//
// The serial runner is the loop "for i in 0..n"; the Kokkos one (weft/backend/kokkos.hpp) is a
// parallel_for with a dynamic schedule, each worker's scratch picked by a UniqueToken; the CUDA
// one (weft/backend/cuda.cuh) a thread per item. An item never depends on which worker runs it,
// so results are bitwise identical across the serial and Kokkos backends and any thread count.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/config.hpp"
#include "weft/core/isa.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft::detail {

/// The elements of v in row-major order, on the host. Copies the span the view covers (one
/// transfer) and gathers it; meant for small views (offsets, states), not for bulk data.
template <backend Backend, class T, int R>
std::vector<std::remove_cv_t<T>> copy_to_host(const Backend& be, const tensor_view<T, R>& v) {
  using U = std::remove_cv_t<T>;
  const std::int64_t n = v.size();
  std::vector<U> out(static_cast<std::size_t>(n));
  if (n == 0) return out;
  std::int64_t span = 1;  // elements from data() to the last one, inclusive (strides >= 0)
  for (int r = 0; r < R; ++r) span += (v.extent(r) - 1) * v.stride(r);
  if (span == n && v.is_contiguous()) {
    be.copy_to_host_bytes(out.data(), v.data(), static_cast<std::size_t>(n) * sizeof(U));
    return out;
  }
  std::vector<U> raw(static_cast<std::size_t>(span));
  be.copy_to_host_bytes(raw.data(), v.data(), static_cast<std::size_t>(span) * sizeof(U));
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t rem = i, off = 0;
    for (int r = R - 1; r >= 0; --r) {
      off += (rem % v.extent(r)) * v.stride(r);
      rem /= v.extent(r);
    }
    out[static_cast<std::size_t>(i)] = raw[static_cast<std::size_t>(off)];
  }
  return out;
}

/// A failed value check: the smallest failing item and what failed (code 0: nothing failed).
struct check_failure {
  std::int64_t item = -1;
  int code = 0;
};

/// Encodes (item, code) so that the minimum over items is the first failure; code < 16.
WEFT_INLINE std::int64_t encode_failure(std::int64_t item, int code) {
  return code == 0 ? INT64_MAX : item * 16 + code;
}
inline check_failure decode_failure(std::int64_t e) {
  if (e == INT64_MAX) return {};
  return {e / 16, static_cast<int>(e % 16)};
}

/// What every item runner shares: run() with the scratch acquired from the caller's workspace
/// (when given, checked) or from the backend, in Runner::scratch_bytes for n items.
template <class Runner, class Backend>
struct item_runner_base {
  template <class F>
  static void run(const Backend& be, const char* label, std::int64_t n, std::size_t per_item,
                  const workspace& ws, const char* fn, const F& f) {
    if (n <= 0) return;
    scratch_buffer s = acquire_scratch(be, ws, Runner::scratch_bytes(be, n, per_item), fn);
    Runner::run(be, label, n, per_item, s.data(), f);
  }
};

/// Runs items; specialised per backend (serial below, Kokkos and CUDA in weft/backend/).
template <class Backend>
struct item_runner {
  static_assert(
      dependent_false<Backend>,
      "weft: no item runner for this backend (serial: core/services.hpp; Kokkos, CUDA: weft/backend/)");
};

/// Items one after the other on the calling thread.
template <>
struct item_runner<serial_backend> : item_runner_base<item_runner<serial_backend>, serial_backend> {
  using item_runner_base::run;
  /// One worker: one item's worth of scratch.
  static std::size_t scratch_bytes(const serial_backend&, std::int64_t, std::size_t per_item) {
    return per_item == 0 ? 0 : align_up(per_item);
  }

  template <class F>
  static void run(const serial_backend&, const char*, std::int64_t n, std::size_t, void* base, const F& f) {
    for (std::int64_t i = 0; i < n; ++i) isa_call(f, i, base);
  }

  template <class F>
  static check_failure first_failure(const serial_backend&, const char*, std::int64_t n, const F& f) {
    for (std::int64_t i = 0; i < n; ++i) {
      int c = 0;
      isa_call([&](std::int64_t j) { c = f(j); }, i);
      if (c != 0) return {i, c};
    }
    return {};
  }
};

/// The item function of any_element: 1 when pred holds for an element of block b (elements
/// [b * block, (b + 1) * block) in row-major order) of v, else 0. A functor, so that it is
/// device-callable without extended lambdas; a whole block per item, with no early exit, so that
/// the contiguous loop vectorises.
template <class T, int R, class Pred>
struct element_test {
  static constexpr std::int64_t block = 4096;
  tensor_view<T, R> v;
  Pred pred;
  bool flat;  ///< contiguous: element i is data()[i], no index arithmetic
  WEFT_HOST_DEVICE int operator()(std::int64_t b) const {
    const std::int64_t n = v.size(), i0 = b * block, i1 = i0 + block < n ? i0 + block : n;
    const T* x = v.data();
    int bad = 0;
    if (flat) {
      for (std::int64_t i = i0; i < i1; ++i) bad |= pred(x[i]) ? 1 : 0;
      return bad;
    }
    for (std::int64_t i = i0; i < i1; ++i) {
      std::int64_t rem = i, off = 0;
      for (int r = R - 1; r >= 0; --r) {
        off += (rem % v.extent(r)) * v.stride(r);
        rem /= v.extent(r);
      }
      bad |= pred(x[off]) ? 1 : 0;
    }
    return bad;
  }
};

/// True when pred(x) holds for some element x of v (a value check run by the backend; pred
/// must be callable where the backend runs: a WEFT_HOST_DEVICE functor for device spaces).
template <class Backend, class T, int R, class Pred>
bool any_element(const Backend& be, const char* label, const tensor_view<T, R>& v, const Pred& pred) {
  using test_t = element_test<T, R, Pred>;
  const std::int64_t n = v.size();
  if (n == 0) return false;
  const test_t test{v, pred, v.is_contiguous()};
  return item_runner<Backend>::first_failure(be, label, (n + test_t::block - 1) / test_t::block, test).code !=
         0;
}

}  // namespace weft::detail
