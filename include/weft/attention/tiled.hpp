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
#include <type_traits>

#include "weft/attention/blockwise.hpp"
#include "weft/core/simd.hpp"
#include "weft/core/tiles.hpp"

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
inline std::size_t tiled_scratch_floats(std::int64_t rows, std::int64_t Dk, std::int64_t Dv) {
  const std::int64_t Rp = round_up(rows, tiled::tile_rows), Dvp = round_up(Dv, simd::lanes);
  const std::int64_t Dkp = round_up(Dk, simd::lanes);
  return static_cast<std::size_t>(Rp * (Dk + Dvp + key_block + 3) + key_block * (2 * Dkp + Dvp));
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
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int64_t g = r / nq, i = r - g * nq, h = hk * G + g;
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

 private:
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
  void softmax_row(const item_block& bl, std::int64_t qi, std::int64_t qp, std::int64_t j0, std::int64_t nk,
                   float* s, float& m, float& l, float& a) const {
    const std::int64_t lo = this->vis.lo(qp), hi = this->vis.hi(qp);
    const std::int64_t kp0 = bl.k_pos0 + (j0 - bl.k0);
    const bool masked = this->mask.data() != nullptr && j0 + nk > this->mask_first;
    const bool all = nk == key_block && lo <= kp0 && kp0 + key_block - 1 <= hi && !masked;
    if (!all)
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
    const simd::f32x16 x = simd::select(v0 > v1, v0, v1), y = simd::select(v2 > v3, v2, v3);
    float mx[simd::lanes];
    simd::store(mx, simd::select(x > y, x, y));
    float mb = neg_inf();
    for (int t = 0; t < simd::lanes; ++t) mb = mx[t] > mb ? mx[t] : mb;
    if (mb == neg_inf()) {  // nothing visible in this block: P = 0, O and m, l unchanged
      const simd::f32x16 zero{};
      simd::store(s, zero);
      simd::store(s + 16, zero);
      simd::store(s + 32, zero);
      simd::store(s + 48, zero);
      a = 1.0f;
      return;
    }
    const float mn = m > mb ? m : mb;
    a = std::exp(m - mn);  // m = -inf: 0
    const simd::f32x16 sub = simd::splat(mn);
    v0 = simd::vexp(v0 - sub);
    v1 = simd::vexp(v1 - sub);
    v2 = simd::vexp(v2 - sub);
    v3 = simd::vexp(v3 - sub);
    simd::store(s, v0);
    simd::store(s + 16, v1);
    simd::store(s + 32, v2);
    simd::store(s + 48, v3);
    const simd::f32x16 sum = (v0 + v1) + (v2 + v3);
    float acc[simd::lanes];
    simd::store(acc, sum);
    l = a * l + simd::lane_sum(acc);
    m = mn;
  }
};

}  // namespace weft::detail::attention
