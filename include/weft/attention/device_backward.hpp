// weft/attention/device_backward.hpp - the backward of softmax attention as CUDA thread blocks
// compute it (FlashAttention-2's backward, SIMT, fp32 accumulation), written as host/device
// functions of (block index, thread id, thread count, shared memory, barrier) as the forward in
// device_block.hpp: the kernels in weft/attention/cuda.cuh run them with blockIdx / threadIdx /
// __syncthreads, tests/attention/test_backward_device_paths.cpp runs them on host threads.
//
// The math and the plan are backward_items.hpp's (p.blocks, p.key_blocks from make_blocks(...,
// true)): per visible pair (query i, key j), Q_i = scale q_i, x = Q_i . k_j, s = x (softcap c:
// c tanh(x / c)),
//   P = e^{s - lse_i},  dS = P (dO_i . v_j - D_i) (softcap: times 1 - tanh^2(x / c)),
//   D_i = dO_i . o_i,  dq_i = scale sum_j dS k_j,  dk_j = sum_i dS Q_i,  dv_j = sum_i P dO_i;
// rows with lse = -inf contribute nothing, keys past k_lengths get zero. Both kernels compute P
// and dS with pair_grad (and l, D with row_stats), so dq and dk see the same values.
//
// dq kernel: a thread block per row tile (`rows` rows of one query block x KV head group, rows
//   r = g nq + i as forward_block numbers them), over the key tiles the tile may see, dq_keys at
//   a time. Phases per key tile: load K, V | dS (a thread per (row, key)) | dQ += dS K (a thread
//   per (row, column)).
// dk / dv kernel: a thread block per dkv_keys keys of one key block of the plan x KV head, over
//   the G query heads of the group and the queries that may see one of its keys, dkv_rows rows
//   at a time. Phases per row step: load Q, dO, lse, D | P, dS (a thread per (row, key)) |
//   dK += dS^T Q, dV += P^T dO (a thread per (key, column)).
// Every accumulator element has one writer and sums in a fixed order; no atomics: the result
// does not depend on the thread count and is bitwise repeatable.
//
// Shared memory (floats), Dk, Dv <= max_head_dim = 256 (K and V rows padded to an odd stride:
// the (row, key) phases read one column of consecutive keys per warp without bank conflicts):
//   dq:   Q, dQ (rows, Dk) | dO (rows, Dv) | K (dq_keys, Dk + 1) | V (dq_keys, Dv + 1) |
//         dS (rows, dq_keys) | lse, D (rows)                                  130 KiB at 256 / 256
//   dkv:  K (dkv_keys, Dk + 1) | V (dkv_keys, Dv + 1) | dK (dkv_keys, Dk) | dV (dkv_keys, Dv) |
//         Q (dkv_rows, Dk) | dO (dkv_rows, Dv) | P, dS (dkv_rows, dkv_keys) | lse, D (dkv_rows)
//                                                                             146 KiB at 256 / 256
// both under sm_80's 163 KiB opt-in limit.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "weft/attention/attention.hpp"
#include "weft/attention/backward_items.hpp"
#include "weft/attention/blockwise.hpp"
#include "weft/attention/device_block.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail::attention::device {

inline constexpr int dq_keys = 16;   ///< keys per shared-memory tile of the dq kernel
inline constexpr int dkv_keys = 32;  ///< keys per thread block of the dk / dv kernel
inline constexpr int dkv_rows = 8;   ///< query rows per step of the dk / dv kernel
static_assert(key_block % dkv_keys == 0, "a key block of the plan splits into whole dk / dv tiles");

WEFT_INLINE constexpr std::size_t dq_smem_floats(std::int64_t Dk, std::int64_t Dv) {
  return static_cast<std::size_t>(2 * rows * Dk + rows * Dv + dq_keys * (Dk + 1) + dq_keys * (Dv + 1) +
                                  rows * dq_keys + 2 * rows);
}
WEFT_INLINE constexpr std::size_t dkv_smem_floats(std::int64_t Dk, std::int64_t Dv) {
  return static_cast<std::size_t>(dkv_keys * (Dk + 1) + dkv_keys * (Dv + 1) + dkv_keys * (Dk + Dv) +
                                  dkv_rows * (Dk + Dv) + 2 * dkv_rows * dkv_keys + 2 * dkv_rows);
}
static_assert(dq_smem_floats(max_head_dim, max_head_dim) * sizeof(float) <= 163 * 1024,
              "the dq kernel's shared memory must fit sm_80's opt-in limit");
static_assert(dkv_smem_floats(max_head_dim, max_head_dim) * sizeof(float) <= 163 * 1024,
              "the dk / dv kernel's shared memory must fit sm_80's opt-in limit");

/// What both kernels read: the views, the plan's blocks and key blocks (in the kernels' memory
/// space), sizes and options. q_tiles row tiles per dq item, k_tiles key tiles per dk / dv item.
template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
struct backward_args {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> k;
  tensor_view<const TV, 4> v;
  tensor_view<const TO, 4> o;
  tensor_view<const float, 3> lse;
  tensor_view<const TG, 4> dO;
  tensor_view<TdQ, 4> dq;
  tensor_view<TdK, 4> dk;
  tensor_view<TdV, 4> dv;
  const item_block* blocks;
  const key_block_item* key_blocks;
  std::int64_t Hkv, G, q_tiles, k_tiles;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys, or empty
  std::int64_t mask_first;                  // Tk - M: the key index of mask column 0
};

/// The arguments of a checked call (plan p from make_blocks(..., true)), with `blocks` and
/// `key_blocks` the plan's copied where the kernels run.
template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
backward_args<TQ, TK, TV, TO, TG, TdQ, TdK, TdV> make_backward_args(
    tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k, tensor_view<const TV, 4> v,
    tensor_view<const TO, 4> o, tensor_view<const float, 3> lse, tensor_view<const TG, 4> dO,
    tensor_view<TdQ, 4> dq, tensor_view<TdK, 4> dk, tensor_view<TdV, 4> dv, const plan& p,
    const attention_options& opts, const item_block* blocks, const key_block_item* key_blocks) {
  const std::int64_t G = p.Hkv > 0 ? p.Hq / p.Hkv : 0;
  const std::int64_t M = opts.mask.data() ? opts.mask.extent(2) : 0;
  return {q,
          k,
          v,
          o,
          lse,
          dO,
          dq,
          dk,
          dv,
          blocks,
          key_blocks,
          p.Hkv,
          G,
          (G * query_block + rows - 1) / rows,
          key_block / dkv_keys,
          p.scale,
          opts.softcap,
          visibility{opts.causal, opts.window.left, opts.window.right},
          opts.mask,
          p.Tk - M};
}

/// Thread blocks of the dq kernel (items x row tiles) and of the dk / dv kernel (key blocks x
/// KV heads x key tiles).
template <class A>
std::int64_t dq_grid_blocks(const A& a, const plan& p) {
  return static_cast<std::int64_t>(p.blocks.size()) * a.Hkv * a.q_tiles;
}
template <class A>
std::int64_t dkv_grid_blocks(const A& a, const plan& p) {
  return static_cast<std::int64_t>(p.key_blocks.size()) * a.Hkv * a.k_tiles;
}

/// Whether key j (index, position kp) is visible to query qi (position qp) of batch row b.
template <class A>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE bool pair_visible(const A& a, std::int64_t b, std::int64_t qi,
                                                     std::int64_t qp, std::int64_t j, std::int64_t kp) {
  bool ok = kp >= a.vis.lo(qp) && kp <= a.vis.hi(qp);
  if (ok && a.mask.data() != nullptr && j >= a.mask_first) ok = a.mask(b, qi, j - a.mask_first) != 0;
  return ok;
}

/// lse and D = dO . o of row (b, i, h), D summed over d in order.
template <class A>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void row_stats(const A& a, std::int64_t b, std::int64_t i, std::int64_t h,
                                                  float& l, float& D) {
  l = a.lse(b, h, i);
  float acc = 0.0f;
  for (std::int64_t d = 0; d < a.v.extent(3); ++d)
    acc += static_cast<float>(a.dO(b, i, h, d)) * static_cast<float>(a.o(b, i, h, d));
  D = acc;
}

/// P and dS of one visible pair: Qr (scaled) and Kr of length Dk, dOr and Vr of length Dv.
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void pair_grad(const float* Qr, const float* Kr, const float* dOr,
                                                  const float* Vr, int Dk, int Dv, float l, float D,
                                                  float softcap, float& P, float& dS) {
  using std::exp;
  using std::tanh;
  float x = 0.0f;
  for (int d = 0; d < Dk; ++d) x += Qr[d] * Kr[d];
  float s = x, dcap = 1.0f;
  if (softcap > 0.0f) {
    const float th = tanh(x / softcap);
    s = softcap * th;
    dcap = 1.0f - th * th;
  }
  const float p = exp(s - l);
  float dp = 0.0f;
  for (int d = 0; d < Dv; ++d) dp += dOr[d] * Vr[d];
  P = p;
  dS = p * (dp - D) * dcap;
}

/// Block `block` of the dq kernel, thread tid of nt; smem holds dq_smem_floats(Dk, Dv) floats;
/// sync() is the block barrier (every thread of the block calls it the same number of times).
template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV, class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void dq_block(const backward_args<TQ, TK, TV, TO, TG, TdQ, TdK, TdV>& a,
                                                 std::int64_t block, int tid, int nt, float* smem,
                                                 Sync sync) {
  const std::int64_t item = block / a.q_tiles, tile = block % a.q_tiles;
  const item_block bl = a.blocks[item / a.Hkv];
  const std::int64_t hk = item % a.Hkv;
  const std::int64_t nq = bl.q1 - bl.q0, r0 = tile * rows;
  if (r0 >= a.G * nq) return;  // the same for every thread of the block: no barrier is skipped
  const int nr = static_cast<int>(a.G * nq - r0 < rows ? a.G * nq - r0 : rows);
  const int Dk = static_cast<int>(a.q.extent(3)), Dv = static_cast<int>(a.v.extent(3));
  const int ldk = Dk + 1, ldv = Dv + 1;
  float* Q = smem;                 // (rows, Dk), scaled
  float* dQ = Q + rows * Dk;       // (rows, Dk)
  float* dOs = dQ + rows * Dk;     // (rows, Dv)
  float* Ks = dOs + rows * Dv;     // (dq_keys, Dk + 1)
  float* Vs = Ks + dq_keys * ldk;  // (dq_keys, Dv + 1)
  float* dS = Vs + dq_keys * ldv;  // (rows, dq_keys)
  float* l = dS + rows * dq_keys;  // (rows)
  float* D = l + rows;             // (rows)
  auto head = [&](int r) { return hk * a.G + (r0 + r) / nq; };
  auto query = [&](int r) { return (r0 + r) % nq; };

  for (int e = tid; e < nr * Dk; e += nt) {
    const int r = e / Dk, d = e % Dk;
    Q[e] = a.scale * static_cast<float>(a.q(bl.b, bl.q0 + query(r), head(r), d));
    dQ[e] = 0.0f;
  }
  for (int e = tid; e < nr * Dv; e += nt) {
    const int r = e / Dv, d = e % Dv;
    dOs[e] = static_cast<float>(a.dO(bl.b, bl.q0 + query(r), head(r), d));
  }
  for (int r = tid; r < nr; r += nt) row_stats(a, bl.b, bl.q0 + query(r), head(r), l[r], D[r]);
  // The keys any row of the tile may see, [j_lo, j_hi), as in forward_block.
  const std::int64_t i_first = r0 % nq, i_last = (r0 + nr - 1) % nq;
  const bool all_queries = nr >= nq || i_first > i_last;
  const std::int64_t qp_first = bl.q_pos0 + (all_queries ? 0 : i_first);
  const std::int64_t qp_last = bl.q_pos0 + (all_queries ? nq - 1 : i_last);
  const key_range kr = keys_seen(bl, a.vis, qp_first, qp_last);
  const std::int64_t j_lo = kr.lo, j_hi = kr.hi;
  sync();

  for (std::int64_t j0 = j_lo; j0 < j_hi; j0 += dq_keys) {
    const int nk = static_cast<int>(j_hi - j0 < dq_keys ? j_hi - j0 : dq_keys);
    // K, V tile (fp32)
    for (int e = tid; e < nk * Dk; e += nt) {
      const int j = e / Dk, d = e % Dk;
      Ks[j * ldk + d] = static_cast<float>(a.k(bl.b, j0 + j, hk, d));
    }
    for (int e = tid; e < nk * Dv; e += nt) {
      const int j = e / Dv, d = e % Dv;
      Vs[j * ldv + d] = static_cast<float>(a.v(bl.b, j0 + j, hk, d));
    }
    sync();
    // dS (rows, keys); 0 where not visible, past the tile, or for a row that saw no key
    for (int e = tid; e < nr * dq_keys; e += nt) {
      const int r = e / dq_keys, j = e % dq_keys;
      float p = 0.0f, w = 0.0f;
      const std::int64_t qi = bl.q0 + query(r), qp = bl.q_pos0 + query(r), kp = bl.k_pos0 + (j0 + j - bl.k0);
      if (j < nk && l[r] != neg_inf() && pair_visible(a, bl.b, qi, qp, j0 + j, kp))
        pair_grad(Q + r * Dk, Ks + j * ldk, dOs + r * Dv, Vs + j * ldv, Dk, Dv, l[r], D[r], a.softcap, p, w);
      dS[e] = w;
    }
    sync();
    // dQ += dS K
    for (int e = tid; e < nr * Dk; e += nt) {
      const int r = e / Dk, d = e % Dk;
      const float* wr = dS + r * dq_keys;
      float x = dQ[e];
      for (int j = 0; j < nk; ++j) x += wr[j] * Ks[j * ldk + d];
      dQ[e] = x;
    }
    sync();  // the next tile overwrites Ks, Vs, dS
  }

  for (int e = tid; e < nr * Dk; e += nt) {
    const int r = e / Dk, d = e % Dk;
    a.dq(bl.b, bl.q0 + query(r), head(r), d) = from_accum<TdQ>(a.scale * dQ[e]);
  }
}

/// Block `block` of the dk / dv kernel, thread tid of nt; smem holds dkv_smem_floats(Dk, Dv)
/// floats; sync() as for dq_block.
template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV, class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void dkv_block(const backward_args<TQ, TK, TV, TO, TG, TdQ, TdK, TdV>& a,
                                                  std::int64_t block, int tid, int nt, float* smem,
                                                  Sync sync) {
  const std::int64_t item = block / a.k_tiles, kt = block % a.k_tiles;
  const key_block_item bl = a.key_blocks[item / a.Hkv];
  const std::int64_t hk = item % a.Hkv, G = a.G;
  const std::int64_t j0 = bl.k0 + kt * dkv_keys;
  if (j0 >= bl.k1) return;  // the same for every thread of the block
  const int nj = static_cast<int>(bl.k1 - j0 < dkv_keys ? bl.k1 - j0 : dkv_keys);              // keys written
  const int nkv = static_cast<int>(bl.kv - j0 < 0 ? 0 : (bl.kv - j0 < nj ? bl.kv - j0 : nj));  // valid
  const int Dk = static_cast<int>(a.q.extent(3)), Dv = static_cast<int>(a.v.extent(3));
  const int ldk = Dk + 1, ldv = Dv + 1;
  float* Ks = smem;                     // (dkv_keys, Dk + 1)
  float* Vs = Ks + dkv_keys * ldk;      // (dkv_keys, Dv + 1)
  float* dK = Vs + dkv_keys * ldv;      // (dkv_keys, Dk)
  float* dV = dK + dkv_keys * Dk;       // (dkv_keys, Dv)
  float* Q = dV + dkv_keys * Dv;        // (dkv_rows, Dk), scaled
  float* dOs = Q + dkv_rows * Dk;       // (dkv_rows, Dv)
  float* P = dOs + dkv_rows * Dv;       // (dkv_rows, dkv_keys)
  float* dS = P + dkv_rows * dkv_keys;  // (dkv_rows, dkv_keys)
  float* l = dS + dkv_rows * dkv_keys;  // (dkv_rows)
  float* D = l + dkv_rows;              // (dkv_rows)

  for (int e = tid; e < nj * Dk; e += nt) dK[e] = 0.0f;
  for (int e = tid; e < nj * Dv; e += nt) dV[e] = 0.0f;
  for (int e = tid; e < nkv * Dk; e += nt) {
    const int j = e / Dk, d = e % Dk;
    Ks[j * ldk + d] = static_cast<float>(a.k(bl.b, j0 + j, hk, d));
  }
  for (int e = tid; e < nkv * Dv; e += nt) {
    const int j = e / Dv, d = e % Dv;
    Vs[j * ldv + d] = static_cast<float>(a.v(bl.b, j0 + j, hk, d));
  }
  // The queries that may see a valid key at positions [kp_a, kp_z]: lo(qp) <= kp_z and
  // hi(qp) >= kp_a, within the sequence's queries; rows t = g nqp + (qp - qp_lo).
  const std::int64_t kp_a = bl.k_pos0 + (j0 - bl.k0), kp_z = kp_a + nkv - 1;
  std::int64_t qp_lo = bl.q_pos0, qp_hi = bl.q_pos0 + (bl.q1 - bl.q0) - 1;
  if (a.vis.causal && kp_a > qp_lo) qp_lo = kp_a;
  if (a.vis.right >= 0 && kp_a - a.vis.right > qp_lo) qp_lo = kp_a - a.vis.right;
  if (a.vis.left >= 0 && kp_z + a.vis.left < qp_hi) qp_hi = kp_z + a.vis.left;
  const std::int64_t nqp = nkv > 0 && qp_hi >= qp_lo ? qp_hi - qp_lo + 1 : 0;
  auto head = [&](std::int64_t t) { return hk * G + t / nqp; };
  auto query = [&](std::int64_t t) { return bl.q0 + (qp_lo + t % nqp - bl.q_pos0); };
  sync();

  for (std::int64_t t0 = 0; t0 < G * nqp; t0 += dkv_rows) {
    const int nr = static_cast<int>(G * nqp - t0 < dkv_rows ? G * nqp - t0 : dkv_rows);
    // Q (scaled), dO, lse, D of rows t0 .. t0 + nr
    for (int e = tid; e < nr * Dk; e += nt) {
      const int r = e / Dk, d = e % Dk;
      Q[e] = a.scale * static_cast<float>(a.q(bl.b, query(t0 + r), head(t0 + r), d));
    }
    for (int e = tid; e < nr * Dv; e += nt) {
      const int r = e / Dv, d = e % Dv;
      dOs[e] = static_cast<float>(a.dO(bl.b, query(t0 + r), head(t0 + r), d));
    }
    for (int r = tid; r < nr; r += nt) row_stats(a, bl.b, query(t0 + r), head(t0 + r), l[r], D[r]);
    sync();
    // P, dS (rows, keys); 0 where not visible, past the valid keys, or for a row that saw no key
    for (int e = tid; e < nr * dkv_keys; e += nt) {
      const int r = e / dkv_keys, j = e % dkv_keys;
      float p = 0.0f, w = 0.0f;
      const std::int64_t qi = query(t0 + r), qp = bl.q_pos0 + (qi - bl.q0);
      if (j < nkv && l[r] != neg_inf() && pair_visible(a, bl.b, qi, qp, j0 + j, kp_a + j))
        pair_grad(Q + r * Dk, Ks + j * ldk, dOs + r * Dv, Vs + j * ldv, Dk, Dv, l[r], D[r], a.softcap, p, w);
      P[e] = p;
      dS[e] = w;
    }
    sync();
    // dK += dS^T Q, dV += P^T dO, rows in order
    for (int e = tid; e < nkv * (Dk + Dv); e += nt) {
      if (e < nkv * Dk) {
        const int j = e / Dk, d = e % Dk;
        float x = dK[e];
        for (int r = 0; r < nr; ++r) x += dS[r * dkv_keys + j] * Q[r * Dk + d];
        dK[e] = x;
      } else {
        const int f = e - nkv * Dk, j = f / Dv, d = f % Dv;
        float x = dV[f];
        for (int r = 0; r < nr; ++r) x += P[r * dkv_keys + j] * dOs[r * Dv + d];
        dV[f] = x;
      }
    }
    sync();  // the next step overwrites Q, dO, P, dS, l, D
  }

  for (int e = tid; e < nj * Dk; e += nt) {
    const int j = e / Dk, d = e % Dk;
    a.dk(bl.b, j0 + j, hk, d) = from_accum<TdK>(dK[e]);
  }
  for (int e = tid; e < nj * Dv; e += nt) {
    const int j = e / Dv, d = e % Dv;
    a.dv(bl.b, j0 + j, hk, d) = from_accum<TdV>(dV[e]);
  }
}

}  // namespace weft::detail::attention::device
