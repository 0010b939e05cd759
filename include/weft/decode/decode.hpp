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
                        unmask_rowwise<Backend, Rows> {
  static std::size_t sample_workspace(const Backend& be, std::int64_t rows, std::int64_t vocab) {
    return Rows::scratch_bytes(be, rows, detail::decode::sample_scratch_bytes(vocab));
  }
  static std::size_t tree_workspace(const Backend& be, std::int64_t batch, std::int64_t nodes,
                                    std::int64_t vocab) {
    namespace dd = detail::decode;
    const std::size_t greedy = dd::verify_tree_greedy_fn<float>::scratch_bytes(nodes);
    const std::size_t sampled = dd::verify_tree_sampled_fn<float, float>::scratch_bytes(vocab);
    return Rows::scratch_bytes(be, batch, greedy > sampled ? greedy : sampled);
  }
};

/// The serial reference: rows one after the other on the calling thread.
template <>
struct decode_impl<serial_backend> : decode_rowwise<serial_backend, detail::decode::serial_rows> {};

}  // namespace weft::impl

namespace weft {

/// Bytes of `.workspace` that sample, sample_probs and top_k_renorm need for `rows` rows of
/// `vocab` entries (unmask_by_confidence: rows = B * T), so that engines can pre-allocate.
template <backend Backend>
std::size_t sample_workspace_size(const Backend& be, std::int64_t rows, std::int64_t vocab) {
  return impl::decode_impl<Backend>::sample_workspace(be, rows, vocab);
}

/// Bytes of `.workspace` that verify_tree (greedy or sampled) needs.
template <backend Backend>
std::size_t verify_tree_workspace_size(const Backend& be, std::int64_t batch, std::int64_t nodes,
                                       std::int64_t vocab) {
  return impl::decode_impl<Backend>::tree_workspace(be, batch, nodes, vocab);
}

}  // namespace weft
