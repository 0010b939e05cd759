// weft/decode/speculative.hpp - chain verification of speculative decoding, and Jacobi acceptance.
//
//   verify_greedy(be, draft_tokens [B,L], target_logits [B,L+1,V], out_tokens [B,L+1], accepted [B],
//                 {.lengths [B], .valid [B]})
//   speculative_sample(be, draft_probs [B,L,V], draft_tokens [B,L], target_probs [B,L+1,V],
//                      out_tokens [B,L+1], accepted [B], {.seed, .offset, .seeds, .offsets, .lengths})
//   jacobi_accept(be, previous [B,n], next [B,n], out_tokens [B,n], accepted [B], {.lengths})
//   jacobi_accept(be, draft_probs [B,n,V], draft_tokens [B,n], target_probs [B,n,V], out_tokens [B,n],
//                 accepted [B], {...})                                  (speculative Jacobi)
//
// Sequence b has L_b = lengths[b] drafts (L when `lengths` is empty). out_tokens[b] holds the
// accepted[b] accepted drafts, then one more token, then -1:
//   greedy   y_t = argmax target_logits[b,t] (ties to the lowest id); draft t is accepted while
//            draft_t == y_t; the next token is y at the first mismatch (or y_{L_b}, the bonus).
//   sampled  (Leviathan et al. 2023; Chen et al. 2023) draft x_t ~ q_t is accepted when
//            u_t * q_t(x_t) < p_t(x_t) (u_t uniform, exact in double); at the first rejection the
//            token is drawn from normalize(max(0, p_t - q_t)); when every draft is accepted, a
//            bonus token is drawn from p_{L_b}. The output then has the target's law.
//   Jacobi   (Santilli et al. 2023) next_t = greedy prediction from previous_{<t}: next_0 is
//            always right and next_t is right while previous_{<t} == next_{<t}, so the longest
//            prefix with previous == next is accepted and next at the first mismatch follows.
//            Speculative Jacobi decoding (Teng et al. 2024) accepts the previous iteration's
//            sampled tokens against the new distributions exactly as `speculative_sample`,
//            without a bonus token (there is no distribution past position n-1).
// Random words: acceptance u_t = (seed_b, offset_b, stream accept, id t); the residual draw at
// position t = (stream residual, position t, vocabulary id); the bonus = (stream bonus, L_b, id).
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/decode/common.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/row_race.hpp"
#include "weft/decode/row_scan.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft {

struct verify_options {
  tensor_view<const std::int32_t, 1> lengths{};  ///< [B] optional drafts per sequence, 0..L
  tensor_view<std::uint8_t, 1> valid{};          ///< [B] optional out: 0 when a needed row has NaN
};

struct speculative_options {
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  tensor_view<const std::uint64_t, 1> seeds{};    ///< [B] optional per-row seeds
  tensor_view<const std::uint64_t, 1> offsets{};  ///< [B] optional per-row offsets
  tensor_view<const std::int32_t, 1> lengths{};   ///< [B] optional drafts per sequence, 0..L
  float tolerance = 1e-3f;                        ///< allowed |row sum - 1| of the probabilities
};

struct jacobi_options {
  tensor_view<const std::int32_t, 1> lengths{};  ///< [B] optional tokens per sequence, 0..n
};

namespace detail::decode {

/// The greedy chain rule for sequence b; argmax_at(t) is the target's argmax at position t (-1
/// for a NaN row), asked for in order and only as far as needed.
template <class Argmax>
WEFT_INLINE void greedy_chain_rule(std::int64_t b, const tensor_view<const std::int32_t, 2>& draft,
                                   const tensor_view<const std::int32_t, 1>& lengths, const Argmax& argmax_at,
                                   const tensor_view<std::int32_t, 2>& out,
                                   const tensor_view<std::int32_t, 1>& accepted,
                                   const tensor_view<std::uint8_t, 1>& valid) {
  const std::int64_t L = draft.extent(1);
  const std::int64_t len = lengths.data() ? lengths(b) : L;
  std::int64_t a = 0, written = 0;
  bool ok = true;
  for (std::int64_t t = 0; t <= len; ++t) {
    const std::int64_t y = argmax_at(t);
    if (y < 0) {
      ok = false;
      break;
    }
    out(b, written++) = static_cast<std::int32_t>(y);
    if (t == len || draft(b, t) != y) break;
    ++a;
  }
  for (std::int64_t t = written; t <= L; ++t) out(b, t) = -1;
  accepted(b) = static_cast<std::int32_t>(a);
  if (valid.data()) valid(b) = ok ? 1 : 0;
}

/// Greedy chain, argmax computed here (CPU backends).
template <class T>
struct verify_greedy_fn {
  tensor_view<const std::int32_t, 2> draft;
  tensor_view<const T, 3> target;
  tensor_view<std::int32_t, 2> out;
  tensor_view<std::int32_t, 1> accepted;
  tensor_view<const std::int32_t, 1> lengths;
  tensor_view<std::uint8_t, 1> valid;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const auto argmax_at = [&](std::int64_t t) {
      return argmax_row(&target(b, t, 0), target.extent(2)).index;
    };
    greedy_chain_rule(b, draft, lengths, argmax_at, out, accepted, valid);
  }
};

/// Greedy chain from argmaxes computed beforehand: am[b * positions + t] (GPU backend).
struct greedy_chain_fn {
  tensor_view<const std::int32_t, 2> draft;
  const std::int32_t* am;
  std::int64_t positions;
  tensor_view<std::int32_t, 2> out;
  tensor_view<std::int32_t, 1> accepted;
  tensor_view<const std::int32_t, 1> lengths;
  tensor_view<std::uint8_t, 1> valid;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const auto argmax_at = [&](std::int64_t t) { return static_cast<std::int64_t>(am[b * positions + t]); };
    greedy_chain_rule(b, draft, lengths, argmax_at, out, accepted, valid);
  }
};

/// Sampled chain (bonus = true) or speculative Jacobi (bonus = false).
template <class TD, class TT>
struct speculative_fn {
  tensor_view<const TD, 3> draft_probs;
  tensor_view<const std::int32_t, 2> draft;
  tensor_view<const TT, 3> target_probs;
  tensor_view<std::int32_t, 2> out;
  tensor_view<std::int32_t, 1> accepted;
  tensor_view<const std::int32_t, 1> lengths;
  std::uint64_t seed, offset;
  tensor_view<const std::uint64_t, 1> seeds, offsets;
  bool bonus;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const std::int64_t L = draft.extent(1), V = target_probs.extent(2);
    const std::int64_t len = lengths.data() ? lengths(b) : L;
    const row_key rk =
        make_row_key(seed, offset, seeds.data(), seeds.stride(0), offsets.data(), offsets.stride(0), b);
    std::int64_t a = 0, written = 0;
    for (std::int64_t t = 0; t < len; ++t) {
      const std::int32_t x = draft(b, t);
      const double q = static_cast<double>(load(&draft_probs(b, t, 0), x));
      const double p = static_cast<double>(load(&target_probs(b, t, 0), x));
      const double u = static_cast<double>(uniform24(draw_word(rk, stream::accept, 0, t)));
      if (u * q < p) {  // exact: u and q have 24-bit mantissas
        out(b, written++) = x;
        ++a;
        continue;
      }
      std::int64_t y =
          race_weights(V, residual_weight<TT, TD>{&target_probs(b, t, 0), &draft_probs(b, t, 0), 1.0f}, rk,
                       stream::residual, static_cast<std::uint32_t>(t));
      if (y < 0)  // p <= q everywhere (a rounding of p == q): the target itself
        y = race_weights(V, plain_weight<TT>{&target_probs(b, t, 0)}, rk, stream::residual,
                         static_cast<std::uint32_t>(t));
      out(b, written++) = static_cast<std::int32_t>(y);
      break;
    }
    if (a == len && bonus)
      out(b, written++) = static_cast<std::int32_t>(race_weights(
          V, plain_weight<TT>{&target_probs(b, len, 0)}, rk, stream::bonus, static_cast<std::uint32_t>(len)));
    for (std::int64_t t = written; t < out.extent(1); ++t) out(b, t) = -1;
    accepted(b) = static_cast<std::int32_t>(a);
  }
};

/// Jacobi greedy acceptance: longest prefix with previous == next, then next at the mismatch.
struct jacobi_greedy_fn {
  tensor_view<const std::int32_t, 2> prev, next;
  tensor_view<std::int32_t, 2> out;
  tensor_view<std::int32_t, 1> accepted;
  tensor_view<const std::int32_t, 1> lengths;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const std::int64_t n = prev.extent(1);
    const std::int64_t len = lengths.data() ? lengths(b) : n;
    std::int64_t a = 0;
    while (a < len && prev(b, a) == next(b, a)) ++a;
    const std::int64_t committed = a < len ? a + 1 : len;
    for (std::int64_t t = 0; t < n; ++t) out(b, t) = t < committed ? next(b, t) : -1;
    accepted(b) = static_cast<std::int32_t>(a);
  }
};

/// Draft tokens of rows t < L_b must be vocabulary ids: 1 = out of range.
struct draft_tokens_check_fn {
  tensor_view<const std::int32_t, 2> draft;
  tensor_view<const std::int32_t, 1> lengths;
  std::int64_t vocab;
  WEFT_INLINE int operator()(std::int64_t b) const {
    const std::int64_t L = draft.extent(1);
    const std::int64_t len = lengths.data() ? lengths(b) : L;
    for (std::int64_t t = 0; t < len; ++t)
      if (draft(b, t) < 0 || draft(b, t) >= vocab) return 1;
    return 0;
  }
};

/// lengths[b] in [0, L]: 1 = out of range.
struct lengths_check_fn {
  tensor_view<const std::int32_t, 1> lengths;
  std::int64_t L;
  WEFT_INLINE int operator()(std::int64_t b) const { return lengths(b) >= 0 && lengths(b) <= L ? 0 : 1; }
};

/// Host checks of the token views of a chain: draft [B,L], out [B,L+extra], accepted [B].
inline void check_chain_views(std::string_view fn, const tensor_view<const std::int32_t, 2>& draft,
                              const tensor_view<std::int32_t, 2>& out,
                              const tensor_view<std::int32_t, 1>& accepted,
                              const tensor_view<const std::int32_t, 1>& lengths, std::int64_t extra) {
  const std::int64_t B = draft.extent(0), L = draft.extent(1);
  check_view(fn, "draft_tokens", draft);
  check_output_view(fn, "out_tokens", out);
  require_shape(fn, "out_tokens", out, std::array<std::int64_t, 2>{B, L + extra});
  check_output_view(fn, "accepted", accepted);
  require_shape(fn, "accepted", accepted, std::array<std::int64_t, 1>{B});
  check_optional_rows(fn, "lengths", lengths, B, false);
}

}  // namespace detail::decode

namespace impl {

/// The CPU implementation of chain verification; Runner runs the rows.
template <class Backend, class Runner>
struct speculative_rowwise {
  /// Value checks shared by the chain functions (lengths first: the other checks use them).
  static void check_lengths(const Backend& be, const char* fn,
                            const tensor_view<const std::int32_t, 1>& lengths, std::int64_t B,
                            std::int64_t L) {
    if (!lengths.data()) return;
    const auto f = Runner::first_failure(be, "weft::decode(check lengths)", B,
                                         detail::decode::lengths_check_fn{lengths, L});
    detail::decode::throw_element_failure(
        fn, "lengths", be, lengths, f, f.item, detail::concat("values in [0, ", L, "]"), "b",
        "a length out of range", [L](std::int32_t x) { return x < 0 || x > L; });
  }
  static void check_drafts(const Backend& be, const char* fn, const tensor_view<const std::int32_t, 2>& draft,
                           const tensor_view<const std::int32_t, 1>& lengths, std::int64_t V) {
    const auto f = Runner::first_failure(be, "weft::decode(check drafts)", draft.extent(0),
                                         detail::decode::draft_tokens_check_fn{draft, lengths, V});
    detail::decode::throw_element_failure(fn, "draft_tokens", be, draft, f, f.item * draft.extent(1),
                                          detail::concat("vocabulary ids in [0, ", V, ")"), "b, t",
                                          "a token out of range", detail::decode::token_out_of_range{V});
  }
  template <class T>
  static void check_probs3(const Backend& be, const char* fn, const char* arg,
                           const tensor_view<const T, 3>& p,
                           const tensor_view<const std::int32_t, 1>& lengths, std::int64_t extra, float tol) {
    const auto f = Runner::first_failure(be, "weft::decode(check probs)", p.extent(0) * p.extent(1),
                                         detail::decode::prob_rows3_check_fn<T>{p, lengths, extra, tol});
    detail::decode::throw_probs_failure(fn, arg, be, p, f.item, f.code, tol, "b, t, v");
  }

  template <class T>
  static void verify_greedy(const Backend& be, tensor_view<const std::int32_t, 2> draft,
                            tensor_view<const T, 3> target, tensor_view<std::int32_t, 2> out,
                            tensor_view<std::int32_t, 1> accepted, const verify_options& o) {
    check_lengths(be, "verify_greedy", o.lengths, draft.extent(0), draft.extent(1));
    check_drafts(be, "verify_greedy", draft, o.lengths, target.extent(2));
    Runner::run(be, "weft::verify_greedy", draft.extent(0), 0, {}, "verify_greedy",
                detail::decode::verify_greedy_fn<T>{draft, target, out, accepted, o.lengths, o.valid});
  }

  template <class TD, class TT>
  static void speculative(const Backend& be, const char* fn, tensor_view<const TD, 3> q,
                          tensor_view<const std::int32_t, 2> draft, tensor_view<const TT, 3> p,
                          tensor_view<std::int32_t, 2> out, tensor_view<std::int32_t, 1> accepted,
                          const speculative_options& o, bool bonus) {
    check_lengths(be, fn, o.lengths, draft.extent(0), draft.extent(1));
    check_drafts(be, fn, draft, o.lengths, p.extent(2));
    check_probs3(be, fn, "draft_probs", q, o.lengths, 0, o.tolerance);
    check_probs3(be, fn, "target_probs", p, o.lengths, bonus ? 1 : 0, o.tolerance);
    Runner::run(be, bonus ? "weft::speculative_sample" : "weft::jacobi_accept", draft.extent(0), 0, {}, fn,
                detail::decode::speculative_fn<TD, TT>{q, draft, p, out, accepted, o.lengths, o.seed,
                                                       o.offset, o.seeds, o.offsets, bonus});
  }

  static void jacobi_greedy(const Backend& be, tensor_view<const std::int32_t, 2> prev,
                            tensor_view<const std::int32_t, 2> next, tensor_view<std::int32_t, 2> out,
                            tensor_view<std::int32_t, 1> accepted, const jacobi_options& o) {
    check_lengths(be, "jacobi_accept", o.lengths, prev.extent(0), prev.extent(1));
    Runner::run(be, "weft::jacobi_accept", prev.extent(0), 0, {}, "jacobi_accept",
                detail::decode::jacobi_greedy_fn{prev, next, out, accepted, o.lengths});
  }
};

}  // namespace impl

/// Greedy chain verification (see the header comment).
template <backend Backend, class T>
void verify_greedy(const Backend& be, tensor_view<const std::int32_t, 2> draft_tokens,
                   tensor_view<T, 3> target_logits, tensor_view<std::int32_t, 2> out_tokens,
                   tensor_view<std::int32_t, 1> accepted, const verify_options& opts = {}) {
  constexpr const char* fn = "verify_greedy";
  detail::decode::static_check_float<T>();
  detail::decode::check_chain_views(fn, draft_tokens, out_tokens, accepted, opts.lengths, 1);
  detail::decode::check_rows_view(fn, "target_logits", target_logits);
  detail::require_shape(fn, "target_logits", target_logits,
                        std::array<std::int64_t, 3>{draft_tokens.extent(0), draft_tokens.extent(1) + 1,
                                                    target_logits.extent(2)});
  detail::decode::check_vocab(fn, "target_logits", target_logits.extent(2));
  detail::decode::check_optional_rows(fn, "valid", opts.valid, draft_tokens.extent(0), true);
  impl::decode_impl<Backend>::verify_greedy(be, draft_tokens, tensor_view<const T, 3>(target_logits),
                                            out_tokens, accepted, opts);
}

namespace detail::decode {
template <class TD, class TT>
void check_sampled_chain(std::string_view fn, const tensor_view<TD, 3>& q,
                         const tensor_view<const std::int32_t, 2>& draft, const tensor_view<TT, 3>& p,
                         const tensor_view<std::int32_t, 2>& out,
                         const tensor_view<std::int32_t, 1>& accepted, const speculative_options& o,
                         std::int64_t extra) {
  static_check_float<TD>();
  static_check_float<TT>();
  check_chain_views(fn, draft, out, accepted, o.lengths, extra);
  const std::int64_t B = draft.extent(0), L = draft.extent(1), V = p.extent(2);
  check_rows_view(fn, "target_probs", p);
  check_vocab(fn, "target_probs", V);
  require_shape(fn, "target_probs", p, std::array<std::int64_t, 3>{B, L + extra, V});
  check_rows_view(fn, "draft_probs", q);
  require_shape(fn, "draft_probs", q, std::array<std::int64_t, 3>{B, L, V});
  require(o.tolerance >= 0.0f, fn, "tolerance", "a value >= 0", o.tolerance);
  check_seed_views(fn, o, B);
}
}  // namespace detail::decode

/// Speculative sampling of a chain of drafts (see the header comment).
template <backend Backend, class TD, class TT>
void speculative_sample(const Backend& be, tensor_view<TD, 3> draft_probs,
                        tensor_view<const std::int32_t, 2> draft_tokens, tensor_view<TT, 3> target_probs,
                        tensor_view<std::int32_t, 2> out_tokens, tensor_view<std::int32_t, 1> accepted,
                        const speculative_options& opts = {}) {
  detail::decode::check_sampled_chain("speculative_sample", draft_probs, draft_tokens, target_probs,
                                      out_tokens, accepted, opts, 1);
  impl::decode_impl<Backend>::speculative(be, "speculative_sample", tensor_view<const TD, 3>(draft_probs),
                                          draft_tokens, tensor_view<const TT, 3>(target_probs), out_tokens,
                                          accepted, opts, true);
}

/// Jacobi decoding: the longest converged prefix between two iterations (see the header comment).
template <backend Backend>
void jacobi_accept(const Backend& be, tensor_view<const std::int32_t, 2> previous,
                   tensor_view<const std::int32_t, 2> next, tensor_view<std::int32_t, 2> out_tokens,
                   tensor_view<std::int32_t, 1> accepted, const jacobi_options& opts = {}) {
  constexpr const char* fn = "jacobi_accept";
  detail::decode::check_chain_views(fn, previous, out_tokens, accepted, opts.lengths, 0);
  detail::check_view(fn, "next", next);
  detail::require_shape(fn, "next", next, previous.extents());
  impl::decode_impl<Backend>::jacobi_greedy(be, previous, next, out_tokens, accepted, opts);
}

/// Speculative Jacobi decoding: probabilistic acceptance of the previous iteration's samples.
template <backend Backend, class TD, class TT>
void jacobi_accept(const Backend& be, tensor_view<TD, 3> draft_probs,
                   tensor_view<const std::int32_t, 2> draft_tokens, tensor_view<TT, 3> target_probs,
                   tensor_view<std::int32_t, 2> out_tokens, tensor_view<std::int32_t, 1> accepted,
                   const speculative_options& opts = {}) {
  detail::decode::check_sampled_chain("jacobi_accept", draft_probs, draft_tokens, target_probs, out_tokens,
                                      accepted, opts, 0);
  impl::decode_impl<Backend>::speculative(be, "jacobi_accept", tensor_view<const TD, 3>(draft_probs),
                                          draft_tokens, tensor_view<const TT, 3>(target_probs), out_tokens,
                                          accepted, opts, false);
}

}  // namespace weft

WEFT_NO_VECTORIZE_END
