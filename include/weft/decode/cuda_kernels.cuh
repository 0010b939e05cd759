// weft/decode/cuda_kernels.cuh - the CUDA kernels of the decode family and the block-level
// helpers they share (private: weft/decode/cuda.cuh launches them and says what each does).
//
//   block_all                        in-order pairwise reduction over the block's 256 threads
//   block_row_max, block_count,      one pass over a row per call, thread t taking ids t, t + 256, ...
//   block_mass, block_race
//   block_top_k                      the top-k set by bisection over the ordered bits of the values
//   *_kernel                         a block per row (sequence, position); a thread per row for
//                                    the CPU row functions is detail::item_runner<cuda_backend>
//
// The per-entry math (keys, weights, race scores) is the CPU backends' (decode/math.hpp, row_*.hpp).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/core/random.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/decode/decode.hpp"

namespace weft::detail::decode::cuda_kernels {

inline constexpr int threads = 256;

/// In-order pairwise reduction of the block's values; every thread gets the result.
template <class V, class Op>
__device__ V block_all(V v, const Op& op) {
  __shared__ alignas(V) unsigned char raw[threads * sizeof(V)];
  V* sm = reinterpret_cast<V*>(raw);
  const int t = threadIdx.x;
  sm[t] = v;
  __syncthreads();
  for (int s = 1; s < threads; s <<= 1) {
    if ((t & (2 * s - 1)) == 0) sm[t] = op(sm[t], sm[t + s]);
    __syncthreads();
  }
  const V r = sm[0];
  __syncthreads();
  return r;
}
struct add_op {
  template <class V>
  __device__ V operator()(V a, V b) const {
    return a + b;
  }
};
struct max_op {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};
struct min_i64_op {
  __device__ std::int64_t operator()(std::int64_t a, std::int64_t b) const { return b < a ? b : a; }
};
struct best_op {  // larger score, then lower index
  __device__ race_best operator()(race_best a, race_best b) const {
    if (b.index < 0) return a;
    if (a.index < 0) return b;
    return (b.score > a.score || (b.score == a.score && b.index < a.index)) ? b : a;
  }
};

/// Order-preserving bits of a float (-0 counts as +0): a > b  <=>  ord(a) > ord(b).
__device__ inline std::uint32_t ord(float v) {
  const std::uint32_t u = float_bits(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// Rows of a rank-2 view, or of a rank-3 view flattened over its first two dimensions.
template <class T>
struct rows2 {
  tensor_view<const T, 2> v;
  __device__ const T* operator()(std::int64_t r) const { return &v(r, 0); }
  std::int64_t count() const { return v.extent(0); }
  std::int64_t length() const { return v.extent(1); }
};
template <class T>
struct rows3 {
  tensor_view<const T, 3> v;
  __device__ const T* operator()(std::int64_t r) const { return &v(r / v.extent(1), r % v.extent(1), 0); }
  std::int64_t count() const { return v.extent(0) * v.extent(1); }
  std::int64_t length() const { return v.extent(2); }
};

struct row_stats {
  float max;
  bool nan;
};
template <class T>
__device__ row_stats block_row_max(const T* row, std::int64_t n) {
  float m = neg_inf();
  int nan = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += threads) {
    const float v = load(row, i);
    m = v > m ? v : m;
    nan |= v != v;
  }
  const float bm = block_all(m, max_op{});
  const int bn = block_all(nan, add_op{});
  return {bm, bn != 0};
}

/// The lowest id with v == target.
template <class T>
__device__ std::int64_t block_first_equal(const T* row, std::int64_t n, float target) {
  std::int64_t first = INT64_MAX;
  for (std::int64_t i = threadIdx.x; i < n; i += threads)
    if (load(row, i) == target && i < first) first = i;
  return block_all(first, min_i64_op{});
}

template <class T, class Pred>
__device__ std::int64_t block_count(const T* row, std::int64_t n, const Pred& pred) {
  std::int64_t c = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += threads) c += pred(i, load(row, i)) ? 1 : 0;
  return block_all(c, add_op{});
}

/// The top-k set as (tau, cut): i is in it when ord(v_i) > tau, or == tau and i <= cut.
struct k_set {
  std::uint32_t tau;
  std::int64_t cut;
  __device__ bool has(std::int64_t i, float v) const {
    const std::uint32_t o = ord(v);
    return o > tau || (o == tau && i <= cut);
  }
};

template <class T>
__device__ k_set block_top_k(const T* row, std::int64_t n, std::int64_t k) {
  if (k <= 0 || k >= n) return {0u, n};
  // tau = the largest t with #{ord >= t} >= k: the k-th largest ordered value.
  std::uint32_t lo = 0, hi = 0xffffffffu;
  while (lo < hi) {
    const std::uint32_t mid = lo + (hi - lo) / 2 + 1;
    const std::int64_t c = block_count(row, n, [&](std::int64_t, float v) { return ord(v) >= mid; });
    if (c >= k)
      lo = mid;
    else
      hi = mid - 1;
  }
  const std::uint32_t tau = lo;
  const std::int64_t above = block_count(row, n, [&](std::int64_t, float v) { return ord(v) > tau; });
  const std::int64_t need = k - above;  // ties at tau to keep, lowest ids first
  std::int64_t a = 0, b = n - 1;
  while (a < b) {
    const std::int64_t mid = a + (b - a) / 2;
    const std::int64_t c =
        block_count(row, n, [&](std::int64_t i, float v) { return ord(v) == tau && i <= mid; });
    if (c >= need)
      b = mid;
    else
      a = mid + 1;
  }
  return {tau, a};
}

/// Mass of K restricted to ord(v) >= t.
template <class T, class Key>
__device__ double block_mass(const T* row, std::int64_t n, const Key& key, float m, const k_set& K,
                             std::uint32_t t) {
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += threads) {
    const float v = load(row, i);
    if (K.has(i, v) && ord(v) >= t) s += static_cast<double>(fast_exp(key(v) - m));
  }
  return block_all(s, add_op{});
}

/// The race over the entries i < n that entry(i, x) admits, x their log-weight: a thread per
/// four ids (one Philox draw), then the block's best (the larger score, then the lower id).
template <class Entry>
__device__ std::int64_t block_race(std::int64_t n, const Entry& entry, const row_key& rk, stream s,
                                   std::uint32_t position) {
  race_best best{neg_inf(), -1};
  const std::int64_t quads = (n + 3) / 4;
  for (std::int64_t q = threadIdx.x; q < quads; q += threads) {
    const philox_u32x4 w = draw4(rk, s, position, static_cast<std::uint32_t>(q));
    for (int j = 0; j < 4; ++j) {
      const std::int64_t i = 4 * q + j;
      if (i >= n) break;
      float x;
      if (!entry(i, x)) continue;
      race_offer(best, race_score(x, w.v[j]), i);
    }
  }
  return block_all(best, best_op{}).index;
}

/// The race over S = K ∩ {ord(v) >= tp} ∩ {key(v) - m >= log_min_p}.
template <class T, class Key>
__device__ std::int64_t block_race_set(const T* row, std::int64_t n, const Key& key, float m, const k_set& K,
                                       std::uint32_t tp, float log_min_p, const row_key& rk, stream s,
                                       std::uint32_t position) {
  const auto in_set = [&](std::int64_t i, float& x) {
    const float v = load(row, i);
    x = key(v);
    return K.has(i, v) && ord(v) >= tp && x - m >= log_min_p;
  };
  return block_race(n, in_set, rk, s, position);
}

/// One row of sample / sample_probs with a given key.
template <class T, class Key>
__device__ std::int64_t block_sample_keyed(const T* row, std::int64_t n, const sample_params& P,
                                           const Key& key, float vmax, const row_key& rk) {
  const float m = key(vmax);
  const k_set K = block_top_k(row, n, P.top_k);
  std::uint32_t tp = 0;
  if (P.top_p < 1.0f) {
    const double target = static_cast<double>(P.top_p) * block_mass(row, n, key, m, K, 0u);
    std::uint32_t lo = 0, hi = 0xffffffffu;  // the largest t with mass(ord >= t) >= target
    while (lo < hi) {
      const std::uint32_t mid = lo + (hi - lo) / 2 + 1;
      if (block_mass(row, n, key, m, K, mid) >= target)
        lo = mid;
      else
        hi = mid - 1;
    }
    tp = lo;
  }
  return block_race_set(row, n, key, m, K, tp, P.log_min_p, rk, P.purpose, P.position);
}

template <class T>
__device__ sample_result block_sample(const T* row, std::int64_t n, const sample_params& P,
                                      const row_key& rk) {
  const row_stats st = block_row_max(row, n);
  if (st.nan || (P.probs ? !(st.max > 0.0f) : st.max == neg_inf())) return {-1, false};
  if (P.greedy) return {static_cast<std::int32_t>(block_first_equal(row, n, st.max)), true};
  std::int64_t y;
  if (!P.probs && st.max == pos_inf())
    y = block_sample_keyed(row, n, P, inf_key{}, st.max, rk);
  else if (P.probs)
    y = block_sample_keyed(row, n, P, probs_key{P.inv_t}, st.max, rk);
  else
    y = block_sample_keyed(row, n, P, logits_key{P.inv_t}, st.max, rk);
  return {static_cast<std::int32_t>(y), true};
}

/// The race over weights w(i) >= 0 (-1 when all are 0).
template <class Weight>
__device__ std::int64_t block_race_weights(std::int64_t n, const Weight& wt, const row_key& rk, stream s,
                                           std::uint32_t position) {
  const auto positive = [&](std::int64_t i, float& x) {
    x = fast_log(wt(i));
    return !(x == neg_inf());
  };
  return block_race(n, positive, rk, s, position);
}

// ---------------------------------------------------------------------------------------
// Kernels.
// ---------------------------------------------------------------------------------------
template <class Rows>
__global__ void __launch_bounds__(threads)
    argmax_kernel(Rows rows, std::int64_t n, std::int32_t* out, std::int64_t out_stride, std::uint8_t* valid,
                  std::int64_t valid_stride) {
  const std::int64_t r = blockIdx.x;
  const auto* row = rows(r);
  const row_stats st = block_row_max(row, n);
  const std::int64_t i = st.nan ? -1 : block_first_equal(row, n, st.max);
  if (threadIdx.x == 0) {
    out[r * out_stride] = static_cast<std::int32_t>(i < 0 ? -1 : (i == INT64_MAX ? 0 : i));
    if (valid) valid[r * valid_stride] = st.nan ? 0 : 1;
  }
}

template <bool Log, class T, class U>
__global__ void __launch_bounds__(threads) softmax_kernel(tensor_view<const T, 2> in, tensor_view<U, 2> out,
                                                          float inv_t, tensor_view<std::uint8_t, 1> valid) {
  const std::int64_t b = blockIdx.x, n = in.extent(1);
  const T* row = &in(b, 0);
  U* o = &out(b, 0);
  const row_stats st = block_row_max(row, n);
  const bool ok = !st.nan && st.max != neg_inf();
  const bool inf_mode = st.max == pos_inf();
  const float m = inf_mode ? 0.0f : st.max * inv_t;
  double z = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += threads) {
    const float v = load(row, i);
    const float x = inf_mode ? inf_key{}(v) : v * inv_t;
    z += static_cast<double>(fast_exp(x - m));
  }
  z = block_all(z, add_op{});
  const float lz = fast_log(static_cast<float>(z));
  const float inv_z = static_cast<float>(1.0 / z);
  for (std::int64_t i = threadIdx.x; i < n; i += threads) {
    const float v = load(row, i);
    const float x = inf_mode ? inf_key{}(v) : v * inv_t;
    const float r = !ok ? bits_float(f32_qnan_bits) : (Log ? (x - m) - lz : fast_exp(x - m) * inv_z);
    o[i] = from_accum<U>(r);
  }
  if (threadIdx.x == 0 && valid.data()) valid(b) = ok ? 1 : 0;
}

template <class T>
__global__ void __launch_bounds__(threads)
    sample_kernel(tensor_view<const T, 2> in, tensor_view<std::int32_t, 1> tokens,
                  tensor_view<std::uint8_t, 1> valid, sample_params P, std::uint64_t seed,
                  std::uint64_t offset, tensor_view<const std::uint64_t, 1> seeds,
                  tensor_view<const std::uint64_t, 1> offsets) {
  const std::int64_t b = blockIdx.x;
  const row_key rk =
      make_row_key(seed, offset, seeds.data(), seeds.stride(0), offsets.data(), offsets.stride(0), b);
  const sample_result r = block_sample(&in(b, 0), in.extent(1), P, rk);
  if (threadIdx.x == 0) {
    tokens(b) = r.token;
    if (valid.data()) valid(b) = r.valid ? 1 : 0;
  }
}

template <class T, class U>
__global__ void __launch_bounds__(threads)
    top_k_renorm_kernel(tensor_view<const T, 2> in, tensor_view<U, 2> out, std::int64_t k) {
  const std::int64_t b = blockIdx.x, n = in.extent(1);
  const T* row = &in(b, 0);
  const k_set K = block_top_k(row, n, k == 0 ? n : k);
  double z = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += threads) {
    const float v = load(row, i);
    if (K.has(i, v)) z += static_cast<double>(v);
  }
  z = block_all(z, add_op{});
  for (std::int64_t i = threadIdx.x; i < n; i += threads) {
    const float v = load(row, i);
    out(b, i) = from_accum<U>(K.has(i, v) ? static_cast<float>(static_cast<double>(v) / z) : 0.0f);
  }
}

/// Chains: a block per sequence (speculative_fn's rule, with block-parallel draws).
template <class TD, class TT>
__global__ void __launch_bounds__(threads) speculative_kernel(speculative_fn<TD, TT> f) {
  const std::int64_t b = blockIdx.x;
  const std::int64_t L = f.draft.extent(1), V = f.target_probs.extent(2);
  const std::int64_t len = f.lengths.data() ? f.lengths(b) : L;
  const row_key rk = make_row_key(f.seed, f.offset, f.seeds.data(), f.seeds.stride(0), f.offsets.data(),
                                  f.offsets.stride(0), b);
  std::int64_t a = 0, written = 0;
  for (std::int64_t t = 0; t < len; ++t) {
    const std::int32_t x = f.draft(b, t);
    const double q = static_cast<double>(load(&f.draft_probs(b, t, 0), x));
    const double p = static_cast<double>(load(&f.target_probs(b, t, 0), x));
    const double u = static_cast<double>(uniform24(draw_word(rk, stream::accept, 0, t)));
    if (u * q < p) {
      if (threadIdx.x == 0) f.out(b, written) = x;
      ++written;
      ++a;
      continue;
    }
    std::int64_t y = block_race_weights(
        V, residual_weight<TT, TD>{&f.target_probs(b, t, 0), &f.draft_probs(b, t, 0), 1.0f}, rk,
        stream::residual, static_cast<std::uint32_t>(t));
    if (y < 0)
      y = block_race_weights(V, plain_weight<TT>{&f.target_probs(b, t, 0)}, rk, stream::residual,
                             static_cast<std::uint32_t>(t));
    if (threadIdx.x == 0) f.out(b, written) = static_cast<std::int32_t>(y);
    ++written;
    break;
  }
  if (a == len && f.bonus) {
    const std::int64_t y = block_race_weights(V, plain_weight<TT>{&f.target_probs(b, len, 0)}, rk,
                                              stream::bonus, static_cast<std::uint32_t>(len));
    if (threadIdx.x == 0) f.out(b, written) = static_cast<std::int32_t>(y);
    ++written;
  }
  if (threadIdx.x == 0) {
    for (std::int64_t t = written; t < f.out.extent(1); ++t) f.out(b, t) = -1;
    f.accepted(b) = static_cast<std::int32_t>(a);
  }
}

/// Sampled trees: a block per sequence; R is this sequence's residual row in global memory.
template <class TD, class TT>
__global__ void __launch_bounds__(threads)
    tree_sampled_kernel(verify_tree_sampled_fn<TD, TT> f, float* residual) {
  const std::int64_t b = blockIdx.x;
  const std::int64_t N = f.tokens.extent(1), V = f.target.extent(2);
  float* R = residual + b * V;
  const row_key rk = make_row_key(f.seed, f.offset, f.seeds.data(), f.seeds.stride(0), f.offsets.data(),
                                  f.offsets.stride(0), b);
  if (threadIdx.x == 0)
    for (std::int64_t j = 0; j < N; ++j) {
      f.out(b, j) = -1;
      f.path(b, j) = -1;
    }
  std::int64_t r = 0, a = 0;
  for (;;) {
    __syncthreads();  // every thread is done with the previous node's R
    const TT* p = &f.target(b, r, 0);
    const TD* q = &f.draft(b, r, 0);
    double sum = 0.0;
    for (std::int64_t v = threadIdx.x; v < V; v += threads) sum += static_cast<double>(R[v] = load(p, v));
    sum = block_all(sum, add_op{});
    std::int64_t next = -1;
    for (std::int64_t c = r + 1; c < N; ++c) {
      if (f.parents(b, c) != r) continue;
      const std::int32_t x = f.tokens(b, c);
      const double u = static_cast<double>(uniform24(draw_word(rk, stream::accept, 0, c)));
      __syncthreads();  // R[x] is final
      if (u * static_cast<double>(load(q, x)) * sum < static_cast<double>(R[x])) {
        next = c;
        break;
      }
      __syncthreads();  // everyone read R[x] before it changes
      const float s = static_cast<float>(sum);
      double ns = 0.0;
      for (std::int64_t v = threadIdx.x; v < V; v += threads) {
        const float w = R[v] - s * load(q, v);
        R[v] = w > 0.0f ? w : 0.0f;
        ns += static_cast<double>(R[v]);
      }
      ns = block_all(ns, add_op{});
      if (ns == 0.0) {
        for (std::int64_t v = threadIdx.x; v < V; v += threads) ns += static_cast<double>(R[v] = load(p, v));
        ns = block_all(ns, add_op{});
      }
      sum = ns;
    }
    if (next >= 0) {
      if (threadIdx.x == 0) {
        f.path(b, a) = static_cast<std::int32_t>(next);
        f.out(b, a) = f.tokens(b, next);
      }
      ++a;
      r = next;
      continue;
    }
    __syncthreads();
    const std::int64_t y =
        block_race_weights(V, plain_weight<float>{R}, rk, stream::residual, static_cast<std::uint32_t>(r));
    if (threadIdx.x == 0 && a < N) f.out(b, a) = static_cast<std::int32_t>(y);
    break;
  }
  if (threadIdx.x == 0) f.accepted(b) = static_cast<std::int32_t>(a);
}

/// Unmasking, phase 1: a block per position (unmask_predict_fn's rule).
template <class T>
__global__ void __launch_bounds__(threads) unmask_predict_kernel(unmask_predict_fn<T> f) {
  const std::int64_t r = blockIdx.x;
  const std::int64_t T_ = f.tokens.extent(1), V = f.logits.extent(2);
  const std::int64_t b = r / T_, t = r % T_;
  if (t < f.block_begin || t >= f.block_end || f.tokens(b, t) != f.mask_id) {
    if (threadIdx.x == 0) {
      f.x0[r] = -1;
      f.conf[r] = neg_inf();
    }
    return;
  }
  const row_key rk = make_row_key(f.seed, f.offset, f.seeds.data(), f.seeds.stride(0), f.offsets.data(),
                                  f.offsets.stride(0), b);
  const T* row = &f.logits(b, t, 0);
  sample_params p = f.params;
  p.position = static_cast<std::uint32_t>(t);
  const sample_result s = block_sample(row, V, p, rk);
  if (!s.valid) {
    if (threadIdx.x == 0) {
      f.x0[r] = -1;
      f.conf[r] = bits_float(f32_qnan_bits);
    }
    return;
  }
  float c;
  if (f.strategy == unmask_strategy::random) {
    c = uniform24(draw_word(rk, stream::remask, 0, t));
  } else {
    const row_stats st = block_row_max(row, V);
    const bool inf_mode = st.max == pos_inf();
    const float m = inf_mode ? 0.0f : st.max;
    double z = 0.0;
    for (std::int64_t i = threadIdx.x; i < V; i += threads) {
      const float v = load(row, i);
      z += static_cast<double>(fast_exp((inf_mode ? inf_key{}(v) : v) - m));
    }
    z = block_all(z, add_op{});
    const float v0 = load(row, s.token);
    c = static_cast<float>(static_cast<double>(fast_exp((inf_mode ? inf_key{}(v0) : v0) - m)) / z);
  }
  if (threadIdx.x == 0) {
    f.x0[r] = s.token;
    f.conf[r] = c;
  }
}

/// kv_compact: a block per sequence, path entries in order, (h, d) in parallel.
template <class T>
__global__ void __launch_bounds__(threads) kv_compact_kernel(kv_compact_fn<T> f) {
  const std::int64_t b = blockIdx.x;
  const std::int64_t s0 = f.start.data() ? f.start(b) : 0;
  const std::int64_t H = f.cache.extent(2), D = f.cache.extent(3);
  for (std::int64_t j = 1; j <= f.accepted(b); ++j) {
    const std::int64_t from = s0 + f.path(b, j - 1), to = s0 + j;
    if (from != to)
      for (std::int64_t e = threadIdx.x; e < H * D; e += threads)
        f.cache(b, to, e / D, e % D) = f.cache(b, from, e / D, e % D);
    __syncthreads();  // slot `to` may be the source of a later move
  }
}

}  // namespace weft::detail::decode::cuda_kernels
