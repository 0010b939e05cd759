// weft/core/locate.hpp - where a failed value check failed, for the message: the first offending
// element of a view, found on the host after a backend pass (item_runner::first_failure) has
// reported that there is one.
//
//   find_first_on_host(be, view, bad, from)   the first element at or after row-major position
//                                             `from` with bad(x) or bad(x, index), copied to the
//                                             host a block at a time: error paths only, the
//                                             checks' success path never calls it
//   element_message(found, labels)            "nan at [b, t, h] = [0, 3, 1]"
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/dtype.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail {

/// An element of a rank-R view: its multi-index and value (found == false: none).
template <class U, int R>
struct found_element {
  bool found = false;
  std::array<std::int64_t, R> index{};
  U value{};
};

/// The first element x of v in row-major order at or after position `from` with bad(x) (or
/// bad(x, index), for checks that depend on where x is), read on the host. Blocks of 4096
/// elements: one transfer of the span a block covers, or one per element where the strides
/// make that span much larger than the block.
template <class Backend, class T, int R, class Bad>
found_element<std::remove_cv_t<T>, R> find_first_on_host(const Backend& be, const tensor_view<T, R>& v,
                                                         const Bad& bad, std::int64_t from = 0) {
  using U = std::remove_cv_t<T>;
  constexpr std::int64_t block = 4096;
  const std::int64_t n = v.size();
  found_element<U, R> out;
  std::vector<std::int64_t> off;
  std::vector<U> raw;
  for (std::int64_t i0 = std::max<std::int64_t>(from, 0); i0 < n; i0 += block) {
    const std::int64_t i1 = std::min(n, i0 + block);
    off.resize(static_cast<std::size_t>(i1 - i0));
    for (std::int64_t i = i0; i < i1; ++i) {
      std::int64_t rem = i, o = 0;
      for (int r = R - 1; r >= 0; --r) {
        o += (rem % v.extent(r)) * v.stride(r);
        rem /= v.extent(r);
      }
      off[static_cast<std::size_t>(i - i0)] = o;
    }
    const auto [lo_it, hi_it] = std::minmax_element(off.begin(), off.end());
    const std::int64_t lo = *lo_it, span = *hi_it - lo + 1;
    const bool one_copy = span <= 64 * (i1 - i0);
    if (one_copy) {
      raw.resize(static_cast<std::size_t>(span));
      be.copy_to_host_bytes(raw.data(), v.data() + lo, static_cast<std::size_t>(span) * sizeof(U));
    }
    for (std::int64_t i = i0; i < i1; ++i) {
      const std::int64_t o = off[static_cast<std::size_t>(i - i0)];
      U x;
      if (one_copy)
        x = raw[static_cast<std::size_t>(o - lo)];
      else
        be.copy_to_host_bytes(&x, v.data() + o, sizeof(U));
      std::array<std::int64_t, R> index{};
      std::int64_t rem = i;
      for (int r = R - 1; r >= 0; --r) {
        index[static_cast<std::size_t>(r)] = rem % v.extent(r);
        rem /= v.extent(r);
      }
      bool is_bad;
      if constexpr (std::is_invocable_v<const Bad&, const U&, const std::array<std::int64_t, R>&>)
        is_bad = bad(x, index);
      else
        is_bad = bad(x);
      if (!is_bad) continue;
      out.found = true;
      out.value = x;
      out.index = index;
      return out;
    }
  }
  return out;
}

/// A value as messages print it: floating point (bf16, f16 too) as nan / inf / a number,
/// integers as integers.
template <class U>
std::string value_string(const U& x) {
  std::ostringstream os;
  if constexpr (std::is_integral_v<U>)
    os << static_cast<long long>(x);
  else if constexpr (std::is_same_v<U, double>)
    os << x;
  else
    os << static_cast<float>(x);
  return os.str();
}

/// "<value> at [<labels>] = [<indices>]", e.g. "nan at [b, t, h] = [0, 3, 1]".
template <class U, int R>
std::string element_message(const found_element<U, R>& e, std::string_view labels) {
  std::ostringstream os;
  os << value_string(e.value) << " at [" << labels << "] = [";
  for (int r = 0; r < R; ++r) os << (r ? ", " : "") << e.index[static_cast<std::size_t>(r)];
  os << ']';
  return os.str();
}

}  // namespace weft::detail
