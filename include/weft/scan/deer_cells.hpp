// weft/scan/deer_cells.hpp - ready-made cells for weft::deer, with analytic Jacobians.
//
// They hold non-owning pointers to their weights (in the backend's memory space), so they
// are cheap to copy into kernels. Each row of the state is computed from scalars, so no
// scratch of size D is needed in device code.
#pragma once

#include <cmath>
#include <cstdint>

#include "weft/core/config.hpp"

namespace weft::deer_cells {

template <class T>
WEFT_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

/// GRU (PyTorch's convention), state D, input Dx. Weights row-major, gate blocks r, z, n:
///   Wi [3D, Dx], Wh [3D, D], bi [3D], bh [3D]
///   r = s(Wi_r x + bi_r + Wh_r h + bh_r),  z = s(Wi_z x + bi_z + Wh_z h + bh_z)
///   n = tanh(Wi_n x + bi_n + r * (Wh_n h + bh_n)),  h' = (1 - z) * n + z * h
template <class T>
struct gru {
  std::int64_t D, Dx;
  const T *Wi, *Wh, *bi, *bh;

  std::int64_t state_size() const { return D; }
  std::int64_t input_size() const { return Dx; }

  struct row {
    T r, z, n, hn;  // gates of row i and (Wh_n h + bh_n)_i
  };
  WEFT_INLINE row gates(std::int64_t i, const T* h, const T* x) const {
    T ar = bi[i] + bh[i], az = bi[D + i] + bh[D + i], an = bi[2 * D + i], hn = bh[2 * D + i];
    for (std::int64_t j = 0; j < Dx; ++j) {
      ar += Wi[i * Dx + j] * x[j];
      az += Wi[(D + i) * Dx + j] * x[j];
      an += Wi[(2 * D + i) * Dx + j] * x[j];
    }
    for (std::int64_t j = 0; j < D; ++j) {
      ar += Wh[i * D + j] * h[j];
      az += Wh[(D + i) * D + j] * h[j];
      hn += Wh[(2 * D + i) * D + j] * h[j];
    }
    const T r = sigmoid(ar), z = sigmoid(az);
    return {r, z, std::tanh(an + r * hn), hn};
  }

  WEFT_INLINE void operator()(const T* h, const T* x, T* out) const {
    for (std::int64_t i = 0; i < D; ++i) {
      const row g = gates(i, h, x);
      out[i] = (T(1) - g.z) * g.n + g.z * h[i];
    }
  }

  /// J_ij = (1-z_i)(1-n_i^2)[hn_i r_i(1-r_i) Wh_r,ij + r_i Wh_n,ij] + (h_i-n_i) z_i(1-z_i) Wh_z,ij + z_i d_ij
  WEFT_INLINE void jacobian(const T* h, const T* x, T* J) const { value_and_jacobian(h, x, nullptr, J); }

  /// h' and J from one evaluation of the gates (out may be null).
  WEFT_INLINE void value_and_jacobian(const T* h, const T* x, T* out, T* J) const {
    for (std::int64_t i = 0; i < D; ++i) {
      const row g = gates(i, h, x);
      if (out) out[i] = (T(1) - g.z) * g.n + g.z * h[i];
      const T dn = (T(1) - g.z) * (T(1) - g.n * g.n);
      const T cr = dn * g.hn * g.r * (T(1) - g.r), cn = dn * g.r, cz = (h[i] - g.n) * g.z * (T(1) - g.z);
      for (std::int64_t j = 0; j < D; ++j) {
        J[i * D + j] = cr * Wh[i * D + j] + cn * Wh[(2 * D + i) * D + j] + cz * Wh[(D + i) * D + j] +
                       (i == j ? g.z : T(0));
      }
    }
  }
};

/// Elman RNN: h' = tanh(W h + U x + b), W [D, D], U [D, Dx], b [D].
template <class T>
struct tanh_rnn {
  std::int64_t D, Dx;
  const T *W, *U, *b;

  std::int64_t state_size() const { return D; }
  std::int64_t input_size() const { return Dx; }

  WEFT_INLINE T pre(std::int64_t i, const T* h, const T* x) const {
    T a = b[i];
    for (std::int64_t j = 0; j < D; ++j) a += W[i * D + j] * h[j];
    for (std::int64_t j = 0; j < Dx; ++j) a += U[i * Dx + j] * x[j];
    return a;
  }
  WEFT_INLINE void operator()(const T* h, const T* x, T* out) const {
    for (std::int64_t i = 0; i < D; ++i) out[i] = std::tanh(pre(i, h, x));
  }
  WEFT_INLINE void jacobian(const T* h, const T* x, T* J) const { value_and_jacobian(h, x, nullptr, J); }
  WEFT_INLINE void value_and_jacobian(const T* h, const T* x, T* out, T* J) const {
    for (std::int64_t i = 0; i < D; ++i) {
      const T y = std::tanh(pre(i, h, x));
      if (out) out[i] = y;
      for (std::int64_t j = 0; j < D; ++j) J[i * D + j] = (T(1) - y * y) * W[i * D + j];
    }
  }
};

}  // namespace weft::deer_cells
