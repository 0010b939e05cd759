// weft/attention/device_block.hpp - the forward of softmax attention as one CUDA thread block
// computes it (FlashAttention-2's forward, SIMT, fp32 accumulation). Written as a host/device
// function of (block index, thread id, thread count, shared memory, barrier) so that the kernel
// in weft/attention/cuda.cuh runs it with blockIdx / threadIdx / __syncthreads and the tests run
// the same code on the host, with one thread and with several threads meeting at a std::barrier
// (tests/attention/test_attention_device_paths.cpp).
//
// A thread block takes one row tile: `rows` rows of one item (item = a query block of the plan,
// detail::attention::make_blocks, times a KV head hk; its rows r = g nq + i run over the G query
// heads h = hk G + g of the group and the nq queries i of the block, as forward_fn numbers them).
// It walks the keys the tile may see, `keys` at a time, with the online softmax per row:
//   S = Q_tile K_tile^T                  (Q pre-scaled; softcap; -inf where not visible)
//   m' = max(m, rowmax S);  a = e^{m - m'};  P = e^{S - m'};  l' = a l + rowsum P
//   O' = diag(a) O + P V_tile
// and at the end o = O / l, lse = m + log l (l = 0: o = 0, lse = -inf).
// Phases per key tile, separated by barriers: load K, V (fp32) | scores (a thread per (row,
// key)) | row statistics (a thread per row) | O update (a thread per (row, column)). Every
// shared value has one writer per phase and every sum runs in a fixed order: no atomics, the
// result does not depend on the thread count.
//
// Shared memory (floats), Dk, Dv <= max_head_dim = 256: 136 KiB at 256 / 256, under sm_80's
// 163 KiB opt-in limit (sm_90: 227 KiB):
//   Q (rows, Dk) | O (rows, Dv) | K (keys, Dk + 1: odd stride, the score phase reads one
//   column of 32 keys per warp without bank conflicts) | V (keys, Dv) | S (rows, keys) |
//   m, l, a (rows)
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "weft/attention/attention.hpp"
#include "weft/attention/blockwise.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail::attention::device {

inline constexpr int threads = 128;                ///< threads per block
inline constexpr int rows = 32;                    ///< rows (query x head of the group) per block
inline constexpr int keys = 32;                    ///< keys per shared-memory tile
inline constexpr std::int64_t max_head_dim = 256;  ///< largest Dk and Dv of the kernel

/// Shared memory of one block, in floats (see the top of this file).
WEFT_INLINE constexpr std::size_t smem_floats(std::int64_t Dk, std::int64_t Dv) {
  return static_cast<std::size_t>(rows * Dk + rows * Dv + keys * (Dk + 1) + keys * Dv + rows * keys +
                                  3 * rows);
}
static_assert(smem_floats(max_head_dim, max_head_dim) * sizeof(float) <= 163 * 1024,
              "the attention kernel's shared memory must fit sm_80's opt-in limit");

/// What the kernel reads: the views, the plan's blocks (in the kernel's memory space), sizes and
/// options. `tiles` row tiles per item: rows of the item beyond its G nq rows are no work.
template <class TQ, class TK, class TV, class TO>
struct forward_args {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> k;
  tensor_view<const TV, 4> v;
  tensor_view<TO, 4> o;
  tensor_view<float, 3> lse;
  const item_block* blocks;
  std::int64_t Hkv, G, tiles;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys, or empty
  std::int64_t mask_first;                  // Tk - M: the key index of mask column 0
};

/// The arguments of a checked call (plan p from check_inputs + make_blocks), with `blocks` the
/// plan's blocks copied where the kernel runs.
template <class TQ, class TK, class TV, class TO>
forward_args<TQ, TK, TV, TO> make_forward_args(tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k,
                                               tensor_view<const TV, 4> v, tensor_view<TO, 4> o,
                                               tensor_view<float, 3> lse, const plan& p,
                                               const attention_options& opts, const item_block* blocks) {
  const std::int64_t G = p.Hkv > 0 ? p.Hq / p.Hkv : 0;
  const std::int64_t M = opts.mask.data() ? opts.mask.extent(2) : 0;
  return {q,
          k,
          v,
          o,
          lse,
          blocks,
          p.Hkv,
          G,
          (G * query_block + rows - 1) / rows,
          p.scale,
          opts.softcap,
          visibility{opts.causal, opts.window.left, opts.window.right},
          opts.mask,
          p.Tk - M};
}

/// Thread blocks of a call: items (blocks x KV heads) x row tiles per item.
template <class A>
std::int64_t grid_blocks(const A& a, const plan& p) {
  return static_cast<std::int64_t>(p.blocks.size()) * a.Hkv * a.tiles;
}

/// Block `block` of the forward, thread tid of nt; smem holds smem_floats(Dk, Dv) floats;
/// sync() is the block barrier (every thread of the block calls it the same number of times).
template <class TQ, class TK, class TV, class TO, class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void forward_block(const forward_args<TQ, TK, TV, TO>& a,
                                                      std::int64_t block, int tid, int nt, float* smem,
                                                      Sync sync) {
  using std::exp;
  using std::log;
  using std::tanh;
  const std::int64_t item = block / a.tiles, tile = block % a.tiles;
  const item_block bl = a.blocks[item / a.Hkv];
  const std::int64_t hk = item % a.Hkv;
  const std::int64_t nq = bl.q1 - bl.q0, r0 = tile * rows;
  if (r0 >= a.G * nq) return;  // the same for every thread of the block: no barrier is skipped
  const int nr = static_cast<int>(a.G * nq - r0 < rows ? a.G * nq - r0 : rows);
  const int Dk = static_cast<int>(a.q.extent(3)), Dv = static_cast<int>(a.v.extent(3)), ldk = Dk + 1;
  float* Q = smem;              // (rows, Dk), scaled
  float* O = Q + rows * Dk;     // (rows, Dv)
  float* Ks = O + rows * Dv;    // (keys, Dk + 1)
  float* Vs = Ks + keys * ldk;  // (keys, Dv)
  float* S = Vs + keys * Dv;    // (rows, keys): scores, then P
  float* m = S + rows * keys;   // (rows)
  float* l = m + rows;          // (rows)
  float* al = l + rows;         // (rows): e^{m - m'} of the current tile
  // Row r of the tile: item row r0 + r, head h = hk G + g, query qi = q0 + i at position qp.
  auto head = [&](int r) { return hk * a.G + (r0 + r) / nq; };
  auto query = [&](int r) { return (r0 + r) % nq; };

  for (int e = tid; e < nr * Dk; e += nt) {
    const int r = e / Dk, d = e % Dk;
    Q[r * Dk + d] = a.scale * static_cast<float>(a.q(bl.b, bl.q0 + query(r), head(r), d));
  }
  for (int e = tid; e < nr * Dv; e += nt) O[e] = 0.0f;
  for (int r = tid; r < nr; r += nt) {
    m[r] = neg_inf();
    l[r] = 0.0f;
  }
  // The keys any row of the tile may see, [j_lo, j_hi) (a key tile outside it is skipped whole):
  // the tile's queries are i_first..i_last unless its rows wrap around to the next head.
  const std::int64_t i_first = r0 % nq, i_last = (r0 + nr - 1) % nq;
  const bool all_queries = nr >= nq || i_first > i_last;
  const std::int64_t qp_first = bl.q_pos0 + (all_queries ? 0 : i_first);
  const std::int64_t qp_last = bl.q_pos0 + (all_queries ? nq - 1 : i_last);
  const key_range kr = keys_seen(bl, a.vis, qp_first, qp_last);
  const std::int64_t j_lo = kr.lo, j_hi = kr.hi;
  sync();

  for (std::int64_t j0 = j_lo; j0 < j_hi; j0 += keys) {
    const int nk = static_cast<int>(j_hi - j0 < keys ? j_hi - j0 : keys);
    // K, V tile (fp32)
    for (int e = tid; e < nk * Dk; e += nt) {
      const int j = e / Dk, d = e % Dk;
      Ks[j * ldk + d] = static_cast<float>(a.k(bl.b, j0 + j, hk, d));
    }
    for (int e = tid; e < nk * Dv; e += nt) {
      const int j = e / Dv, d = e % Dv;
      Vs[j * Dv + d] = static_cast<float>(a.v(bl.b, j0 + j, hk, d));
    }
    sync();
    // S = Q K^T (softcap), -inf where the key is not visible
    for (int e = tid; e < nr * keys; e += nt) {
      const int r = e / keys, j = e % keys;
      float s = neg_inf();
      if (j < nk) {
        const std::int64_t i = query(r), qp = bl.q_pos0 + i, kp = bl.k_pos0 + (j0 + j - bl.k0);
        bool ok = kp >= a.vis.lo(qp) && kp <= a.vis.hi(qp);
        if (ok && a.mask.data() != nullptr && j0 + j >= a.mask_first)
          ok = a.mask(bl.b, bl.q0 + i, j0 + j - a.mask_first) != 0;
        if (ok) {
          const float* qr = Q + r * Dk;
          const float* kr = Ks + j * ldk;
          float x = 0.0f;
          for (int d = 0; d < Dk; ++d) x += qr[d] * kr[d];
          s = a.softcap > 0.0f ? a.softcap * tanh(x / a.softcap) : x;
        }
      }
      S[r * keys + j] = s;
    }
    sync();
    // Row statistics: m' = max(m, rowmax S), a = e^{m - m'}, P = e^{S - m'}, l' = a l + rowsum P
    for (int r = tid; r < nr; r += nt) {
      float* sr = S + r * keys;
      float mb = neg_inf();
      for (int j = 0; j < keys; ++j) mb = sr[j] > mb ? sr[j] : mb;
      const float mn = m[r] > mb ? m[r] : mb;
      if (mn == neg_inf()) {  // nothing visible yet: O, l stay 0
        for (int j = 0; j < keys; ++j) sr[j] = 0.0f;
        al[r] = 1.0f;
        continue;
      }
      const float sc = exp(m[r] - mn);  // m = -inf: 0
      float sum = 0.0f;
      for (int j = 0; j < keys; ++j) {
        const float pj = sr[j] == neg_inf() ? 0.0f : exp(sr[j] - mn);
        sr[j] = pj;
        sum += pj;
      }
      l[r] = sc * l[r] + sum;
      m[r] = mn;
      al[r] = sc;
    }
    sync();
    // O = diag(a) O + P V
    for (int e = tid; e < nr * Dv; e += nt) {
      const int r = e / Dv, d = e % Dv;
      const float* pr = S + r * keys;
      float x = al[r] * O[e];
      for (int j = 0; j < nk; ++j) x += pr[j] * Vs[j * Dv + d];
      O[e] = x;
    }
    sync();  // the next tile overwrites Ks, Vs, S
  }

  // o = O / l, lse = m + log l; a row that saw no key: o = 0, lse = -inf
  for (int e = tid; e < nr * Dv; e += nt) {
    const int r = e / Dv, d = e % Dv;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    a.o(bl.b, bl.q0 + query(r), head(r), d) = from_accum<TO>(O[e] * inv);
  }
  for (int r = tid; r < nr; r += nt)
    a.lse(bl.b, head(r), bl.q0 + query(r)) = l[r] > 0.0f ? m[r] + log(l[r]) : neg_inf();
}

}  // namespace weft::detail::attention::device
