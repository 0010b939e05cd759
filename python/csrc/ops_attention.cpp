// weft_torch: blockwise softmax attention (flash-attn's flash_attn_func / flash_attn_varlen_func
// in weft_torch.flash_attn), forward and backward, on weft's Kokkos host path.
#include "common.hpp"

#include <tuple>

namespace weft_torch {
namespace {

using at::Tensor;
using opt = std::optional<Tensor>;

/// The options of one call (offsets kept alive by the caller's tensors).
weft::attention_options options(std::optional<double> scale, bool causal, std::int64_t wl, std::int64_t wr,
                                double softcap, const Tensor& cu_q, const Tensor& cu_k, std::int64_t q_offset,
                                std::int64_t k_offset) {
  return weft::attention_options{.scale = scale ? static_cast<float>(*scale) : 0.0f,
                                 .causal = causal,
                                 .q_offset = q_offset,
                                 .k_offset = k_offset,
                                 .window = {wl, wr},
                                 .softcap = static_cast<float>(softcap),
                                 .cu_seqlens_q = offsets_view(cu_q),
                                 .cu_seqlens_k = offsets_view(cu_k)};
}

void check_qkv(const char* fn, const Tensor& q, const Tensor& k, const Tensor& v) {
  for (auto [n, t] : {std::pair<const char*, const Tensor*>{"q", &q}, {"k", &k}, {"v", &v}}) {
    check_cpu(fn, n, *t);
    check_rank(fn, n, *t, 4, "[B,T,H,D]");
  }
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), "weft_torch.",
                   fn, ": q, k, v must have one dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
                   v.scalar_type());
}

std::tuple<Tensor, Tensor> forward(const Tensor& q_, const Tensor& k_, const Tensor& v_,
                                   std::optional<double> scale, bool causal, std::int64_t wl, std::int64_t wr,
                                   double softcap, const opt& cu_q_, const opt& cu_k_, std::int64_t q_offset,
                                   std::int64_t k_offset) {
  constexpr const char* fn = "attention";
  check_qkv(fn, q_, k_, v_);
  const Tensor cu_q = offsets_arg(fn, "cu_seqlens_q", cu_q_), cu_k = offsets_arg(fn, "cu_seqlens_k", cu_k_);
  return dispatch_float(fn, "q", q_, [&]<class T>() -> std::tuple<Tensor, Tensor> {
    const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
    Tensor o = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
    Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
    const auto opts = options(scale, causal, wl, wr, softcap, cu_q, cu_k, q_offset, k_offset);
    translate([&] {
      weft::attention(host_backend(), view<const T, 4>(q), view<const T, 4>(k), view<const T, 4>(v),
                      view<T, 4>(o), view<float, 3>(lse), opts);
    });
    return {o, lse};
  });
}

std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& q_, const Tensor& k_, const Tensor& v_,
                                            const Tensor& o_, const Tensor& lse_, const Tensor& do__,
                                            std::optional<double> scale, bool causal, std::int64_t wl,
                                            std::int64_t wr, double softcap, const opt& cu_q_,
                                            const opt& cu_k_, std::int64_t q_offset, std::int64_t k_offset) {
  constexpr const char* fn = "attention_backward";
  check_qkv(fn, q_, k_, v_);
  check_cpu(fn, "do", do__);
  check_rank(fn, "do", do__, 4, "[B,Tq,H,D]");
  const Tensor cu_q = offsets_arg(fn, "cu_seqlens_q", cu_q_), cu_k = offsets_arg(fn, "cu_seqlens_k", cu_k_);
  return dispatch_float(fn, "q", q_, [&]<class T>() -> std::tuple<Tensor, Tensor, Tensor> {
    constexpr auto dt = scalar_of<T>();
    const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
    const Tensor o = as(o_, dt), d_o = as(do__, dt), lse = as(lse_, at::kFloat);
    Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    const auto opts = options(scale, causal, wl, wr, softcap, cu_q, cu_k, q_offset, k_offset);
    translate([&] {
      weft::attention_backward(host_backend(), view<const T, 4>(q), view<const T, 4>(k), view<const T, 4>(v),
                               view<const T, 4>(o), view<const float, 3>(lse), view<const T, 4>(d_o),
                               view<T, 4>(dq), view<T, 4>(dk), view<T, 4>(dv), opts);
    });
    return {dq, dk, dv};
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(weft, m) {
  m.def(
      "attention(Tensor q, Tensor k, Tensor v, float? scale, bool causal, int window_left, int window_right, "
      "float softcap, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, int q_offset, int k_offset) -> (Tensor, "
      "Tensor)");
  m.def(
      "attention_backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor do, float? scale, bool "
      "causal, "
      "int window_left, int window_right, float softcap, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, int "
      "q_offset, "
      "int k_offset) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(weft, CPU, m) {
  m.impl("attention", &forward);
  m.impl("attention_backward", &backward);
}

}  // namespace weft_torch
