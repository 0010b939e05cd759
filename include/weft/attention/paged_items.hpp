// weft/attention/paged_items.hpp - the host item functions of paged_attention (paged.hpp):
// the split item (scores, online softmax and value updates of one split of keys for every KV
// head's group), the merge of the splits' partials, and the append of new K/V rows. Their
// row conversions, lane reductions and register tiles: paged_lanes.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/attention/blockwise.hpp"
#include "weft/attention/paged_lanes.hpp"
#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tensor.hpp"

namespace weft::detail::attention {
/// Automatic splits: at most this many per sequence (items: enough for every thread of a
/// machine to work on one sequence), of at least this many keys (a split's partials, Hq Tq
/// (Dv + 1) floats, then cost at most ~1/4 of the K/V it read, at Tq = 16 and Hq = 4 Hkv; at
/// Tq = 1, 2%).
inline constexpr std::int64_t paged_items_per_row = 64;
inline constexpr std::int64_t paged_min_split = 512;

/// The keys [k0, k1) of sequence b that one split attends.
struct paged_split {
  std::int64_t b, k0, k1;
};

/// Per-worker scratch of paged_fn, in floats: for the Hkv G Tq rows of every head, Q (scaled),
/// O, m, l; the scores and the factor e^{m - m'} of one head's rows; one head's key and value
/// block as floats. (The larger of the two paths' layouts, whichever the item takes.)
WEFT_INLINE std::size_t paged_scratch_floats(std::int64_t Hkv, std::int64_t R, std::int64_t Dk,
                                             std::int64_t Dv) {
  const std::int64_t rows = Hkv * R * (Dk + Dv + 2) + R * (paged_key_block + 1) + paged_key_block * (Dk + Dv);
  const std::int64_t tiled = paged_tiled_layout(Hkv, R, Dk, Dv).total;
  return static_cast<std::size_t>(rows > tiled ? rows : tiled);
}

/// The split item: split c attends the G Tq rows of every KV head hk (rows r = g Tq + i: head
/// hk G + g, query i) to its keys, block of keys by block of keys, and writes the partials
/// o_s [R, Dv], lse_s [R] of (c, hk) at part_o + (c Hkv + hk) R Dv, part_lse + (c Hkv + hk) R.
/// Each key's K and V rows are read from memory once: a block ahead, as whole rows (every head,
/// contiguous in the layout, in memory order) into L2, then head by head from L2. (An item per
/// (split, head) read a head's 2 D bytes every 2 Hkv D bytes from memory, a stride the stream
/// prefetchers do not follow: one core read 2.3 GB/s of it, 5 GB/s in order.)
template <class TQ, class TK, class TV>
struct paged_fn {
  tensor_view<const TQ, 4> q;
  tensor_view<const TK, 4> kp;
  tensor_view<const TV, 4> vp;
  tensor_view<const std::int32_t, 2> table;
  const paged_split* splits;
  const std::int32_t* k_lengths;  // host copy
  std::int64_t Hkv, G, Tq;
  float scale, softcap;
  visibility vis;
  tensor_view<const std::uint8_t, 3> mask;  // [B, Tq, M] on the last M keys of each row, or empty
  float* part_o;
  float* part_lse;

  WEFT_INLINE std::size_t scratch_bytes() const {
    return paged_scratch_floats(Hkv, G * Tq, kp.extent(3), vp.extent(3)) * sizeof(float);
  }

  WEFT_INLINE void operator()(std::int64_t item, void* scratch) const {
#if WEFT_PAGED_LANES
    if (paged_row_tiled(G * Tq)) {
      tiled_item(item, scratch);
      return;
    }
#endif
    const paged_split& sp = splits[item];
    const std::int64_t b = sp.b;
    const std::int64_t R = G * Tq, Dk = kp.extent(3), Dv = vp.extent(3), ps = kp.extent(1);
    const std::int64_t n = k_lengths[b], kb = paged_key_block;
    float* Q = static_cast<float*>(scratch);  // (Hkv, R, Dk)
    float* O = Q + Hkv * R * Dk;              // (Hkv, R, Dv)
    float* m = O + Hkv * R * Dv;              // (Hkv, R)
    float* l = m + Hkv * R;                   // (Hkv, R)
    float* S = l + Hkv * R;                   // (R, kb): scores, then probabilities
    float* Kb = S + R * kb;                   // (kb, Dk): one head's keys of the block
    float* Vb = Kb + kb * Dk;                 // (kb, Dv)
    float* A = Vb + kb * Dv;                  // (R): e^{m - m'} of each row, -1: nothing visible
    const bool split_k = pair_split<TK>(kp.stride(3), Dk), split_v = pair_split<TV>(vp.stride(3), Dv);
    const bool chunked = chunked_keys(Dk);
    for (std::int64_t h = 0; h < Hkv * G; ++h)  // row (hk, r) = h Tq + i
      for (std::int64_t i = 0; i < Tq; ++i) {
        const std::int64_t r = h * Tq + i;
        for (std::int64_t d = 0; d < Dk; ++d)
          Q[r * Dk + (split_k ? pair_split_index(d) : d)] = scale * static_cast<float>(q(b, i, h, d));
        for (std::int64_t d = 0; d < Dv; ++d) O[r * Dv + d] = 0.0f;
        m[r] = neg_inf();
        l[r] = 0.0f;
      }
    for (std::int64_t j = 0; j < kb * Dk; ++j) Kb[j] = 0.0f;  // rows past a short block: finite
    const std::int64_t M = mask.data() != nullptr ? mask.extent(2) : 0, mfirst = n - M;
    for (std::int64_t j0 = sp.k0; j0 < sp.k1; j0 += kb) {
      const std::int64_t nk = sp.k1 - j0 < kb ? sp.k1 - j0 : kb;
      for (std::int64_t hk = 0; hk < Hkv; ++hk) {
        // The next block's key rows (every head: contiguous memory) into L2, spread over this
        // block's heads; this head's rows of this block (from L2 after the first block) as floats
        // in Kb, Vb, which stay in L1 while its rows use them.
        for (std::int64_t j = hk * kb / Hkv; j < (hk + 1) * kb / Hkv && j0 + kb + j < sp.k1; ++j)
          prefetch_rows(j0 + kb + j, b, ps);
        for (std::int64_t j = 0; j < nk; ++j) {
          const std::int64_t page = table(b, (j0 + j) / ps), slot = (j0 + j) % ps;
          row_to_float(&kp(page, slot, hk, 0), kp.stride(3), Kb + j * (chunked ? simd::lanes : Dk), Dk,
                       split_k, chunked ? kb * simd::lanes : simd::lanes);
          row_to_float(&vp(page, slot, hk, 0), vp.stride(3), Vb + j * Dv, Dv, split_v, simd::lanes);
        }
        // Three passes over the rows (scores; softmax statistics; P V), so that the short
        // dependent chains of the second pass overlap across rows.
        std::int64_t r2 = 0;  // scores of rows in pairs (each key vector loaded once for two)
#if WEFT_PAGED_LANES
        if (chunked)
          for (; r2 + 2 <= R; r2 += 2)
            for (std::int64_t j = 0; j < nk; j += 8)
              scores2x8(Q + (hk * R + r2) * Dk, Q + (hk * R + r2 + 1) * Dk, Kb + j * simd::lanes, Dk,
                        kb * simd::lanes, S + r2 * kb + j, S + (r2 + 1) * kb + j);
#endif
        for (std::int64_t r = 0; r < R; ++r) {
          const std::int64_t i = r % Tq, qp = n - Tq + i;
          float* s = S + r * kb;
          if (r >= r2) scores(Q + (hk * R + r) * Dk, Kb, Dk, nk, s);
          visible_scores(s, kb, b, i, qp, j0, nk, mfirst);
        }
        for (std::int64_t r = 0; r < R; ++r) {  // m' = max(m, max_j s_j), a = e^{m - m'}, l' = a l + sum
          const std::int64_t hr = hk * R + r;
          float* s = S + r * kb;
          const float mb = row_max(s, kb);
          if (mb == neg_inf()) {  // nothing visible to this row in the block
            A[r] = -1.0f;
            continue;
          }
          const float mn = m[hr] > mb ? m[hr] : mb;
          A[r] = exp1(m[hr] - mn);  // m = -inf: 0
          l[hr] = A[r] * l[hr] + exp_sum(s, kb, mn);
          m[hr] = mn;
        }
        for (std::int64_t r = 0; r < R;) {  // O' = a O + sum_j p_j v_j, rows in pairs
          if (A[r] < 0.0f) {
            ++r;
            continue;
          }
          float* o2[2] = {O + (hk * R + r) * Dv, nullptr};
          const float* p2[2] = {S + r * kb, nullptr};
          if (r + 1 < R && A[r + 1] >= 0.0f) {
            o2[1] = o2[0] + Dv;
            p2[1] = p2[0] + kb;
            pv<2>(o2, A + r, p2, Vb, nk, Dv);
            r += 2;
          } else {
            pv<1>(o2, A + r, p2, Vb, nk, Dv);
            ++r;
          }
        }
      }
    }
    store_partials(item, O, Dv, m, l, split_v);
  }

 private:
#if WEFT_PAGED_LANES
  /// The row-tiled item (R = G Tq >= paged_tile_rows). Per block of keys and KV head: the keys
  /// converted once and transposed (KT, Dk x kb: lanes along keys), the values converted once
  /// (Vb); S = Q KT by row_tile (each key vector loaded once per tile of 8 rows, no horizontal
  /// sums); the online softmax row by row; O = diag(a) O + P V by row_tile. The same visibility,
  /// mask, softcap and exp as the rows path; a row with nothing visible in a block gets P = 0,
  /// a = 1.
  WEFT_INLINE void tiled_item(std::int64_t item, void* scratch) const {
    const paged_split& sp = splits[item];
    const std::int64_t b = sp.b;
    const std::int64_t R = G * Tq, Dk = kp.extent(3), Dv = vp.extent(3), ps = kp.extent(1);
    const std::int64_t n = k_lengths[b], kb = paged_tile_keys;
    const paged_tiled_layout L(Hkv, R, Dk, Dv);
    const std::int64_t Dkp = L.Dkp, Dvp = L.Dvp;
    float* const base = static_cast<float*>(scratch);
    float* Q = base + L.q;    // (Hkv, Dk, R)
    float* O = base + L.o;    // (Hkv, R, Dv')
    float* m = base + L.m;    // (Hkv, R)
    float* l = base + L.l;    // (Hkv, R)
    float* S = base + L.s;    // (R, kb): scores, then probabilities
    float* A = base + L.a;    // (R): e^{m - m'} of each row
    float* KT = base + L.kt;  // (Dk', kb): one head's keys of the block, transposed
    float* Vb = base + L.vb;  // (kb, Dv')
    const bool split_v = pair_split<TV>(vp.stride(3), Dv), pair_k = pair_split<TK>(kp.stride(3), Dk);
    for (std::int64_t h = 0; h < Hkv * G; ++h)  // row (hk, r) = h Tq + i
      for (std::int64_t i = 0; i < Tq; ++i) {
        const std::int64_t r = h * Tq + i;
        const std::int64_t hk = r / R, rr = r % R;  // Q of head hk transposed: (Dk, R)
        for (std::int64_t d = 0; d < Dk; ++d)
          Q[(hk * Dk + d) * R + rr] = scale * static_cast<float>(q(b, i, h, d));
        for (std::int64_t d = 0; d < Dvp; ++d) O[r * Dvp + d] = 0.0f;
        m[r] = neg_inf();
        l[r] = 0.0f;
      }
    const std::int64_t M = mask.data() != nullptr ? mask.extent(2) : 0, mfirst = n - M;
    const std::int64_t ks2 = kp.stride(2), ks3 = kp.stride(3), vs2 = vp.stride(2), vs3 = vp.stride(3);
    const TK* krow[paged_tile_keys];
    const TV* vrow[paged_tile_keys];
    // Prefetch: the next block's rows, spread over the steps of this block's head passes.
    line_feed feed;
    const std::int64_t kbytes = ((Hkv - 1) * ks2 + Dk * ks3) * static_cast<std::int64_t>(sizeof(TK));
    const std::int64_t vbytes = ((Hkv - 1) * vs2 + Dv * vs3) * static_cast<std::int64_t>(sizeof(TV));
    feed.klines = (kbytes + 63) / 64;
    feed.lines = feed.klines + (vbytes + 63) / 64;
    const std::int64_t nt = row_tile_count(R);
    const std::int64_t steps = Hkv * (kb / simd::lanes + 1 + nt * (kb / (2 * simd::lanes) + (Dvp + 31) / 32) +
                                      (R + simd::lanes - 1) / simd::lanes);
    auto step = [&feed] { feed.step(); };
    for (std::int64_t j0 = sp.k0; j0 < sp.k1; j0 += kb) {
      const std::int64_t nk = sp.k1 - j0 < kb ? sp.k1 - j0 : kb;
      for (std::int64_t j = 0; j < nk; ++j) {
        const std::int64_t page = table(b, (j0 + j) / ps), slot = (j0 + j) % ps;
        krow[j] = &kp(page, slot, 0, 0);
        vrow[j] = &vp(page, slot, 0, 0);
      }
      feed.step(feed.lines * kb);  // the rest of this block's
      feed.nk = sp.k1 - (j0 + kb) < kb ? sp.k1 - (j0 + kb) : kb;
      feed.nk = feed.nk > 0 ? feed.nk : 0;
      for (std::int64_t j = 0; j < feed.nk; ++j) {
        const std::int64_t page = table(b, (j0 + kb + j) / ps), slot = (j0 + kb + j) % ps;
        feed.k[j] = reinterpret_cast<const char*>(&kp(page, slot, 0, 0));
        feed.v[j] = reinterpret_cast<const char*>(&vp(page, slot, 0, 0));
      }
      feed.j = feed.o = 0;
      feed.per = (feed.nk * feed.lines + steps - 1) / steps;
      for (std::int64_t hk = 0; hk < Hkv; ++hk) {
        // keys [jb, jb + 16) x dims [db, db + 16) at a time, transposed (keys past nk: 0)
        if constexpr (std::is_same_v<TK, bf16>) {
          if (pair_k) {
            const bf16* src[simd::lanes];
            for (std::int64_t jb = 0; jb < kb; jb += simd::lanes) {
              for (std::int64_t r = 0; r < simd::lanes; ++r)
                src[r] = jb + r < nk ? krow[jb + r] + hk * ks2 : nullptr;
              for (std::int64_t db = 0; db < Dk; db += 2 * simd::lanes)
                transpose_bf16_pairs(src, nk - jb, db, KT + db * kb + jb, kb);
              feed.step();
            }
          }
        }
        if (!pair_k)
          for (std::int64_t jb = 0; jb < kb; jb += simd::lanes) {
            for (std::int64_t db = 0; db < Dkp; db += simd::lanes) {
              simd::f32x16 t[simd::lanes];
              for (std::int64_t r = 0; r < simd::lanes; ++r)
                t[r] = jb + r < nk ? load16(krow[jb + r] + hk * ks2, ks3, db, Dk) : simd::splat(0.0f);
              transpose16(t);
              for (std::int64_t c = 0; c < simd::lanes; ++c) simd::store(KT + (db + c) * kb + jb, t[c]);
            }
            feed.step();
          }
        for (std::int64_t jb = 0; jb < kb; jb += 2 * simd::lanes)  // S = Q K^T
          row_tiles<2>(R, Dk, Q + hk * R * Dk, 1, R, KT + jb, kb, S + jb, kb, nullptr, step);
        for (std::int64_t j = 0; j < kb; ++j) {  // values past Dv and nk: 0 (P is 0 there)
          float* vr = Vb + j * Dvp;
          if (j < nk) row_to_float(vrow[j] + hk * vs2, vs3, vr, Dv, split_v, simd::lanes);
          for (std::int64_t d = j < nk ? Dv : 0; d < Dvp; ++d) vr[d] = 0.0f;
        }
        feed.step();
        for (std::int64_t r0 = 0; r0 < R; r0 += simd::lanes) {
          softmax16(S + r0 * kb, r0, R - r0 < simd::lanes ? R - r0 : simd::lanes, b, j0, nk, n, mfirst,
                    m + hk * R + r0, l + hk * R + r0, A + r0);
          feed.step();
        }
        float* Oh = O + hk * R * Dvp;  // O = diag(a) O + P V
        std::int64_t d0 = 0;
        for (; d0 + 2 * simd::lanes <= Dvp; d0 += 2 * simd::lanes)
          row_tiles<2>(R, kb, S, kb, 1, Vb + d0, Dvp, Oh + d0, Dvp, A, step);
        if (d0 < Dvp) row_tiles<1>(R, kb, S, kb, 1, Vb + d0, Dvp, Oh + d0, Dvp, A, step);
      }
    }
    store_partials(item, O, Dvp, m, l, split_v);
  }
#endif

  /// The split's partial results: o = O / l (rows of ldo floats; pair-split columns put back in
  /// order) and lse = m + log l, for the Hkv R rows (l = 0: o = 0, lse = -inf).
  WEFT_INLINE void store_partials(std::int64_t item, const float* O, std::int64_t ldo, const float* m,
                                  const float* l, bool split_v) const {
    const std::int64_t R = G * Tq, Dv = vp.extent(3);
    float* po = part_o + item * Hkv * R * Dv;  // (c Hkv + hk) R Dv + r Dv
    float* pl = part_lse + item * Hkv * R;
    for (std::int64_t hr = 0; hr < Hkv * R; ++hr) {
      const bool any = l[hr] > 0.0f;
      const float inv = any ? 1.0f / l[hr] : 0.0f;
      for (std::int64_t d = 0; d < Dv; ++d)
        po[hr * Dv + d] = O[hr * ldo + (split_v ? pair_split_index(d) : d)] * inv;
      pl[hr] = any ? m[hr] + std::log(l[hr]) : neg_inf();
    }
  }

  /// Scores s[0, nk) of query i (position qp) against keys [j0, j0 + nk): -inf where the key is
  /// out of the query's window or causal range or masked (the mask covers keys from mfirst),
  /// softcap applied to the rest; s[nk, kb) = -inf (past the block's keys).
  WEFT_INLINE void visible_scores(float* s, std::int64_t kb, std::int64_t b, std::int64_t i, std::int64_t qp,
                                  std::int64_t j0, std::int64_t nk, std::int64_t mfirst) const {
    for (std::int64_t j = nk; j < kb; ++j) s[j] = neg_inf();
    const std::int64_t lo = vis.lo(qp), hi = vis.hi(qp);
    const bool all = j0 >= lo && j0 + nk - 1 <= hi && j0 + nk <= mfirst;
    if (!all || softcap > 0.0f)
      for (std::int64_t j = 0; j < nk; ++j) {
        const std::int64_t kpos = j0 + j;
        bool ok = all || (kpos >= lo && kpos <= hi);
        if (ok && !all && kpos >= mfirst) ok = mask(b, i, kpos - mfirst) != 0;
        s[j] = !ok ? neg_inf() : softcap > 0.0f ? softcap * std::tanh(s[j] / softcap) : s[j];
      }
  }

#if WEFT_PAGED_LANES
  /// The online softmax of rows r0 .. r0 + nr (nr <= 16) of the row-tiled path over a block of
  /// keys [j0, j0 + nk) (kb scores per row from s): visibility, mask and softcap as the rows
  /// path; then with the rows in lanes, m' = max(m, max_j s_j), a = e^{m - m'}, l' = a l + sum_j
  /// e^{s_j - m'} (the maxima and sums of 16 rows by one butterfly each, reduce16); s becomes
  /// P. A row with nothing visible in the block: P = 0, a = 1, m and l unchanged.
  WEFT_INLINE void softmax16(float* s, std::int64_t r0, std::int64_t nr, std::int64_t b, std::int64_t j0,
                             std::int64_t nk, std::int64_t n, std::int64_t mfirst, float* m, float* l,
                             float* a) const {
    using simd::f32x16;
    constexpr std::int64_t kb = paged_tile_keys;
    const f32x16 ninf = simd::splat(neg_inf());
    f32x16 mx[simd::lanes];
    for (std::int64_t u = 0; u < simd::lanes; ++u) {
      if (u >= nr) {
        mx[u] = ninf;
        continue;
      }
      float* sr = s + u * kb;
      const std::int64_t i = (r0 + u) % Tq;
      visible_scores(sr, kb, b, i, n - Tq + i, j0, nk, mfirst);
      mx[u] = simd::load(sr);
      for (std::int64_t j = simd::lanes; j < kb; j += simd::lanes)
        mx[u] = simd::vmax(mx[u], simd::load(sr + j));
    }
    static_assert(kb == 4 * simd::lanes, "softmax16 sums four vectors of scores per row");
    float t[simd::lanes];
    for (std::int64_t u = 0; u < simd::lanes; ++u) t[u] = u < nr ? m[u] : neg_inf();
    const f32x16 mo = simd::load(t);
    const f32x16 mb = reduce16(mx, [](const f32x16& x, const f32x16& y) { return simd::vmax(x, y); });
    const f32x16 mn = simd::vmax(mo, mb);
    float mnv[simd::lanes], av[simd::lanes];
    simd::store(mnv, mn);
    simd::store(av, simd::vexp(mo - mn));  // m = -inf: 0 (rows with nothing visible: below)
    simd::store(t, mb);
    f32x16 sums[simd::lanes];
    for (std::int64_t u = 0; u < simd::lanes; ++u) {
      sums[u] = simd::splat(0.0f);
      if (u >= nr) continue;
      float* sr = s + u * kb;
      if (t[u] == neg_inf()) {
        for (std::int64_t j = 0; j < kb; j += simd::lanes) simd::store(sr + j, sums[u]);
        continue;
      }
      const f32x16 sub = simd::splat(mnv[u]);
      f32x16 e[kb / simd::lanes];
      for (std::int64_t v = 0; v < kb / simd::lanes; ++v) {
        e[v] = simd::vexp(simd::load(sr + v * simd::lanes) - sub);
        simd::store(sr + v * simd::lanes, e[v]);
      }
      sums[u] = (e[0] + e[1]) + (e[2] + e[3]);
    }
    float sv[simd::lanes];
    simd::store(sv, sum16(sums));
    for (std::int64_t u = 0; u < nr; ++u) {
      if (t[u] == neg_inf()) {
        a[u] = 1.0f;
        continue;
      }
      a[u] = av[u];
      l[u] = av[u] * l[u] + sv[u];
      m[u] = mnv[u];
    }
  }
#endif

  /// Asks for key j's K and V rows (every head) one block ahead.
  WEFT_INLINE void prefetch_rows(std::int64_t j, std::int64_t b, std::int64_t ps) const {
#if WEFT_PAGED_LANES
    const std::int64_t page = table(b, j / ps), slot = j % ps;
    const char* k = reinterpret_cast<const char*>(&kp(page, slot, 0, 0));
    const char* v = reinterpret_cast<const char*>(&vp(page, slot, 0, 0));
    const std::int64_t kbytes = (Hkv - 1) * kp.stride(2) * static_cast<std::int64_t>(sizeof(TK)) +
                                kp.extent(3) * kp.stride(3) * static_cast<std::int64_t>(sizeof(TK));
    const std::int64_t vbytes = (Hkv - 1) * vp.stride(2) * static_cast<std::int64_t>(sizeof(TV)) +
                                vp.extent(3) * vp.stride(3) * static_cast<std::int64_t>(sizeof(TV));
    for (std::int64_t o = 0; o < kbytes; o += 64) __builtin_prefetch(k + o, 0, 2);
    for (std::int64_t o = 0; o < vbytes; o += 64) __builtin_prefetch(v + o, 0, 2);
#else
    (void)j, (void)b, (void)ps;
#endif
  }

  /// Kb's layout: chunks of 16 elements of every key's row, key after key ((d / 16) kb 16 +
  /// 16 j + d % 16) where the lanes path computes the scores, else rows ((j Dk + d)).
  WEFT_INLINE static bool chunked_keys(std::int64_t Dk) {
    return WEFT_PAGED_LANES && Dk % simd::lanes == 0 && Dk > 0;
  }

  /// s[j] = q . K_j for the nk keys of the block (rows of Kb past nk are finite).
  WEFT_INLINE static void scores(const float* qr, const float* Kb, std::int64_t Dk, std::int64_t nk,
                                 float* s) {
#if WEFT_PAGED_LANES
    if (chunked_keys(Dk)) {
      for (std::int64_t j = 0; j < nk; j += 16)
        scores16(qr, Kb + j * simd::lanes, Dk, paged_key_block * simd::lanes, s + j);
      return;
    }
#endif
    for (std::int64_t j = 0; j < nk; ++j) {
      const float* kr = Kb + j * Dk;
      float acc[16] = {};
      std::int64_t d = 0;
      for (; d + 16 <= Dk; d += 16)
        for (int t = 0; t < 16; ++t) acc[t] += qr[d + t] * kr[d + t];
      for (int t = 0; d < Dk; ++d, ++t) acc[t] += qr[d] * kr[d];
      s[j] = simd::lane_sum(acc);
    }
  }

  /// e^x (x <= 0; -inf: 0), as exp_sum computes it.
  WEFT_INLINE static float exp1(float x) {
#if WEFT_PAGED_LANES
    return simd::vexp(simd::splat(x))[0];
#else
    return x == neg_inf() ? 0.0f : std::exp(x);
#endif
  }

  /// max_j s[j] over n (a multiple of 16) scores.
  WEFT_INLINE static float row_max(const float* s, std::int64_t n) {
#if WEFT_PAGED_LANES
    simd::f32x16 mx = simd::load(s);
    for (std::int64_t j = simd::lanes; j < n; j += simd::lanes) mx = simd::vmax(mx, simd::load(s + j));
    return simd::hmax(mx);
#else
    float mx = neg_inf();
    for (std::int64_t j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    return mx;
#endif
  }

  /// s[j] <- e^{s[j] - mn} (-inf: 0) for j < nk; returns their sum.
  WEFT_INLINE static float exp_sum(float* s, std::int64_t nk, float mn) {
#if WEFT_PAGED_LANES
    simd::f32x16 sum = simd::splat(0.0f);
    const simd::f32x16 mv = simd::splat(mn);
    std::int64_t j = 0;
    for (; j + simd::lanes <= nk; j += simd::lanes) {
      const simd::f32x16 e = simd::vexp(simd::load(s + j) - mv);
      simd::store(s + j, e);
      sum += e;
    }
    if (j < nk) {
      float t[simd::lanes];
      for (int u = 0; u < simd::lanes; ++u) t[u] = j + u < nk ? s[j + u] : neg_inf();
      const simd::f32x16 e = simd::vexp(simd::load(t) - mv);
      simd::store(t, e);
      for (std::int64_t u = 0; j + u < nk; ++u) s[j + u] = t[u];
      sum += e;
    }
    return hsum16(sum);
#else
    float acc[16] = {};
    for (std::int64_t j = 0; j < nk; ++j) {
      s[j] = s[j] == neg_inf() ? 0.0f : std::exp(s[j] - mn);
      acc[j % 16] += s[j];
    }
    return simd::lane_sum(acc);
#endif
  }

  /// o <- a o + sum_j p_j V_j over the block's nk keys.
  /// o_r <- a_r o_r + sum_j p_r[j] V_j over the block's nk keys, for NR = 1 or 2 rows.
  template <int NR>
  WEFT_INLINE static void pv(float* const* o, const float* a, const float* const* p, const float* Vb,
                             std::int64_t nk, std::int64_t Dv) {
    std::int64_t d = 0;
#if WEFT_PAGED_LANES
    if (Dv % simd::lanes == 0) {
      for (; d + 8 * simd::lanes <= Dv; d += 8 * simd::lanes) {
        float* od[NR];
        for (int r = 0; r < NR; ++r) od[r] = o[r] + d;
        pv_lanes<8, NR>(od, a, p, Vb + d, nk, Dv);
      }
      for (; d < Dv; d += simd::lanes) {
        float* od[NR];
        for (int r = 0; r < NR; ++r) od[r] = o[r] + d;
        pv_lanes<1, NR>(od, a, p, Vb + d, nk, Dv);
      }
      return;
    }
#endif
    for (int r = 0; r < NR; ++r) {
      for (std::int64_t e = 0; e < Dv; ++e) o[r][e] *= a[r];
      for (std::int64_t j = 0; j < nk; ++j) {
        const float pj = p[r][j];
        for (std::int64_t e = 0; e < Dv; ++e) o[r][e] += pj * Vb[j * Dv + e];
      }
    }
  }
};

/// The merge pass: item (b, hk, r) merges the splits of row b, in split order, into o, lse.
template <class TO>
struct paged_merge_fn {
  tensor_view<TO, 4> o;
  tensor_view<float, 3> lse;
  const std::int64_t* row_splits;
  float* part_o;
  const float* part_lse;
  std::int64_t Hkv, G, Tq;

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t R = G * Tq, Dv = o.extent(3);
    const std::int64_t r = item % R, hk = (item / R) % Hkv, b = item / (R * Hkv);
    const std::int64_t g = r / Tq, i = r % Tq, h = hk * G + g;
    const std::int64_t c0 = row_splits[b], c1 = row_splits[b + 1];
    float mx = neg_inf();
    for (std::int64_t c = c0; c < c1; ++c) {
      const float x = part_lse[(c * Hkv + hk) * R + r];
      mx = x > mx ? x : mx;
    }
    if (mx == neg_inf()) {  // no split saw a key
      for (std::int64_t d = 0; d < Dv; ++d) o(b, i, h, d) = from_accum<TO>(0.0f);
      lse(b, h, i) = neg_inf();
      return;
    }
    float sum = 0.0f;
    for (std::int64_t c = c0; c < c1; ++c) sum += std::exp(part_lse[(c * Hkv + hk) * R + r] - mx);
    // o = sum_c w_c o_c, accumulated in split c0's partial row (this item's own)
    float* acc = part_o + ((c0 * Hkv + hk) * R + r) * Dv;
    const float w0 = std::exp(part_lse[(c0 * Hkv + hk) * R + r] - mx) / sum;
    for (std::int64_t d = 0; d < Dv; ++d) acc[d] *= w0;
    for (std::int64_t c = c0 + 1; c < c1; ++c) {
      const float w = std::exp(part_lse[(c * Hkv + hk) * R + r] - mx) / sum;
      const float* oc = part_o + ((c * Hkv + hk) * R + r) * Dv;
      for (std::int64_t d = 0; d < Dv; ++d) acc[d] += w * oc[d];
    }
    for (std::int64_t d = 0; d < Dv; ++d) o(b, i, h, d) = from_accum<TO>(acc[d]);
    lse(b, h, i) = mx + std::log(sum);
  }
};

/// append_paged_kv's item: row t of sequence b (item b Tn + t) to position start[b] + t.
template <class TK, class TV, class TKN, class TVN>
struct paged_append_fn {
  tensor_view<TK, 4> kp;
  tensor_view<TV, 4> vp;
  tensor_view<const std::int32_t, 2> table;
  tensor_view<const TKN, 4> k_new;
  tensor_view<const TVN, 4> v_new;
  const std::int32_t* start;  // host copy

  WEFT_INLINE void operator()(std::int64_t item, void*) const {
    const std::int64_t Tn = k_new.extent(1), b = item / Tn, t = item % Tn, ps = kp.extent(1);
    const std::int64_t pos = start[b] + t, page = table(b, pos / ps), slot = pos % ps;
    for (std::int64_t h = 0; h < kp.extent(2); ++h) {
      for (std::int64_t d = 0; d < kp.extent(3); ++d)
        kp(page, slot, h, d) = from_accum<TK>(static_cast<float>(k_new(b, t, h, d)));
      for (std::int64_t d = 0; d < vp.extent(3); ++d)
        vp(page, slot, h, d) = from_accum<TV>(static_cast<float>(v_new(b, t, h, d)));
    }
  }
};

/// The items of a paged call and their scratch, shared by every item-running backend. The
/// workspace: the partials, splits x Hkv x G Tq x (Dv + 1) floats, then the item runner's
/// per-worker scratch (paged_scratch_floats each).
}  // namespace weft::detail::attention
