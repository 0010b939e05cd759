// weft/decode/sampling.hpp - argmax, sample, sample_probs, softmax, log_softmax, top_k_renorm:
// API, checks and the CPU definition (the row functions in row_sample.hpp).
//
//   argmax(be, logits [B,V], tokens [B], {.valid})
//   sample(be, logits [B,V], tokens [B], {.temperature, .top_k, .top_p, .min_p, .seed, .offset,
//          .seeds [B], .offsets [B], .valid [B]})
//   sample_probs(be, probs [B,V], tokens [B], same options)      rows must sum to 1
//   softmax / log_softmax(be, logits [B,V], out [B,V], {.temperature, .valid})
//   top_k_renorm(be, probs [B,V], out [B,V], k)
//
// Tokens are int32. A row whose logits contain NaN (or, for sample/softmax, are all -inf) is
// invalid: its token is -1, softmax writes NaN, and `.valid[b]` (when given) is 0; otherwise
// `.valid[b]` is 1. A row with +inf logits samples uniformly among its +inf entries.
// temperature 0 (or top_k 1) is greedy: the argmax, ties to the lowest id. The sampled set and
// the random keying are defined in row_sample.hpp and docs/decode.md.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/decode/common.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/row_sample.hpp"
#include "weft/decode/row_scan.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft {

namespace ops {
/// sample, sample_probs, top_k_renorm (and unmask_by_confidence): the tag of their
/// workspace_size(be, ops::sample{}, rows, vocab).
struct sample {};
}  // namespace ops

struct argmax_options {
  tensor_view<std::uint8_t, 1> valid{};  ///< [B] optional out: 0 for rows with NaN
};

struct sample_options {
  float temperature = 1.0f;  ///< >= 0; 0 is greedy
  std::int64_t top_k = 0;    ///< 0 (off) to Vocab
  float top_p = 1.0f;        ///< (0, 1]; 1 is off
  float min_p = 0.0f;        ///< [0, 1]; 0 is off
  std::uint64_t seed = 0;    ///< shared seed (mixed with the row index) unless `seeds` is given
  std::uint64_t offset = 0;  ///< advance per call (e.g. per decode step) unless `offsets` is given
  tensor_view<const std::uint64_t, 1> seeds{};    ///< [B] optional per-row seeds
  tensor_view<const std::uint64_t, 1> offsets{};  ///< [B] optional per-row offsets
  tensor_view<std::uint8_t, 1> valid{};           ///< [B] optional out
  float tolerance = 1e-3f;                        ///< sample_probs: allowed |row sum - 1|
  weft::workspace workspace{};  ///< optional scratch (workspace_size(be, ops::sample{}, B, V))
};

struct softmax_options {
  float temperature = 1.0f;              ///< > 0
  tensor_view<std::uint8_t, 1> valid{};  ///< [B] optional out
};

struct top_k_renorm_options {
  float tolerance = 1e-3f;  ///< allowed |row sum - 1| of the input
  weft::workspace workspace{};
};

namespace detail::decode {

template <class T>
struct argmax_rows_fn {
  tensor_view<const T, 2> in;
  tensor_view<std::int32_t, 1> tokens;
  tensor_view<std::uint8_t, 1> valid;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const argmax_result r = argmax_row(&in(b, 0), in.extent(1));
    tokens(b) = static_cast<std::int32_t>(r.index);
    if (valid.data()) valid(b) = r.index >= 0 ? 1 : 0;
  }
};

template <class T>
struct sample_rows_fn {
  tensor_view<const T, 2> in;
  tensor_view<std::int32_t, 1> tokens;
  tensor_view<std::uint8_t, 1> valid;
  sample_params params;
  std::uint64_t seed, offset;
  tensor_view<const std::uint64_t, 1> seeds, offsets;
  WEFT_INLINE void operator()(std::int64_t b, void* scratch) const {
    const row_key rk =
        make_row_key(seed, offset, seeds.data(), seeds.stride(0), offsets.data(), offsets.stride(0), b);
    const sample_result r =
        sample_row(&in(b, 0), in.extent(1), params, rk, carve_sample_scratch(scratch, in.extent(1)));
    tokens(b) = r.token;
    if (valid.data()) valid(b) = r.valid ? 1 : 0;
  }
};

template <class T>
struct probs_rows_check_fn {
  tensor_view<const T, 2> p;
  float tol;
  WEFT_INLINE int operator()(std::int64_t r) const { return check_probs_row(&p(r, 0), p.extent(1), tol); }
};

/// key(v) - m, the argument of exp in softmax: one rounding where the key is a product (logits),
/// whatever the compiler contracts. exp turns the argument's absolute error into a relative one:
/// an unfused v * (1/T) - m at |v/T - m| ~ 66 alone costs ~4e-6.
template <class Key>
WEFT_INLINE float centered(const Key& key, float v, float m) {
  return key(v) - m;
}
WEFT_INLINE float centered(const logits_key& key, float v, float m) {
  return std::fma(v, key.inv_t, -m);
}

/// sum_i exp(key(v_i) - m): lane l (of 16) adds the ids = l mod 16 in order, the lanes are
/// added in order, then the tail - the same order on every path.
template <class T, class Key>
WEFT_INLINE double row_exp_sum(const T* row, std::int64_t n, const Key& key, float m) {
  const std::int64_t full = n / simd::lanes * simd::lanes;
  float w[group];
  double z = 0.0;
#if WEFT_DECODE_LANES
  simd::f64x8 lo = simd::f64x8{}, hi = simd::f64x8{};
#else
  double acc[simd::lanes] = {};
#endif
  for (std::int64_t c = 0; c < full; c += group) {
    const int len = static_cast<int>(full - c < group ? full - c : group);  // a multiple of 16
    for (int j = 0; j < len; ++j) w[j] = fast_exp(centered(key, load(row, c + j), m));
#if WEFT_DECODE_LANES
    for (int j = 0; j < len; j += simd::lanes) {
      simd::f32x16 x;
      std::memcpy(&x, w + j, sizeof x);
      simd::add_wide(lo, hi, x);
    }
#else
    for (int j = 0; j < len; j += simd::lanes)
      for (int l = 0; l < simd::lanes; ++l) acc[l] += static_cast<double>(w[j + l]);
#endif
  }
#if WEFT_DECODE_LANES
  z = simd::hsum(lo, hi);
#else
  for (int l = 0; l < simd::lanes; ++l) z += acc[l];
#endif
  for (std::int64_t i = full; i < n; ++i) z += static_cast<double>(fast_exp(centered(key, load(row, i), m)));
  return z;
}

/// softmax (Log = false) or log_softmax (Log = true) of one row; false when invalid.
template <bool Log, class T, class U, class Key>
WEFT_INLINE void softmax_row_keyed(const T* row, std::int64_t n, U* out, const Key& key, float m) {
  const double z = row_exp_sum(row, n, key, m);
  if constexpr (Log) {
    const float lz = fast_log(static_cast<float>(z));
    for (std::int64_t i = 0; i < n; ++i) out[i] = from_accum<U>(centered(key, load(row, i), m) - lz);
  } else {
    const float inv_z = static_cast<float>(1.0 / z);
    for (std::int64_t i = 0; i < n; ++i)
      out[i] = from_accum<U>(fast_exp(centered(key, load(row, i), m)) * inv_z);
  }
}

template <bool Log, class T, class U>
struct softmax_rows_fn {
  tensor_view<const T, 2> in;
  tensor_view<U, 2> out;
  tensor_view<std::uint8_t, 1> valid;
  float inv_t;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const std::int64_t n = in.extent(1);
    const T* row = &in(b, 0);
    U* o = &out(b, 0);
    const scan_result sc = row_max(row, n);
    const bool ok = !sc.nan && sc.max != neg_inf();
    if (!ok) {
      for (std::int64_t i = 0; i < n; ++i) o[i] = from_accum<U>(bits_float(f32_qnan_bits));
    } else if (sc.max == pos_inf()) {
      softmax_row_keyed<Log>(row, n, o, inf_key{}, 0.0f);
    } else {
      const logits_key key{inv_t};
      softmax_row_keyed<Log>(row, n, o, key, key(sc.max));
    }
    if (valid.data()) valid(b) = ok ? 1 : 0;
  }
};

template <class T, class U>
struct top_k_renorm_rows_fn {
  tensor_view<const T, 2> in;
  tensor_view<U, 2> out;
  std::int64_t k;
  WEFT_INLINE void operator()(std::int64_t b, void* scratch) const {
    const std::int64_t n = in.extent(1);
    const T* row = &in(b, 0);
    U* o = &out(b, 0);
    if (k == 0 || k >= n) {
      double z = 0.0;
      for (std::int64_t i = 0; i < n; ++i) z += static_cast<double>(load(row, i));
      for (std::int64_t i = 0; i < n; ++i) o[i] = from_accum<U>(static_cast<float>(load(row, i) / z));
      return;
    }
    const sample_scratch s = carve_sample_scratch(scratch, n);
    scan_groups(row, n, s.gmax);
    collect_top_k(row, n, k, s);
    sort_by(s.cands, k, cand_before{});  // the sum in a fixed order
    double z = 0.0;
    for (std::int64_t c = 0; c < k; ++c) z += static_cast<double>(s.cands[c].v);
    for (std::int64_t i = 0; i < n; ++i) o[i] = from_accum<U>(0.0f);
    for (std::int64_t c = 0; c < k; ++c)
      o[s.cands[c].i] = from_accum<U>(static_cast<float>(static_cast<double>(s.cands[c].v) / z));
  }
};

/// Host checks shared by sample and sample_probs.
template <class T>
void check_sample_args(std::string_view fn, const tensor_view<T, 2>& in,
                       const tensor_view<std::int32_t, 1>& tokens, const sample_options& o, bool probs) {
  static_check_float<T>();
  check_rows_view(fn, probs ? "probs" : "logits", in);
  const std::int64_t B = in.extent(0), V = in.extent(1);
  check_vocab(fn, probs ? "probs" : "logits", V);
  check_output_view(fn, "tokens", tokens);
  require_shape(fn, "tokens", tokens, std::array<std::int64_t, 1>{B});
  require(std::isfinite(o.temperature) && o.temperature >= 0.0f, fn, "temperature", "a finite value >= 0",
          o.temperature);
  require(o.top_k >= 0 && o.top_k <= V, fn, "top_k", concat("0 (off) to ", V), o.top_k);
  require(o.top_p > 0.0f && o.top_p <= 1.0f, fn, "top_p", "a value in (0, 1]", o.top_p);
  require(o.min_p >= 0.0f && o.min_p <= 1.0f, fn, "min_p", "a value in [0, 1]", o.min_p);
  require(o.tolerance >= 0.0f, fn, "tolerance", "a value >= 0", o.tolerance);
  check_optional_rows(fn, "seeds", o.seeds, B, false);
  check_optional_rows(fn, "offsets", o.offsets, B, false);
  check_optional_rows(fn, "valid", o.valid, B, true);
}

inline sample_params make_sample_params(const sample_options& o, bool probs) {
  sample_params p;
  p.greedy = o.temperature == 0.0f || o.top_k == 1;
  p.inv_t = o.temperature > 0.0f ? 1.0f / o.temperature : 1.0f;
  p.top_k = o.top_k;
  p.top_p = o.top_p;
  p.log_min_p = o.min_p > 0.0f ? std::log(o.min_p) : neg_inf();
  p.probs = probs;
  return p;
}

}  // namespace detail::decode

namespace impl {

/// The CPU implementation of the sampling ops; Runner runs the rows (see decode_rowwise).
template <class Backend, class Runner>
struct sampling_rowwise {
  template <class T>
  static void argmax(const Backend& be, tensor_view<const T, 2> in, tensor_view<std::int32_t, 1> tokens,
                     tensor_view<std::uint8_t, 1> valid) {
    Runner::run(be, "weft::argmax", in.extent(0), 0, {}, "argmax",
                detail::decode::argmax_rows_fn<T>{in, tokens, valid});
  }

  template <class T>
  static void sample(const Backend& be, const char* fn, tensor_view<const T, 2> in,
                     tensor_view<std::int32_t, 1> tokens, const detail::decode::sample_params& p,
                     const sample_options& o) {
    if (p.probs) {
      const auto f = Runner::first_failure(be, "weft::sample_probs(check)", in.extent(0),
                                           detail::decode::probs_rows_check_fn<T>{in, o.tolerance});
      detail::decode::throw_probs_failure(fn, "probs", be, in, f.item, f.code, o.tolerance, "b, v");
    }
    Runner::run(
        be, p.probs ? "weft::sample_probs" : "weft::sample", in.extent(0),
        detail::decode::sample_scratch_bytes(in.extent(1)), o.workspace, fn,
        detail::decode::sample_rows_fn<T>{in, tokens, o.valid, p, o.seed, o.offset, o.seeds, o.offsets});
  }

  template <bool Log, class T, class U>
  static void softmax(const Backend& be, tensor_view<const T, 2> in, tensor_view<U, 2> out, float inv_t,
                      tensor_view<std::uint8_t, 1> valid) {
    Runner::run(be, Log ? "weft::log_softmax" : "weft::softmax", in.extent(0), 0, {},
                Log ? "log_softmax" : "softmax",
                detail::decode::softmax_rows_fn<Log, T, U>{in, out, valid, inv_t});
  }

  template <class T, class U>
  static void top_k_renorm(const Backend& be, tensor_view<const T, 2> in, tensor_view<U, 2> out,
                           std::int64_t k, const top_k_renorm_options& o) {
    const auto f = Runner::first_failure(be, "weft::top_k_renorm(check)", in.extent(0),
                                         detail::decode::probs_rows_check_fn<T>{in, o.tolerance});
    detail::decode::throw_probs_failure("top_k_renorm", "probs", be, in, f.item, f.code, o.tolerance, "b, v");
    Runner::run(be, "weft::top_k_renorm", in.extent(0), detail::decode::sample_scratch_bytes(in.extent(1)),
                o.workspace, "top_k_renorm", detail::decode::top_k_renorm_rows_fn<T, U>{in, out, k});
  }
};

}  // namespace impl

namespace detail::decode {
// Compile-time misuse of argmax / sample / sample_probs: a catch-all overload beside each takes
// the calls the main one cannot (logits not a 2-D view, token ids not std::int32_t) and names the
// misuse in one static_assert, instead of "no matching function".
template <class T>
void deduce_rows(const tensor_view<T, 2>&);
template <class L>
concept rows_view = requires(const L& l) {
  deduce_rows(l);
};
template <class L, class Tok>
concept rows_and_tokens = rows_view<L> && std::is_convertible_v<const Tok&, tensor_view<std::int32_t, 1>>;
template <class L, class Tok>
constexpr void diagnose_rows_and_tokens() {
  if constexpr (!rows_view<L>)
    static_assert(
        rows_view<L>,
        "weft decode: logits / probs must be a 2-D view weft::tensor_view<T, 2> [B, Vocab] of float, "
        "double, weft::bf16 or weft::f16");
  else
    static_assert(rows_and_tokens<L, Tok>,
                  "weft decode: tokens must be a writable 1-D view of std::int32_t token ids, "
                  "weft::tensor_view<std::int32_t, 1> [B] (token ids are int32, not int64)");
}
}  // namespace detail::decode

/// Index of the largest logit of each row (ties to the lowest index; -1 for rows with NaN).
template <backend Backend, class T>
void argmax(const Backend& be, tensor_view<T, 2> logits, tensor_view<std::int32_t, 1> tokens,
            const argmax_options& opts = {}) {
  detail::decode::static_check_float<T>();
  detail::decode::check_rows_view("argmax", "logits", logits);
  detail::decode::check_vocab("argmax", "logits", logits.extent(1));
  detail::check_output_view("argmax", "tokens", tokens);
  detail::require_shape("argmax", "tokens", tokens, std::array<std::int64_t, 1>{logits.extent(0)});
  detail::decode::check_optional_rows("argmax", "valid", opts.valid, logits.extent(0), true);
  impl::decode_impl<Backend>::argmax(be, tensor_view<const T, 2>(logits), tokens, opts.valid);
}

/// Samples one token per row of logits (see the header comment and docs/decode.md).
template <backend Backend, class T>
void sample(const Backend& be, tensor_view<T, 2> logits, tensor_view<std::int32_t, 1> tokens,
            const sample_options& opts = {}) {
  detail::decode::check_sample_args("sample", logits, tokens, opts, false);
  impl::decode_impl<Backend>::sample(be, "sample", tensor_view<const T, 2>(logits), tokens,
                                     detail::decode::make_sample_params(opts, false), opts);
}

/// Samples one token per row of probabilities (rows must sum to 1 within opts.tolerance).
/// Temperature T samples from p^(1/T), renormalised.
template <backend Backend, class T>
void sample_probs(const Backend& be, tensor_view<T, 2> probs, tensor_view<std::int32_t, 1> tokens,
                  const sample_options& opts = {}) {
  detail::decode::check_sample_args("sample_probs", probs, tokens, opts, true);
  impl::decode_impl<Backend>::sample(be, "sample_probs", tensor_view<const T, 2>(probs), tokens,
                                     detail::decode::make_sample_params(opts, true), opts);
}

/// Every other argmax / sample / sample_probs call: one compile-time error naming the misuse.
template <backend Backend, class L, class Tok>
requires(!detail::decode::rows_and_tokens<L, Tok>) void argmax(const Backend&, const L&, const Tok&,
                                                               const argmax_options& = {}) {
  detail::decode::diagnose_rows_and_tokens<L, Tok>();
}
template <backend Backend, class L, class Tok>
requires(!detail::decode::rows_and_tokens<L, Tok>) void sample(const Backend&, const L&, const Tok&,
                                                               const sample_options& = {}) {
  detail::decode::diagnose_rows_and_tokens<L, Tok>();
}
template <backend Backend, class L, class Tok>
requires(!detail::decode::rows_and_tokens<L, Tok>) void sample_probs(const Backend&, const L&, const Tok&,
                                                                     const sample_options& = {}) {
  detail::decode::diagnose_rows_and_tokens<L, Tok>();
}

namespace detail::decode {
template <class T, class U>
void check_softmax_args(std::string_view fn, const tensor_view<T, 2>& in, const tensor_view<U, 2>& out,
                        const softmax_options& o) {
  static_check_float<T>();
  static_check_float<U>();
  static_assert(!std::is_const_v<U>, "weft::softmax: 'out' must be writable");
  check_rows_view(fn, "logits", in);
  check_vocab(fn, "logits", in.extent(1));
  check_output_view(fn, "out", out);
  require_unit_inner_stride(fn, "out", out);
  require_shape(fn, "out", out, in.extents());
  require(std::isfinite(o.temperature) && o.temperature > 0.0f, fn, "temperature", "a finite value > 0",
          o.temperature);
  check_optional_rows(fn, "valid", o.valid, in.extent(0), true);
}
}  // namespace detail::decode

/// out = softmax(logits / T) per row (NaN rows: NaN, valid 0).
template <backend Backend, class T, class U>
void softmax(const Backend& be, tensor_view<T, 2> logits, tensor_view<U, 2> out,
             const softmax_options& opts = {}) {
  detail::decode::check_softmax_args("softmax", logits, out, opts);
  impl::decode_impl<Backend>::template softmax<false>(be, tensor_view<const T, 2>(logits), out,
                                                      1.0f / opts.temperature, opts.valid);
}

/// out = log_softmax(logits / T) per row (NaN rows: NaN, valid 0).
template <backend Backend, class T, class U>
void log_softmax(const Backend& be, tensor_view<T, 2> logits, tensor_view<U, 2> out,
                 const softmax_options& opts = {}) {
  detail::decode::check_softmax_args("log_softmax", logits, out, opts);
  impl::decode_impl<Backend>::template softmax<true>(be, tensor_view<const T, 2>(logits), out,
                                                     1.0f / opts.temperature, opts.valid);
}

/// Keeps the k most probable entries of each row (ties to the lowest id), zeroes the rest and
/// renormalises. k = 0 or k = Vocab keeps every entry.
template <backend Backend, class T, class U>
void top_k_renorm(const Backend& be, tensor_view<T, 2> probs, tensor_view<U, 2> out, std::int64_t k,
                  const top_k_renorm_options& opts = {}) {
  detail::decode::static_check_float<T>();
  detail::decode::static_check_float<U>();
  detail::decode::check_rows_view("top_k_renorm", "probs", probs);
  detail::decode::check_vocab("top_k_renorm", "probs", probs.extent(1));
  detail::check_output_view("top_k_renorm", "out", out);
  detail::require_unit_inner_stride("top_k_renorm", "out", out);
  detail::require_shape("top_k_renorm", "out", out, probs.extents());
  detail::require(k >= 0 && k <= probs.extent(1), "top_k_renorm", "k",
                  detail::concat("0 to ", probs.extent(1)), k);
  detail::require(opts.tolerance >= 0.0f, "top_k_renorm", "tolerance", "a value >= 0", opts.tolerance);
  impl::decode_impl<Backend>::top_k_renorm(be, tensor_view<const T, 2>(probs), out, k, opts);
}

}  // namespace weft

WEFT_NO_VECTORIZE_END
