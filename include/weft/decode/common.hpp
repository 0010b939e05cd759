// weft/decode/common.hpp - what every decode header shares: the per-backend dispatch, option
// checks and value checks.
//
// Every decode operation is a loop over independent rows (a sequence, a position or a tree):
// the CPU backends share one implementation, impl::decode_rowwise<Backend>, whose rows run
// through the backend's weft::detail::item_runner (serial: one after the other; Kokkos: a
// parallel_for over the execution space). A row function never depends on which worker runs
// it, so results are bitwise identical across the serial and Kokkos backends and any thread
// count.
//
// Checks happen in two stages, both before anything is written: the public function checks
// shapes and options on the host, then the backend runs a value-check pass over the data
// (probabilities, token ids, trees) and throws weft::invalid_argument for the first bad row.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

namespace impl {
/// Per-backend implementation of the decode family; specialised per backend (serial in
/// decode.hpp, Kokkos in decode/kokkos.hpp, CUDA in decode/cuda.cuh). The public functions
/// check shapes and options, then call these static members with views of const inputs:
///
///   argmax(be, in, tokens, valid)                         in [B,V]
///   sample(be, fn, in, tokens, params, opts)              sample / sample_probs (params.probs)
///   softmax<Log>(be, in, out, inv_t, valid)               softmax / log_softmax
///   top_k_renorm(be, in, out, k, opts)
///   verify_greedy(be, draft, target, out, accepted, opts)
///   speculative(be, fn, q, draft, p, out, accepted, opts, bonus)
///                                                         speculative_sample (bonus) / jacobi_accept
///   jacobi_greedy(be, previous, next, out, accepted, opts)
///   tree_attention_mask(be, parents, mask, opts)
///   verify_tree_greedy(be, tokens, parents, target, out, path, accepted, opts)
///   verify_tree_sampled(be, tokens, parents, draft, target, out, path, accepted, opts)
///   kv_compact(be, cache [B,S,H,D], path, accepted, opts)
///   unmask(be, logits, tokens, opts)
///   sample_workspace(be, rows, vocab), tree_workspace(be, batch, nodes, vocab)
///                                                         the bytes weft::workspace_size reports
///
/// Each runs its value checks (throwing weft::invalid_argument) before it writes any output.
template <class Backend>
struct decode_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no decode implementation for this backend; include weft/kokkos.hpp "
                "(Kokkos) or weft/cuda.cuh (CUDA)");
};
}  // namespace impl

namespace detail::decode {

// ---------------------------------------------------------------------------------------
// Host-side checks of optional views and options.
// ---------------------------------------------------------------------------------------
template <class T, int R>
bool given(const tensor_view<T, R>& v) {
  return v.data() != nullptr || v.size() != 0;
}

/// An optional per-row view: absent, or shape [B].
template <class T>
void check_optional_rows(std::string_view fn, std::string_view name, const tensor_view<T, 1>& v,
                         std::int64_t B, bool output) {
  if (!given(v)) return;
  if (output)
    check_output_view(fn, name, v);
  else
    check_view(fn, name, v);
  require_shape(fn, name, v, std::array<std::int64_t, 1>{B});
}

template <class Opts>
void check_seed_views(std::string_view fn, const Opts& o, std::int64_t B) {
  check_optional_rows(fn, "seeds", o.seeds, B, false);
  check_optional_rows(fn, "offsets", o.offsets, B, false);
}

template <class T, int R>
void check_rows_view(std::string_view fn, std::string_view name, const tensor_view<T, R>& v) {
  check_view(fn, name, v);
  require_unit_inner_stride(fn, name, v);
}

inline void check_vocab(std::string_view fn, std::string_view name, std::int64_t vocab) {
  require(vocab >= 1 && vocab <= INT32_MAX, fn, name, "a vocabulary of 1 to 2^31-1 entries",
          concat(vocab, " entries"));
}

template <class T>
constexpr void static_check_float() {
  static_assert(is_floating_v<std::remove_cv_t<T>>,
                "weft decode: logits / probabilities must be float, "
                "double, weft::bf16 or weft::f16");
}

/// Throws for a failed value check.
inline void throw_failure(std::string_view fn, std::string_view argument, const check_failure& f,
                          std::string_view expected, std::string_view what) {
  if (f.code == 0) return;
  throw invalid_argument(std::string(fn), std::string(argument), std::string(expected),
                         concat("row ", f.item, ": ", what));
}

}  // namespace detail::decode
}  // namespace weft
