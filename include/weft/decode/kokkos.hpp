// weft/decode/kokkos.hpp - Kokkos fast paths of the decode family.
//
// Rows run through weft::detail::item_runner<kokkos_backend<Exec>> (weft/backend/kokkos.hpp):
// a parallel_for over the execution space, each worker owning a slice of scratch, running the
// same row functions as the serial backend, so results are bitwise identical to serial for any
// thread count. Value checks are a parallel_reduce (Min) over the rows that fail.
//
// On device execution spaces this is one thread per row: correct, but use weft::cuda_backend
// for speed on NVIDIA GPUs.
#pragma once

#include <Kokkos_Core.hpp>

#include "weft/backend/kokkos.hpp"
#include "weft/decode/decode.hpp"

namespace weft::impl {

template <class Exec>
struct decode_impl<kokkos_backend<Exec>> : decode_rowwise<kokkos_backend<Exec>> {};

}  // namespace weft::impl
