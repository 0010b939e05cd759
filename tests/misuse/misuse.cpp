// Compile-time misuse: each CASE > 0 is a mistake a new user makes, and must fail to compile
// with the FIRST error line naming it (check_misuse.cmake compares it with the text that
// CMakeLists.txt expects). CASE 0 is a control of valid calls that must compile, so that a
// broken include path or header cannot pass as a "failure". Only compiled (-fsyntax-only).
#include <cstdint>

#if CASE == 0 || CASE >= 19  // one family's headers per case: each compiles in about a second
#include "weft/decode/decode.hpp"
#endif
#if CASE <= 18
#include "weft/linear_attention/backward.hpp"
#endif

namespace {

using weft::tensor_view;
#if CASE <= 18
namespace gates = weft::gates;
#endif

[[maybe_unused]] void misuse() {
  const weft::serial_backend be;
  [[maybe_unused]] const tensor_view<float, 4> q, k, v, g4, do_, dq, dk, dv, o, state;  // [B,T,H,K] etc.
  [[maybe_unused]] const tensor_view<float, 3> g3, q3, v3, dg;                          // [B,T,H]
  [[maybe_unused]] const tensor_view<float, 2> logits;                                  // [B, Vocab]
  [[maybe_unused]] const tensor_view<std::int32_t, 1> tokens;
  [[maybe_unused]] const tensor_view<std::int64_t, 1> tokens64, cu64;
  [[maybe_unused]] const tensor_view<int, 1> cu32;
#if CASE == 0  // valid calls
  weft::linear_attention(be, gates::scalar<float>{g3}, q, k, v, o, {.chunk_size = 32, .cu_seqlens = cu64});
  weft::linear_attention(be, gates::none{}, q, k, v, o);
  weft::linear_attention(be, gates::vector<float>{g4}, tensor_view<const float, 4>(q), k, v, o);
  weft::linear_attention_step(be, gates::vector<float>{g4}, q, k, v, o, state);
  (void)weft::workspace_size(be, gates::scalar<float>{g3}, q, k, v, {.cu_seqlens = cu64});
  weft::linear_attention_options opts;
  opts.cu_seqlens = cu64;
  opts.cu_seqlens = tensor_view<const std::int64_t, 1>(cu64);
  opts.cu_seqlens = {cu64.data(), {2}, {1}};  // pointer, extents, strides
  [[maybe_unused]] const tensor_view<const std::int64_t, 1> cu_back = opts.cu_seqlens;
  weft::linear_attention(be, gates::scalar<float>{g3}, q, k, v, o, opts);
  weft::linear_attention_backward(be, gates::scalar<float>{g3}, q, k, v, do_,
                                  weft::linear_attention_grads<float, gates::scalar<float>>{dq, dk, dv, {dg}},
                                  {.cu_seqlens = cu_back});
  weft::sample(be, logits, tokens, {.temperature = 0.7f});
  weft::sample_probs(be, logits, tokens);
  weft::argmax(be, logits, tokens);
#elif CASE == 1  // FLA's argument order (q, k, v, g): a raw view as the gate
  weft::linear_attention(be, q, k, v, g4, o);
#elif CASE == 2  // the same with a scalar gate [B,T,H]
  weft::linear_attention(be, q, k, v, g3, o);
#elif CASE == 3
  weft::linear_attention_step(be, q, k, v, g4, o, state);
#elif CASE == 4
  weft::linear_attention_backward(be, q, k, v, g4, do_, weft::linear_attention_grads<float>{dq, dk, dv});
#elif CASE == 5
  (void)weft::workspace_size(be, q, k, v, g4);
#elif CASE == 6  // an integer gate view
  weft::linear_attention(be, gates::scalar<int>{}, q, k, v, o);
#elif CASE == 7  // int32 offsets
  weft::linear_attention(be, gates::scalar<float>{g3}, q, k, v, o, {.chunk_size = 32, .cu_seqlens = cu32});
#elif CASE == 8
  weft::linear_attention_backward(be, gates::none{}, q, k, v, do_,
                                  weft::linear_attention_grads<float>{dq, dk, dv}, {.cu_seqlens = cu32});
#elif CASE == 9  // 3-D q
  weft::linear_attention(be, gates::scalar<float>{g3}, q3, k, v, o);
#elif CASE == 10
  weft::linear_attention(be, gates::scalar<float>{g3}, q, k, v3, o);
#elif CASE == 11
  weft::linear_attention_step(be, gates::none{}, q3, k, v, o, state);
#elif CASE == 12  // integer data
  [[maybe_unused]] const tensor_view<int, 4> qi;
  weft::linear_attention(be, gates::none{}, qi, qi, qi, qi);
#elif CASE == 13  // mixed precision
  weft::linear_attention(be, gates::none{}, q, tensor_view<double, 4>{}, v, o);
#elif CASE == 14  // read-only output
  weft::linear_attention(be, gates::none{}, q, k, v, tensor_view<const float, 4>(o));
#elif CASE == 15  // read-only state
  weft::linear_attention_step(be, gates::none{}, q, k, v, o, tensor_view<const float, 4>(state));
#elif CASE == 16
  weft::linear_attention_backward(be, gates::none{}, q, k, v, tensor_view<float, 3>{},
                                  weft::linear_attention_grads<float>{dq, dk, dv});
#elif CASE == 17  // double gradients for float data
  weft::linear_attention_backward(be, gates::none{}, q, k, v, do_, weft::linear_attention_grads<double>{});
#elif CASE == 18  // dgate of another kind
  weft::linear_attention_backward(be, gates::scalar<float>{g3}, q, k, v, do_,
                                  weft::linear_attention_grads<float>{dq, dk, dv});
#elif CASE == 19  // int64 token ids
  weft::sample(be, logits, tokens64);
#elif CASE == 20
  weft::argmax(be, logits, tokens64, {});
#elif CASE == 21
  weft::sample_probs(be, tensor_view<float, 3>{}, tokens);
#elif CASE == 22  // integer logits
  weft::sample(be, tensor_view<int, 2>{}, tokens);
#else
#error "unknown CASE"
#endif
}

}  // namespace
