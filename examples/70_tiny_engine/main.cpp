// 70_tiny_engine: a small hybrid language model served with weft's primitives only.
//
// Six layers, d_model 256, vocabulary 32,000, random but fixed weights (seeded):
//   GLA, attention, GLA, GLA, attention, GLA    each: x += mixer(norm(x)); x += mlp(norm(x))
// GLA: 4 heads of 64 (q, k, v, a per-channel forget gate), weft::linear_attention / _step.
// Attention: 4 query heads on 2 KV heads of 64 (GQA), a paged KV cache of 16-token pages.
// The caller's GEMM is OpenBLAS' sgemm (decode sizes: a loop that streams each weight once).
//
// Phases: prefill a prompt (--tokens; under mpiexec -n W the sequence is sharded zigzag across
// ranks: ring_attention for attention, a state fold for GLA); plain decoding (sample, top-p and
// min-p); speculative decoding with the first two layers as the draft (verify_greedy /
// speculative_sample, cache truncated and GLA states rolled back to the accepted prefix);
// parallel samples sharing the prompt's KV pages (cascade: merge_attention of the shared-prefix
// partial and each sample's own). It checks itself (see the end of main) and exits non-zero on
// a mismatch. docs/tiny_engine.md walks through this file.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "weft/comm/mpi.hpp"
#include "weft/weft.hpp"
#if WEFT_EXAMPLE_KOKKOS
#include "weft/kokkos.hpp"
#else
#define WEFT_EXAMPLE_KOKKOS 0
#endif
#if WEFT_EXAMPLE_OPENBLAS
#include <cblas.h>
#endif

namespace {

using i64 = std::int64_t;
using weft::make_view;
constexpr i64 Dm = 256, Vocab = 32000, H = 4, Dh = 64, Hkv = 2, Hd = H * Dh, Dff = 512, page = 16;
constexpr int n_layers = 6, n_draft = 2;
constexpr bool is_attn[n_layers] = {false, true, false, false, true, false};

// ---- the caller's side: GEMM, norm, weights --------------------------------------------------
/// C[n,m] (+)= A[n,k] B[k,m], row-major. Decode sizes (n <= 8 rows) stream each weight once:
/// OpenBLAS packs B on every call, which there costs more than the product itself.
void gemm(i64 n, i64 k, i64 m, const float* A, i64 lda, const float* B, float* C, bool add = false) {
#if WEFT_EXAMPLE_OPENBLAS
  if (n > 8)
    return cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(m), int(k), 1.f, A, int(lda), B,
                       int(m), add ? 1.f : 0.f, C, int(m));
#endif
  if (!add) std::fill(C, C + n * m, 0.f);
  for (i64 j0 = 0; j0 < m; j0 += 2048)  // 2048 columns of C stay in L1/L2 while B streams
    for (i64 p = 0; p < k; ++p)
      for (i64 i = 0; i < n; ++i) {
        const float a = A[i * lda + p];
        for (i64 j = j0; j < std::min(m, j0 + 2048); ++j) C[i * m + j] += a * B[p * m + j];
      }
}

void rmsnorm(const float* x, float* y, i64 rows) {
  for (i64 r = 0; r < rows; ++r) {
    double s = 0;
    for (i64 j = 0; j < Dm; ++j) s += double(x[r * Dm + j]) * x[r * Dm + j];
    const float inv = float(1.0 / std::sqrt(s / Dm + 1e-6));
    for (i64 j = 0; j < Dm; ++j) y[r * Dm + j] = x[r * Dm + j] * inv;
  }
}

std::vector<float> random(i64 n, std::uint64_t seed, float scale) {  // splitmix64 -> [-scale, scale)
  std::vector<float> w(static_cast<std::size_t>(n));
  for (auto& e : w) {
    std::uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    e = scale * (float((z ^ (z >> 31)) >> 40) * 0x1.0p-23f - 1.f);
  }
  return w;
}

struct layer {
  i64 width;  // columns of the input projection: q k v g (GLA) or q k v (attention)
  std::vector<float> wi, wo, w1, w2;
};
struct model {
  std::vector<layer> layers;
  std::vector<float> emb, head;  // [Vocab, Dm], [Dm, Vocab]
  model() : emb(random(Vocab * Dm, 1, 1.f)), head(random(Dm * Vocab, 2, 1.7f / 16)) {
    for (int l = 0; l < n_layers; ++l) {
      const i64 w = is_attn[l] ? Hd + 2 * Hkv * Dh : 4 * Hd;
      // uniform of variance 1 / fan_in (256); the layers past the draft's write less into the
      // residual stream, a stand-in for a trained model whose first layers already predict
      // most tokens (what self-speculation with a truncated model relies on)
      const float s = 1.7f / 16, out = l < n_draft ? s / 2 : s / 32;
      layers.push_back({w, random(Dm * w, 10 + l, s), random(Hd * Dm, 20 + l, out),
                        random(Dm * Dff, 30 + l, s), random(Dff * Dm, 40 + l, out / 1.41f)});
    }
  }
};

/// Model FLOPs of one token at context ctx through nl layers (GEMMs, attention, GLA state).
double flops_token(i64 ctx, int nl) {
  double f = 0;
  for (int l = 0; l < nl; ++l)
    f += 2.0 * Dm * (is_attn[l] ? Hd + 2 * Hkv * Dh : 4 * Hd) + 2.0 * Hd * Dm + 4.0 * Dm * Dff +
         (is_attn[l] ? 4.0 * Hd * double(ctx) : 4.0 * Hd * Dh);
  return f;
}

// ---- the KV cache: pages for every attention layer, one block table ------------------------
struct kv_cache {
  i64 B = 0, max_pages = 0;
  std::vector<std::vector<float>> k, v;  // per attention layer: [pages, page, Hkv, Dh]
  std::vector<std::int32_t> table, lens;
  std::int32_t used = 0;
  kv_cache(i64 b, i64 tokens_per_seq) : B(b), max_pages((tokens_per_seq + page - 1) / page) {
    for (int l = 0; l < n_layers; ++l) {
      k.emplace_back(is_attn[l] ? B * max_pages * page * Hkv * Dh : 0);
      v.emplace_back(k.back().size());
    }
    table.assign(B * max_pages, -1);
    lens.assign(B, 0);
  }
  void reserve(i64 b, i64 n) {  // pages for tokens [lens[b], lens[b] + n) of sequence b
    for (i64 blk = (lens[b] + page - 1) / page; blk < (lens[b] + n + page - 1) / page; ++blk)
      if (table[b * max_pages + blk] < 0) table[b * max_pages + blk] = used++;
  }
  weft::paged_kv_cache<float, float> view(int l) {
    const i64 pages = i64(k[l].size()) / (page * Hkv * Dh);
    return {make_view(k[l].data(), pages, page, Hkv, Dh), make_view(v[l].data(), pages, page, Hkv, Dh),
            make_view(static_cast<const std::int32_t*>(table.data()), B, max_pages),
            make_view(static_cast<const std::int32_t*>(lens.data()), B)};
  }
};

/// B sequences decoding in lockstep: GLA states, own KV pages, optionally a shared prefix.
struct session {
  i64 B;
  std::vector<std::vector<float>> state;  // per GLA layer [B, H, Dh, Dh]
  kv_cache kv;
  kv_cache* prefix = nullptr;          // shared-prefix pages (B = 1), read only
  std::vector<std::vector<float>> io;  // per layer: the last call's projections (rollback)
  session(i64 b, i64 tokens) : B(b), kv(b, tokens), io(n_layers) {
    for (int l = 0; l < n_layers; ++l) state.emplace_back(is_attn[l] ? 0 : B * H * Dh * Dh, 0.f);
  }
};

/// A view [B, T, heads, Dh] of columns [col, col + heads*Dh) of rows of width w.
template <class T>
weft::tensor_view<T, 4> cols(T* p, i64 B, i64 T_, i64 w, i64 col, i64 heads) {
  return {p + col, {B, T_, heads, Dh}, {T_ * w, w, Dh, 1}};
}

// ---- the model's forward over T new tokens of each of s.B sequences ---------------------------
/// The GLA gate columns of `rows` projections to log space: logsigmoid(g) / 16.
void log_gates(float* p, i64 rows, i64 w) {
  for (i64 r = 0; r < rows; ++r)
    for (float* g = p + r * w + 3 * Hd; g < p + r * w + 4 * Hd; ++g)
      *g = (*g < 0 ? *g - std::log1p(std::exp(*g)) : -std::log1p(std::exp(-*g))) / 16.f;
}

/// The rest of a layer after its mixer: x += o Wo; x += mlp(norm(x)).
void layer_tail(const layer& L, float* x, const float* o, i64 n) {
  std::vector<float> h(n * Dm), f(n * Dff);
  gemm(n, Hd, Dm, o, Hd, L.wo.data(), x, true);
  rmsnorm(x, h.data(), n);
  gemm(n, Dm, Dff, h.data(), Dm, L.w1.data(), f.data());
  for (auto& e : f) e = e / (1.f + std::exp(-e));
  gemm(n, Dff, Dm, f.data(), Dff, L.w2.data(), x, true);
}

/// GLA mixer over projections p (gates in log space). Prefill and verification:
/// linear_attention (chunk form) from the state; decode: linear_attention_step.
template <class Be>
void gla(const Be& be, session& s, int l, const float* p, i64 T, float* o, i64 w) {
  const weft::gates::vector gate{cols<const float>(p, s.B, T, w, 3 * Hd, H)};
  const auto q = cols<const float>(p, s.B, T, w, 0, H), k = cols<const float>(p, s.B, T, w, Hd, H);
  const auto v = cols<const float>(p, s.B, T, w, 2 * Hd, H);
  const auto st = make_view(s.state[l].data(), s.B, H, Dh, Dh);
  if (T == 1) return weft::linear_attention_step(be, gate, q, k, v, make_view(o, s.B, 1, H, Dh), st);
  std::vector<float> fin(s.state[l].size());
  weft::linear_attention(
      be, gate, q, k, v, make_view(o, s.B, T, H, Dh),
      {.chunk_size = 64, .initial_state = st, .final_state = make_view(fin.data(), s.B, H, Dh, Dh)});
  s.state[l] = fin;
}

/// Attention mixer: the new K/V into the pages, then attention over them. A fresh single
/// sequence (prefill) attends contiguously; a shared prefix adds its partial by merge_attention.
template <class Be>
void attn(const Be& be, session& s, int l, const float* p, i64 T, float* o, i64 w,
          const std::vector<std::int32_t>& start) {
  const auto q = cols<const float>(p, s.B, T, w, 0, H);
  const auto k = cols<const float>(p, s.B, T, w, Hd, Hkv),
             v = cols<const float>(p, s.B, T, w, Hd + Hkv * Dh, Hkv);
  std::vector<float> lse(s.B * H * T);
  const auto ov = make_view(o, s.B, T, H, Dh);
  const auto lv = make_view(lse.data(), s.B, H, T);
  s.kv.lens = start;  // every attention layer appends at the same positions
  for (i64 b = 0; b < s.B; ++b) s.kv.reserve(b, T);
  weft::append_paged_kv(be, s.kv.view(l), k, v, make_view(start.data(), s.B));
  for (auto& n : s.kv.lens) n += std::int32_t(T);
  if (s.B == 1 && start[0] == 0 && !s.prefix) return weft::attention(be, q, k, v, ov, lv, {.causal = true});
  weft::paged_attention(be, q, s.kv.view(l), ov, lv);
  if (!s.prefix) return;
  // cascade: all B*T queries against the prefix pages at once (read once), then merged
  std::vector<float> op(s.B * T * Hd), lp(H * s.B * T), lt(lp.size());
  weft::paged_attention(be, cols<const float>(p, 1, s.B * T, w, 0, H), s.prefix->view(l),
                        make_view(op.data(), 1, s.B * T, H, Dh), make_view(lp.data(), 1, H, s.B * T),
                        {.causal = false});
  for (i64 b = 0; b < s.B; ++b)  // lse [1, H, B*T] -> [B, H, T]
    for (i64 h = 0; h < H; ++h)
      for (i64 t = 0; t < T; ++t) lt[(b * H + h) * T + t] = lp[h * s.B * T + b * T + t];
  weft::merge_attention(be, ov, lv, make_view(op.data(), s.B, T, H, Dh),
                        make_view(static_cast<const float*>(lt.data()), s.B, H, T));
}

/// Runs tokens [B, T] through the first nl layers; logits of the last position of each sequence
/// ([B, Vocab]) or of every position ([B*T, Vocab]).
template <class Be>
std::vector<float> forward(const Be& be, const model& m, session& s, const std::int32_t* tok, i64 T, int nl,
                           bool all_logits) {
  const i64 n = s.B * T;
  std::vector<float> x(n * Dm), h(n * Dm), o(n * Hd);
  for (i64 r = 0; r < n; ++r) std::copy_n(&m.emb[tok[r] * Dm], Dm, &x[r * Dm]);
  const std::vector<std::int32_t> start = s.kv.lens;
  for (int l = 0; l < nl; ++l) {
    const layer& L = m.layers[l];
    auto& p = s.io[l];
    p.resize(n * L.width);
    rmsnorm(x.data(), h.data(), n);
    gemm(n, Dm, L.width, h.data(), Dm, L.wi.data(), p.data());
    if (is_attn[l]) {
      attn(be, s, l, p.data(), T, o.data(), L.width, start);
    } else {
      log_gates(p.data(), n, L.width);
      gla(be, s, l, p.data(), T, o.data(), L.width);
    }
    layer_tail(L, x.data(), o.data(), n);
  }
  const i64 rows = all_logits ? n : s.B;
  std::vector<float> last(rows * Dm), logits(rows * Vocab);
  for (i64 r = 0; r < rows; ++r) rmsnorm(&x[(all_logits ? r : r * T + T - 1) * Dm], &last[r * Dm], 1);
  gemm(rows, Dm, Vocab, last.data(), Dm, m.head.data(), logits.data());
  return logits;
}

// ---- prefill across ranks: zigzag shards -------------------------------------------------------
/// Every rank holds rows of segments r and 2W-1-r (c = T / 2W tokens each). Attention runs
/// ring_attention; GLA runs twice: from zero states (each segment's own final state and total
/// gate), then, after an all-gather and a fold in sequence order, from the true initial states.
/// Afterwards every rank holds the whole KV cache and the final states; returns the logits of
/// the last position (on every rank).
template <class Be>
std::vector<float> prefill_ring(const Be& be, weft::mpi_communicator& comm, const model& m, session& s,
                                const std::vector<std::int32_t>& prompt) {
  const int W = comm.size(), r = comm.rank();
  const i64 T = i64(prompt.size()), tl = weft::shard_rows(weft::ring_layout::zigzag, W, T), c = tl / 2;
  std::vector<std::int32_t> mine(tl);
  weft::shard_sequence(weft::ring_layout::zigzag, r, W, make_view(prompt.data(), 1, T),
                       make_view(mine.data(), 1, tl));
  const std::int64_t seg[2] = {r, 2 * W - 1 - r}, cu[3] = {0, c, 2 * c};
  std::vector<float> x(tl * Dm), h(tl * Dm), o(tl * Hd);
  for (i64 i = 0; i < tl; ++i) std::copy_n(&m.emb[mine[i] * Dm], Dm, &x[i * Dm]);
  for (int l = 0; l < n_layers; ++l) {
    const layer& L = m.layers[l];
    const i64 w = L.width;
    std::vector<float> p(tl * w);
    rmsnorm(x.data(), h.data(), tl);
    gemm(tl, Dm, w, h.data(), Dm, L.wi.data(), p.data());
    const auto q = cols<const float>(p.data(), 1, tl, w, 0, H);
    if (is_attn[l]) {
      const auto k = cols<const float>(p.data(), 1, tl, w, Hd, Hkv);
      const auto v = cols<const float>(p.data(), 1, tl, w, Hd + Hkv * Dh, Hkv);
      std::vector<float> lse(H * tl);
      weft::ring_attention(be, comm, q, k, v, make_view(o.data(), 1, tl, H, Dh),
                           make_view(lse.data(), 1, H, tl),
                           {.causal = true, .layout = weft::ring_layout::zigzag, .q_len = T, .k_len = T});
      // the whole sequence's K/V on every rank, into the pages
      const i64 kw = 2 * Hkv * Dh;
      std::vector<float> kv(tl * kw), all(W * kv.size()), full(T * kw);
      for (i64 i = 0; i < tl; ++i) std::copy_n(&p[i * w + Hd], kw, &kv[i * kw]);
      comm.all_gather(std::span<const float>(kv), std::span<float>(all));
      for (int q2 = 0; q2 < W; ++q2)
        weft::unshard_sequence(weft::ring_layout::zigzag, q2, W,
                               make_view(&std::as_const(all)[q2 * tl * kw], 1, tl, kw),
                               make_view(full.data(), 1, T, kw));
      s.kv.lens[0] = 0;
      s.kv.reserve(0, T);
      const std::int32_t zero = 0;
      weft::append_paged_kv(be, s.kv.view(l), cols<const float>(full.data(), 1, T, kw, 0, Hkv),
                            cols<const float>(full.data(), 1, T, kw, Hkv * Dh, Hkv), make_view(&zero, 1));
    } else {
      log_gates(p.data(), tl, w);
      const float* g0 = &p[3 * Hd];
      const weft::gates::vector gate{cols<const float>(p.data(), 1, tl, w, 3 * Hd, H)};
      const auto k = cols<const float>(p.data(), 1, tl, w, Hd, H),
                 v = cols<const float>(p.data(), 1, tl, w, 2 * Hd, H);
      const i64 S = H * Dh * Dh, per = 2 * (S + Hd);  // per segment: final state, total gate
      std::vector<float> send(per, 0.f), all(W * per), init(2 * S);
      weft::linear_attention(
          be, gate, q, k, v, make_view(o.data(), 1, tl, H, Dh),
          {.final_state = make_view(send.data(), 2, H, Dh, Dh), .cu_seqlens = make_view(cu, 3)});
      for (int j = 0; j < 2; ++j)
        for (i64 i = cu[j]; i < cu[j + 1]; ++i)
          for (i64 e = 0; e < Hd; ++e) send[2 * S + j * Hd + e] += g0[i * w + e];
      comm.all_gather(std::span<const float>(send), std::span<float>(all));
      std::vector<float> run(S, 0.f);
      for (i64 sg = 0; sg < 2 * W; ++sg) {  // segment sg lives on rank q2 as its j-th
        const int q2 = int(sg < W ? sg : 2 * W - 1 - sg), j = sg < W ? 0 : 1;
        for (int mj = 0; mj < 2; ++mj)
          if (seg[mj] == sg) std::copy(run.begin(), run.end(), init.begin() + mj * S);
        const float* a = &all[q2 * per];
        for (i64 e = 0; e < Hd; ++e)  // S <- diag(exp(G)) S + S_local, row e = (head, key channel)
          for (i64 d = 0; d < Dh; ++d)
            run[e * Dh + d] = std::exp(a[2 * S + j * Hd + e]) * run[e * Dh + d] + a[j * S + e * Dh + d];
      }
      weft::linear_attention(
          be, gate, q, k, v, make_view(o.data(), 1, tl, H, Dh),
          {.initial_state = make_view(static_cast<const float*>(init.data()), 2, H, Dh, Dh),
           .cu_seqlens = make_view(cu, 3)});
      s.state[l] = run;
    }
    layer_tail(L, x.data(), o.data(), tl);
  }
  s.kv.lens[0] = std::int32_t(T);
  // position T-1 is the last row of segment 2W-1: rank 0's row tl-1
  std::vector<float> last(Dm), logits(Vocab);
  if (r == 0) rmsnorm(&x[(tl - 1) * Dm], last.data(), 1);
  comm.all_reduce(std::span<float>(last));
  gemm(1, Dm, Vocab, last.data(), Dm, m.head.data(), logits.data());
  return logits;
}

// ---- decoding -------------------------------------------------------------------------------
bool show_progress = false;  // a terminal, one process
struct progress {
  const char* what;
  i64 total;
  bool on = show_progress;
  void operator()(i64 done) const {
    if (!on) return;
    std::printf("\r  %-12s [%-30s] %lld/%lld", what, std::string(size_t(30 * done / total), '#').c_str(),
                (long long)done, (long long)total);
    if (done == total) std::printf("\r%70s\r", "");
    std::fflush(stdout);
  }
};

using clk = std::chrono::steady_clock;
double since(clk::time_point t0) {
  return std::chrono::duration<double>(clk::now() - t0).count();
}

/// Plain decoding of n tokens after `first`: greedy (temperature 0) or sampled (top-p, min-p).
template <class Be>
std::vector<std::int32_t> decode_plain(const Be& be, const model& m, session s, std::int32_t first, i64 n,
                                       float temperature) {
  std::vector<std::int32_t> out{first};
  progress bar{"decode", n};
  for (i64 i = 1; i < n; ++i) {
    auto logits = forward(be, m, s, &out.back(), 1, n_layers, false);
    std::int32_t t = 0;
    weft::sample(
        be, make_view(logits.data(), 1, Vocab), make_view(&t, 1),
        {.temperature = temperature, .top_p = 0.95f, .min_p = 0.02f, .seed = 7, .offset = std::uint64_t(i)});
    out.push_back(t);
    bar(i + 1);
  }
  return out;
}

struct spec_stats {
  double drafted = 0, accepted = 0, rounds = 0;
};

/// Speculative decoding: the draft (first n_draft layers) proposes L tokens, the whole model
/// verifies them in one forward of L + 1 tokens. Greedy: verify_greedy; else speculative_sample.
template <class Be>
std::vector<std::int32_t> decode_speculative(const Be& be, const model& m, session s, std::int32_t first,
                                             i64 n, i64 L, bool greedy, spec_stats& st) {
  std::vector<std::int32_t> out{first};
  std::vector<float> q(L * Vocab), pt((L + 1) * Vocab);
  std::vector<std::int32_t> chain(L + 1), res(L + 1);
  progress bar{"speculative", n};
  for (std::uint64_t round = 0; i64(out.size()) < n; ++round) {
    const auto saved_state = s.state;
    const auto saved_lens = s.kv.lens;
    chain[0] = out.back();
    for (i64 j = 0; j < L; ++j) {  // the draft, autoregressively (its pages are overwritten below)
      auto lg = forward(be, m, s, &chain[j], 1, n_draft, false);
      if (greedy) {
        weft::argmax(be, make_view(lg.data(), 1, Vocab), make_view(&chain[j + 1], 1));
      } else {
        weft::softmax(be, make_view(lg.data(), 1, Vocab), make_view(&q[j * Vocab], 1, Vocab));
        weft::sample_probs(be, make_view(&q[j * Vocab], 1, Vocab), make_view(&chain[j + 1], 1),
                           {.seed = 11, .offset = round * L + j});
      }
    }
    s.state = saved_state, s.kv.lens = saved_lens;
    auto lt = forward(be, m, s, chain.data(), L + 1, n_layers, true);  // [L + 1, Vocab]
    std::int32_t acc = 0;
    const auto drafts = make_view(static_cast<const std::int32_t*>(&chain[1]), 1, L);
    if (greedy) {
      weft::verify_greedy(be, drafts, make_view(lt.data(), 1, L + 1, Vocab), make_view(res.data(), 1, L + 1),
                          make_view(&acc, 1));
    } else {
      weft::softmax(be, make_view(lt.data(), L + 1, Vocab), make_view(pt.data(), L + 1, Vocab));
      weft::speculative_sample(be, make_view(q.data(), 1, L, Vocab), drafts,
                               make_view(pt.data(), 1, L + 1, Vocab), make_view(res.data(), 1, L + 1),
                               make_view(&acc, 1), {.seed = 13, .offset = round});
    }
    // Roll back to the accepted prefix: the chain's first acc + 1 tokens stay. Their K/V are
    // the first acc + 1 appended, so the cache is truncated (a chain needs no kv_compact); each
    // GLA state is recomputed from its saved one over those tokens' saved projections.
    for (auto& len : s.kv.lens) len = saved_lens[0] + acc + 1;
    std::vector<float> o((acc + 1) * Hd);
    for (int l = 0; l < n_layers; ++l)
      if (!is_attn[l]) {
        s.state[l] = saved_state[l];
        gla(be, s, l, s.io[l].data(), acc + 1, o.data(), m.layers[l].width);
      }
    for (i64 j = 0; j <= acc && i64(out.size()) < n; ++j) out.push_back(res[j]);
    st.drafted += double(L), st.accepted += acc, st.rounds += 1;
    bar(std::min<i64>(i64(out.size()), n));
  }
  return out;
}

/// N samples continuing one prompt. shared: the prompt's pages once (cascade attention);
/// else each sample gets its own copy of them. Returns the tokens [n][N].
template <class Be>
std::vector<std::int32_t> decode_parallel(const Be& be, const model& m, session& prompt,
                                          const std::vector<float>& logits0, i64 N, i64 n, bool shared) {
  const i64 P = prompt.kv.lens[0];
  session s(N, shared ? n : P + n);
  for (int l = 0; l < n_layers; ++l)
    for (i64 b = 0; b < N; ++b)
      std::copy(prompt.state[l].begin(), prompt.state[l].end(),
                s.state[l].begin() + b * prompt.state[l].size());
  if (shared) {
    s.prefix = &prompt.kv;
  } else {  // a private copy of the prompt's pages per sample
    for (i64 b = 0; b < N; ++b) {
      s.kv.reserve(b, P);
      for (i64 blk = 0; blk * page < P; ++blk)
        for (int l = 0; l < n_layers; ++l)
          if (is_attn[l])
            for (auto* pool : {&s.kv.k[l], &s.kv.v[l]}) {
              const auto& src = pool == &s.kv.k[l] ? prompt.kv.k[l] : prompt.kv.v[l];
              std::copy_n(&src[prompt.kv.table[blk] * page * Hkv * Dh], page * Hkv * Dh,
                          &(*pool)[s.kv.table[b * s.kv.max_pages + blk] * page * Hkv * Dh]);
            }
      s.kv.lens[b] = std::int32_t(P);
    }
  }
  std::vector<std::uint64_t> seeds(N);
  for (i64 b = 0; b < N; ++b) seeds[b] = 1000 + std::uint64_t(b);
  std::vector<float> lg(N * Vocab);
  for (i64 b = 0; b < N; ++b) std::copy(logits0.begin(), logits0.end(), lg.begin() + b * Vocab);
  std::vector<std::int32_t> out, tok(N);
  progress bar{shared ? "shared" : "independent", n};
  for (i64 i = 0; i < n; ++i) {
    weft::sample(be, make_view(lg.data(), N, Vocab), make_view(tok.data(), N),
                 {.temperature = 0.8f,
                  .top_p = 0.9f,
                  .min_p = 0.05f,
                  .offset = std::uint64_t(i),
                  .seeds = make_view(static_cast<const std::uint64_t*>(seeds.data()), N)});
    out.insert(out.end(), tok.begin(), tok.end());
    if (i + 1 < n) lg = forward(be, m, s, tok.data(), 1, n_layers, false);
    bar(i + 1);
  }
  return out;
}

double rel_rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) e += (a[i] - b[i]) * double(a[i] - b[i]), s += b[i] * double(b[i]);
  return std::sqrt(e / (s > 0 ? s : 1));
}

/// One core's FMA peak (GFLOP/s): 8 independent chains of vector multiply-adds in registers.
double fma_peak_core() {
#if defined(__AVX512F__)
  using vec = float __attribute__((vector_size(64)));
#else
  using vec = float __attribute__((vector_size(32)));
#endif
  vec a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{}, x = vec{} + 1.0000001f, y = vec{} + 1e-7f;
  const auto t0 = clk::now();
  for (long i = 0; i < 20000000; ++i) {
    a0 = a0 * x + y, a1 = a1 * x + y, a2 = a2 * x + y, a3 = a3 * x + y;
    a4 = a4 * x + y, a5 = a5 * x + y, a6 = a6 * x + y, a7 = a7 * x + y;
#if defined(__x86_64__)  // keeps the chains in registers, each step computed
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7));
#endif
  }
  return 8.0 * sizeof(vec) / 4 * 2 * 20000000 / since(t0) * 1e-9;
}

struct options {
  i64 tokens = 4096, decode = 32, draft = 4, samples = 4;
  std::string backend = WEFT_EXAMPLE_KOKKOS ? "kokkos" : "serial";
};

template <class Be>
int run(const Be& be, int threads, const options& opt, weft::mpi_communicator& comm) {
  const int W = comm.size();
  show_progress = W == 1 && isatty(1) != 0;
  const model m;
  std::vector<std::int32_t> prompt(opt.tokens);
  const auto rp = random(opt.tokens, 99, 1.f);
  for (i64 i = 0; i < opt.tokens; ++i) prompt[i] = std::int32_t((rp[i] + 1.f) * 0.5f * (Vocab - 1));
  const i64 budget = opt.tokens + opt.decode + opt.draft + 1;
  session s(1, budget);
  double t[7];  // seconds per phase
  const auto timed = [&](int i, auto f) {
    const auto t0 = clk::now();
    auto r = f();
    t[i] = since(t0);
    return r;
  };
  const auto logits = timed(0, [&] {
    return W > 1 ? prefill_ring(be, comm, m, s, prompt)
                 : forward(be, m, s, prompt.data(), opt.tokens, n_layers, false);
  });
  if (comm.rank() != 0) return 0;
  std::printf("prompt %lld tokens, %d rank(s), backend %s (%d thread(s) per rank)\n", (long long)opt.tokens,
              W, opt.backend.c_str(), threads);
  bool ok = true;
  const auto check = [&](const char* what, double err, double bound) {
    std::printf("check: %-58s %s (%.2e, bound %.0e)\n", what, err <= bound ? "ok" : "FAILED", err, bound);
    ok &= err <= bound;
  };
  if (W > 1) {  // the same prompt in this process alone
    session r1(1, budget);
    check("multi-rank prefill == single-process, last logits (rel RMSE)",
          rel_rmse(logits, forward(be, m, r1, prompt.data(), opt.tokens, n_layers, false)), 1e-4);
  }
  const i64 Ts = std::min<i64>(opt.tokens, 256);
  session a(1, Ts), b(1, Ts);
  check("this backend == serial, logits of 256 positions (rel RMSE)",
        rel_rmse(forward(be, m, a, prompt.data(), Ts, n_layers, true),
                 forward(weft::serial_backend{}, m, b, prompt.data(), Ts, n_layers, true)),
        1e-4);
  std::int32_t first = 0;
  weft::argmax(be, make_view(logits.data(), 1, Vocab), make_view(&first, 1));
  spec_stats sg, ss;
  const i64 L = opt.draft, n = opt.decode, N = opt.samples;
  const auto greedy = timed(1, [&] { return decode_plain(be, m, s, first, n, 0.f); });
  const auto spec = timed(2, [&] { return decode_speculative(be, m, s, first, n, L, true, sg); });
  timed(3, [&] { return decode_plain(be, m, s, first, n, 1.f); });
  timed(4, [&] { return decode_speculative(be, m, s, first, n, L, false, ss); });
  const auto par = timed(5, [&] { return decode_parallel(be, m, s, logits, N, n, true); });
  const auto ind = timed(6, [&] { return decode_parallel(be, m, s, logits, N, n, false); });
  check("greedy speculative == greedy plain (tokens differing)", double(greedy != spec), 0);
  check("shared-prefix samples == independent ones (tokens differing)", double(par != ind), 0);
  // the summary: model FLOPs of each phase against the measured FMA peak
  const double peak = fma_peak_core() * threads;  // one rank's
  double pf = 2.0 * Dm * Vocab, df = 0;
  for (i64 i = 0; i < opt.tokens; ++i) pf += flops_token(i + 1, n_layers);
  for (i64 i = 1; i < n; ++i) df += flops_token(opt.tokens + i, n_layers) + 2.0 * Dm * Vocab;
  char acc[2][64];
  std::snprintf(acc[0], 64, "%.0f%% of drafts accepted, %.2fx plain", 100 * sg.accepted / sg.drafted,
                t[1] / t[2]);
  std::snprintf(acc[1], 64, "%.0f%% of drafts accepted, %.2fx plain", 100 * ss.accepted / ss.drafted,
                t[3] / t[4]);
  const std::string shared = std::to_string(t[6] / t[5]).substr(0, 4) + "x independent";
  const struct {
    const char* name;
    double tokens, flops;
    const char* note;
  } rows[7] = {{"prefill", double(opt.tokens), pf, W > 1 ? "all ranks (ring attention, zigzag)" : ""},
               {"decode, greedy", double(n - 1), df, ""},
               {"speculative, greedy", double(n - 1), df, acc[0]},
               {"decode, sampled", double(n - 1), df, "temperature 1"},
               {"speculative, sampled", double(n - 1), df, acc[1]},
               {"parallel samples, shared", double(N * n), N * df, shared.c_str()},
               {"parallel samples, independent", double(N * n), N * df, ""}};
  std::printf(
      "\n| phase                         |        s |  tokens/s | GFLOP/s |   peak | |\n"
      "|-------------------------------|----------|-----------|---------|--------|-|\n");
  for (int i = 0; i < 7; ++i)
    std::printf("| %-29s | %8.3f | %9.1f | %7.2f | %5.1f%% | %s |\n", rows[i].name, t[i],
                rows[i].tokens / t[i], rows[i].flops / t[i] * 1e-9,
                100 * rows[i].flops / t[i] * 1e-9 / (peak * (i == 0 ? W : 1)), rows[i].note);
  std::printf(
      "peak: %d thread(s) x %.1f GFLOP/s (one core's FMA rate, measured) per rank; model FLOPs:\n"
      "GEMMs, attention (QK and PV), GLA state update and read\n%s\n",
      threads, peak / threads, ok ? "all checks passed" : "CHECK FAILED");
  return ok ? 0 : 1;
}

int usage(const char* argv0, const std::string& bad) {
  std::fprintf(
      stderr,
      "%s%susage: %s [--tokens N] [--decode N] [--draft L] [--samples N] [--backend serial|kokkos|cuda]\n"
      "  --tokens   prompt length (default 4096; a multiple of 2 x ranks under mpiexec)\n"
      "  --decode   tokens generated per decoding run, >= 2 (default 32)\n"
      "  --draft    draft tokens per speculative round, <= 16 (default 4)\n"
      "  --samples  parallel samples sharing the prompt, <= 64 (default 4)\n",
      bad.empty() ? "" : "bad argument: ", bad.empty() ? "" : (bad + "\n").c_str(), argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i], v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--help" || a == "-h") return usage(argv[0], "");
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    const bool num = !v.empty() && *end == '\0' && n > 0 && n <= (1 << 20);
    i64* dst = a == "--tokens"    ? &opt.tokens
               : a == "--decode"  ? &opt.decode
               : a == "--draft"   ? &opt.draft
               : a == "--samples" ? &opt.samples
                                  : nullptr;
    if (a == "--backend" && (v == "serial" || v == "kokkos" || v == "cuda"))
      opt.backend = v;
    else if (dst && num && (a != "--decode" || n >= 2) && (a != "--draft" || n <= 16) &&
             (a != "--samples" || n <= 64))
      *dst = n;
    else
      return usage(argv[0], a + " " + v);
    ++i;
  }
  MPI_Init(&argc, &argv);
  int status = 2;
  {
    weft::mpi_communicator comm(MPI_COMM_WORLD);
    const bool root = comm.rank() == 0;
    if (opt.tokens % (2 * comm.size()) != 0) {
      if (root) usage(argv[0], "--tokens " + std::to_string(opt.tokens) + " (not a multiple of 2 x ranks)");
    } else if (opt.backend == "cuda") {
      if (root)
        std::fprintf(stderr, "--backend cuda: not available in this example yet (host-memory tensors)\n");
    } else if (opt.backend == "kokkos") {
#if WEFT_EXAMPLE_KOKKOS
      Kokkos::ScopeGuard guard(argc, argv);
      const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
      status = run(be, int(be.concurrency()), opt, comm);
#else
      if (root) std::fprintf(stderr, "--backend kokkos: this build has no Kokkos\n");
#endif
    } else {
      status = run(weft::serial_backend{}, 1, opt, comm);
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, &status, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return status;
}
