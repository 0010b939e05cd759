// weft/linear_attention/backward_tiled.hpp - the chunk form of linear_attention_backward on a
// CPU core for every gate kind (none, scalar: linear attention, RetNet, simple GLA, Mamba2-SSD;
// mLSTM; vector: GLA; delta, gated delta), float / bf16 / f16 inputs with fp32 accumulation,
// using the products of tiles.hpp. Kokkos host spaces run it (kokkos.hpp), one (sequence,
// head) per work item.
//
// Each item stores the state at every chunk_size-th token in a forward pass over its chunks,
// then runs the chunks backwards, each from its checkpoint (backward_tiled_item.hpp: the
// shared scratch, sub-chunks of at most 64 tokens, checkpoint groups). The heads, each with its
// gradient equations:
//   backward_tiled_scalar.hpp   none, scalar and mLSTM (the scheme the others extend)
//   backward_tiled_vector.hpp   vector (GLA): per-channel decays in sub-blocks of 16 tokens
//   backward_tiled_delta.hpp    delta, gated delta: through the forward's WY form
#pragma once

#include <cstdint>

#include "weft/linear_attention/backward.hpp"
#include "weft/linear_attention/backward_tiled_delta.hpp"
#include "weft/linear_attention/backward_tiled_scalar.hpp"
#include "weft/linear_attention/backward_tiled_vector.hpp"

namespace weft::detail::la::tiled {

/// The chunk-form backward of one (sequence, head), by gate kind.
template <class Gate, class DGate, class E>
void backward_head(const Gate& gate, const DGate& dgate, const bwd_args<E>& ba, std::int64_t n,
                   std::int64_t h) {
  constexpr kind kd = kind_of<Gate>;
  if constexpr (kd == kind::vector)
    backward_vector_head(gate, dgate, ba, n, h);
  else if constexpr (kd == kind::delta || kd == kind::gated_delta)
    backward_delta_head(gate, dgate, ba, n, h);
  else
    backward_scalar_head(gate, dgate, ba, n, h);
}

}  // namespace weft::detail::la::tiled
