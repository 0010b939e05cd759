// weft/attention/kokkos.hpp - Kokkos paths of the attention family.
//
// Items (a block of queries of one KV head's group) run through
// weft::detail::item_runner<kokkos_backend<Exec>> (weft/backend/kokkos.hpp): a parallel_for
// with per-worker scratch, running the serial backend's item functions, so results are bitwise
// identical to serial on any thread count. Paged decode (weft/attention/paged.hpp): its split
// items and its merge pass, the same way.
#pragma once

#include <Kokkos_Core.hpp>

#include "weft/attention/attention.hpp"
#include "weft/attention/paged.hpp"
#include "weft/backend/kokkos.hpp"

namespace weft::impl {

template <class Exec>
struct attention_impl<kokkos_backend<Exec>> : detail::attention::blockwise<kokkos_backend<Exec>> {};

/// Paged decode: split items and the merge pass through the same item runner.
template <class Exec>
struct paged_attention_impl<kokkos_backend<Exec>> : detail::attention::paged<kokkos_backend<Exec>> {};

}  // namespace weft::impl
