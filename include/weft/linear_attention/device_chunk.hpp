// weft/linear_attention/device_chunk.hpp - the chunk form as one thread block computes it
// (CUDA): gates none / scalar / mLSTM, K <= 128, one block per (sequence, head, 32-column
// slice of V). Written as a host/device function of (thread id, thread count, barrier) so
// that the kernel in cuda.cuh runs it with threadIdx / __syncthreads and the tests run the
// same code on the host with one thread (tests/linear_attention/test_la_device_paths.cpp).
//
// Per chunk of 64 tokens (larger chunk sizes run as 64-token sub-chunks: the same result up
// to rounding), with Q, K and the V slice staged in shared memory (rows padded to K + 1
// floats against bank conflicts) and the slice S (K x 32) of the state resident there:
//   A = (Q K^T) (.) W        W_ij = exp(P_i - P_j + li_j - m_i), causal, 0 across resets
//   O = diag(w_inter) Q S + A V_slice         (mLSTM: / (max(|den|, exp(-m)) + eps))
//   S = w_S S + (K (.) w_k)^T V_slice
// The gate tables (fp64 log decays since the last reset, stabilizers) are built by thread 0.
#pragma once

#include <cstddef>
#include <cstdint>

#include "weft/core/math.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft::detail::la::dev {

inline constexpr int chunk_rows = 64;  ///< tokens per (sub-)chunk
inline constexpr int slice = 32;       ///< value columns per block
inline constexpr int max_k = 128;      ///< largest K of the chunk kernel
inline constexpr int chunk_threads = 256;

/// Shared memory of chunk_kernel for key dimension K (bytes).
WEFT_INLINE std::size_t chunk_smem_bytes(std::int64_t K) {
  const std::size_t tables = chunk_rows * (3 * sizeof(double) + sizeof(int));
  const std::size_t floats = K * slice + 2 * chunk_rows * (K + 1) + chunk_rows * slice +
                             chunk_rows * chunk_rows + K + 3 * chunk_rows;
  return tables + floats * sizeof(float);
}

/// One block's share of the chunk form: block index `block` of N * H * slices, thread `tid`
/// of `nt`; `smem` holds chunk_smem_bytes(K) bytes, `m_state` is shared by the block, `sync`
/// is the block barrier. nm: the initial mLSTM normalizer and stabilizer [N,H,K+1].
template <class Gate, class E, class Sync>
WEFT_INLINE void chunk_block(const Gate& gate, const args<E>& a, const float* nm, int slices,
                             std::int64_t block, int tid, int nt, unsigned char* smem, double& m_state,
                             const Sync& sync) {
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_mlstm = kd == kind::mlstm;
  const int K = static_cast<int>(a.K), ldk = K + 1;
  const std::int64_t nh = block / slices, n = nh / a.H, h = nh % a.H;
  const int v0 = static_cast<int>(block % slices) * slice,
            vn = static_cast<int>(a.V - v0 < slice ? a.V - v0 : slice);
  double* P = reinterpret_cast<double*>(smem);  // log decay since the last reset
  double* li = P + chunk_rows;                  // mLSTM log input gates
  double* mrow = li + chunk_rows;               // row stabilizers
  int* seg = reinterpret_cast<int*>(mrow + chunk_rows);
  float* S = reinterpret_cast<float*>(seg + chunk_rows);  // (K, slice)
  float* Qs = S + K * slice;                              // (64, K+1), scale q
  float* Ks = Qs + chunk_rows * ldk;                      // (64, K+1)
  float* Vs = Ks + chunk_rows * ldk;                      // (64, slice)
  float* A = Vs + chunk_rows * slice;                     // (64, 64)
  float* nv = A + chunk_rows * chunk_rows;                // (K) mLSTM normalizer
  float* wi = nv + K;                                     // (64) inter weights, then key weights
  float* den = wi + chunk_rows;                           // (64)
  const bool stab = mlstm_stabilized(gate);
  const float scale = static_cast<float>(a.scale);

  for (int x = tid; x < K * slice; x += nt) {
    const int k = x / slice, v = x % slice;
    S[x] = (v < vn && given(a.s0)) ? a.s0(n, h, k, v0 + v) : 0.0f;
  }
  if (is_mlstm)
    for (int k = tid; k < K; k += nt) nv[k] = nm[nh * (K + 1) + k];
  if (tid == 0) m_state = is_mlstm ? nm[nh * (K + 1) + K] : 0.0;
  const seq_range r = sequence(a, n);
  const std::int64_t b = r.b;
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += chunk_rows) {
    const int L = static_cast<int>(r.t1 - c0 < chunk_rows ? r.t1 - c0 : chunk_rows);
    sync();  // the previous chunk is done with the tiles
    for (int x = tid; x < L * K; x += nt) {
      const int i = x / K, k = x % K;
      Qs[i * ldk + k] = load<float>(a.q(b, c0 + i, h, k)) * scale;
      Ks[i * ldk + k] = load<float>(a.k(b, c0 + i, h, k));
    }
    for (int x = tid; x < L * slice; x += nt) {
      const int j = x / slice, v = x % slice;
      Vs[x] = v < vn ? load<float>(a.v(b, c0 + j, h, v0 + v)) : 0.0f;
    }
    if (tid == 0) {  // gate tables, in order
      const double m0 = m_state;
      int last = -1;
      double p = 0, best = -infinity<double>();
      for (int s = 0; s < L; ++s) {
        const double la = log_decay<double>(gate, b, c0 + s, h);
        if (la == -infinity<double>()) {
          last = s;
          p = 0;
          best = -infinity<double>();
        } else {
          p += la;
        }
        seg[s] = last;
        P[s] = p;
        li[s] = is_mlstm ? log_input<double>(gate, b, c0 + s, h) : 0.0;
        if (stab) {
          best = best > li[s] - p ? best : li[s] - p;
          const double inter = (last >= 0 ? -infinity<double>() : p) + m0;
          mrow[s] = inter > p + best ? inter : p + best;
        } else {
          mrow[s] = 0;
        }
      }
    }
    sync();
    const double m0 = m_state;
    for (int x = tid; x < L * L; x += nt) {  // A = (Q K^T) (.) W
      const int i = x / L, j = x % L;
      float y = 0;
      if (j <= i && seg[i] <= j) {
        for (int k = 0; k < K; ++k) y += Qs[i * ldk + k] * Ks[j * ldk + k];
        y *= static_cast<float>(exp_minus(P[i] - P[j] + li[j], mrow[i]));
      }
      A[i * chunk_rows + j] = y;
    }
    for (int i = tid; i < L; i += nt)
      wi[i] = static_cast<float>(exp_minus((seg[i] >= 0 ? -infinity<double>() : P[i]) + m0, mrow[i]));
    sync();
    if constexpr (is_mlstm) {
      for (int i = tid; i < L; i += nt) {
        float qn = 0, rs = 0;
        for (int k = 0; k < K; ++k) qn += Qs[i * ldk + k] * nv[k];
        for (int j = 0; j <= i; ++j) rs += A[i * chunk_rows + j];
        const float d = wi[i] * qn + rs, ad = d < 0 ? -d : d;
        const float floor = stab ? static_cast<float>(exp(-mrow[i])) : 1.0f;
        den[i] = (ad > floor ? ad : floor) + gate.eps;
      }
      sync();
    }
    for (int x = tid; x < L * vn; x += nt) {  // O = diag(w_inter) Q S + A V
      const int i = x / vn, v = x % vn;
      float y = 0;
      for (int k = 0; k < K; ++k) y += Qs[i * ldk + k] * S[k * slice + v];
      y *= wi[i];
      for (int j = 0; j <= i; ++j) y += A[i * chunk_rows + j] * Vs[j * slice + v];
      if (is_mlstm) y /= den[i];
      a.o(b, c0 + i, h, v0 + v) = from_accum<E>(y);
    }
    sync();  // wi is reused below; S is read above
    const int end = L - 1;
    const double m1 = mrow[end];
    const float ws = static_cast<float>(exp_minus((seg[end] >= 0 ? -infinity<double>() : P[end]) + m0, m1));
    for (int j = tid; j < L; j += nt)
      wi[j] = seg[end] > j ? 0.0f : static_cast<float>(exp_minus(P[end] - P[j] + li[j], m1));
    sync();
    for (int x = tid; x < K * slice; x += nt) {  // S = w_S S + (K (.) w)^T V
      const int k = x / slice, v = x % slice;
      float y = ws * S[x];
      for (int j = 0; j < L; ++j) y += wi[j] * Ks[j * ldk + k] * Vs[j * slice + v];
      S[x] = y;
    }
    if (is_mlstm)
      for (int k = tid; k < K; k += nt) {
        float y = ws * nv[k];
        for (int j = 0; j < L; ++j) y += wi[j] * Ks[j * ldk + k];
        nv[k] = y;
      }
    sync();
    if (tid == 0) m_state = m1;
  }
  sync();
  if (given(a.s1))
    for (int x = tid; x < K * slice; x += nt) {
      const int k = x / slice, v = x % slice;
      if (v < vn) a.s1(n, h, k, v0 + v) = S[x];
    }
  if (v0 == 0) {
    if (given(a.n1))
      for (int k = tid; k < K; k += nt) a.n1(n, h, k) = nv[k];
    if (given(a.m1) && tid == 0) a.m1(n, h) = static_cast<float>(m_state);
  }
}

}  // namespace weft::detail::la::dev
