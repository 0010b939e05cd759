// weft/scan/detail/scan_args.hpp - what the scan family's API checks and hands every backend:
// the [B,T,D] view of a problem, the scan kind, the argument checks of scans and linear
// recurrences (shared by the calls and their workspace_size), the offsets on the host.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/config.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"

namespace weft {
namespace detail {
template <class V, class T>
WEFT_INLINE V load_as(const T& x) {
  return static_cast<V>(x);
}

/// What every backend's scan receives after the checks: a [B,T,D] problem (rank-1 inputs
/// are [1,n,1]), already validated.
enum class scan_kind { inclusive, exclusive };

/// The public function a scan kind comes from (for error messages).
inline const char* scan_function(scan_kind kind) {
  return kind == scan_kind::exclusive ? "exclusive_scan" : "inclusive_scan";
}

template <class T, int R>
tensor_view<T, 3> as_btd(tensor_view<T, R> v) {
  if constexpr (R == 1) {
    const std::int64_t e[3] = {1, v.extent(0), 1}, s[3] = {0, v.stride(0), 0};
    return tensor_view<T, 3>(v.data(), e, s);
  } else {
    static_assert(R == 3, "weft scans take rank-1 or rank-3 [B,T,D] views");
    return v;
  }
}

template <class U, class V>
inline constexpr bool storable_v = std::is_convertible_v<V, U> || std::is_constructible_v<U, V>;

template <class T, class U, int R>
void check_scan_views(std::string_view fn, const tensor_view<T, R>& in, const tensor_view<U, R>& out) {
  static_assert(R == 1 || R == 3, "weft scans take rank-1 or rank-3 [B,T,D] views");
  static_assert(!std::is_const_v<U>, "weft scans: 'out' must be writable");
  check_view(fn, "in", in);
  check_output_view(fn, "out", out);
  std::array<std::int64_t, R> e{};
  for (int r = 0; r < R; ++r) e[r] = in.extent(r);
  require_shape(fn, "out", out, e);
  require_disjoint(fn, "out", out, "in", in, true);
}

/// reduce of [B,T,D] into [B,D]: the views and their shapes.
template <class T, class U>
void check_reduce_views(std::string_view fn, const tensor_view<T, 3>& in, const tensor_view<U, 2>& out) {
  static_assert(!std::is_const_v<U>, "weft::reduce: 'out' must be writable");
  check_view(fn, "in", in);
  check_output_view(fn, "out", out);
  require_shape(fn, "out", out, std::array<std::int64_t, 2>{in.extent(0), in.extent(2)});
  require_disjoint(fn, "out", out, "in", in);
}

/// The offsets view of a segmented scan (its values are checked on the host: check_offsets).
template <class I>
void check_offsets_view(std::string_view fn, const tensor_view<I, 1>& offsets) {
  check_view(fn, "offsets", offsets);
  require(offsets.extent(0) >= 1, fn, "offsets", "at least one entry ([N+1] for N segments)",
          shape_string(offsets));
}

/// Offsets [N+1] start at 0, never decrease and end at the scanned length n.
inline void check_offsets(std::string_view fn, const std::vector<std::int64_t>& off, std::int64_t n) {
  if (off.empty() || off.front() != 0) {
    fail(fn, "offsets", "offsets[0] == 0",
         off.empty() ? "no entries" : concat("offsets[0] == ", off.front()));
  }
  for (std::size_t s = 1; s < off.size(); ++s) {
    if (off[s] < off[s - 1]) {
      fail(fn, "offsets", "non-decreasing offsets",
           concat("offsets[", s, "] = ", off[s], " < offsets[", s - 1, "] = ", off[s - 1]));
    }
  }
  if (off.back() != n) {
    fail(fn, "offsets", concat("segments covering the sequence: offsets[N] == ", n),
         concat("offsets[", off.size() - 1, "] == ", off.back()));
  }
}

/// Reads a rank-1 index view into host memory (copying from device memory when needed).
template <class Backend, class I>
std::vector<std::int64_t> offsets_to_host(const Backend& be, tensor_view<I, 1> offsets) {
  const auto raw = copy_to_host(be, offsets);
  return std::vector<std::int64_t>(raw.begin(), raw.end());
}
}  // namespace detail
namespace detail {
/// Whether an optional view was given.
template <class T, int R>
bool present(const tensor_view<T, R>& v) {
  return v.data() != nullptr || v.size() != 0;
}

template <class S>
void check_state(std::string_view fn, std::string_view name, const tensor_view<S, 2>& s, std::int64_t B,
                 std::int64_t D) {
  check_view(fn, name, s);
  require_shape(fn, name, s, std::array<std::int64_t, 2>{B, D});
}

/// The shape of the [B,T,D] views of a call: per dimension the extent most of them give (ties:
/// the first), so that a message names the view that disagrees with the others, not the first
/// one it was compared with (a of the wrong T beside b and h that agree is 'a').
template <class... V>
std::array<std::int64_t, 3> agreed_shape(const V&... v) {
  std::array<std::int64_t, 3> e{};
  for (int r = 0; r < 3; ++r) {
    const std::array<std::int64_t, sizeof...(V)> x{v.extent(r)...};
    int best = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      int c = 0;
      for (std::size_t j = 0; j < x.size(); ++j) c += x[j] == x[i];
      if (c > best) {
        best = c;
        e[static_cast<std::size_t>(r)] = x[i];
      }
    }
  }
  return e;
}

/// linear_recurrence: a, b, h [B,T,D], h writable (may be b), opts.initial_state [B,D].
template <class TA, class TB, class TH, class Opts>
void check_recurrence_args(std::string_view fn, const tensor_view<TA, 3>& a, const tensor_view<TB, 3>& b,
                           const tensor_view<TH, 3>& h, const Opts& opts) {
  static_assert(!std::is_const_v<TH>, "weft::linear_recurrence: 'h' must be writable");
  check_view(fn, "a", a);
  const std::array<std::int64_t, 3> e = agreed_shape(a, b, h);
  require_shape(fn, "a", a, e);
  check_view(fn, "b", b);
  require_shape(fn, "b", b, e);
  check_output_view(fn, "h", h);
  require_shape(fn, "h", h, e);
  require_disjoint(fn, "h", h, "a", a);
  require_disjoint(fn, "h", h, "b", b, true);  // h may be b (in place)
  if (present(opts.initial_state)) {
    check_state(fn, "initial_state", opts.initial_state, e[0], e[2]);
    require_disjoint(fn, "h", h, "initial_state", opts.initial_state);
  }
}

/// linear_recurrence_backward: a, h, dh, da, db [B,T,D]; states [B,D]; outputs disjoint.
template <class TA, class TH, class TG, class TDA, class TDB, class Opts>
void check_recurrence_backward_args(std::string_view fn, const tensor_view<TA, 3>& a,
                                    const tensor_view<TH, 3>& h, const tensor_view<TG, 3>& dh,
                                    const tensor_view<TDA, 3>& da, const tensor_view<TDB, 3>& db,
                                    const Opts& opts) {
  static_assert(!std::is_const_v<TDA> && !std::is_const_v<TDB>,
                "weft::linear_recurrence_backward: da, db must be writable");
  check_view(fn, "a", a);
  const std::array<std::int64_t, 3> e = agreed_shape(a, h, dh, da, db);
  require_shape(fn, "a", a, e);
  check_view(fn, "h", h);
  require_shape(fn, "h", h, e);
  check_view(fn, "dh", dh);
  require_shape(fn, "dh", dh, e);
  check_output_view(fn, "da", da);
  require_shape(fn, "da", da, e);
  check_output_view(fn, "db", db);
  require_shape(fn, "db", db, e);
  if (present(opts.initial_state)) check_state(fn, "initial_state", opts.initial_state, e[0], e[2]);
  if (present(opts.d_initial_state)) {
    check_output_view(fn, "d_initial_state", opts.d_initial_state);
    require_shape(fn, "d_initial_state", opts.d_initial_state, std::array<std::int64_t, 2>{e[0], e[2]});
  }
  // The outputs overlap neither each other nor any input (the gradients read a, h and dh at
  // other steps than the one they write).
  require_disjoint(fn, "db", db, "da", da);
  auto disjoint_from_inputs = [&](std::string_view name, const auto& out) {
    require_disjoint(fn, name, out, "a", a);
    require_disjoint(fn, name, out, "h", h);
    require_disjoint(fn, name, out, "dh", dh);
    if (present(opts.initial_state)) require_disjoint(fn, name, out, "initial_state", opts.initial_state);
  };
  disjoint_from_inputs("da", da);
  disjoint_from_inputs("db", db);
  if (present(opts.d_initial_state)) {
    disjoint_from_inputs("d_initial_state", opts.d_initial_state);
    require_disjoint(fn, "d_initial_state", opts.d_initial_state, "da", da);
    require_disjoint(fn, "d_initial_state", opts.d_initial_state, "db", db);
  }
}
}  // namespace detail
}  // namespace weft
