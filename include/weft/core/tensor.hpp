// weft/core/tensor.hpp - non-owning strided views, the currency of every weft call.
//
// A tensor_view<T, Rank> is a pointer, Rank extents and Rank strides (in elements, all
// std::int64_t so that 2^31 and more elements work). It owns nothing; the caller places
// the memory in the backend's memory space. make_view() builds a contiguous row-major view:
//
//   std::vector<float> x(B * T * D);
//   auto v = weft::make_view(x.data(), B, T, D);   // v(b, t, d) == x[(b*T + t)*D + d]
#pragma once

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

#include "weft/core/config.hpp"
#include "weft/core/error.hpp"

namespace weft {

template <class T, int Rank>
class tensor_view {
  static_assert(Rank >= 1 && Rank <= 6, "weft::tensor_view supports ranks 1 to 6");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  static constexpr int rank = Rank;

  tensor_view() = default;

  /// Pointer, extents and strides (in elements).
  WEFT_INLINE tensor_view(T* data, const std::int64_t (&extents)[Rank], const std::int64_t (&strides)[Rank])
      : data_(data) {
    for (int r = 0; r < Rank; ++r) {
      extents_[r] = extents[r];
      strides_[r] = strides[r];
    }
  }
  tensor_view(T* data, const std::array<std::int64_t, Rank>& extents,
              const std::array<std::int64_t, Rank>& strides)
      : data_(data) {
    for (int r = 0; r < Rank; ++r) {
      extents_[r] = extents[r];
      strides_[r] = strides[r];
    }
  }

  /// A view of T converts to a view of const T.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  WEFT_INLINE tensor_view(const tensor_view<U, Rank>& other) : data_(other.data()) {
    for (int r = 0; r < Rank; ++r) {
      extents_[r] = other.extent(r);
      strides_[r] = other.stride(r);
    }
  }

  WEFT_INLINE T* data() const { return data_; }
  WEFT_INLINE std::int64_t extent(int r) const { return extents_[r]; }
  WEFT_INLINE std::int64_t stride(int r) const { return strides_[r]; }
  WEFT_INLINE std::int64_t size() const {
    std::int64_t n = 1;
    for (int r = 0; r < Rank; ++r) n *= extents_[r];
    return n;
  }
  WEFT_INLINE bool empty() const { return size() == 0; }

  template <class... I>
  WEFT_INLINE T& operator()(I... i) const {
    static_assert(sizeof...(I) == Rank, "weft::tensor_view: wrong number of indices");
    const std::int64_t idx[Rank] = {static_cast<std::int64_t>(i)...};
    std::int64_t off = 0;
    for (int r = 0; r < Rank; ++r) off += idx[r] * strides_[r];
    return data_[off];
  }

  /// True when the view is row-major contiguous (extent-1 dimensions may have any stride).
  WEFT_INLINE bool is_contiguous() const {
    std::int64_t expect = 1;
    for (int r = Rank - 1; r >= 0; --r) {
      if (extents_[r] != 1 && strides_[r] != expect) return false;
      expect *= extents_[r];
    }
    return true;
  }

  std::array<std::int64_t, Rank> extents() const {
    std::array<std::int64_t, Rank> e{};
    for (int r = 0; r < Rank; ++r) e[r] = extents_[r];
    return e;
  }

 private:
  T* data_ = nullptr;
  std::int64_t extents_[Rank] = {};
  std::int64_t strides_[Rank] = {};
};

/// Contiguous row-major view: make_view(ptr, e0, e1, ...).
template <class T, class... E>
tensor_view<T, static_cast<int>(sizeof...(E))> make_view(T* data, E... extents) {
  static_assert(sizeof...(E) >= 1, "weft::make_view needs at least one extent");
  static_assert((std::is_integral_v<E> && ...), "weft::make_view: extents must be integers");
  constexpr int R = static_cast<int>(sizeof...(E));
  const std::int64_t ext[R] = {static_cast<std::int64_t>(extents)...};
  std::int64_t str[R];
  std::int64_t s = 1;
  for (int r = R - 1; r >= 0; --r) {
    str[r] = s;
    s *= ext[r] > 0 ? ext[r] : 1;
  }
  return tensor_view<T, R>(data, ext, str);
}

/// Strided view from explicit extents and strides (in elements).
template <class T, std::size_t R>
tensor_view<T, static_cast<int>(R)> make_strided_view(T* data, const std::array<std::int64_t, R>& extents,
                                                      const std::array<std::int64_t, R>& strides) {
  return tensor_view<T, static_cast<int>(R)>(data, extents, strides);
}

namespace detail {

/// "[e0, e1, ...]" (or with other brackets) of n integers. std::to_chars, no stream: the
/// argument checks of every call format shapes eagerly (the message's "got" part), and an
/// ostringstream per view cost a decode step tens of microseconds (docs/perf.md, "PyTorch
/// operators").
template <class Get>
std::string int_list(std::size_t n, char open, char close, Get get) {
  std::string s(1, open);
  char buf[24];
  for (std::size_t r = 0; r < n; ++r) {
    if (r) s += ", ";
    const auto res = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(get(r)));
    s.append(buf, res.ptr);
  }
  s += close;
  return s;
}

template <class T, int R>
std::string shape_string(const tensor_view<T, R>& v) {
  return int_list(R, '[', ']', [&](std::size_t r) { return v.extent(static_cast<int>(r)); });
}

template <std::size_t R>
std::string shape_string(const std::array<std::int64_t, R>& e) {
  return int_list(R, '[', ']', [&](std::size_t r) { return e[r]; });
}

template <class T, int R>
std::string strides_string(const tensor_view<T, R>& v) {
  return int_list(R, '(', ')', [&](std::size_t r) { return v.stride(static_cast<int>(r)); });
}

/// Checks what every view must satisfy: non-negative extents and strides, a non-null
/// pointer unless empty, and an element count (and largest offset) that fits in int64.
template <class T, int R>
void check_view(std::string_view fn, std::string_view name, const tensor_view<T, R>& v) {
  // Conditions first, messages only on failure (this runs for every view of every call).
  for (int r = 0; r < R; ++r) {
    if (v.extent(r) < 0) fail(fn, name, "non-negative extents", shape_string(v));
    if (v.stride(r) < 0) fail(fn, name, "non-negative strides", strides_string(v));
  }
  std::int64_t n = 1;
  for (int r = 0; r < R; ++r) {
    if (v.extent(r) != 0 && n > std::numeric_limits<std::int64_t>::max() / v.extent(r))
      fail(fn, name, "an element count that fits in int64", shape_string(v));
    n *= v.extent(r);
  }
  if (n != 0 && v.data() == nullptr)
    fail(fn, name, "a non-null pointer for a non-empty view", "nullptr with shape " + shape_string(v));
}

/// The bytes [first, last) that a view's elements span (first == last for an empty view).
template <class T, int R>
std::array<std::uintptr_t, 2> byte_span(const tensor_view<T, R>& v) {
  const auto base = reinterpret_cast<std::uintptr_t>(v.data());
  if (v.empty()) return {base, base};
  std::int64_t last = 0;  // offset of the last element (strides are non-negative)
  for (int r = 0; r < R; ++r) last += (v.extent(r) - 1) * v.stride(r);
  return {base, base + static_cast<std::uintptr_t>(last + 1) * sizeof(T)};
}

/// An output must not overlap an input, or results would depend on the order of reads and
/// writes (and on the backend). With `same_ok`, the output may be exactly the input (the same
/// pointer, element size and strides: in place).
template <class T, int R, class U, int R2>
void require_disjoint(std::string_view fn, std::string_view out_name, const tensor_view<T, R>& out,
                      std::string_view in_name, const tensor_view<U, R2>& in, bool same_ok = false) {
  const auto a = byte_span(out), b = byte_span(in);
  if (a[0] == a[1] || b[0] == b[1] || a[1] <= b[0] || b[1] <= a[0]) return;
  if constexpr (R == R2 && sizeof(T) == sizeof(U)) {
    if (same_ok && static_cast<const void*>(out.data()) == static_cast<const void*>(in.data())) {
      bool same = true;
      for (int r = 0; r < R; ++r)
        same = same && out.extent(r) == in.extent(r) && out.stride(r) == in.stride(r);
      if (same) return;
    }
  }
  fail(fn, out_name,
       concat("memory disjoint from '", in_name, "'", same_ok ? " (or exactly it, in place)" : ""),
       "an overlapping view");
}

/// An output view must not map two indices to the same element (no zero or overlapping
/// strides), or results would race and depend on the thread count.
template <class T, int R>
void check_output_view(std::string_view fn, std::string_view name, const tensor_view<T, R>& v) {
  check_view(fn, name, v);
  if (v.empty()) return;
  // Sort dimensions of extent > 1 by stride; each must step past the span of the smaller.
  std::int64_t st[R], ex[R];
  int m = 0;
  for (int r = 0; r < R; ++r) {
    if (v.extent(r) > 1) {
      st[m] = v.stride(r);
      ex[m] = v.extent(r);
      ++m;
    }
  }
  for (int i = 1; i < m; ++i) {
    for (int j = i; j > 0 && st[j] < st[j - 1]; --j) {
      std::swap(st[j], st[j - 1]);
      std::swap(ex[j], ex[j - 1]);
    }
  }
  std::int64_t span = 1;
  for (int i = 0; i < m; ++i) {
    if (st[i] < span)
      fail(fn, name, "non-overlapping strides for an output",
           "shape " + shape_string(v) + " strides " + strides_string(v));
    span = st[i] * ex[i];
  }
}

template <class T, int R, std::size_t N>
void require_shape(std::string_view fn, std::string_view name, const tensor_view<T, R>& v,
                   const std::array<std::int64_t, N>& expected) {
  static_assert(N == static_cast<std::size_t>(R));
  bool ok = true;
  for (int r = 0; r < R; ++r) ok = ok && v.extent(r) == expected[r];
  if (!ok) fail(fn, name, "shape " + shape_string(expected), shape_string(v));
}

template <class T, int R>
void require_unit_inner_stride(std::string_view fn, std::string_view name, const tensor_view<T, R>& v) {
  if (v.extent(R - 1) > 1 && v.stride(R - 1) != 1)
    fail(fn, name, "unit stride in the last dimension", strides_string(v));
}

}  // namespace detail
}  // namespace weft
