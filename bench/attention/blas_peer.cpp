// bench/attention/blas_peer.cpp - the sgemm-blocked peer (see blas_peer.hpp). Built with
// -fno-math-errno -mprefer-vector-width=512 (bench/attention/CMakeLists.txt): std::exp is then a
// pure function that GCC vectorises through glibc's libmvec (_ZGVeN16v_expf with AVX-512),
// declared below as glibc's <math.h> declares it under -ffast-math.
#include "blas_peer.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GLIBC__)
#pragma omp declare simd notinbranch
extern "C" float expf(float) noexcept;
#endif

namespace weft_bench {

namespace {

using clock = std::chrono::steady_clock;

double since(clock::time_point& t) {
  const auto now = clock::now();
  const double s = std::chrono::duration<double>(now - t).count();
  t = now;
  return s;
}

/// Row r of the block is query i0 + r and sees keys [0, i0 + r]: s[0, n) holds its scores on
/// entry and its unnormalised probabilities on exit (0 past the diagonal); returns their sum.
float softmax_row(float* __restrict s, std::int64_t seen, std::int64_t n) {
  float m = s[0];
#pragma omp simd reduction(max : m)
  for (std::int64_t j = 0; j < seen; ++j) m = std::max(m, s[j]);
  float l = 0;
#pragma omp simd reduction(+ : l)
  for (std::int64_t j = 0; j < seen; ++j) {
    const float e = std::exp(s[j] - m);
    s[j] = e;
    l += e;
  }
  for (std::int64_t j = seen; j < n; ++j) s[j] = 0.0f;
  return l;
}

}  // namespace

void sgemm_attention_forward(const sgemm_attention_problem& p, bool pack, sgemm_attention_profile* prof) {
  const std::int64_t T = p.T, H = p.H, D = p.D, ld = H * D, Bq = sgemm_attention_block;
  const std::int64_t nb = (T + Bq - 1) / Bq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  static std::vector<float> packed;  // K then V, [H, T, D] each; kept between calls, as a user would
  if (pack && packed.size() != static_cast<std::size_t>(2 * T * ld)) {
    packed.clear();
    packed.shrink_to_fit();
    packed.resize(static_cast<std::size_t>(2 * T * ld));
  }
#pragma omp parallel
  {
    thread_local std::vector<float> S;  // 128 x T scores / probabilities
    S.resize(static_cast<std::size_t>(Bq * T));
    float lsum[sgemm_attention_block];
    sgemm_attention_profile mine;
    auto t = clock::now();
    if (pack) {
#pragma omp for schedule(static)
      for (std::int64_t ht = 0; ht < H * T; ++ht) {
        const std::int64_t h = ht / T, j = ht % T;
        std::memcpy(&packed[static_cast<std::size_t>((h * T + j) * D)], p.k + j * ld + h * D,
                    static_cast<std::size_t>(D) * sizeof(float));
        std::memcpy(&packed[static_cast<std::size_t>(((H + h) * T + j) * D)], p.v + j * ld + h * D,
                    static_cast<std::size_t>(D) * sizeof(float));
      }
      mine.pack += since(t);  // with the wait at the barrier
    }
    // (head, block) items, the longest blocks (the last queries) first
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t it = 0; it < H * nb; ++it) {
      const std::int64_t h = it % H, i0 = (nb - 1 - it / H) * Bq, L = std::min(Bq, T - i0), n = i0 + L;
      const float* kh = pack ? packed.data() + h * T * D : p.k + h * D;
      const float* vh = pack ? packed.data() + (H + h) * T * D : p.v + h * D;
      const std::int64_t ldkv = pack ? D : ld;
      float* o = p.o + i0 * ld + h * D;
      t = clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(L), static_cast<int>(n),
                  static_cast<int>(D), scale, p.q + i0 * ld + h * D, static_cast<int>(ld), kh,
                  static_cast<int>(ldkv), 0.0f, S.data(), static_cast<int>(n));
      mine.qk += since(t);
      for (std::int64_t r = 0; r < L; ++r) lsum[r] = softmax_row(S.data() + r * n, i0 + r + 1, n);
      mine.softmax += since(t);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(L), static_cast<int>(D),
                  static_cast<int>(n), 1.0f, S.data(), static_cast<int>(n), vh, static_cast<int>(ldkv), 0.0f,
                  o, static_cast<int>(ld));
      mine.pv += since(t);
      for (std::int64_t r = 0; r < L; ++r) {
        const float inv = 1.0f / lsum[r];
        for (std::int64_t d = 0; d < D; ++d) o[r * ld + d] *= inv;
      }
      mine.softmax += since(t);
    }
    if (prof) {
#pragma omp critical(weft_sgemm_attention_profile)
      {
        prof->pack += mine.pack;
        prof->qk += mine.qk;
        prof->softmax += mine.softmax;
        prof->pv += mine.pv;
      }
    }
  }
}

}  // namespace weft_bench
