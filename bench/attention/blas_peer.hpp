// bench/attention/blas_peer.hpp - the sgemm-blocked peer of bench_attention (issue 20's "reference
// that blocks 128 queries and calls OpenBLAS sgemm"). Its own translation unit (blas_peer.cpp),
// compiled with -fno-math-errno -mprefer-vector-width=512 so that its exp loop vectorises through
// glibc's libmvec, as an engineer writing this reference with OpenBLAS would build it (the same
// flags as bench/linear_attention's OpenBLAS peer); weft's code is not compiled with these flags.
#pragma once

#include <cstdint>

namespace weft_bench {

/// B = 1, causal, Hq = Hkv: q, k, v, o row-major [T, H, D] (weft's [1, T, H, D]); scale D^-1/2.
struct sgemm_attention_problem {
  const float *q, *k, *v;
  float* o;
  std::int64_t T, H, D;
};

/// Seconds spent in each phase, summed over the threads (one instrumented call).
struct sgemm_attention_profile {
  double pack = 0, qk = 0, softmax = 0, pv = 0;
  double total() const { return pack + qk + softmax + pv; }
};

/// Query rows per block (one pair of sgemm calls per (head, block)).
inline constexpr std::int64_t sgemm_attention_block = 128;

/// o = softmax(scale Q K^T, causal) V. K and V are packed per head into contiguous [T, D]
/// buffers once per call (`pack`; otherwise sgemm reads them strided, lda = H D). For each
/// (head, block of 128 queries [i0, i0 + 128)), in parallel over OpenMP threads with OpenBLAS
/// single-threaded inside: S = scale Q K^T over keys [0, i0 + 128) (one cblas_sgemm), the causal
/// mask on the diagonal block and the row softmax (max, exp, sum) in plain loops, O = P V (one
/// cblas_sgemm) and O /= the row sums. `prof`, when given, receives the time of each phase.
void sgemm_attention_forward(const sgemm_attention_problem& p, bool pack,
                             sgemm_attention_profile* prof = nullptr);

}  // namespace weft_bench
