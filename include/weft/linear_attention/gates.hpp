// weft/linear_attention/gates.hpp - the gate kinds and options of linear_attention.
//
// Every gate is given per token in log space (FLA's convention), so that a gate of -inf is
// an exact reset of the state and products of many gates never underflow early:
//
//   gates::none{}                    S_t = S_{t-1} + k_t v_t^T                       (linear attention)
//   gates::scalar{g}      [B,T,H]    S_t = exp(g_t) S_{t-1} + k_t v_t^T              (RetNet, simple GLA,
//                                                                                     Mamba2-SSD)
//   gates::vector{g}      [B,T,H,K]  S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T        (GLA)
//   gates::mlstm{i, f}    [B,T,H]    xLSTM mLSTM: C, n with max-stabilizer m         (see below)
//   gates::delta{beta}    [B,T,H]    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T   (DeltaNet)
//   gates::gated_delta{g, beta}      S_t = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T,
//                                    a_t = exp(g_t)                                   (Gated DeltaNet)
//
// and the output is always o_t = (scale q_t)^T S_t (after the update, FLA's order). mLSTM
// (mlstm_kernels' definition) with log forget lf = logsigmoid(f), log input li = i
// (exponential) or logsigmoid(i) (sigmoid), state (C, n, m), m_0 = 0 unless given:
//
//   m_t = max(lf_t + m_{t-1}, li_t)                       (exponential; m = 0 for sigmoid)
//   C_t = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(li_t - m_t) k_t v_t^T
//   n_t = exp(lf_t + m_{t-1} - m_t) n_{t-1} + exp(li_t - m_t) k_t
//   o_t = (scale q_t)^T C_t / (max(|scale q_t . n_t|, exp(-m_t)) + eps)
//
// Gate views may hold any weft floating type (fp32 is what FLA uses); the view's element
// type may be const. Class template argument deduction picks it: gates::scalar{g}.
#pragma once

#include <cstdint>
#include <optional>
#include <type_traits>

#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

namespace gates {

/// mLSTM input gate activation: exp(i) with the max-stabilizer, or sigmoid(i) without one.
enum class mlstm_input { exponential, sigmoid };

/// No gate: S_t = S_{t-1} + k_t v_t^T.
struct none {};

/// One log decay per token and head, g [B,T,H]: S_t = exp(g_t) S_{t-1} + k_t v_t^T.
template <class G>
struct scalar {
  tensor_view<G, 3> g;
};

/// One log decay per token, head and key channel, g [B,T,H,K] (GLA's gk).
template <class G>
struct vector {
  tensor_view<G, 4> g;
};

/// xLSTM mLSTM: input and forget gate pre-activations i, f [B,T,H].
template <class G>
struct mlstm {
  tensor_view<G, 3> i;
  tensor_view<G, 3> f;
  mlstm_input input = mlstm_input::exponential;
  float eps = 1e-6f;  ///< added to the normalizer (mlstm_kernels' default)
};

/// DeltaNet: the writing strength beta [B,T,H] (usually sigmoid of a projection).
template <class G>
struct delta {
  tensor_view<G, 3> beta;
};

/// Gated DeltaNet: log decay g [B,T,H] applied before the delta update, and beta [B,T,H].
template <class G>
struct gated_delta {
  tensor_view<G, 3> g;
  tensor_view<G, 3> beta;
};

}  // namespace gates

namespace detail::la {

/// The type of the cu_seqlens options: a tensor_view<const std::int64_t, 1> that every
/// tensor_view converts to, so that offsets of another index type (int32) or rank are a
/// compile-time error naming the option, instead of "cannot convert <brace-enclosed
/// initializer list> to linear_attention_options".
class cu_seqlens_view : public tensor_view<const std::int64_t, 1> {
  using base = tensor_view<const std::int64_t, 1>;

 public:
  cu_seqlens_view() = default;
  using base::base;  // (pointer, extents, strides), as a tensor_view
  template <class I, int R>
  cu_seqlens_view(const tensor_view<I, R>& offsets) : base(checked(offsets)) {}

 private:
  template <class I, int R>
  static base checked(const tensor_view<I, R>& offsets) {
    constexpr bool ok = R == 1 && std::is_same_v<std::remove_const_t<I>, std::int64_t>;
    static_assert(ok,
                  "weft: linear_attention_options::cu_seqlens (and linear_attention_backward_options::"
                  "cu_seqlens) must be a 1-D view of std::int64_t offsets [N+1], e.g. "
                  "weft::make_view(cu.data(), N + 1) with std::vector<std::int64_t> cu");
    if constexpr (ok)
      return offsets;
    else
      return {};
  }
};

}  // namespace detail::la

/// chunk: chunkwise-parallel form (intra-chunk matmuls + state passing between chunks).
/// recurrent: the token loop, one state update per token.
enum class linear_attention_mode { chunk, recurrent };

/// Options of linear_attention. N is the number of sequences: B, or cu_seqlens.extent(0) - 1.
struct linear_attention_options {
  std::optional<double> scale{};  ///< multiplies q; default K^-1/2 (double: fp64 callers keep it exactly)
  linear_attention_mode mode = linear_attention_mode::chunk;
  int chunk_size = 64;                          ///< power of two in [16, 256]
  tensor_view<const float, 4> initial_state{};  ///< [N,H,K,V]; zeros when not given
  tensor_view<float, 4> final_state{};          ///< [N,H,K,V]; written when given
  detail::la::cu_seqlens_view cu_seqlens{};     ///< [N+1] std::int64_t offsets into T (B == 1): varlen
  // mLSTM only: the rest of its state (C, n, m); m only with the exponential input gate.
  tensor_view<const float, 3> initial_normalizer{};  ///< n [N,H,K], with initial_state
  tensor_view<const float, 2> initial_stabilizer{};  ///< m [N,H], with initial_state
  tensor_view<float, 3> final_normalizer{};          ///< n [N,H,K]
  tensor_view<float, 2> final_stabilizer{};          ///< m [N,H]
  weft::workspace workspace{};                       ///< optional caller scratch, see workspace_size()
};

/// Options of linear_attention_step (one decode token per sequence, states updated in place).
struct linear_attention_step_options {
  std::optional<double> scale{};       ///< default K^-1/2
  tensor_view<float, 3> normalizer{};  ///< mLSTM n [N,H,K], in place
  tensor_view<float, 2> stabilizer{};  ///< mLSTM m [N,H], in place (exponential input gate)
  weft::workspace workspace{};
};

}  // namespace weft
