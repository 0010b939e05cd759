// weft/ssm/kokkos.hpp - the ssm family on Kokkos: the item functions of weft/ssm/*.hpp run by
// detail::item_runner<kokkos_backend<Exec>> (one parallel_for over items, per-worker scratch).
#pragma once

#include <Kokkos_Core.hpp>

#include "weft/backend/kokkos.hpp"
#include "weft/ssm/ssm.hpp"

namespace weft::impl {

template <class Exec>
struct causal_conv1d_impl<kokkos_backend<Exec>> : detail::ssm::conv1d_engine<kokkos_backend<Exec>> {};

template <class Exec>
struct selective_scan_impl<kokkos_backend<Exec>> : detail::ssm::scan_engine<kokkos_backend<Exec>> {};

}  // namespace weft::impl
