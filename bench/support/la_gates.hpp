// bench/support/la_gates.hpp - the gate kinds the linear attention benchmarks (CPU and CUDA)
// sweep, and weft's gate object of each kind over raw fp32 buffers in any memory space.
#pragma once

#include <cstdint>

#include "weft/core/tensor.hpp"
#include "weft/linear_attention/gates.hpp"

namespace weft_bench {

enum class gate_kind { none, scalar, vector, mlstm, delta, gated_delta };

inline const char* gate_name(gate_kind g) {
  const char* n[] = {"none", "scalar", "vector", "mlstm", "delta", "gated_delta"};
  return n[static_cast<int>(g)];
}

/// Gate buffers: g, i, f, beta [B,T,H]; gv [B,T,H,K] (the vector gate's).
struct gate_buffers {
  float *g, *gv, *i, *f, *beta;
};

/// Calls fn(gate) with the gate of `kind` over the buffers, shapes [B,T,H] / [B,T,H,K].
/// For gradients, the same call over gradient buffers gives grads.dgate.
template <class Fn>
void with_gate(gate_kind kind, std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t K,
               const gate_buffers& gb, Fn&& fn) {
  using weft::make_view;
  switch (kind) {
    case gate_kind::none:
      fn(weft::gates::none{});
      break;
    case gate_kind::scalar:
      fn(weft::gates::scalar{make_view(gb.g, B, T, H)});
      break;
    case gate_kind::vector:
      fn(weft::gates::vector{make_view(gb.gv, B, T, H, K)});
      break;
    case gate_kind::mlstm:
      fn(weft::gates::mlstm{make_view(gb.i, B, T, H), make_view(gb.f, B, T, H)});
      break;
    case gate_kind::delta:
      fn(weft::gates::delta{make_view(gb.beta, B, T, H)});
      break;
    case gate_kind::gated_delta:
      fn(weft::gates::gated_delta{make_view(gb.g, B, T, H), make_view(gb.beta, B, T, H)});
      break;
  }
}

/// The gradient gate (grads.dgate) of a gate's kind over gradient buffers d (only the fields
/// that kind has are read).
inline weft::gates::none grad_gate(const weft::gates::none&, const gate_buffers&, std::int64_t, std::int64_t,
                                   std::int64_t, std::int64_t) {
  return {};
}
template <class G>
auto grad_gate(const weft::gates::scalar<G>&, const gate_buffers& d, std::int64_t B, std::int64_t T,
               std::int64_t H, std::int64_t) {
  return weft::gates::scalar{weft::make_view(d.g, B, T, H)};
}
template <class G>
auto grad_gate(const weft::gates::vector<G>&, const gate_buffers& d, std::int64_t B, std::int64_t T,
               std::int64_t H, std::int64_t K) {
  return weft::gates::vector{weft::make_view(d.gv, B, T, H, K)};
}
template <class G>
auto grad_gate(const weft::gates::mlstm<G>&, const gate_buffers& d, std::int64_t B, std::int64_t T,
               std::int64_t H, std::int64_t) {
  return weft::gates::mlstm{weft::make_view(d.i, B, T, H), weft::make_view(d.f, B, T, H)};
}
template <class G>
auto grad_gate(const weft::gates::delta<G>&, const gate_buffers& d, std::int64_t B, std::int64_t T,
               std::int64_t H, std::int64_t) {
  return weft::gates::delta{weft::make_view(d.beta, B, T, H)};
}
template <class G>
auto grad_gate(const weft::gates::gated_delta<G>&, const gate_buffers& d, std::int64_t B, std::int64_t T,
               std::int64_t H, std::int64_t) {
  return weft::gates::gated_delta{weft::make_view(d.g, B, T, H), weft::make_view(d.beta, B, T, H)};
}

}  // namespace weft_bench
