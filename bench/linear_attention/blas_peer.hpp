// bench/linear_attention/blas_peer.hpp - the OpenBLAS peer of bench_linear_attention: the chunk
// form with one cblas_sgemm per product per chunk. Its own translation unit (blas_peer.cpp),
// compiled with -fno-math-errno -mprefer-vector-width=512 so that its exp loops vectorise
// (glibc's libmvec), as an engineer writing this reference with OpenBLAS would build it; weft's
// code is not compiled with these flags.
#pragma once

#include <cstdint>
#include <string>

namespace weft_bench {

/// Inputs [1,T,H,K] / [1,T,H,V] row-major; g [1,T,H] (scalar gate) or gv [1,T,H,K] (vector gate),
/// log decays; o [1,T,H,V] is written.
struct blas_problem {
  const float *q, *k, *v, *g, *gv;
  float* o;
  std::int64_t T, H, K, V;
};

/// OpenBLAS single-threaded inside (the peer runs heads in parallel over OpenMP threads).
void blas_single_threaded();

/// openblas_get_corename() and openblas_get_config(): the kernels OpenBLAS picked.
std::string blas_corename();
std::string blas_config();

/// o = the chunk-form forward (chunk C, scale K^-1/2) with the scalar or the vector gate.
void blas_chunk_forward(const blas_problem& p, bool vector_gate, int C);

/// Calls of exp per (chunk of C, head) that blas_chunk_forward makes (evaluations: the vector
/// gate's run 16 (AVX-512) or 8 (AVX2) per libmvec call where the loop vectorises).
std::int64_t blas_exp_per_chunk_head(bool vector_gate, int C, std::int64_t K);

}  // namespace weft_bench
