// weft/decode/common.hpp - what every decode header shares: the per-backend dispatch, row
// runners, option checks and value checks.
//
// Every decode operation is a loop over independent rows (a sequence, a position or a tree):
// the CPU backends share one implementation, impl::decode_rowwise<Backend, Rows>, in which
// `Rows` says how rows run (serial: one after the other; Kokkos: a parallel_for over the
// execution space). A row function never depends on which worker runs it, so results are
// bitwise identical across the serial and Kokkos backends and any thread count.
//
// Checks happen in two stages, both before anything is written: the public function checks
// shapes and options on the host, then the backend runs a value-check pass over the data
// (probabilities, token ids, trees) and throws weft::invalid_argument for the first bad row.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

namespace impl {
/// Per-backend implementation of the decode family; specialised per backend.
template <class Backend>
struct decode_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no decode implementation for this backend; include weft/kokkos.hpp "
                "(Kokkos) or weft/cuda.cuh (CUDA)");
};
}  // namespace impl

namespace detail::decode {

/// A failed value check: the smallest failing row and what failed (0 = nothing failed).
struct check_failure {
  std::int64_t row = -1;
  int code = 0;
};

/// Encodes (row, code) so that the minimum over rows is the first failure; code < 16.
WEFT_INLINE std::int64_t encode_failure(std::int64_t row, int code) {
  return code == 0 ? INT64_MAX : row * 16 + code;
}
inline check_failure decode_failure(std::int64_t e) {
  if (e == INT64_MAX) return {};
  return {e / 16, static_cast<int>(e % 16)};
}

/// Runs rows one after the other on the calling thread.
struct serial_rows {
  /// Scratch run() needs for rows of per_row bytes (one worker: one row's worth).
  static std::size_t scratch_bytes(const serial_backend&, std::int64_t, std::size_t per_row) {
    return per_row == 0 ? 0 : align_up(per_row);
  }

  /// f(row, scratch) for every row; scratch is per_row bytes owned by this worker.
  template <class F>
  static void run(const serial_backend& be, const char*, std::int64_t n, std::size_t per_row,
                  const workspace& ws, const char* fn, const F& f) {
    if (n <= 0) return;
    scratch_buffer s = acquire_scratch(be, ws, scratch_bytes(be, n, per_row), fn);
    for (std::int64_t i = 0; i < n; ++i) f(i, s.data());
  }

  /// The first row r for which f(r) != 0, and that code.
  template <class F>
  static check_failure first_failure(const serial_backend&, const char*, std::int64_t n, const F& f) {
    for (std::int64_t i = 0; i < n; ++i) {
      const int c = f(i);
      if (c != 0) return {i, c};
    }
    return {};
  }
};

// ---------------------------------------------------------------------------------------
// Host-side checks of optional views and options.
// ---------------------------------------------------------------------------------------
template <class T, int R>
bool given(const tensor_view<T, R>& v) {
  return v.data() != nullptr || v.size() != 0;
}

/// An optional per-row view: absent, or shape [B].
template <class T>
void check_optional_rows(std::string_view fn, std::string_view name, const tensor_view<T, 1>& v,
                         std::int64_t B, bool output) {
  if (!given(v)) return;
  if (output)
    check_output_view(fn, name, v);
  else
    check_view(fn, name, v);
  require_shape(fn, name, v, std::array<std::int64_t, 1>{B});
}

template <class Opts>
void check_seed_views(std::string_view fn, const Opts& o, std::int64_t B) {
  check_optional_rows(fn, "seeds", o.seeds, B, false);
  check_optional_rows(fn, "offsets", o.offsets, B, false);
}

template <class T, int R>
void check_rows_view(std::string_view fn, std::string_view name, const tensor_view<T, R>& v) {
  check_view(fn, name, v);
  require_unit_inner_stride(fn, name, v);
}

inline void check_vocab(std::string_view fn, std::string_view name, std::int64_t vocab) {
  require(vocab >= 1 && vocab <= INT32_MAX, fn, name, "a vocabulary of 1 to 2^31-1 entries",
          concat(vocab, " entries"));
}

template <class T>
constexpr void static_check_float() {
  static_assert(is_floating_v<std::remove_cv_t<T>>,
                "weft decode: logits / probabilities must be float, "
                "double, weft::bf16 or weft::f16");
}

/// Throws for a failed value check.
inline void throw_failure(std::string_view fn, std::string_view argument, const check_failure& f,
                          std::string_view expected, std::string_view what) {
  if (f.code == 0) return;
  throw invalid_argument(std::string(fn), std::string(argument), std::string(expected),
                         concat("row ", f.row, ": ", what));
}

}  // namespace detail::decode
}  // namespace weft
