// A host backend whose selective-scan items use the CUDA backend's lane type (lanes<float>,
// element-wise loops and the libm exp) instead of the host's AVX-512 lanes: the CUDA path's item
// functions, run on the host and tested like every other backend. (The CUDA runner is a thread
// per item with no shared state, so one host thread runs the same bodies.)
#pragma once

#include <tuple>
#include <type_traits>

#include "support/backends.hpp"

namespace ssm_test {

struct device_lanes_backend : weft::serial_backend {
  static constexpr const char* name() { return "serial with CUDA's lanes"; }
  device_lanes_backend second_resource() const { return *this; }
};

/// weft_test::backends, plus device_lanes_backend in host builds.
#if WEFT_TEST_CUDA
using scan_backends = weft_test::backends;
#else
using scan_backends = decltype(std::tuple_cat(std::declval<weft_test::backends>(),
                                              std::declval<std::tuple<device_lanes_backend> >()));
#endif

/// Backends whose results equal the serial backend's bitwise (not the CUDA lanes: libm exp).
template <class B>
inline constexpr bool bitwise_serial = B::host_accessible && !std::is_same_v<B, device_lanes_backend>;

}  // namespace ssm_test

namespace weft::detail {
template <>
struct item_runner<ssm_test::device_lanes_backend> : item_runner<serial_backend> {};
namespace ssm {
template <>
inline constexpr bool host_lanes<ssm_test::device_lanes_backend> = false;
}  // namespace ssm
}  // namespace weft::detail

namespace weft::impl {
template <>
struct selective_scan_impl<ssm_test::device_lanes_backend>
    : detail::ssm::scan_engine<ssm_test::device_lanes_backend> {};
}  // namespace weft::impl
