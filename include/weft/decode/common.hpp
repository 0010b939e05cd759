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
// (probabilities, token ids, trees) and throws weft::invalid_argument for the first bad row,
// naming the first bad element of that row and its value (read on the host, error path only).
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/locate.hpp"
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

// ---------------------------------------------------------------------------------------
// Messages that name the bad element. The backend's value-check pass (first_failure) finds
// the first bad row; only then is that row read on the host (find_first_on_host), so the
// success path costs nothing more.
// ---------------------------------------------------------------------------------------

/// Throws for a failed value check (f.code != 0) of v: the message gives the first element at
/// or after row-major position `from` (the first checked element of the bad row) with bad(x)
/// (or bad(x, index)), as "<value> at [<labels>] = [<index>]"; `what` where none is found.
template <class Backend, class T, int R, class Bad>
void throw_element_failure(std::string_view fn, std::string_view argument, const Backend& be,
                           const tensor_view<T, R>& v, const check_failure& f, std::int64_t from,
                           std::string_view expected, std::string_view labels, std::string_view what,
                           const Bad& bad) {
  if (f.code == 0) return;
  const auto e = find_first_on_host(be, v, bad, from);
  throw invalid_argument(
      std::string(fn), std::string(argument), std::string(expected),
      e.found ? concat(element_message(e, labels), " (", what, ")") : concat("row ", f.item, ": ", what));
}

/// Token ids outside [0, vocab).
struct token_out_of_range {
  std::int64_t vocab;
  bool operator()(std::int32_t x) const { return x < 0 || x >= vocab; }
};

/// A probability as double (bf16 and f16 through float).
template <class U>
double as_double(const U& x) {
  if constexpr (std::is_same_v<U, double>)
    return x;
  else
    return static_cast<double>(static_cast<float>(x));
}

/// Throws for a failed probability-row check (code 1: a negative, NaN or infinite entry; 2: a
/// sum off by more than tol) of row `row` of p (rows: every index but the last, row-major):
/// code 1 names the first bad entry and its value, code 2 the row and its sum (in double,
/// summed on the host in index order: it may differ from the check's lane order in the last
/// digits).
template <class Backend, class T, int R>
void throw_probs_failure(std::string_view fn, std::string_view argument, const Backend& be,
                         const tensor_view<T, R>& p, std::int64_t row, int code, float tol,
                         std::string_view labels) {
  if (code == 0) return;
  using U = std::remove_cv_t<T>;
  const std::int64_t n = p.extent(R - 1);
  const std::string expected = concat("rows of probabilities summing to 1 within ", tol);
  if (code == 1) {
    throw_element_failure(fn, argument, be, p, check_failure{row, code}, row * n, expected, labels,
                          "a negative, NaN or infinite probability", [](const U& x) {
                            const double y = as_double(x);
                            return !(y >= 0) || y == std::numeric_limits<double>::infinity();
                          });
  }
  std::int64_t off = 0, rem = row;
  std::array<std::int64_t, R> index{};
  for (int r = R - 2; r >= 0; --r) {
    index[static_cast<std::size_t>(r)] = rem % p.extent(r);
    off += index[static_cast<std::size_t>(r)] * p.stride(r);
    rem /= p.extent(r);
  }
  const std::vector<U> x = copy_to_host(be, tensor_view<T, 1>(p.data() + off, std::array<std::int64_t, 1>{n},
                                                              std::array<std::int64_t, 1>{p.stride(R - 1)}));
  double sum = 0;
  for (const U& y : x) sum += as_double(y);
  std::ostringstream at;
  for (int r = 0; r < R - 1; ++r) at << (r ? ", " : "") << index[static_cast<std::size_t>(r)];
  const std::string_view row_labels = labels.substr(0, labels.rfind(','));
  throw invalid_argument(std::string(fn), std::string(argument), expected,
                         concat("a row sum of ", sum, " at [", row_labels, "] = [", at.str(), "]"));
}

}  // namespace detail::decode
}  // namespace weft
