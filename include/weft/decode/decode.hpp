// weft/decode/decode.hpp - the decode family: sampling, speculative verification (chains and
// trees), Jacobi acceptance and diffusion unmasking. API, checks and the CPU definition.
//
//   sampling.hpp     argmax, sample, sample_probs, softmax, log_softmax, top_k_renorm
//   speculative.hpp  verify_greedy, speculative_sample, jacobi_accept
//   tree.hpp         tree_attention_mask, verify_tree (greedy, sampled), kv_compact
//   unmask.hpp       unmask_by_confidence
//   row_*.hpp        the row functions every CPU backend shares; math.hpp, lanes.hpp helpers
//
// Fast paths: weft/decode/kokkos.hpp (the same row functions, rows in parallel) and
// weft/decode/cuda.cuh (one thread block per row). docs/decode.md has the math.
#pragma once

#include "weft/core/backend.hpp"
#include "weft/decode/common.hpp"
#include "weft/decode/sampling.hpp"
#include "weft/decode/speculative.hpp"
#include "weft/decode/tree.hpp"
#include "weft/decode/unmask.hpp"

namespace weft::impl {

/// Every CPU row operation of the family, for a backend whose rows are run by Rows.
template <class Backend, class Rows>
struct decode_rowwise : sampling_rowwise<Backend, Rows>,
                        speculative_rowwise<Backend, Rows>,
                        tree_rowwise<Backend, Rows>,
                        unmask_rowwise<Backend, Rows> {};

/// The serial reference: rows one after the other on the calling thread.
template <>
struct decode_impl<serial_backend> : decode_rowwise<serial_backend, detail::decode::serial_rows> {};

}  // namespace weft::impl
