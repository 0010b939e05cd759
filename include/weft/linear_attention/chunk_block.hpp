// weft/linear_attention/chunk_block.hpp - the chunk form as one thread block computes it
// (CUDA): every gate kind, K <= 128, one block per (sequence, head, 32-column slice of V).
// Written as a host/device function of (thread id, thread count, barrier) so that the kernel
// in cuda.cuh runs it with threadIdx / __syncthreads and the tests run the same code on the
// host, with one thread and with several threads meeting at a std::barrier
// (tests/linear_attention/test_la_device_paths.cpp).
//
// Per chunk of 64 tokens (other chunk sizes run as 64-token chunks: the same result up to
// rounding), with Q, K and the V slice staged in shared memory (rows padded to K + 1 floats
// against bank conflicts) and the slice S (K x 32) of the state resident there:
//   scalar kinds (none, scalar, mLSTM):
//     A = (Q K^T) (.) W        W_ij = exp(P_i - P_j + li_j - m_i), causal, 0 across resets
//     O = diag(w_inter) Q S + A V_slice         (mLSTM: / (max(|den|, exp(-m)) + eps))
//     S = w_S S + (K (.) w_k)^T V_slice
//     The gate tables (fp64 log decays since the last reset, stabilizers) are built by thread 0.
//   delta rules: V_slice is replaced by U = (I + Lmat)^-1 beta (V - diag(gamma) K S) (WY form,
//     Lmat_jl = beta_j D(j,l) k_j.k_l for l < j), solved by 16-row blocks: the diagonal blocks
//     inverted column-parallel, then U_d = T_dd (R_d - Lmat_d,<d U_<d); the rest as above.
//   vector (GLA): per-channel decays a = exp(g) kept as products, never as differences of
//     log sums (-inf gates are exact): A within 16-row sub-blocks from the products
//     themselves, across sub-blocks from q decayed from its sub-block start times k decayed
//     to that start (both factors <= 1); O adds (q (.) decay from the chunk start) S.
//
// Phases per chunk: stage_chunk, gate_tables (thread 0), wy_solve (delta rules), then
// vector_intra + vector_output_state (GLA) or scalar_outputs + scalar_state (the rest);
// load_block_state / store_block_state around the chunks. The phases are force-inlined: the
// kernel is one function, as written before the split.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "weft/core/config.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/math.hpp"
#include "weft/linear_attention/args.hpp"

namespace weft::detail::la::kernels {

inline constexpr int chunk_rows = 64;  ///< tokens per (sub-)chunk
inline constexpr int slice = 32;       ///< value columns per block
inline constexpr int max_k = 128;      ///< largest K of the chunk kernel
inline constexpr int chunk_threads = 256;
inline constexpr int sub = 16;  ///< vector gate: rows per sub-block; delta: rows per diagonal block
inline constexpr int subs = chunk_rows / sub;

/// Shared memory of chunk_kernel for gate kind kd and key dimension K (bytes).
WEFT_INLINE constexpr std::size_t chunk_smem_bytes(kind kd, std::int64_t K) {
  const std::size_t tables = chunk_rows * (3 * sizeof(double) + sizeof(int));
  std::size_t floats = K * slice + 2 * chunk_rows * (K + 1) + chunk_rows * slice + chunk_rows * chunk_rows +
                       K + 3 * chunk_rows;
  if (kd == kind::delta || kd == kind::gated_delta) floats += subs * sub * sub + sub * slice;
  if (kd == kind::vector) floats += chunk_rows * (K + 1) + (subs + 1) * K;
  return tables + floats * sizeof(float);
}

/// Vector gate: scales key rows [0, hi) of Ks (ld ldk) in place by decays, one thread per
/// channel: rows [lo, hi) by the decay from themselves to hi - 1 (prod_{s=j+1}^{hi-1} a_s),
/// rows [0, lo), which hold the decay to lo - 1, by the decay over [lo, hi). Every factor is
/// at most 1, so nothing overflows; what underflows is below any contribution that counts.
WEFT_INLINE void decay_keys_to(float* Ks, const float* Ag, int ldk, int lo, int hi, int K, int tid, int nt) {
  for (int k = tid; k < K; k += nt) {
    float d = 1;
    for (int j = hi - 1; j >= lo; --j) {
      Ks[j * ldk + k] *= d;
      d *= Ag[j * ldk + k];
    }
    for (int j = 0; j < lo; ++j) Ks[j * ldk + k] *= d;
  }
}
/// The mLSTM normalizer and stabilizer of (sequence, head) nh staged into nm [N,H,K+1] (thread
/// tid of nt), so that the blocks of one (sequence, head) read them while another block writes
/// the final ones (in place). The CUDA load_nm_kernel runs it, one block per nh.
template <class E>
WEFT_INLINE void load_nm(const args<E>& a, float* nm, std::int64_t nh, int tid, int nt) {
  const std::int64_t n = nh / a.H, h = nh % a.H;
  for (std::int64_t i = tid; i < a.K; i += nt) nm[nh * (a.K + 1) + i] = given(a.n0) ? a.n0(n, h, i) : 0.0f;
  if (tid == 0) nm[nh * (a.K + 1) + a.K] = given(a.m0) ? a.m0(n, h) : 0.0f;
}

/// One block of chunk_block: its place (sequence n, head h, value columns [v0, v0 + vn)), this
/// thread (tid of nt) and its shared memory, carved from chunk_smem_bytes(kind, K) bytes.
struct block_tiles {
  int K, ldk;   ///< key dimension; row stride of Qs, Ks, Ag (K + 1)
  int v0, vn;   ///< the value slice
  int tid, nt;  ///< this thread, the block's threads
  std::int64_t nh, n, h, b;
  double* P;       ///< log decay since the last reset (64)
  double* li;      ///< mLSTM log input gates (64)
  double* mrow;    ///< row stabilizers (64)
  int* seg;        ///< index of the last reset at or before the row, -1 if none (64)
  float* S;        ///< (K, slice) the state slice
  float *Qs, *Ks;  ///< (64, K+1) scale q, k
  float* Vs;       ///< (64, slice); delta: R, then U
  float* A;        ///< (64, 64)
  float* nv;       ///< (K) mLSTM normalizer
  float* wi;       ///< (64) inter weights, then key weights
  float* den;      ///< (64) mLSTM denominators; delta: beta
  float *Tb, *Mt;  ///< delta: (I + Lmat)^-1 diagonal blocks; one block of rows (16, slice)
  float *Ag, *Pr;  ///< vector: exp(g) (64, K+1); decay vectors (subs + 1, K)
};

template <class E>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE block_tiles carve_block(const args<E>& a, int slices, std::int64_t block,
                                                           int tid, int nt, unsigned char* smem) {
  block_tiles t;
  t.K = static_cast<int>(a.K);
  t.ldk = t.K + 1;
  t.nh = block / slices;
  t.n = t.nh / a.H;
  t.h = t.nh % a.H;
  t.v0 = static_cast<int>(block % slices) * slice;
  t.vn = static_cast<int>(a.V - t.v0 < slice ? a.V - t.v0 : slice);
  t.tid = tid;
  t.nt = nt;
  t.b = sequence(a, t.n).b;
  t.P = reinterpret_cast<double*>(smem);
  t.li = t.P + chunk_rows;
  t.mrow = t.li + chunk_rows;
  t.seg = reinterpret_cast<int*>(t.mrow + chunk_rows);
  t.S = reinterpret_cast<float*>(t.seg + chunk_rows);
  t.Qs = t.S + t.K * slice;
  t.Ks = t.Qs + chunk_rows * t.ldk;
  t.Vs = t.Ks + chunk_rows * t.ldk;
  t.A = t.Vs + chunk_rows * slice;
  t.nv = t.A + chunk_rows * chunk_rows;
  t.wi = t.nv + t.K;
  t.den = t.wi + chunk_rows;
  float* ext = t.den + chunk_rows;  // per-kind extra space
  t.Tb = ext;
  t.Mt = t.Tb + subs * sub * sub;
  t.Ag = ext;
  t.Pr = t.Ag + chunk_rows * t.ldk;
  return t;
}

/// The initial state slice, the mLSTM normalizer (from nm) and the block's stabilizer.
template <class E>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void load_block_state(const args<E>& a, const float* nm, bool is_mlstm,
                                                         const block_tiles& t, double& m_state) {
  const int K = t.K;
  for (int x = t.tid; x < K * slice; x += t.nt) {
    const int k = x / slice, v = x % slice;
    t.S[x] = (v < t.vn && given(a.s0)) ? a.s0(t.n, t.h, k, t.v0 + v) : 0.0f;
  }
  if (is_mlstm)
    for (int k = t.tid; k < K; k += t.nt) t.nv[k] = nm[t.nh * (K + 1) + k];
  if (t.tid == 0) m_state = is_mlstm ? nm[t.nh * (K + 1) + K] : 0.0;
}

/// Stages the L tokens from c0: scale q, k (vector: exp(g)) and the value slice, rows L..Lp-1
/// of the slice zero (delta: padded blocks).
template <class Gate, class E>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void stage_chunk(const Gate& gate, const args<E>& a, const block_tiles& t,
                                                    std::int64_t c0, int L, int Lp) {
  using std::exp;
  const int K = t.K, ldk = t.ldk;
  const std::int64_t b = t.b, h = t.h;
  const float scale = static_cast<float>(a.scale);
  for (int x = t.tid; x < L * K; x += t.nt) {
    const int i = x / K, k = x % K;
    t.Qs[i * ldk + k] = load<float>(a.q(b, c0 + i, h, k)) * scale;
    t.Ks[i * ldk + k] = load<float>(a.k(b, c0 + i, h, k));
    if constexpr (kind_of<Gate> == kind::vector)
      t.Ag[i * ldk + k] = exp(load<float>(gate.g(b, c0 + i, h, k)));
  }
  for (int x = t.tid; x < Lp * slice; x += t.nt) {
    const int j = x / slice, v = x % slice;
    t.Vs[x] = (j < L && v < t.vn) ? load<float>(a.v(b, c0 + j, h, t.v0 + v)) : 0.0f;
  }
}

/// Scalar kinds and delta rules, thread 0, in order: the log decays since the last reset
/// (P, seg), mLSTM's log input gates and row stabilizers (li, mrow), the delta rules' beta (den).
template <class Gate>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void gate_tables(const Gate& gate, const block_tiles& t, std::int64_t c0,
                                                    int L, double m0) {
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  constexpr bool is_delta = kind_of<Gate> == kind::delta || kind_of<Gate> == kind::gated_delta;
  const bool stab = mlstm_stabilized(gate);
  const std::int64_t b = t.b, h = t.h;
  int last = -1;
  double p = 0, best = -infinity<double>();
  for (int s = 0; s < L; ++s) {
    const double la = log_decay<double>(gate, b, c0 + s, h);
    if (is_reset(la)) {
      last = s;
      p = 0;
      best = -infinity<double>();
    } else {
      p += la;
    }
    t.seg[s] = last;
    t.P[s] = p;
    t.li[s] = is_mlstm ? log_input<double>(gate, b, c0 + s, h) : 0.0;
    if (is_delta) t.den[s] = beta<float>(gate, b, c0 + s, h);
    if (stab) {
      best = best > t.li[s] - p ? best : t.li[s] - p;
      const double inter = (last >= 0 ? -infinity<double>() : p) + m0;
      t.mrow[s] = inter > p + best ? inter : p + best;
    } else {
      t.mrow[s] = 0;
    }
  }
}

/// Delta rules, WY form: R = beta (V - diag(gamma) K S0) in place of V; Lmat_jl = beta_j D(j,l)
/// k_j.k_l for l < j (in A); then U = (I + Lmat)^-1 R by blocks of 16 rows, in place of R.
template <class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void wy_solve(const block_tiles& t, int L, int nb, int Lp,
                                                 const Sync& sync) {
  using std::exp;
  const int K = t.K, ldk = t.ldk, vn = t.vn, tid = t.tid, nt = t.nt;
  for (int x = tid; x < L * vn; x += nt) {
    const int j = x / vn, v = x % vn;
    float ks = 0;
    for (int k = 0; k < K; ++k) ks += t.Ks[j * ldk + k] * t.S[k * slice + v];
    const float gam = t.seg[j] >= 0 ? 0.0f : static_cast<float>(exp(t.P[j]));
    t.Vs[j * slice + v] = t.den[j] * (t.Vs[j * slice + v] - gam * ks);
  }
  for (int x = tid; x < Lp * Lp; x += nt) {
    const int j = x / Lp, l = x % Lp;
    float y = 0;
    if (j < L && l < j && t.seg[j] <= l) {
      for (int k = 0; k < K; ++k) y += t.Ks[j * ldk + k] * t.Ks[l * ldk + k];
      y *= t.den[j] * static_cast<float>(exp(t.P[j] - t.P[l]));
    }
    t.A[j * chunk_rows + l] = y;
  }
  sync();
  for (int x = tid; x < nb * sub; x += nt) {  // column c of the inverse of diagonal block d
    const int d = x / sub, c = x % sub, o = d * sub;
    float* T = t.Tb + d * sub * sub;
    for (int i = 0; i < c; ++i) T[i * sub + c] = 0;
    T[c * sub + c] = 1;
    for (int i = c + 1; i < sub; ++i) {
      float y = 0;
      for (int l = c; l < i; ++l) y += t.A[(o + i) * chunk_rows + o + l] * T[l * sub + c];
      T[i * sub + c] = -y;
    }
  }
  sync();
  for (int d = 0; d < nb; ++d) {  // U_d = T_dd (R_d - Lmat_d,<d U_<d)
    const int o = d * sub;
    for (int x = tid; x < sub * vn; x += nt) {
      const int i = x / vn, v = x % vn;
      float y = t.Vs[(o + i) * slice + v];
      for (int l = 0; l < o; ++l) y -= t.A[(o + i) * chunk_rows + l] * t.Vs[l * slice + v];
      t.Mt[i * slice + v] = y;
    }
    sync();
    for (int x = tid; x < sub * vn; x += nt) {
      const int i = x / vn, v = x % vn;
      const float* T = t.Tb + d * sub * sub + i * sub;
      float y = 0;
      for (int c = 0; c <= i; ++c) y += T[c] * t.Mt[c * slice + v];
      t.Vs[(o + i) * slice + v] = y;
    }
    sync();
  }
}

/// Vector gate: A_ij = sum_k q_ik k_jk prod_{s=j+1}^{i} a_sk. Within a 16-row sub-block: the
/// product itself; rows i of sub-block r and keys j < r0 (its first row): (q_i decayed from
/// r0) . (k_j decayed to r0 - 1), both factors at most 1 (FLA's secondary chunking). Leaves in
/// Qs q decayed from its sub-block start, in Pr the decays from the chunk start to each
/// sub-block start (and over the whole chunk).
template <class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void vector_intra(const block_tiles& t, int L, int nb, const Sync& sync) {
  const int K = t.K, ldk = t.ldk, tid = t.tid, nt = t.nt;
  for (int x = tid; x < L * L; x += nt) {
    const int i = x / L, j = x % L;
    if (j > i) {
      t.A[i * chunk_rows + j] = 0;
    } else if (i / sub == j / sub) {
      float y = 0;
      for (int k = 0; k < K; ++k) {
        float d = 1;
        for (int s = j + 1; s <= i; ++s) d *= t.Ag[s * ldk + k];
        y += t.Qs[i * ldk + k] * t.Ks[j * ldk + k] * d;
      }
      t.A[i * chunk_rows + j] = y;
    }
  }
  sync();
  for (int k = tid; k < K; k += nt) {  // Qs: q decayed from its sub-block start; Pr: decays
    float p = 1;                       // from the chunk start to each sub-block start
    for (int d = 0; d < nb; ++d) {
      t.Pr[d * K + k] = p;
      float q = 1;
      for (int i = d * sub; i < (d + 1) * sub && i < L; ++i) {
        q *= t.Ag[i * ldk + k];
        t.Qs[i * ldk + k] *= q;
      }
      p *= q;
    }
    t.Pr[nb * K + k] = p;  // over the whole chunk
  }
  for (int d = 1; d < nb; ++d) {
    decay_keys_to(t.Ks, t.Ag, ldk, (d - 1) * sub, d * sub, K, tid, nt);
    sync();
    const int o = d * sub, rows = L - o < sub ? L - o : sub;
    for (int x = tid; x < rows * o; x += nt) {
      const int i = o + x / o, j = x % o;
      float y = 0;
      for (int k = 0; k < K; ++k) y += t.Qs[i * ldk + k] * t.Ks[j * ldk + k];
      t.A[i * chunk_rows + j] = y;
    }
    sync();
  }
  if (nb == 1) sync();  // Qs and Pr
}

/// Vector gate: O = (Q (.) decay from the chunk start) S + A V for the L tokens from c0, then
/// S = diag(chunk decay) S + (K decayed to the chunk end)^T V.
template <class E, class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void vector_output_state(const args<E>& a, const block_tiles& t,
                                                            std::int64_t c0, int L, int nb,
                                                            const Sync& sync) {
  const int K = t.K, ldk = t.ldk, vn = t.vn, tid = t.tid, nt = t.nt;
  for (int x = tid; x < L * vn; x += nt) {
    const int i = x / vn, v = x % vn;
    const float* pr = t.Pr + (i / sub) * K;
    float y = 0;
    for (int k = 0; k < K; ++k) y += t.Qs[i * ldk + k] * pr[k] * t.S[k * slice + v];
    for (int j = 0; j <= i; ++j) y += t.A[i * chunk_rows + j] * t.Vs[j * slice + v];
    a.o(t.b, c0 + i, t.h, t.v0 + v) = from_accum<E>(y);
  }
  decay_keys_to(t.Ks, t.Ag, ldk, (nb - 1) * sub, L, K, tid, nt);  // the O loop does not read Ks
  sync();                                                         // S is read above
  for (int x = tid; x < K * slice; x += nt) {
    const int k = x / slice, v = x % slice;
    float y = t.Pr[nb * K + k] * t.S[x];
    for (int j = 0; j < L; ++j) y += t.Ks[j * ldk + k] * t.Vs[j * slice + v];
    t.S[x] = y;
  }
}

/// Scalar kinds and delta rules: A = (Q K^T) (.) W, the inter weights wi, mLSTM's
/// denominators, and O = diag(w_inter) Q S + A V for the L tokens from c0 (m0: the stabilizer
/// at the chunk start).
template <class Gate, class E, class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void scalar_outputs(const Gate& gate, const args<E>& a,
                                                       const block_tiles& t, std::int64_t c0, int L,
                                                       double m0, const Sync& sync) {
  using std::exp;
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const int K = t.K, ldk = t.ldk, vn = t.vn, tid = t.tid, nt = t.nt;
  for (int x = tid; x < L * L; x += nt) {  // A = (Q K^T) (.) W
    const int i = x / L, j = x % L;
    float y = 0;
    if (j <= i && t.seg[i] <= j) {
      for (int k = 0; k < K; ++k) y += t.Qs[i * ldk + k] * t.Ks[j * ldk + k];
      y *= static_cast<float>(exp_minus(t.P[i] - t.P[j] + t.li[j], t.mrow[i]));
    }
    t.A[i * chunk_rows + j] = y;
  }
  for (int i = tid; i < L; i += nt)
    t.wi[i] = static_cast<float>(exp_minus((t.seg[i] >= 0 ? -infinity<double>() : t.P[i]) + m0, t.mrow[i]));
  sync();
  if constexpr (is_mlstm) {
    const bool stab = mlstm_stabilized(gate);
    for (int i = tid; i < L; i += nt) {
      float qn = 0, rs = 0;
      for (int k = 0; k < K; ++k) qn += t.Qs[i * ldk + k] * t.nv[k];
      for (int j = 0; j <= i; ++j) rs += t.A[i * chunk_rows + j];
      const float d = t.wi[i] * qn + rs, ad = d < 0 ? -d : d;
      const float floor = stab ? static_cast<float>(exp(-t.mrow[i])) : 1.0f;
      t.den[i] = (ad > floor ? ad : floor) + gate.eps;
    }
    sync();
  }
  for (int x = tid; x < L * vn; x += nt) {  // O = diag(w_inter) Q S + A V
    const int i = x / vn, v = x % vn;
    float y = 0;
    for (int k = 0; k < K; ++k) y += t.Qs[i * ldk + k] * t.S[k * slice + v];
    y *= t.wi[i];
    for (int j = 0; j <= i; ++j) y += t.A[i * chunk_rows + j] * t.Vs[j * slice + v];
    if (is_mlstm) y /= t.den[i];
    a.o(t.b, c0 + i, t.h, t.v0 + v) = from_accum<E>(y);
  }
}

/// Scalar kinds and delta rules: S = w_S S + (K (.) w)^T V with the weights of the chunk's
/// last row (mLSTM: also the normalizer), and the stabilizer m_state (m0 at the chunk start).
template <class Gate, class Sync>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void scalar_state(const block_tiles& t, int L, double m0, double& m_state,
                                                     const Sync& sync) {
  constexpr bool is_mlstm = kind_of<Gate> == kind::mlstm;
  const int K = t.K, ldk = t.ldk, tid = t.tid, nt = t.nt;
  sync();  // wi is reused below; S is read above
  const int end = L - 1;
  const double m1 = t.mrow[end];
  const float ws = static_cast<float>(exp_minus((t.seg[end] >= 0 ? -infinity<double>() : t.P[end]) + m0, m1));
  for (int j = tid; j < L; j += nt)
    t.wi[j] = t.seg[end] > j ? 0.0f : static_cast<float>(exp_minus(t.P[end] - t.P[j] + t.li[j], m1));
  sync();
  for (int x = tid; x < K * slice; x += nt) {  // S = w_S S + (K (.) w)^T V
    const int k = x / slice, v = x % slice;
    float y = ws * t.S[x];
    for (int j = 0; j < L; ++j) y += t.wi[j] * t.Ks[j * ldk + k] * t.Vs[j * slice + v];
    t.S[x] = y;
  }
  if (is_mlstm)
    for (int k = tid; k < K; k += nt) {
      float y = ws * t.nv[k];
      for (int j = 0; j < L; ++j) y += t.wi[j] * t.Ks[j * ldk + k];
      t.nv[k] = y;
    }
  sync();
  if (tid == 0) m_state = m1;
}

/// The block's final state slice, and (the block of columns from 0) the mLSTM normalizer and
/// stabilizer.
template <class E>
WEFT_HOST_DEVICE WEFT_FORCE_INLINE void store_block_state(const args<E>& a, const block_tiles& t,
                                                          double m_state) {
  if (given(a.s1))
    for (int x = t.tid; x < t.K * slice; x += t.nt) {
      const int k = x / slice, v = x % slice;
      if (v < t.vn) a.s1(t.n, t.h, k, t.v0 + v) = t.S[x];
    }
  if (t.v0 == 0) {
    if (given(a.n1))
      for (int k = t.tid; k < t.K; k += t.nt) a.n1(t.n, t.h, k) = t.nv[k];
    if (given(a.m1) && t.tid == 0) a.m1(t.n, t.h) = static_cast<float>(m_state);
  }
}

/// One block's share of the chunk form: block index `block` of N * H * slices, thread `tid`
/// of `nt`; `smem` holds chunk_smem_bytes(kind, K) bytes, `m_state` is shared by the block,
/// `sync` is the block barrier. nm: the initial mLSTM normalizer and stabilizer [N,H,K+1].
template <class Gate, class E, class Sync>
WEFT_INLINE void chunk_block(const Gate& gate, const args<E>& a, const float* nm, int slices,
                             std::int64_t block, int tid, int nt, unsigned char* smem, double& m_state,
                             const Sync& sync) {
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_delta = kd == kind::delta || kd == kind::gated_delta;
  const block_tiles t = carve_block(a, slices, block, tid, nt, smem);
  load_block_state(a, nm, kd == kind::mlstm, t, m_state);
  const seq_range r = sequence(a, t.n);
  for (std::int64_t c0 = r.t0; c0 < r.t1; c0 += chunk_rows) {
    const int L = static_cast<int>(r.t1 - c0 < chunk_rows ? r.t1 - c0 : chunk_rows);
    const int nb = (L + sub - 1) / sub, Lp = nb * sub;  // sub-blocks, rows padded to them
    sync();                                             // the previous chunk is done with the tiles
    stage_chunk(gate, a, t, c0, L, Lp);
    if constexpr (kd != kind::vector)
      if (tid == 0) gate_tables(gate, t, c0, L, m_state);
    sync();
    if constexpr (is_delta) wy_solve(t, L, nb, Lp, sync);
    if constexpr (kd == kind::vector) {
      vector_intra(t, L, nb, sync);
      vector_output_state(a, t, c0, L, nb, sync);
    } else {
      const double m0 = m_state;
      scalar_outputs(gate, a, t, c0, L, m0, sync);
      scalar_state<Gate>(t, L, m0, m_state, sync);
    }
  }
  sync();
  store_block_state(a, t, m_state);
}

}  // namespace weft::detail::la::kernels
