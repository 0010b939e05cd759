// weft/attention/tiled.hpp - the host item function of attention's forward with register tiles
// (host code only: the serial and Kokkos host backends run it; device code runs forward_fn).
//
// The same items, visibility rules and online softmax as forward_fn (blockwise.hpp), computed a
// block at a time instead of a row at a time: for a block of 64 keys,
//   S = Q K^T              (rows x 64; detail::tiled::gemm against the keys transposed)
//   per row: visibility, softcap, m' = max(m, max S), a = e^{m - m'}, P = e^{S - m'} (vexp),
//            l' = a l + sum P
//   O = diag(a) O + P V    (detail::tiled::gemm with the row scale folded into its loads)
// Rows are padded to a multiple of 8 and Dv to a multiple of 16 with zeros (pad rows have
// P = 0, pad columns are dropped), so the products take any shape.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/attention/blockwise.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tiles.hpp"
#include "weft/core/tiles_bf16.hpp"

namespace weft::detail::attention {

WEFT_INLINE std::int64_t round_up(std::int64_t x, std::int64_t m) {
  return (x + m - 1) / m * m;
}

/// dst[0..n) = x(b, j, h, 0..n) as floats.
template <class T>
WEFT_FORCE_INLINE void copy_row(float* dst, const tensor_view<const T, 4>& x, std::int64_t b, std::int64_t j,
                                std::int64_t h, std::int64_t n) {
  if (x.stride(3) == 1) {
    const T* src = &x(b, j, h, 0);
    for (std::int64_t d = 0; d < n; ++d) dst[d] = static_cast<float>(src[d]);
  } else {
    for (std::int64_t d = 0; d < n; ++d) dst[d] = static_cast<float>(x(b, j, h, d));
  }
}

/// Rows [j0, j0 + n) of x(b, ., h, .) into L2, a cache line at a time (the rows lie a head
/// stride apart, 4 KiB and more, each in its own page, where the hardware prefetchers do not
/// follow); rows past the end are skipped.
template <class T>
WEFT_FORCE_INLINE void prefetch_rows(const tensor_view<const T, 4>& x, std::int64_t b, std::int64_t j0,
                                     std::int64_t n, std::int64_t h) {
  const std::int64_t bytes = x.extent(3) * static_cast<std::int64_t>(sizeof(T));
  for (std::int64_t j = j0; j < j0 + n && j < x.extent(1); ++j) {
    const char* r = reinterpret_cast<const char*>(&x(b, j, h, 0));
    for (std::int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(r + o, 0, 2);
  }
}

/// Rows [j0, j0 + nk) of x(b, ., h, 0..D) as floats into X (64 x D', D' = D rounded up to 16;
/// rows past nk and columns past D zero) and, when XT is given, transposed into XT (D' x 64).
/// The rows are copied first (each row's lines lie in consecutive cache sets), then transposed
/// from the copy: transposing straight from rows a head stride apart would put 16 lines in one
/// L1 set (measured: 10 points of the FMA peak at H = 8).
template <class T>
WEFT_FORCE_INLINE void stage_block(const tensor_view<const T, 4>& x, std::int64_t b, std::int64_t j0,
                                   std::int64_t nk, std::int64_t h, float* X, float* XT) {
  const std::int64_t D = x.extent(3), Dp = round_up(D, simd::lanes);
  for (std::int64_t j = 0; j < key_block; ++j) {
    float* r = X + j * Dp;
    if (j < nk) copy_row(r, x, b, j0 + j, h, D);
    for (std::int64_t d = j < nk ? D : 0; d < Dp; ++d) r[d] = 0.0f;
  }
  if (XT == nullptr) return;
  for (std::int64_t jb = 0; jb < key_block; jb += simd::lanes)
    for (std::int64_t db = 0; db < Dp; db += simd::lanes)
      tiled::transpose16([&](int r, simd::f32x16& row) { row = simd::load(X + (jb + r) * Dp + db); },
                         XT + db * key_block + jb, key_block);
}

/// Per-worker scratch in floats: Q (scaled), O, m, l, a per padded row, S (rows x 64), the keys
/// (64 x Dk) and transposed (Dk x 64), Dk padded to 16, and the values (64 x Dv padded to 16).
/// The bf16 forward's (tiled_bf16_forward_fn) in 4-byte words: Q in bf16 pairs (Dk padded to
/// 32), O, S, m, l, a, P split in two bf16 halves (64 keys each), the keys' rows and transpose in
/// pairs, the values in pairs of rows; rows padded to 16. The larger of the two.
inline std::size_t tiled_scratch_floats(std::int64_t rows, std::int64_t Dk, std::int64_t Dv) {
  const std::int64_t Rp = round_up(rows, tiled::tile_rows), Dvp = round_up(Dv, simd::lanes);
  const std::int64_t Dkp = round_up(Dk, simd::lanes);
  const std::int64_t f32 = Rp * (Dk + Dvp + key_block + 3) + key_block * (2 * Dkp + Dvp);
  const std::int64_t R16 = round_up(rows, 16), K2 = round_up(Dk, 32) / 2;
  const std::int64_t b16 = R16 * (K2 + Dvp + 2 * key_block + 3) + key_block * 2 * K2 + key_block / 2 * Dvp;
  return static_cast<std::size_t>(f32 > b16 ? f32 : b16);
}

template <class TQ, class TK, class TV, class TO>
struct tiled_forward_fn : forward_fn<TQ, TK, TV, TO> {
  using base = forward_fn<TQ, TK, TV, TO>;
  std::int64_t nblocks;  ///< items are head-major: item = hk * nblocks + n (one head's keys stay in cache)

  std::size_t scratch_bytes() const {
    return tiled_scratch_floats(this->G * query_block, this->q.extent(3), this->v.extent(3)) * sizeof(float);
  }

  void operator()(std::int64_t item, void* scratch) const {
    const item_block& bl = this->blocks[item % nblocks];
    const std::int64_t hk = item / nblocks, G = this->G;
    const std::int64_t nq = bl.q1 - bl.q0, R = G * nq, Dk = this->q.extent(3), Dv = this->v.extent(3);
    const std::int64_t Rp = round_up(R, tiled::tile_rows), Dvp = round_up(Dv, simd::lanes);
    float* Q = static_cast<float*>(scratch);
    float* O = Q + Rp * Dk;
    float* S = O + Rp * Dvp;
    float* m = S + Rp * key_block;
    float* l = m + Rp;
    float* a = l + Rp;
    float* KT = a + Rp;
    float* Kb = KT + round_up(Dk, simd::lanes) * key_block;
    float* Vb = Kb + key_block * round_up(Dk, simd::lanes);
    for (std::int64_t r = 0; r < Rp; ++r) {
      const std::int64_t g = r / nq, i = r - g * nq;
      float* qr = Q + r * Dk;
      if (r >= R) {
        for (std::int64_t d = 0; d < Dk; ++d) qr[d] = 0.0f;
      } else if (std::is_same_v<TQ, float> && this->q.stride(3) == 1) {
        const TQ* src = &this->q(bl.b, bl.q0 + i, hk * G + g, 0);
        for (std::int64_t d = 0; d < Dk; ++d) qr[d] = this->scale * static_cast<float>(src[d]);
      } else {
        for (std::int64_t d = 0; d < Dk; ++d)
          qr[d] = this->scale * static_cast<float>(this->q(bl.b, bl.q0 + i, hk * G + g, d));
      }
      for (std::int64_t d = 0; d < Dvp; ++d) O[r * Dvp + d] = 0.0f;
      m[r] = neg_inf();
      l[r] = 0.0f;
      a[r] = 1.0f;
    }
    const key_range kr = item_keys(bl, this->vis);
    const std::int64_t j_lo = kr.lo, j_hi = kr.hi;
    for (std::int64_t j0 = j_lo; j0 < j_hi; j0 += key_block) {
      const std::int64_t nk = j_hi - j0 < key_block ? j_hi - j0 : key_block;
      load_block(hk, bl.b, j0, nk, Kb, KT, Vb);
      tiled::gemm(Rp, key_block, Dk, Q, Dk, 1, KT, key_block, S, key_block, false);
      for (std::int64_t r = 0; r < R; ++r) {
        const std::int64_t i = r % nq;
        softmax_row(bl, bl.q0 + i, bl.q_pos0 + i, j0, nk, S + r * key_block, m[r], l[r], a[r]);
      }
      tiled::gemm(Rp, Dvp, key_block, S, key_block, 1, Vb, Dvp, O, Dvp, true, tiled::triangle::full, a);
    }
    store_rows(bl, hk, O, Dvp, m, l);
  }

 protected:
  /// o = O / l and lse = m + log l for the item's rows (l = 0: o = 0, lse = -inf).
  void store_rows(const item_block& bl, std::int64_t hk, const float* O, std::int64_t Dvp, const float* m,
                  const float* l) const {
    const std::int64_t nq = bl.q1 - bl.q0, R = this->G * nq, Dv = this->v.extent(3);
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int64_t g = r / nq, i = r - g * nq, h = hk * this->G + g;
      const bool any = l[r] > 0.0f;
      const float inv = any ? 1.0f / l[r] : 0.0f;
      if (std::is_same_v<TO, float> && this->o.stride(3) == 1) {
        TO* dst = &this->o(bl.b, bl.q0 + i, h, 0);
        for (std::int64_t d = 0; d < Dv; ++d) dst[d] = from_accum<TO>(O[r * Dvp + d] * inv);
      } else {
        for (std::int64_t d = 0; d < Dv; ++d)
          this->o(bl.b, bl.q0 + i, h, d) = from_accum<TO>(O[r * Dvp + d] * inv);
      }
      this->lse(bl.b, h, bl.q0 + i) = any ? m[r] + std::log(l[r]) : neg_inf();
    }
  }

  /// Keys [j0, j0 + nk) into Kb (64 x Dk') and transposed into KT (Dk' x 64), values into Vb
  /// (64 x Dvp); the rest zero. Prefetches the next block.
  void load_block(std::int64_t hk, std::int64_t b, std::int64_t j0, std::int64_t nk, float* Kb, float* KT,
                  float* Vb) const {
    if (nk == key_block) {
      prefetch_rows(this->k, b, j0 + nk, key_block, hk);
      prefetch_rows(this->v, b, j0 + nk, key_block, hk);
    }
    stage_block(this->k, b, j0, nk, hk, Kb, KT);
    stage_block(this->v, b, j0, nk, hk, Vb, nullptr);
  }

  /// Row of scores s[0..64) against keys [j0, j0 + nk): visibility, softcap, the online-softmax
  /// update of m, l; s becomes P (0 where invisible), a the factor on the row's O.
  /// Whether a query at position qp sees all 64 keys [j0, j0 + 64) (none past the end, masked
  /// or out of its window).
  bool all_visible(const item_block& bl, std::int64_t qp, std::int64_t j0, std::int64_t nk) const {
    const std::int64_t kp0 = bl.k_pos0 + (j0 - bl.k0);
    const bool masked = this->mask.data() != nullptr && j0 + nk > this->mask_first;
    return nk == key_block && this->vis.lo(qp) <= kp0 && kp0 + key_block - 1 <= this->vis.hi(qp) && !masked;
  }

  void softmax_row(const item_block& bl, std::int64_t qi, std::int64_t qp, std::int64_t j0, std::int64_t nk,
                   float* s, float& m, float& l, float& a) const {
    const std::int64_t lo = this->vis.lo(qp), hi = this->vis.hi(qp);
    const std::int64_t kp0 = bl.k_pos0 + (j0 - bl.k0);
    const bool masked = this->mask.data() != nullptr && j0 + nk > this->mask_first;
    if (!all_visible(bl, qp, j0, nk))
      for (std::int64_t j = 0; j < key_block; ++j) {
        const std::int64_t kp = kp0 + j;
        bool ok = j < nk && kp >= lo && kp <= hi;
        if (ok && masked && j0 + j >= this->mask_first)
          ok = this->mask(bl.b, qi, j0 + j - this->mask_first) != 0;
        if (!ok) s[j] = neg_inf();
      }
    if (this->softcap > 0.0f) {
      const float c = this->softcap;
      for (std::int64_t j = 0; j < key_block; ++j)
        if (s[j] != neg_inf()) s[j] = c * std::tanh(s[j] / c);
    }
    simd::f32x16 v0 = simd::load(s), v1 = simd::load(s + 16), v2 = simd::load(s + 32),
                 v3 = simd::load(s + 48);
    const float mb = simd::hmax4(v0, v1, v2, v3);
    if (mb == neg_inf()) {  // nothing visible in this block: P = 0, O and m, l unchanged
      const simd::f32x16 zero{};
      simd::store(s, zero);
      simd::store(s + 16, zero);
      simd::store(s + 32, zero);
      simd::store(s + 48, zero);
      a = 1.0f;
      return;
    }
    online_update(v0, v1, v2, v3, mb, m, l, a);
    simd::store(s, v0);
    simd::store(s + 16, v1);
    simd::store(s + 32, v2);
    simd::store(s + 48, v3);
  }

  /// The online-softmax update by a row's 64 scores v0..v3 (largest mb, finite): m' = max(m, mb),
  /// a = e^{m - m'} (m = -inf: 0), v becomes P = e^{v - m'}, l' = a l + sum P, m = m'.
  static WEFT_FORCE_INLINE void online_update(simd::f32x16& v0, simd::f32x16& v1, simd::f32x16& v2,
                                              simd::f32x16& v3, float mb, float& m, float& l, float& a) {
    const float mn = m > mb ? m : mb;
    a = mn == m ? 1.0f : simd::vexp(simd::splat(m - mn))[0];
    const simd::f32x16 sub = simd::splat(mn);
    v0 = simd::vexp(v0 - sub);
    v1 = simd::vexp(v1 - sub);
    v2 = simd::vexp(v2 - sub);
    v3 = simd::vexp(v3 - sub);
    const simd::f32x16 sum = (v0 + v1) + (v2 + v3);
    float acc[simd::lanes];
    simd::store(acc, sum);
    l = a * l + simd::lane_sum(acc);
    m = mn;
  }
};

#if WEFT_BF16_TILES
/// bf16 q, k, v on the CPU's bf16 unit (core/tiles_bf16.hpp: AMX or AVX512_BF16), the same
/// blocks, visibility and online softmax as tiled_forward_fn, the products in bf16 with fp32
/// accumulation:
///   S = Q K^T    bf16 q and k as stored (every product exact), then S *= scale in fp32
///   O = diag(a) O + P_hi V + P_lo V, where P_hi = bf16(P), P_lo = bf16(P - P_hi): P carried to
///                2^-16 of its value (one bf16 P, as GPU kernels keep it, errs by 2^-8)
/// Without a bf16 unit (or below the AVX-512 level) it runs tiled_forward_fn's fp32 products.
template <class TO>
struct tiled_bf16_forward_fn : tiled_forward_fn<bf16, bf16, bf16, TO> {
  using base = tiled_forward_fn<bf16, bf16, bf16, TO>;

  void operator()(std::int64_t item, void* scratch) const {
    const tiled::bf16_unit u = tiled::active_bf16_unit();
    if (u == tiled::bf16_unit::none) return base::operator()(item, scratch);
    const item_block& bl = this->blocks[item % this->nblocks];
    const std::int64_t hk = item / this->nblocks, G = this->G;
    const std::int64_t nq = bl.q1 - bl.q0, R = G * nq, Dk = this->q.extent(3), Dv = this->v.extent(3);
    const std::int64_t Rp = round_up(R, 16), K2 = round_up(Dk, 32) / 2, Dvp = round_up(Dv, simd::lanes);
    constexpr std::int64_t half = key_block / 2;  // pairs of keys in a block
    // Layout (4-byte words; tiled_scratch_floats counts it): the word regions are written and
    // read as 32-bit lanes or bytes only.
    auto* Q2 = static_cast<std::uint32_t*>(scratch);
    float* O = reinterpret_cast<float*>(Q2 + Rp * K2);
    float* S = O + Rp * Dvp;
    float* m = S + Rp * key_block;
    float* l = m + Rp;
    float* a = l + Rp;
    auto* Ph = reinterpret_cast<std::uint32_t*>(a + Rp);
    std::uint32_t* Pl = Ph + Rp * half;
    std::uint32_t* Kw = Pl + Rp * half;
    std::uint32_t* KT = Kw + key_block * K2;
    std::uint32_t* V2 = KT + K2 * key_block;
    for (std::int64_t r = 0; r < Rp; ++r) {
      const std::int64_t g = r / nq, i = r - g * nq;
      std::uint32_t* qr = Q2 + r * K2;
      const std::int64_t w = r < R ? (Dk + 1) / 2 : 0;
      if (w > 0) copy_bits(qr, this->q, bl.b, bl.q0 + i, hk * G + g, Dk);
      for (std::int64_t p = w; p < K2; ++p) qr[p] = 0;
      for (std::int64_t d = 0; d < Dvp; ++d) O[r * Dvp + d] = 0.0f;
      std::memset(Ph + r * half, 0, half * 4);  // rows past R stay 0
      std::memset(Pl + r * half, 0, half * 4);
      m[r] = neg_inf();
      l[r] = 0.0f;
      a[r] = 1.0f;
    }
    const key_range kr = item_keys(bl, this->vis);
    for (std::int64_t j0 = kr.lo; j0 < kr.hi; j0 += key_block) {
      const std::int64_t nk = kr.hi - j0 < key_block ? kr.hi - j0 : key_block;
      stage_keys(hk, bl.b, j0, nk, K2, Kw, KT, V2, Dvp);
      tiled::gemm_bf16(u, Rp, key_block, K2, Q2, K2, KT, key_block, S, key_block, false);
      for (std::int64_t r = 0; r < R; ++r) {
        const std::int64_t i = r % nq;
        float* s = S + r * key_block;
        if (this->softcap == 0.0f && this->all_visible(bl, bl.q_pos0 + i, j0, nk)) {
          full_row(s, m[r], l[r], a[r], Ph + r * half, Pl + r * half);
        } else {
          const simd::f32x16 sc = simd::splat(this->scale);
          for (std::int64_t t = 0; t < key_block; t += simd::lanes)
            simd::store(s + t, simd::load(s + t) * sc);
          this->softmax_row(bl, bl.q0 + i, bl.q_pos0 + i, j0, nk, s, m[r], l[r], a[r]);
          for (int h = 0; h < key_block; h += 2 * simd::lanes)
            split_pair(simd::load(s + h), simd::load(s + h + simd::lanes), Ph + r * half + h / 2,
                       Pl + r * half + h / 2);
        }
        if (a[r] != 1.0f) {
          const simd::f32x16 ar = simd::splat(a[r]);
          for (std::int64_t d = 0; d < Dvp; d += simd::lanes)
            simd::store(O + r * Dvp + d, simd::load(O + r * Dvp + d) * ar);
        }
      }
      tiled::gemm_bf16(u, Rp, Dvp, half, Ph, half, V2, Dvp, O, Dvp, true, Pl);
    }
    this->store_rows(bl, hk, O, Dvp, m, l);
  }

 private:
  /// The bf16 bits of x(b, j, h, 0..n) into words dst[0..(n + 1) / 2) (an odd n: the last high half 0).
  static void copy_bits(std::uint32_t* dst, const tensor_view<const bf16, 4>& x, std::int64_t b,
                        std::int64_t j, std::int64_t h, std::int64_t n) {
    // pairs of elements into words (a loop the compiler vectorises: memcpy of a run-time size
    // was a library call per row, 9% of the time)
    const std::int64_t s = x.stride(3);
    const bf16* src = &x(b, j, h, 0);
    auto word = [](const bf16& lo, const bf16& hi) {
      return static_cast<std::uint32_t>(lo.bits) | static_cast<std::uint32_t>(hi.bits) << 16;
    };
    if (s == 1) {
      for (std::int64_t p = 0; p < n / 2; ++p) dst[p] = word(src[2 * p], src[2 * p + 1]);
    } else {
      for (std::int64_t p = 0; p < n / 2; ++p) dst[p] = word(src[2 * p * s], src[(2 * p + 1) * s]);
    }
    if (n % 2 == 1) dst[n / 2] = src[(n - 1) * s].bits;
  }

  /// 32 values of P (finite, >= 0) as P_hi + P_lo, both bf16 rounded to nearest, in key pairs
  /// (word t: elements 2t, 2t + 1), 16 words each.
  static WEFT_FORCE_INLINE void split_pair(const simd::f32x16& x0, const simd::f32x16& x1, std::uint32_t* hi,
                                           std::uint32_t* lo) {
    using simd::u32x16;
    auto rne = [](const u32x16& x) { return (x + 0x7fffu + (x >> 16 & 1u)) & 0xffff0000u; };
    const u32x16 h0 = rne(reinterpret_cast<u32x16>(x0)), h1 = rne(reinterpret_cast<u32x16>(x1));
    const simd::f32x16 r0 = x0 - reinterpret_cast<simd::f32x16>(h0);  // exact
    const simd::f32x16 r1 = x1 - reinterpret_cast<simd::f32x16>(h1);
    const u32x16 l0 = rne(reinterpret_cast<u32x16>(r0)), l1 = rne(reinterpret_cast<u32x16>(r1));
    const u32x16 hw = pack_pairs(h0, h1), lw = pack_pairs(l0, l1);
    std::memcpy(hi, &hw, sizeof hw);
    std::memcpy(lo, &lw, sizeof lw);
  }

  /// A row that sees all 64 keys, no softcap: the scale, the online-softmax update and the split
  /// of P in registers (softmax_row's arithmetic, without the trips through memory).
  void full_row(const float* s, float& m, float& l, float& a, std::uint32_t* hi, std::uint32_t* lo) const {
    const simd::f32x16 sc = simd::splat(this->scale);
    simd::f32x16 v0 = simd::load(s) * sc, v1 = simd::load(s + 16) * sc, v2 = simd::load(s + 32) * sc,
                 v3 = simd::load(s + 48) * sc;
    const float mb = simd::hmax4(v0, v1, v2, v3);
    this->online_update(v0, v1, v2, v3, mb, m, l, a);
    split_pair(v0, v1, hi, lo);
    split_pair(v2, v3, hi + 16, lo + 16);
  }

  /// Words of the high halves of 32 lanes (a then b): word t = lane 2t's >> 16 | lane 2t+1's.
  static WEFT_FORCE_INLINE simd::u32x16 pack_pairs(const simd::u32x16& a, const simd::u32x16& b) {
#if defined(__GNUC__) && !defined(__clang__)
    const simd::u32x16 even =
        __builtin_shuffle(a, b, simd::u32x16{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
    const simd::u32x16 odd =
        __builtin_shuffle(a, b, simd::u32x16{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
#else
    const simd::u32x16 even =
        __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const simd::u32x16 odd =
        __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#endif
    return (even >> 16) | odd;
  }

  /// Keys [j0, j0 + nk) of head hk: rows into Kw (64 x K2 words), transposed into KT (K2 x 64
  /// words: the key pairs along Dk, "VNNI"); values in pairs of rows into V2 (32 x Dvp words);
  /// everything past nk keys, Dk and Dv zero. Prefetches the next block.
  void stage_keys(std::int64_t hk, std::int64_t b, std::int64_t j0, std::int64_t nk, std::int64_t K2,
                  std::uint32_t* Kw, std::uint32_t* KT, std::uint32_t* V2, std::int64_t Dvp) const {
    const std::int64_t Dk = this->k.extent(3), Dv = this->v.extent(3);
    if (nk == key_block) {
      prefetch_rows(this->k, b, j0 + nk, key_block, hk);
      prefetch_rows(this->v, b, j0 + nk, key_block, hk);
    }
    for (std::int64_t j = 0; j < key_block; ++j) {
      std::uint32_t* r = Kw + j * K2;
      const std::int64_t w = j < nk ? (Dk + 1) / 2 : 0;  // words written from the row
      if (w > 0) copy_bits(r, this->k, b, j0 + j, hk, Dk);
      for (std::int64_t p = w; p < K2; ++p) r[p] = 0;
    }
    for (std::int64_t jb = 0; jb < key_block; jb += simd::lanes)
      for (std::int64_t pb = 0; pb < K2; pb += simd::lanes)
        tiled::transpose16([&](int r, simd::f32x16& row) { std::memcpy(&row, Kw + (jb + r) * K2 + pb, 64); },
                           reinterpret_cast<float*>(KT + pb * key_block + jb), key_block);
    const std::int64_t s = this->v.stride(3);
    for (std::int64_t jp = 0; jp < key_block / 2; ++jp) {
      std::uint32_t* out = V2 + jp * Dvp;
      const std::int64_t j = 2 * jp;
      const bf16* lo = j < nk ? &this->v(b, j0 + j, hk, 0) : nullptr;
      const bf16* hi = j + 1 < nk ? &this->v(b, j0 + j + 1, hk, 0) : nullptr;
      std::int64_t d = 0;
      if (hi != nullptr && s == 1) {
        for (; d < Dv; ++d)
          out[d] = static_cast<std::uint32_t>(lo[d].bits) | static_cast<std::uint32_t>(hi[d].bits) << 16;
      } else if (hi != nullptr) {
        for (; d < Dv; ++d)
          out[d] = static_cast<std::uint32_t>(lo[d * s].bits) | static_cast<std::uint32_t>(hi[d * s].bits)
                                                                    << 16;
      } else if (lo != nullptr) {
        for (; d < Dv; ++d) out[d] = lo[d * s].bits;
      }
      for (; d < Dvp; ++d) out[d] = 0;
    }
  }
};
#endif

/// The host forward item of q, k, v: on a bf16 unit when all three are bf16.
template <class TQ, class TK, class TV, class TO>
auto make_tiled_forward(const forward_fn<TQ, TK, TV, TO>& f, std::int64_t nblocks) {
#if WEFT_BF16_TILES
  if constexpr (std::is_same_v<TQ, bf16> && std::is_same_v<TK, bf16> && std::is_same_v<TV, bf16>)
    return tiled_bf16_forward_fn<TO>{{f, nblocks}};
  else
#endif
    return tiled_forward_fn<TQ, TK, TV, TO>{f, nblocks};
}

}  // namespace weft::detail::attention
