// weft/decode/decode.hpp - the decode family: sampling, speculative verification (chains and
// trees), Jacobi acceptance and diffusion unmasking. API, checks and the CPU definition.
//
//   sampling.hpp     argmax, sample, sample_probs, softmax, log_softmax, top_k_renorm
//   speculative.hpp  verify_greedy, speculative_sample, jacobi_accept
//   tree.hpp         tree_attention_mask, verify_tree (greedy, sampled), kv_compact
//   unmask.hpp       unmask_by_confidence
//   workspace_size(be, ops::sample{}, rows, vocab)              `.workspace` bytes (below)
//   workspace_size(be, ops::verify_tree{}, batch, nodes, vocab)
//
// Private: row_sample.hpp (one row of sample, with row_order / row_scan / row_sets /
// row_race.hpp), math.hpp (exp, log, Exp(1) variates, random keying), common.hpp (checks and
// the impl::decode_impl contract).
//
// Fast paths: weft/decode/kokkos.hpp (the same row functions, rows in parallel) and
// weft/decode/cuda.cuh (one thread block per row). docs/decode.md has the math.
#pragma once

#include <cstddef>
#include <cstdint>

#include "weft/core/backend.hpp"
#include "weft/core/services.hpp"
#include "weft/decode/common.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/sampling.hpp"
#include "weft/decode/speculative.hpp"
#include "weft/decode/tree.hpp"
#include "weft/decode/unmask.hpp"

namespace weft {

/// Bytes of `.workspace` that sample, sample_probs and top_k_renorm need for `rows` rows of
/// `vocab` entries (unmask_by_confidence: rows = B * T), so that engines can pre-allocate.
template <backend Backend>
std::size_t workspace_size(const Backend& be, ops::sample, std::int64_t rows, std::int64_t vocab) {
  return impl::decode_impl<Backend>::sample_workspace(be, rows, vocab);
}

/// Bytes of `.workspace` that verify_tree (greedy or sampled) needs for `batch` trees of
/// `nodes` nodes over `vocab` entries.
template <backend Backend>
std::size_t workspace_size(const Backend& be, ops::verify_tree, std::int64_t batch, std::int64_t nodes,
                           std::int64_t vocab) {
  return impl::decode_impl<Backend>::tree_workspace(be, batch, nodes, vocab);
}

}  // namespace weft

namespace weft::impl {

/// Every row operation of the family, with the rows run by the backend's detail::item_runner
/// (serial: a loop; Kokkos: a parallel_for; CUDA: a thread per row, for what decode/cuda.cuh does
/// not do in its own kernels).
template <class Backend, class Runner = detail::item_runner<Backend>>
struct decode_rowwise : sampling_rowwise<Backend, Runner>,
                        speculative_rowwise<Backend, Runner>,
                        tree_rowwise<Backend, Runner>,
                        unmask_rowwise<Backend, Runner> {
  static std::size_t sample_workspace(const Backend& be, std::int64_t rows, std::int64_t vocab) {
    return Runner::scratch_bytes(be, rows, detail::decode::sample_scratch_bytes(vocab));
  }
  static std::size_t tree_workspace(const Backend& be, std::int64_t batch, std::int64_t nodes,
                                    std::int64_t vocab) {
    const std::size_t greedy = detail::decode::verify_tree_greedy_fn<float>::scratch_bytes(nodes);
    const std::size_t sampled = detail::decode::verify_tree_sampled_fn<float, float>::scratch_bytes(vocab);
    return Runner::scratch_bytes(be, batch, greedy > sampled ? greedy : sampled);
  }
};

/// The serial reference: rows one after the other on the calling thread.
template <>
struct decode_impl<serial_backend> : decode_rowwise<serial_backend> {};

}  // namespace weft::impl
