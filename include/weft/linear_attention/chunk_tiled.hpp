// weft/linear_attention/chunk_tiled.hpp - the chunk form on a CPU core, with tiles (fp32).
//
// One (sequence, head) is processed by one thread, chunk after chunk, with its state S
// (K x V, fp32) in the thread's slot of the workspace (L2-resident). Inside a chunk of C
// tokens the work is tiled in blocks of Lb = min(C, 64) tokens (TFLA's second level): for
// query block qb
//
//   O_qb  = diag(w_inter) (Q_qb S0)                            inter-chunk part   (Lb x V)
//         + sum_{kb <= qb} (Q_qb K_kb^T (.) W_qb,kb) V_kb       intra-chunk tiles  (Lb x Lb)
//
// and after all query blocks S1 = D(end) S0 + sum_kb (K_kb (.) w_kb)^T V_kb. Only one tile of
// each kind is alive at a time, so the scratch per thread does not grow with C (chunk 256
// needs exactly the scratch of chunk 64); the per-token gate tables are sized for C = 256.
//
// Gate weights, per kind: chunk_tiled_scalar.hpp (none, scalar, mLSTM: exp of differences of
// fp64 log-decay sums since the last reset), chunk_tiled_vector.hpp (GLA: products of per
// channel decays), chunk_tiled_delta.hpp (delta rules: WY form per block of Lb tokens).
//
// Files: chunk_tiled_slot.hpp (scratch, packing, decay tables), chunk_tiled_scalar.hpp,
// chunk_tiled_vector.hpp, chunk_tiled_delta.hpp; forward_head below picks one per gate kind.
#pragma once

#include <cstdint>

#include "weft/core/workspace.hpp"
#include "weft/linear_attention/args.hpp"
#include "weft/linear_attention/chunk_tiled_delta.hpp"
#include "weft/linear_attention/chunk_tiled_scalar.hpp"
#include "weft/linear_attention/chunk_tiled_slot.hpp"
#include "weft/linear_attention/chunk_tiled_vector.hpp"
#include "weft/linear_attention/tiles.hpp"

namespace weft::detail::la::tiled {

/// The chunk form of one (sequence, head) on this thread's slot.
template <class Gate, class E>
void forward_head(const Gate& gate, const args<E>& a, std::int64_t n, std::int64_t h, void* slot_base) {
  workspace_carver c(slot_base);
  slot w;
  w.carve(c, a.K, a.V, a.chunk);
  const seq_range r = sequence(a, n);
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::vector)
    chunk_vector_head(gate, a, r, n, h, w);
  else if constexpr (kd == kind::delta || kd == kind::gated_delta)
    chunk_delta_head(gate, a, r, n, h, w);
  else
    chunk_scalar_head(gate, a, r, n, h, w);
}

}  // namespace weft::detail::la::tiled
