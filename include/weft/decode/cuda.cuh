// weft/decode/cuda.cuh - native CUDA fast paths of the decode family.
//
// Status: compiled (sm_90) and its tests skip without a GPU; not yet verified on hardware.
//
// Vocabulary-long rows get one thread block each (256 threads), with the same per-entry math
// as the CPU backends (keys, weights, exponential-race scores from decode/math.hpp):
//   argmax, softmax, log_softmax     one or two passes with block reductions
//   sample, sample_probs, top_k_renorm
//                                    the sets are found by bisection instead of histograms:
//                                    the k-th value by 32 counting passes over the ordered bits of
//                                    the values (plus up to 32 over ids for ties), the top-p
//                                    threshold by 32 passes of masked mass sums in double; then
//                                    one race pass. Exact, deterministic (fixed reduction trees),
//                                    not yet tuned (FlashInfer-style fused pivots are the next step).
//   speculative_sample, jacobi_accept (sampled), verify_tree (sampled)
//                                    a block per sequence: the acceptance tests are sequential,
//                                    residual updates and draws are block-parallel.
//   verify_greedy, verify_tree (greedy), unmask_by_confidence
//                                    a block per position computes argmax / prediction and
//                                    confidence; a thread per sequence then applies the rule.
// Everything else (value checks, tree masks, Jacobi greedy, the rules above) runs the CPU row
// functions with one thread per row. Value checks finish (and throw) before any output is
// written. Reductions differ in order from the CPU's, so sums (top-p mass, softmax Z) may differ
// in the last bits and a token can differ when a threshold falls within rounding of a value; the
// race scores themselves are the same functions.
//
// This file: the impl::decode_impl<cuda_backend> specialisation (rows a thread each through
// detail::item_runner<cuda_backend>, weft/backend/cuda.cuh); the kernels and block helpers are in
// decode/cuda_kernels.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "weft/backend/cuda.cuh"
#include "weft/core/services.hpp"
#include "weft/core/workspace.hpp"
#include "weft/decode/cuda_kernels.cuh"
#include "weft/decode/decode.hpp"

namespace weft {
namespace impl {

template <>
struct decode_impl<cuda_backend> : decode_rowwise<cuda_backend> {
  using base = decode_rowwise<cuda_backend>;
  using rows = detail::item_runner<cuda_backend>;

  static constexpr int threads = detail::decode::cuda_kernels::threads;  ///< per block
  /// A block per row.
  static unsigned grid(std::int64_t n) { return static_cast<unsigned>(n); }

  // The block kernels of sample / sample_probs / top_k_renorm / unmask need no scratch.
  static std::size_t sample_workspace(const cuda_backend&, std::int64_t, std::int64_t) { return 0; }
  static std::size_t tree_workspace(const cuda_backend& be, std::int64_t batch, std::int64_t nodes,
                                    std::int64_t vocab) {
    const std::size_t greedy =
        rows::scratch_bytes(be, batch, detail::decode::greedy_tree_fn::scratch_bytes(nodes));
    const std::size_t sampled = static_cast<std::size_t>(batch * vocab) * sizeof(float);
    return greedy > sampled ? greedy : sampled;
  }

  template <class T>
  static void argmax(const cuda_backend& be, tensor_view<const T, 2> in, tensor_view<std::int32_t, 1> tokens,
                     tensor_view<std::uint8_t, 1> valid) {
    if (in.extent(0) == 0) return;
    detail::decode::cuda_kernels::argmax_kernel<<<grid(in.extent(0)), threads, 0, be.stream>>>(
        detail::decode::cuda_kernels::rows2<T>{in}, in.extent(1), tokens.data(), tokens.stride(0),
        valid.data(), valid.data() ? valid.stride(0) : 0);
    be.check_launch("weft::argmax");
  }

  template <class T>
  static void sample(const cuda_backend& be, const char* fn, tensor_view<const T, 2> in,
                     tensor_view<std::int32_t, 1> tokens, const detail::decode::sample_params& p,
                     const sample_options& o) {
    if (p.probs) {
      const auto f = rows::first_failure(be, "weft::sample_probs(check)", in.extent(0),
                                         detail::decode::probs_rows_check_fn<T>{in, o.tolerance});
      detail::decode::throw_probs_failure(fn, "probs", be, in, f.item, f.code, o.tolerance, "b, v");
    }
    if (in.extent(0) == 0) return;
    detail::decode::cuda_kernels::sample_kernel<<<grid(in.extent(0)), threads, 0, be.stream>>>(
        in, tokens, o.valid, p, o.seed, o.offset, o.seeds, o.offsets);
    be.check_launch(p.probs ? "weft::sample_probs" : "weft::sample");
  }

  template <bool Log, class T, class U>
  static void softmax(const cuda_backend& be, tensor_view<const T, 2> in, tensor_view<U, 2> out, float inv_t,
                      tensor_view<std::uint8_t, 1> valid) {
    if (in.extent(0) == 0) return;
    detail::decode::cuda_kernels::softmax_kernel<Log>
        <<<grid(in.extent(0)), threads, 0, be.stream>>>(in, out, inv_t, valid);
    be.check_launch(Log ? "weft::log_softmax" : "weft::softmax");
  }

  template <class T, class U>
  static void top_k_renorm(const cuda_backend& be, tensor_view<const T, 2> in, tensor_view<U, 2> out,
                           std::int64_t k, const top_k_renorm_options& o) {
    const auto f = rows::first_failure(be, "weft::top_k_renorm(check)", in.extent(0),
                                       detail::decode::probs_rows_check_fn<T>{in, o.tolerance});
    detail::decode::throw_probs_failure("top_k_renorm", "probs", be, in, f.item, f.code, o.tolerance, "b, v");
    if (in.extent(0) == 0) return;
    detail::decode::cuda_kernels::top_k_renorm_kernel<<<grid(in.extent(0)), threads, 0, be.stream>>>(in, out,
                                                                                                     k);
    be.check_launch("weft::top_k_renorm");
  }

  /// The argmax of every position of target [B, P, V] on the GPU, into scratch [B * P] int32.
  template <class T>
  static scratch_buffer position_argmax(const cuda_backend& be, tensor_view<const T, 3> target,
                                        const char* label) {
    const std::int64_t R = target.extent(0) * target.extent(1);
    scratch_buffer s = be.allocate(static_cast<std::size_t>(R) * sizeof(std::int32_t));
    detail::decode::cuda_kernels::argmax_kernel<<<grid(R), threads, 0, be.stream>>>(
        detail::decode::cuda_kernels::rows3<T>{target}, target.extent(2),
        static_cast<std::int32_t*>(s.data()), 1, nullptr, 0);
    be.check_launch(label);
    return s;
  }

  /// Greedy chains: argmax of every position on the GPU, then the rule per sequence.
  template <class T>
  static void verify_greedy(const cuda_backend& be, tensor_view<const std::int32_t, 2> draft,
                            tensor_view<const T, 3> target, tensor_view<std::int32_t, 2> out,
                            tensor_view<std::int32_t, 1> accepted, const verify_options& o) {
    base::check_lengths(be, "verify_greedy", o.lengths, draft.extent(0), draft.extent(1));
    base::check_drafts(be, "verify_greedy", draft, o.lengths, target.extent(2));
    if (target.extent(0) * target.extent(1) == 0) return;
    const scratch_buffer s = position_argmax(be, target, "weft::verify_greedy(argmax)");
    const auto* am = static_cast<const std::int32_t*>(s.data());
    rows::run(
        be, "weft::verify_greedy", draft.extent(0), 0, {}, "verify_greedy",
        detail::decode::greedy_chain_fn{draft, am, target.extent(1), out, accepted, o.lengths, o.valid});
    be.fence();
  }

  template <class TD, class TT>
  static void speculative(const cuda_backend& be, const char* fn, tensor_view<const TD, 3> q,
                          tensor_view<const std::int32_t, 2> draft, tensor_view<const TT, 3> p,
                          tensor_view<std::int32_t, 2> out, tensor_view<std::int32_t, 1> accepted,
                          const speculative_options& o, bool bonus) {
    base::check_lengths(be, fn, o.lengths, draft.extent(0), draft.extent(1));
    base::check_drafts(be, fn, draft, o.lengths, p.extent(2));
    base::check_probs3(be, fn, "draft_probs", q, o.lengths, 0, o.tolerance);
    base::check_probs3(be, fn, "target_probs", p, o.lengths, bonus ? 1 : 0, o.tolerance);
    if (draft.extent(0) == 0) return;
    detail::decode::cuda_kernels::speculative_kernel<<<grid(draft.extent(0)), threads, 0, be.stream>>>(
        detail::decode::speculative_fn<TD, TT>{q, draft, p, out, accepted, o.lengths, o.seed, o.offset,
                                               o.seeds, o.offsets, bonus});
    be.check_launch(bonus ? "weft::speculative_sample" : "weft::jacobi_accept");
  }

  template <class T>
  static void verify_tree_greedy(const cuda_backend& be, tensor_view<const std::int32_t, 2> tokens,
                                 tensor_view<const std::int32_t, 2> parents, tensor_view<const T, 3> target,
                                 tensor_view<std::int32_t, 2> out, tensor_view<std::int32_t, 2> path,
                                 tensor_view<std::int32_t, 1> accepted, const tree_verify_options& o) {
    base::check_parents(be, "verify_tree", parents);
    base::check_tokens(be, "verify_tree", tokens, target.extent(2));
    if (target.extent(0) * target.extent(1) == 0) return;
    const scratch_buffer s = position_argmax(be, target, "weft::verify_tree(argmax)");
    const auto* am = static_cast<const std::int32_t*>(s.data());
    using F = detail::decode::greedy_tree_fn;
    rows::run(be, "weft::verify_tree", tokens.extent(0), F::scratch_bytes(tokens.extent(1)), o.workspace,
              "verify_tree", F{tokens, parents, am, out, path, accepted, o.valid});
    be.fence();
  }

  template <class TD, class TT>
  static void verify_tree_sampled(const cuda_backend& be, tensor_view<const std::int32_t, 2> tokens,
                                  tensor_view<const std::int32_t, 2> parents, tensor_view<const TD, 3> draft,
                                  tensor_view<const TT, 3> target, tensor_view<std::int32_t, 2> out,
                                  tensor_view<std::int32_t, 2> path, tensor_view<std::int32_t, 1> accepted,
                                  const tree_verify_options& o) {
    base::check_tree_sampled_values(be, tokens, parents, draft, target, o);
    if (tokens.extent(0) == 0) return;
    scratch_buffer s = detail::acquire_scratch(
        be, o.workspace, static_cast<std::size_t>(tokens.extent(0) * target.extent(2)) * sizeof(float),
        "verify_tree");
    detail::decode::cuda_kernels::tree_sampled_kernel<<<grid(tokens.extent(0)), threads, 0, be.stream>>>(
        detail::decode::verify_tree_sampled_fn<TD, TT>{tokens, parents, draft, target, out, path, accepted,
                                                       o.seed, o.offset, o.seeds, o.offsets},
        static_cast<float*>(s.data()));
    be.check_launch("weft::verify_tree");
    be.fence();
  }

  template <class T>
  static void kv_compact(const cuda_backend& be, tensor_view<T, 4> cache,
                         tensor_view<const std::int32_t, 2> path, tensor_view<const std::int32_t, 1> accepted,
                         const kv_compact_options& o) {
    base::check_kv_compact(be, cache, path, accepted, o);
    if (cache.extent(0) == 0) return;
    detail::decode::cuda_kernels::kv_compact_kernel<<<grid(cache.extent(0)), threads, 0, be.stream>>>(
        detail::decode::kv_compact_fn<T>{cache, path, accepted, o.start});
    be.check_launch("weft::kv_compact");
  }

  template <class T>
  static void unmask(const cuda_backend& be, tensor_view<const T, 3> logits,
                     tensor_view<std::int32_t, 2> tokens, const unmask_options& o) {
    const auto prep = base::unmask_prepare(be, logits.extent(2), tokens, o);
    const std::int64_t R = tokens.extent(0) * tokens.extent(1);
    if (R == 0) return;
    detail::decode::cuda_kernels::unmask_predict_kernel<<<grid(R), threads, 0, be.stream>>>(
        base::unmask_predictor(logits, tokens, o, prep));
    be.check_launch("weft::unmask_by_confidence(predict)");
    base::unmask_commit(be, tokens, o, prep);
    be.fence();
  }
};

}  // namespace impl
}  // namespace weft
