// Test support: the caller's GEMM of the overlap tests and small-integer matrices whose
// products and sums are exact in fp32.
#pragma once

#include <cstdint>

#include "weft/core/tensor.hpp"

namespace weft_test {

/// c = a . b, a plain loop over any strides (one compiled body for every call, so equal rows
/// give bitwise-equal results wherever it is called from).
struct loop_gemm {
  [[gnu::noinline]] void operator()(weft::tensor_view<const float, 2> a, weft::tensor_view<const float, 2> b,
                                    weft::tensor_view<float, 2> c) const {
    for (std::int64_t i = 0; i < a.extent(0); ++i) {
      for (std::int64_t j = 0; j < b.extent(1); ++j) {
        float s = 0;
        for (std::int64_t k = 0; k < a.extent(1); ++k) s += a(i, k) * b(k, j);
        c(i, j) = s;
      }
    }
  }
};

/// Entry (i, j) of a small-integer test matrix.
inline float entry(std::int64_t i, std::int64_t j, int salt) {
  return static_cast<float>((i * 7 + j * 3 + salt) % 9) - 4.f;
}

}  // namespace weft_test
