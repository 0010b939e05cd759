// weft/decode/kokkos.hpp - Kokkos fast paths of the decode family.
//
// Rows run in a parallel_for over the execution space; each worker owns a slice of scratch
// (a Kokkos::Experimental::UniqueToken picks it) and runs the same row functions as the
// serial backend, so results are bitwise identical to serial for any thread count. Value
// checks are a parallel_reduce (Min) over the rows that fail.
//
// On device execution spaces this is one thread per row: correct, but use weft::cuda_backend
// for speed on NVIDIA GPUs.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>

#include "weft/backend/kokkos.hpp"
#include "weft/decode/decode.hpp"

namespace weft {
namespace detail::decode {

template <class Exec>
struct kokkos_rows {
  using backend_t = kokkos_backend<Exec>;

  static std::size_t scratch_bytes(const backend_t& be, std::int64_t, std::size_t per_row) {
    return per_row == 0 ? 0
                        : static_cast<std::size_t>(Kokkos::Experimental::UniqueToken<Exec>(be.exec).size()) *
                              align_up(per_row);
  }

  template <class F>
  static void run(const backend_t& be, const char* label, std::int64_t n, std::size_t per_row,
                  const workspace& ws, const char* fn, const F& f) {
    if (n <= 0) return;
    const std::size_t stride = align_up(per_row);
    Kokkos::Experimental::UniqueToken<Exec> token(be.exec);
    scratch_buffer s = acquire_scratch(be, ws, per_row == 0 ? 0 : stride * token.size(), fn);
    char* base = static_cast<char*>(s.data());
    // Dynamic schedule: rows of one batch can differ in cost several-fold (a flat row lists
    // thousands of min-p candidates, a peaked one a few), and a row is the unit of work.
    Kokkos::parallel_for(
        label, Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Dynamic>>(be.exec, 0, n),
        KOKKOS_LAMBDA(std::int64_t i) {
          const auto id = token.acquire();
          f(i, base ? static_cast<void*>(base + id * stride) : nullptr);
          token.release(id);
        });
    be.exec.fence();  // the scratch is released on return
  }

  template <class F>
  static check_failure first_failure(const backend_t& be, const char* label, std::int64_t n, const F& f) {
    if (n <= 0) return {};
    std::int64_t first = INT64_MAX;
    Kokkos::parallel_reduce(
        label, Kokkos::RangePolicy<Exec>(be.exec, 0, n),
        KOKKOS_LAMBDA(std::int64_t i, std::int64_t & acc) {
          const std::int64_t e = encode_failure(i, f(i));
          acc = e < acc ? e : acc;
        },
        Kokkos::Min<std::int64_t>(first));
    be.exec.fence();
    return decode_failure(first);
  }
};

}  // namespace detail::decode

namespace impl {
template <class Exec>
struct decode_impl<kokkos_backend<Exec>>
    : decode_rowwise<kokkos_backend<Exec>, detail::decode::kokkos_rows<Exec>> {};
}  // namespace impl

}  // namespace weft
