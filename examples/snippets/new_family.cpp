// snippet: examples/snippets/new_family.cpp
// The skeleton of a weft family, complete and compiled: docs/new-family.md walks through it.
// A real family spreads these sections over include/weft/<family>/ (file named in each banner).
#include <weft/weft.hpp>
#if __has_include(<Kokkos_Core.hpp>)
#include <weft/kokkos.hpp>
#endif

#include <cassert>
#include <cmath>
#include <cstdio>
#include <vector>

// ===== weft/normalize/normalize.hpp: the public API first =====================================
namespace weft {

/// Options: an aggregate with defaults, for designated initializers.
struct normalize_options {
  weft::workspace workspace{};  ///< optional caller scratch: workspace_size(be, ops::normalize_rows{}, ...)
};

namespace ops {
struct normalize_rows {};  ///< names the operation in workspace_size
}  // namespace ops

namespace impl {
/// Per-backend implementation of normalize_rows. A specialisation provides
///   static std::size_t workspace_bytes(const Backend&, std::int64_t rows, std::int64_t D)
///   static bool any_invalid(const Backend&, tensor_view<const T, 2> x)   a value pass
///   static void run(const Backend&, tensor_view<const T, 2> x, tensor_view<T, 2> y, const workspace&)
/// and sees arguments the public function has already checked.
template <class Backend>
struct normalize_rows_impl {
  static_assert(detail::dependent_false<Backend>, "weft: no normalize_rows for this backend");
};
}  // namespace impl

namespace detail::normalize {
template <class T>
void check_args(const char* fn, tensor_view<const T, 2> x, tensor_view<T, 2> y);
}  // namespace detail::normalize

/// Bytes of `.workspace` normalize_rows needs for x [rows, D].
template <backend Backend>
std::size_t workspace_size(const Backend& be, ops::normalize_rows, std::int64_t rows, std::int64_t D) {
  return impl::normalize_rows_impl<Backend>::workspace_bytes(be, rows, D);
}

/// y[r, :] = x[r, :] / sum_j x[r, j] for x [rows, D] of finite, non-negative values whose rows
/// have a positive sum. Checks everything before writing anything.
template <backend Backend, class T>
void normalize_rows(const Backend& be, tensor_view<const T, 2> x, tensor_view<T, 2> y,
                    const normalize_options& opts = {}) {
  constexpr const char* fn = "normalize_rows";
  detail::normalize::check_args(fn, x, y);  // shapes, strides, overlap: on the host
  using I = impl::normalize_rows_impl<Backend>;
  detail::require(!I::any_invalid(be, x), fn, "x",
                  "finite, non-negative values, each row with a positive sum",
                  "a row that is not");  // values: a pass on the backend
  if (x.extent(0) == 0) return;
  I::run(be, x, y, opts.workspace);
}

// ===== weft/normalize/normalize.hpp (after the API): argument checks ==========================
namespace detail::normalize {
template <class T>
void check_args(const char* fn, tensor_view<const T, 2> x, tensor_view<T, 2> y) {
  check_view(fn, "x", x);
  check_output_view(fn, "y", y);
  require_unit_inner_stride(fn, "x", x);
  require_unit_inner_stride(fn, "y", y);
  require_shape(fn, "y", y, std::array<std::int64_t, 2>{x.extent(0), x.extent(1)});
  require(x.extent(1) >= 1, fn, "x", "at least one column", concat(x.extent(1), " columns"));
}
}  // namespace detail::normalize

// ===== weft/normalize/reference.hpp: the definition, one item (row) at a time =================
namespace detail::normalize {
/// The item function every CPU backend runs: stage the row in scratch, sum it in a fixed order
/// (simd::sum_of: bitwise repeatable on any thread count), divide.
template <class T>
struct row_fn {
  tensor_view<const T, 2> x;
  tensor_view<T, 2> y;
  WEFT_HOST_DEVICE void operator()(std::int64_t r, void* scratch) const {
    const std::int64_t D = x.extent(1);
    float* row = static_cast<float*>(scratch);
    for (std::int64_t j = 0; j < D; ++j) row[j] = static_cast<float>(x(r, j));
    const float inv = 1.0f / simd::sum_of(row, D);
    for (std::int64_t j = 0; j < D; ++j) y(r, j) = static_cast<T>(row[j] * inv);
  }
};
/// The value check as an item function: 1 when row r is not valid.
template <class T>
struct row_bad {
  tensor_view<const T, 2> x;
  WEFT_HOST_DEVICE int operator()(std::int64_t r) const {
    float s = 0.0f;
    for (std::int64_t j = 0; j < x.extent(1); ++j) {
      const float v = static_cast<float>(x(r, j));
      if (!(v >= 0.0f) || v == pos_inf()) return 1;  // NaN, negative or +inf
      s += v;
    }
    return s > 0.0f ? 0 : 1;
  }
};

/// Every CPU backend: rows through the backend's item runner (serial loop, Kokkos parallel_for).
template <class Backend>
struct rowwise {
  static std::size_t workspace_bytes(const Backend& be, std::int64_t rows, std::int64_t D) {
    return item_runner<Backend>::scratch_bytes(be, rows, static_cast<std::size_t>(D) * sizeof(float));
  }
  template <class T>
  static bool any_invalid(const Backend& be, tensor_view<const T, 2> x) {
    return item_runner<Backend>::first_failure(be, "weft::normalize_rows_check", x.extent(0), row_bad<T>{x})
               .code != 0;
  }
  template <class T>
  static void run(const Backend& be, tensor_view<const T, 2> x, tensor_view<T, 2> y, const workspace& ws) {
    item_runner<Backend>::run(be, "weft::normalize_rows", x.extent(0),
                              static_cast<std::size_t>(x.extent(1)) * sizeof(float), ws, "normalize_rows",
                              row_fn<T>{x, y});
  }
};
}  // namespace detail::normalize

namespace impl {
template <>
struct normalize_rows_impl<serial_backend> : detail::normalize::rowwise<serial_backend> {};
}  // namespace impl

// ===== weft/normalize/kokkos.hpp: the Kokkos specialisation (CUDA: weft/normalize/cuda.cuh) ===
#if __has_include(<Kokkos_Core.hpp>)
namespace impl {
template <class Exec>
struct normalize_rows_impl<kokkos_backend<Exec>> : detail::normalize::rowwise<kokkos_backend<Exec>> {};
}  // namespace impl
#endif

}  // namespace weft

// ===== tests/normalize/: an independent fp64 oracle, bad input, every backend =================
template <class Backend>
void check(const Backend& be) {
  const std::int64_t R = 37, D = 21;  // ugly sizes: not multiples of 16
  std::vector<float> x(R * D), y(R * D, -1.0f);
  for (std::int64_t i = 0; i < R * D; ++i) x[i] = static_cast<float>((i * 7919) % 13);
  weft::normalize_rows(be, weft::make_view<const float>(x.data(), R, D), weft::make_view(y.data(), R, D));
  for (std::int64_t r = 0; r < R; ++r) {
    double s = 0;
    for (std::int64_t j = 0; j < D; ++j) s += x[r * D + j];
    for (std::int64_t j = 0; j < D; ++j) assert(std::fabs(y[r * D + j] - x[r * D + j] / s) <= 1e-6);
  }
  // a caller workspace of exactly workspace_size bytes gives the same bits
  const std::size_t bytes = weft::workspace_size(be, weft::ops::normalize_rows{}, R, D);
  weft::scratch_buffer ws = be.allocate(bytes);
  std::vector<float> y2(R * D);
  weft::normalize_rows(be, weft::make_view<const float>(x.data(), R, D), weft::make_view(y2.data(), R, D),
                       {.workspace = {ws.data(), bytes}});
  assert(y2 == y);
  // a bad value: rejected, naming the argument, and nothing written
  x[5 * D + 3] = -1.0f;
  std::vector<float> untouched(R * D, 7.0f);
  try {
    weft::normalize_rows(be, weft::make_view<const float>(x.data(), R, D),
                         weft::make_view(untouched.data(), R, D));
    assert(false);
  } catch (const weft::invalid_argument& e) {
    assert(e.argument() == "x");
  }
  for (float v : untouched) assert(v == 7.0f);
  std::printf("%s: normalize_rows matches the fp64 oracle; bad input rejected, nothing written\n",
              Backend::name());
}

int main(int argc, char** argv) {
  check(weft::serial_backend{});
#if __has_include(<Kokkos_Core.hpp>)
  Kokkos::ScopeGuard guard(argc, argv);
  check(weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>{});
#else
  (void)argc;
  (void)argv;
#endif
  return 0;
}
