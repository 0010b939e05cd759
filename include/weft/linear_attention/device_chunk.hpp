// weft/linear_attention/device_chunk.hpp - the chunk form as one thread block computes it
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
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "weft/core/math.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft::detail::la::dev {

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

/// The column kernel (recurrent mode, decode steps, K > 128), column c = (sequence, head, value
/// column e) of N * H * V: its state copy S + c K [K] (and the mLSTM normalizer copy nv + c K),
/// the stabilizer m [N*H] loaded by column e = 0.
template <class E>
WEFT_INLINE void load_column(const args<E>& a, std::int64_t c, float* S, float* nv, float* m) {
  const std::int64_t V = a.V, H = a.H, K = a.K;
  const std::int64_t e = c % V, nh = c / V, h = nh % H, n = nh / H;
  for (std::int64_t i = 0; i < K; ++i) {
    S[c * K + i] = given(a.s0) ? a.s0(n, h, i, e) : 0.0f;
    if (nv) nv[c * K + i] = given(a.n0) ? a.n0(n, h, i) : 0.0f;
  }
  if (e == 0) m[nh] = given(a.m0) ? a.m0(n, h) : 0.0f;
}

/// Runs column c through its sequence (recurrent_column) and stores its final state; column
/// e = 0 also stores the mLSTM normalizer and stabilizer.
template <class Gate, class E>
WEFT_INLINE void run_column(const Gate& gate, const args<E>& a, std::int64_t c, float* S, float* nv,
                            const float* m) {
  const std::int64_t V = a.V, H = a.H, K = a.K;
  const std::int64_t e = c % V, nh = c / V, h = nh % H, n = nh / H;
  double mm = m[nh];
  recurrent_column(gate, a, sequence(a, n), h, e, S + c * K, nv ? nv + c * K : nullptr, 1, mm);
  if (given(a.s1))
    for (std::int64_t i = 0; i < K; ++i) a.s1(n, h, i, e) = S[c * K + i];
  if (e == 0 && given(a.n1))
    for (std::int64_t i = 0; i < K; ++i) a.n1(n, h, i) = nv[c * K + i];
  if (e == 0 && given(a.m1)) a.m1(n, h) = static_cast<float>(mm);
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

/// One block's share of the chunk form: block index `block` of N * H * slices, thread `tid`
/// of `nt`; `smem` holds chunk_smem_bytes(kind, K) bytes, `m_state` is shared by the block,
/// `sync` is the block barrier. nm: the initial mLSTM normalizer and stabilizer [N,H,K+1].
template <class Gate, class E, class Sync>
WEFT_INLINE void chunk_block(const Gate& gate, const args<E>& a, const float* nm, int slices,
                             std::int64_t block, int tid, int nt, unsigned char* smem, double& m_state,
                             const Sync& sync) {
  using std::exp;
  constexpr kind kd = kind_of<Gate>;
  constexpr bool is_mlstm = kd == kind::mlstm;
  constexpr bool is_delta = kd == kind::delta || kd == kind::gated_delta;
  constexpr bool is_vector = kd == kind::vector;
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
  float* Vs = Ks + chunk_rows * ldk;                      // (64, slice); delta: R, then U
  float* A = Vs + chunk_rows * slice;                     // (64, 64)
  float* nv = A + chunk_rows * chunk_rows;                // (K) mLSTM normalizer
  float* wi = nv + K;                                     // (64) inter weights, then key weights
  float* den = wi + chunk_rows;                           // (64) mLSTM denominators; delta: beta
  float* ext = den + chunk_rows;                          // per-kind extra space:
  [[maybe_unused]] float* Tb = ext;                       //   delta: (I + Lmat)^-1 diagonal blocks
  [[maybe_unused]] float* Mt = Tb + subs * sub * sub;     //   delta: one block of rows (16, slice)
  [[maybe_unused]] float* Ag = ext;                       //   vector: exp(g) (64, K+1)
  [[maybe_unused]] float* Pr = Ag + chunk_rows * ldk;     //   vector: decay vectors (subs + 1, K)
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
    const int nb = (L + sub - 1) / sub, Lp = nb * sub;  // sub-blocks, rows padded to them
    sync();                                             // the previous chunk is done with the tiles
    for (int x = tid; x < L * K; x += nt) {
      const int i = x / K, k = x % K;
      Qs[i * ldk + k] = load<float>(a.q(b, c0 + i, h, k)) * scale;
      Ks[i * ldk + k] = load<float>(a.k(b, c0 + i, h, k));
      if constexpr (is_vector) Ag[i * ldk + k] = exp(load<float>(gate.g(b, c0 + i, h, k)));
    }
    for (int x = tid; x < Lp * slice; x += nt) {  // rows L..Lp-1 zero (delta: padded blocks)
      const int j = x / slice, v = x % slice;
      Vs[x] = (j < L && v < vn) ? load<float>(a.v(b, c0 + j, h, v0 + v)) : 0.0f;
    }
    if (!is_vector && tid == 0) {  // gate tables, in order
      const double m0 = m_state;
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
        seg[s] = last;
        P[s] = p;
        li[s] = is_mlstm ? log_input<double>(gate, b, c0 + s, h) : 0.0;
        if (is_delta) den[s] = beta<float>(gate, b, c0 + s, h);
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
    if constexpr (is_delta) {
      // WY form: R = beta (V - diag(gamma) K S0) in place of V; Lmat_jl = beta_j D(j,l) k_j.k_l
      // for l < j (in A); then U = (I + Lmat)^-1 R by blocks of 16 rows, in place of R.
      for (int x = tid; x < L * vn; x += nt) {
        const int j = x / vn, v = x % vn;
        float ks = 0;
        for (int k = 0; k < K; ++k) ks += Ks[j * ldk + k] * S[k * slice + v];
        const float gam = seg[j] >= 0 ? 0.0f : static_cast<float>(exp(P[j]));
        Vs[j * slice + v] = den[j] * (Vs[j * slice + v] - gam * ks);
      }
      for (int x = tid; x < Lp * Lp; x += nt) {
        const int j = x / Lp, l = x % Lp;
        float y = 0;
        if (j < L && l < j && seg[j] <= l) {
          for (int k = 0; k < K; ++k) y += Ks[j * ldk + k] * Ks[l * ldk + k];
          y *= den[j] * static_cast<float>(exp(P[j] - P[l]));
        }
        A[j * chunk_rows + l] = y;
      }
      sync();
      for (int x = tid; x < nb * sub; x += nt) {  // column c of the inverse of diagonal block d
        const int d = x / sub, c = x % sub, o = d * sub;
        float* T = Tb + d * sub * sub;
        for (int i = 0; i < c; ++i) T[i * sub + c] = 0;
        T[c * sub + c] = 1;
        for (int i = c + 1; i < sub; ++i) {
          float y = 0;
          for (int l = c; l < i; ++l) y += A[(o + i) * chunk_rows + o + l] * T[l * sub + c];
          T[i * sub + c] = -y;
        }
      }
      sync();
      for (int d = 0; d < nb; ++d) {  // U_d = T_dd (R_d - Lmat_d,<d U_<d)
        const int o = d * sub;
        for (int x = tid; x < sub * vn; x += nt) {
          const int i = x / vn, v = x % vn;
          float y = Vs[(o + i) * slice + v];
          for (int l = 0; l < o; ++l) y -= A[(o + i) * chunk_rows + l] * Vs[l * slice + v];
          Mt[i * slice + v] = y;
        }
        sync();
        for (int x = tid; x < sub * vn; x += nt) {
          const int i = x / vn, v = x % vn;
          const float* T = Tb + d * sub * sub + i * sub;
          float y = 0;
          for (int c = 0; c <= i; ++c) y += T[c] * Mt[c * slice + v];
          Vs[(o + i) * slice + v] = y;
        }
        sync();
      }
    }
    const double m0 = m_state;
    if constexpr (is_vector) {
      // A_ij = sum_k q_ik k_jk prod_{s=j+1}^{i} a_sk. Within a 16-row sub-block: the product
      // itself; rows i of sub-block r and keys j < r0 (its first row): (q_i decayed from r0)
      // . (k_j decayed to r0 - 1), both factors at most 1 (FLA's secondary chunking).
      for (int x = tid; x < L * L; x += nt) {
        const int i = x / L, j = x % L;
        if (j > i) {
          A[i * chunk_rows + j] = 0;
        } else if (i / sub == j / sub) {
          float y = 0;
          for (int k = 0; k < K; ++k) {
            float d = 1;
            for (int s = j + 1; s <= i; ++s) d *= Ag[s * ldk + k];
            y += Qs[i * ldk + k] * Ks[j * ldk + k] * d;
          }
          A[i * chunk_rows + j] = y;
        }
      }
      sync();
      for (int k = tid; k < K; k += nt) {  // Qs: q decayed from its sub-block start; Pr: decays
        float p = 1;                       // from the chunk start to each sub-block start
        for (int d = 0; d < nb; ++d) {
          Pr[d * K + k] = p;
          float q = 1;
          for (int i = d * sub; i < (d + 1) * sub && i < L; ++i) {
            q *= Ag[i * ldk + k];
            Qs[i * ldk + k] *= q;
          }
          p *= q;
        }
        Pr[nb * K + k] = p;  // over the whole chunk
      }
      for (int d = 1; d < nb; ++d) {
        decay_keys_to(Ks, Ag, ldk, (d - 1) * sub, d * sub, K, tid, nt);
        sync();
        const int o = d * sub, rows = L - o < sub ? L - o : sub;
        for (int x = tid; x < rows * o; x += nt) {
          const int i = o + x / o, j = x % o;
          float y = 0;
          for (int k = 0; k < K; ++k) y += Qs[i * ldk + k] * Ks[j * ldk + k];
          A[i * chunk_rows + j] = y;
        }
        sync();
      }
      if (nb == 1) sync();                      // Qs and Pr
      for (int x = tid; x < L * vn; x += nt) {  // O = (Q (.) decay from the chunk start) S + A V
        const int i = x / vn, v = x % vn;
        const float* pr = Pr + (i / sub) * K;
        float y = 0;
        for (int k = 0; k < K; ++k) y += Qs[i * ldk + k] * pr[k] * S[k * slice + v];
        for (int j = 0; j <= i; ++j) y += A[i * chunk_rows + j] * Vs[j * slice + v];
        a.o(b, c0 + i, h, v0 + v) = from_accum<E>(y);
      }
      decay_keys_to(Ks, Ag, ldk, (nb - 1) * sub, L, K, tid, nt);  // the O loop does not read Ks
      sync();                                                     // S is read above
      for (int x = tid; x < K * slice; x += nt) {                 // S = diag(chunk decay) S + (K decayed)^T V
        const int k = x / slice, v = x % slice;
        float y = Pr[nb * K + k] * S[x];
        for (int j = 0; j < L; ++j) y += Ks[j * ldk + k] * Vs[j * slice + v];
        S[x] = y;
      }
    } else {
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
