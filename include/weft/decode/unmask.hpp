// weft/decode/unmask.hpp - one step of parallel unmasking for diffusion language models.
//
//   unmask_by_confidence(be, logits [B,T,V], tokens [B,T], {.mask_id, .strategy, .threshold,
//                        .count, .counts [B], .block_start, .block_length, .temperature, .seed, ...,
//                        .confidence [B,T], .committed [B], .valid [B]})
//
// Positions t of the current block [block_start, block_start + block_length) whose token is
// mask_id are candidates. For each candidate the prediction x0 is the argmax of its logits
// (temperature 0; ties to the lowest id) or a sample from softmax(logits / temperature) (the
// Gumbel-max sampling of LLaDA's add_gumbel_noise, here the exponential race keyed by (seed,
// offset, stream predict, position t, vocabulary id)); its confidence is softmax(logits)[x0]
// (temperature 1), or for `random` a uniform keyed by (stream remask, id t). Then tokens[b,t] = x0
// for the committed candidates:
//   threshold       (Fast-dLLM, Wu et al. 2025) every candidate with confidence > threshold, and
//                   at least one: the most confident (ties to the lowest position);
//   low_confidence  (LLaDA, Nie et al. 2025) the count[b] most confident candidates (all when
//                   fewer), i.e. the others are re-masked;
//   random          (LLaDA) count[b] candidates chosen uniformly at random.
// A row with a NaN (or only -inf) logit row at a candidate commits nothing and has valid[b] = 0.
// `.confidence` receives the ranking value of each candidate (-inf elsewhere), `.committed` the
// number of committed positions per row. Like LLaDA, the mask token itself may be predicted.
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/decode/common.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/row_sample.hpp"
#include "weft/decode/row_scan.hpp"
#include "weft/decode/sampling.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft {

enum class unmask_strategy { threshold, low_confidence, random };

struct unmask_options {
  std::int32_t mask_id = -1;  ///< the mask token (required, a vocabulary id)
  unmask_strategy strategy = unmask_strategy::threshold;
  float threshold = 0.9f;                       ///< threshold: commit confidence > threshold
  std::int64_t count = 1;                       ///< low_confidence / random: positions per row
  tensor_view<const std::int32_t, 1> counts{};  ///< [B] optional per-row counts
  std::int64_t block_start = 0;
  std::int64_t block_length = 0;  ///< 0: to the end of the sequence
  float temperature = 0.0f;       ///< of the prediction; 0 is argmax
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  tensor_view<const std::uint64_t, 1> seeds{};
  tensor_view<const std::uint64_t, 1> offsets{};
  tensor_view<float, 2> confidence{};        ///< [B,T] optional out
  tensor_view<std::int32_t, 1> committed{};  ///< [B] optional out
  tensor_view<std::uint8_t, 1> valid{};      ///< [B] optional out
  weft::workspace workspace{};
};

namespace detail::decode {

/// Phase 1, one position: prediction x0 and confidence (NaN marks an invalid logit row).
template <class T>
struct unmask_predict_fn {
  tensor_view<const T, 3> logits;
  tensor_view<const std::int32_t, 2> tokens;
  std::int32_t mask_id;
  std::int64_t block_begin, block_end;
  unmask_strategy strategy;
  sample_params params;
  std::uint64_t seed, offset;
  tensor_view<const std::uint64_t, 1> seeds, offsets;
  std::int32_t* x0;
  float* conf;
  WEFT_INLINE void operator()(std::int64_t r, void* scratch) const {
    const std::int64_t T_ = tokens.extent(1), V = logits.extent(2);
    const std::int64_t b = r / T_, t = r % T_;
    if (t < block_begin || t >= block_end || tokens(b, t) != mask_id) {
      x0[r] = -1;
      conf[r] = neg_inf();
      return;
    }
    const row_key rk =
        make_row_key(seed, offset, seeds.data(), seeds.stride(0), offsets.data(), offsets.stride(0), b);
    const T* row = &logits(b, t, 0);
    sample_params p = params;
    p.position = static_cast<std::uint32_t>(t);
    const sample_result s = sample_row(row, V, p, rk, carve_sample_scratch(scratch, V));
    if (!s.valid) {
      x0[r] = -1;
      conf[r] = bits_float(f32_qnan_bits);
      return;
    }
    x0[r] = s.token;
    if (strategy == unmask_strategy::random) {
      conf[r] = uniform24(draw_word(rk, stream::remask, 0, t));
      return;
    }
    const scan_result sc = row_max(row, V);
    const float v0 = load(row, s.token);
    if (sc.max == pos_inf()) {
      conf[r] = static_cast<float>(1.0 / row_exp_sum(row, V, inf_key{}, 0.0f));
    } else {
      const double z = row_exp_sum(row, V, logits_key{1.0f}, sc.max);
      conf[r] = static_cast<float>(static_cast<double>(fast_exp(v0 - sc.max)) / z);
    }
  }
};

/// Phase 2, one sequence: choose the committed candidates; scratch: [T] candidates.
struct unmask_commit_fn {
  tensor_view<std::int32_t, 2> tokens;
  const std::int32_t* x0;
  const float* conf;
  unmask_strategy strategy;
  float threshold;
  std::int64_t count;
  tensor_view<const std::int32_t, 1> counts;
  tensor_view<float, 2> confidence;
  tensor_view<std::int32_t, 1> committed;
  tensor_view<std::uint8_t, 1> valid;
  WEFT_INLINE void operator()(std::int64_t b, void* scratch) const {
    const std::int64_t T_ = tokens.extent(1);
    const float* c = conf + b * T_;
    const std::int32_t* x = x0 + b * T_;
    cand* cs = static_cast<cand*>(scratch);
    std::int64_t n = 0;
    bool ok = true;
    for (std::int64_t t = 0; t < T_; ++t) {
      if (c[t] != c[t]) ok = false;
      if (x[t] >= 0) cs[n++] = cand{c[t], static_cast<std::int32_t>(t)};
    }
    if (confidence.data())
      for (std::int64_t t = 0; t < T_; ++t) confidence(b, t) = x[t] >= 0 ? c[t] : neg_inf();
    std::int64_t done = 0;
    if (ok && n > 0) {
      if (strategy == unmask_strategy::threshold) {
        std::int64_t top = 0;
        for (std::int64_t k = 0; k < n; ++k) {
          if (before(cs[k], cs[top])) top = k;
          if (cs[k].v > threshold) {
            tokens(b, cs[k].i) = x[cs[k].i];
            ++done;
          }
        }
        if (done == 0) {
          tokens(b, cs[top].i) = x[cs[top].i];
          done = 1;
        }
      } else {
        const std::int64_t want = counts.data() ? counts(b) : count;
        const std::int64_t k = want < n ? want : n;
        select_first(cs, n, k, cand_before{});
        for (std::int64_t j = 0; j < k; ++j) tokens(b, cs[j].i) = x[cs[j].i];
        done = k;
      }
    }
    if (committed.data()) committed(b) = static_cast<std::int32_t>(done);
    if (valid.data()) valid(b) = ok ? 1 : 0;
  }
};

/// Every token in [0, V): 1 = out of range; counts >= 0: 2.
struct unmask_check_fn {
  tensor_view<const std::int32_t, 2> tokens;
  tensor_view<const std::int32_t, 1> counts;
  std::int64_t vocab;
  WEFT_INLINE int operator()(std::int64_t b) const {
    for (std::int64_t t = 0; t < tokens.extent(1); ++t)
      if (tokens(b, t) < 0 || tokens(b, t) >= vocab) return 1;
    if (counts.data() && counts(b) < 0) return 2;
    return 0;
  }
};

}  // namespace detail::decode

namespace impl {

template <class Backend, class Runner>
struct unmask_rowwise {
  /// Predictions and confidences of one step, in backend memory.
  struct unmask_state {
    scratch_buffer buffer;
    std::int32_t* x0;
    float* conf;
    detail::decode::sample_params params;
    std::int64_t begin, end;
  };

  /// Value checks, then the state buffer.
  static unmask_state unmask_prepare(const Backend& be, std::int64_t V,
                                     const tensor_view<std::int32_t, 2>& tokens, const unmask_options& o) {
    const std::int64_t B = tokens.extent(0), T_ = tokens.extent(1);
    const auto f = Runner::first_failure(be, "weft::unmask_by_confidence(check)", B,
                                         detail::decode::unmask_check_fn{tokens, o.counts, V});
    if (f.code == 1)
      detail::decode::throw_element_failure("unmask_by_confidence", "tokens", be, tokens, f, f.item * T_,
                                            detail::concat("vocabulary ids in [0, ", V, ")"), "b, t",
                                            "a token out of range", detail::decode::token_out_of_range{V});
    if (f.code == 2)
      detail::decode::throw_element_failure("unmask_by_confidence", "counts", be, o.counts, f, f.item,
                                            "values >= 0", "b", "a negative count",
                                            [](std::int32_t c) { return c < 0; });
    unmask_state st;
    const std::size_t n = static_cast<std::size_t>(B * T_);
    st.buffer = be.allocate(detail::align_up(n * sizeof(std::int32_t)) + n * sizeof(float) + 64);
    st.x0 = static_cast<std::int32_t*>(st.buffer.data());
    st.conf = reinterpret_cast<float*>(static_cast<char*>(st.buffer.data()) +
                                       detail::align_up(n * sizeof(std::int32_t)));
    sample_options so;
    so.temperature = o.temperature;
    st.params = detail::decode::make_sample_params(so, false);
    st.params.purpose = detail::decode::stream::predict;
    st.begin = o.block_start;
    st.end = o.block_length > 0 ? o.block_start + o.block_length : T_;
    return st;
  }

  template <class T>
  static detail::decode::unmask_predict_fn<T> unmask_predictor(const tensor_view<const T, 3>& logits,
                                                               const tensor_view<std::int32_t, 2>& tokens,
                                                               const unmask_options& o,
                                                               const unmask_state& st) {
    return {logits, tokens,   o.mask_id, st.begin,  st.end, o.strategy, st.params,
            o.seed, o.offset, o.seeds,   o.offsets, st.x0,  st.conf};
  }

  static void unmask_commit(const Backend& be, const tensor_view<std::int32_t, 2>& tokens,
                            const unmask_options& o, const unmask_state& st) {
    Runner::run(be, "weft::unmask_by_confidence(commit)", tokens.extent(0),
                static_cast<std::size_t>(tokens.extent(1)) * sizeof(detail::decode::cand), {},
                "unmask_by_confidence",
                detail::decode::unmask_commit_fn{tokens, st.x0, st.conf, o.strategy, o.threshold, o.count,
                                                 o.counts, o.confidence, o.committed, o.valid});
  }

  template <class T>
  static void unmask(const Backend& be, tensor_view<const T, 3> logits, tensor_view<std::int32_t, 2> tokens,
                     const unmask_options& o) {
    const unmask_state st = unmask_prepare(be, logits.extent(2), tokens, o);
    Runner::run(be, "weft::unmask_by_confidence(predict)", tokens.extent(0) * tokens.extent(1),
                detail::decode::sample_scratch_bytes(logits.extent(2)), o.workspace, "unmask_by_confidence",
                unmask_predictor(logits, tokens, o, st));
    unmask_commit(be, tokens, o, st);
  }
};

}  // namespace impl

/// One step of confidence-based parallel unmasking (see the header comment).
template <backend Backend, class T>
void unmask_by_confidence(const Backend& be, tensor_view<T, 3> logits, tensor_view<std::int32_t, 2> tokens,
                          const unmask_options& opts) {
  constexpr const char* fn = "unmask_by_confidence";
  detail::decode::static_check_float<T>();
  detail::decode::check_rows_view(fn, "logits", logits);
  const std::int64_t B = logits.extent(0), T_ = logits.extent(1), V = logits.extent(2);
  detail::decode::check_vocab(fn, "logits", V);
  detail::check_output_view(fn, "tokens", tokens);
  detail::require_shape(fn, "tokens", tokens, std::array<std::int64_t, 2>{B, T_});
  detail::require(opts.mask_id >= 0 && opts.mask_id < V, fn, "mask_id",
                  detail::concat("a vocabulary id in [0, ", V, ")"), opts.mask_id);
  detail::require(opts.block_start >= 0 && opts.block_start <= T_, fn, "block_start",
                  detail::concat("a position in [0, ", T_, "]"), opts.block_start);
  detail::require(opts.block_length >= 0 && opts.block_start + opts.block_length <= T_, fn, "block_length",
                  detail::concat("0 (to the end) or a length with block_start + length <= ", T_),
                  opts.block_length);
  detail::require(std::isfinite(opts.threshold), fn, "threshold", "a finite value", opts.threshold);
  detail::require(opts.count >= 0, fn, "count", "a value >= 0", opts.count);
  detail::require(std::isfinite(opts.temperature) && opts.temperature >= 0.0f, fn, "temperature",
                  "a finite value >= 0", opts.temperature);
  detail::decode::check_optional_rows(fn, "counts", opts.counts, B, false);
  detail::decode::check_seed_views(fn, opts, B);
  detail::decode::check_optional_rows(fn, "committed", opts.committed, B, true);
  detail::decode::check_optional_rows(fn, "valid", opts.valid, B, true);
  if (detail::decode::given(opts.confidence)) {
    detail::check_output_view(fn, "confidence", opts.confidence);
    detail::require_shape(fn, "confidence", opts.confidence, std::array<std::int64_t, 2>{B, T_});
  }
  impl::decode_impl<Backend>::unmask(be, tensor_view<const T, 3>(logits), tokens, opts);
}

}  // namespace weft

WEFT_NO_VECTORIZE_END
