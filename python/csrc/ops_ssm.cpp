// weft_torch: Mamba-1's selective scan and the causal depthwise conv1d (mamba_ssm's
// selective_scan_fn / selective_state_update and causal-conv1d's causal_conv1d_fn /
// causal_conv1d_update in weft_torch.mamba): forward, backward, decode steps, on weft's Kokkos
// host path.
//
// The operators take weft's layout: per-token tensors [B,T,Dm], B and C [B,T,G,Ns]. The scan and
// the conv read any strides in place (mamba's channel-major [B,Dm,T] memory arrives as a
// transposed view; weft has fast paths for channel-last and, in the conv, time-major memory)
// and their outputs have their inputs' memory layout (empty_like), except where the conv's
// backward gets x and dy in different layouts (time_major_pair below).
#include "common.hpp"

#include <ATen/Parallel.h>

#include <algorithm>

#include <string>
#include <tuple>

namespace weft_torch {
namespace {

using at::Tensor;
using opt = std::optional<Tensor>;

/// A weft view of `t` with its own strides (torch's strides are never negative).
template <class T, int R>
weft::tensor_view<T, R> strided(const Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == R);
  std::array<std::int64_t, R> ext{}, str{};
  for (int d = 0; d < R; ++d) {
    ext[d] = t.size(d);
    str[d] = t.stride(d);
  }
  return weft::tensor_view<T, R>(static_cast<T*>(t.data_ptr()), ext, str);
}

/// An optional strided view: empty when `t` is undefined.
template <class T, int R>
weft::tensor_view<T, R> maybe(const Tensor& t) {
  return t.defined() ? strided<T, R>(t) : weft::tensor_view<T, R>{};
}

/// A per-token input: on the CPU, of rank R, floating, in dtype `dt` (converted only when its
/// dtype differs; the memory layout is kept).
Tensor token_arg(const char* fn, const char* name, const Tensor& t, int rank, const char* shape,
                 at::ScalarType dt) {
  check_cpu(fn, name, t);
  check_rank(fn, name, t, rank, shape);
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "weft_torch.", fn, ": ", name,
                   " must be a floating tensor, got ", t.scalar_type());
  return t.scalar_type() == dt ? t : t.to(dt);
}

/// An optional parameter or state (absent: undefined), as a contiguous tensor of dtype `dt`.
Tensor param_arg(const char* fn, const char* name, const opt& t, int rank, const char* shape,
                 at::ScalarType dt) {
  if (!given(t)) return {};
  check_cpu(fn, name, *t);
  check_rank(fn, name, *t, rank, shape);
  TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), "weft_torch.", fn, ": ", name,
                   " must be a floating tensor, got ", t->scalar_type());
  return as(*t, dt);
}

/// A tensor updated in place: of the call's dtype exactly (no converting copy can stand in).
void check_in_place(const char* fn, const char* name, const Tensor& t, at::ScalarType dt, int rank,
                    const char* shape) {
  check_cpu(fn, name, t);
  check_rank(fn, name, t, rank, shape);
  TORCH_CHECK_TYPE(t.scalar_type() == dt, "weft_torch.", fn, ": ", name, " is updated in place and must be ",
                   dt, " like the inputs, got ", t.scalar_type());
}

Tensor empty0(const Tensor& like) {
  return at::empty({0}, like.options());
}

std::int64_t sequences(const Tensor& u, const Tensor& cu) {
  return cu.defined() ? cu.size(0) - 1 : u.size(0);
}

// ---- selective scan ---------------------------------------------------------------------------

/// The selective scan's inputs in one dtype.
struct scan_inputs {
  Tensor u, delta, A, B, C, D, z, bias, h0, cu;
};

scan_inputs scan_args(const char* fn, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                      const Tensor& C, const opt& D, const opt& z, const opt& bias, const opt& h0,
                      const opt& cu, at::ScalarType dt) {
  scan_inputs s;
  s.u = token_arg(fn, "u", u, 3, "[B,T,Dm]", dt);
  s.delta = token_arg(fn, "delta", delta, 3, "[B,T,Dm]", dt);
  s.B = token_arg(fn, "B", B, 4, "[B,T,G,Ns]", dt);
  s.C = token_arg(fn, "C", C, 4, "[B,T,G,Ns]", dt);
  s.A = param_arg(fn, "A", A, 2, "[Dm,Ns]", dt);
  s.D = param_arg(fn, "D", D, 1, "[Dm]", dt);
  s.bias = param_arg(fn, "delta_bias", bias, 1, "[Dm]", dt);
  s.h0 = param_arg(fn, "initial_state", h0, 3, "[N,Dm,Ns]", dt);
  s.cu = offsets_arg(fn, "cu_seqlens", cu);
  if (given(z)) s.z = token_arg(fn, "z", *z, 3, "[B,T,Dm]", dt);
  return s;
}

using scan_result = std::tuple<Tensor, Tensor>;

scan_result scan_forward(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& B_,
                         const Tensor& C_, const opt& D_, const opt& z_, const opt& bias_, bool softplus,
                         const opt& h0_, bool output_final_state, const opt& cu_) {
  constexpr const char* fn = "selective_scan";
  check_cpu(fn, "u", u_);
  return dispatch_float(fn, "u", u_, [&]<class T>() -> scan_result {
    const auto s = scan_args(fn, u_, delta_, A_, B_, C_, D_, z_, bias_, h0_, cu_, scalar_of<T>());
    Tensor y = at::empty_like(s.u);
    Tensor hT = output_final_state
                    ? at::empty({sequences(s.u, s.cu), s.u.size(2), s.A.size(1)}, s.u.options())
                    : empty0(s.u);
    weft::selective_scan_options<T> o;
    o.D = maybe<const T, 1>(s.D);
    o.z = maybe<const T, 3>(s.z);
    o.delta_bias = maybe<const T, 1>(s.bias);
    o.delta_softplus = softplus;
    o.initial_state = maybe<const T, 3>(s.h0);
    o.final_state = output_final_state ? strided<T, 3>(hT) : weft::tensor_view<T, 3>{};
    o.cu_seqlens = offsets_view(s.cu);
    translate([&] {
      weft::selective_scan(host_backend(), strided<const T, 3>(s.u), strided<const T, 3>(s.delta),
                           strided<const T, 2>(s.A), strided<const T, 4>(s.B), strided<const T, 4>(s.C),
                           strided<T, 3>(y), o);
    });
    return {y, hT};
  });
}

using scan_grads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

scan_grads scan_backward(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& B_,
                         const Tensor& C_, const Tensor& dy_, const opt& D_, const opt& z_, const opt& bias_,
                         bool softplus, const opt& h0_, const opt& dhT_, const opt& cu_,
                         bool need_d_initial) {
  constexpr const char* fn = "selective_scan_backward";
  check_cpu(fn, "u", u_);
  return dispatch_float(fn, "u", u_, [&]<class T>() -> scan_grads {
    constexpr auto dt = scalar_of<T>();
    const auto s = scan_args(fn, u_, delta_, A_, B_, C_, D_, z_, bias_, h0_, cu_, dt);
    const Tensor dy = token_arg(fn, "dy", dy_, 3, "[B,T,Dm]", dt);
    const Tensor dhT = param_arg(fn, "d_final_state", dhT_, 3, "[N,Dm,Ns]", dt);
    Tensor du = at::empty_like(s.u), ddelta = at::empty_like(s.delta), dA = at::empty_like(s.A);
    Tensor dB = at::empty_like(s.B), dC = at::empty_like(s.C);
    Tensor dD = s.D.defined() ? at::empty_like(s.D) : empty0(s.u);
    Tensor dz = s.z.defined() ? at::empty_like(s.z) : empty0(s.u);
    Tensor dbias = s.bias.defined() ? at::empty_like(s.bias) : empty0(s.u);
    Tensor dh0 = need_d_initial ? at::empty({sequences(s.u, s.cu), s.u.size(2), s.A.size(1)}, s.u.options())
                                : empty0(s.u);
    weft::selective_scan_backward_options<T> o;
    o.D = maybe<const T, 1>(s.D);
    o.z = maybe<const T, 3>(s.z);
    o.delta_bias = maybe<const T, 1>(s.bias);
    o.delta_softplus = softplus;
    o.initial_state = maybe<const T, 3>(s.h0);
    o.cu_seqlens = offsets_view(s.cu);
    o.d_final_state = maybe<const T, 3>(dhT);
    o.dD = s.D.defined() ? strided<T, 1>(dD) : weft::tensor_view<T, 1>{};
    o.dz = s.z.defined() ? strided<T, 3>(dz) : weft::tensor_view<T, 3>{};
    o.d_delta_bias = s.bias.defined() ? strided<T, 1>(dbias) : weft::tensor_view<T, 1>{};
    o.d_initial_state = need_d_initial ? strided<T, 3>(dh0) : weft::tensor_view<T, 3>{};
    translate([&] {
      weft::selective_scan_backward(
          host_backend(), strided<const T, 3>(s.u), strided<const T, 3>(s.delta), strided<const T, 2>(s.A),
          strided<const T, 4>(s.B), strided<const T, 4>(s.C), strided<const T, 3>(dy), strided<T, 3>(du),
          strided<T, 3>(ddelta), strided<T, 2>(dA), strided<T, 4>(dB), strided<T, 4>(dC), o);
    });
    return {du, ddelta, dA, dB, dC, dD, dz, dbias, dh0};
  });
}

Tensor scan_step(const Tensor& state, const Tensor& u_, const Tensor& delta_, const Tensor& A_,
                 const Tensor& B_, const Tensor& C_, const opt& D_, const opt& z_, const opt& bias_,
                 bool softplus) {
  constexpr const char* fn = "selective_scan_step";
  check_cpu(fn, "u", u_);
  return dispatch_float(fn, "u", u_, [&]<class T>() -> Tensor {
    constexpr auto dt = scalar_of<T>();
    check_in_place(fn, "state", state, dt, 3, "[N,Dm,Ns]");
    const Tensor u = token_arg(fn, "u", u_, 2, "[N,Dm]", dt),
                 delta = token_arg(fn, "delta", delta_, 2, "[N,Dm]", dt);
    const Tensor B = token_arg(fn, "B", B_, 3, "[N,G,Ns]", dt), C = token_arg(fn, "C", C_, 3, "[N,G,Ns]", dt);
    const Tensor A = param_arg(fn, "A", A_, 2, "[Dm,Ns]", dt);
    const Tensor D = param_arg(fn, "D", D_, 1, "[Dm]", dt),
                 bias = param_arg(fn, "delta_bias", bias_, 1, "[Dm]", dt);
    const Tensor z = given(z_) ? token_arg(fn, "z", *z_, 2, "[N,Dm]", dt) : Tensor{};
    Tensor y = at::empty_like(u);
    weft::selective_scan_step_options<T> o;
    o.D = maybe<const T, 1>(D);
    o.z = maybe<const T, 2>(z);
    o.delta_bias = maybe<const T, 1>(bias);
    o.delta_softplus = softplus;
    translate([&] {
      weft::selective_scan_step(host_backend(), strided<T, 3>(state), strided<const T, 2>(u),
                                strided<const T, 2>(delta), strided<const T, 2>(A), strided<const T, 3>(B),
                                strided<const T, 3>(C), strided<T, 2>(y), o);
    });
    return y;
  });
}

// ---- causal conv1d ----------------------------------------------------------------------------

/// The conv's backward has fast paths for channel-last x, dy, dx (16 channels per vector) and
/// for time-major ones (mamba's channel-major [B,Dm,T] memory, 16 rows per vector); anything else
/// reads element by element, many times slower (docs/perf.md). So x and dy that are not both
/// time-major are copied to channel-last memory (channel_last, in 64 x 64 tiles on torch's
/// threads: torch's own strided copy, `contiguous()`, took ~60 ms of work for Mamba-130M's 50 MB
/// at 2 threads), and dx is allocated like x.
bool time_major_pair(const Tensor& x, const Tensor& dy) {
  const auto tm = [](const Tensor& t) {
    return t.size(2) > 1 && t.stride(2) != 1 && (t.size(1) <= 1 || t.stride(1) == 1);
  };
  return tm(x) && tm(dy);
}

template <class T>
Tensor channel_last(const Tensor& t) {
  if (t.size(2) <= 1 || t.stride(2) == 1) return t;
  if (t.stride(1) != 1) return t.contiguous();
  constexpr std::int64_t tile = 64;
  const std::int64_t B = t.size(0), Tn = t.size(1), Dm = t.size(2), sb = t.stride(0), sd = t.stride(2);
  Tensor out = at::empty({B, Tn, Dm}, t.options());
  const T* src = t.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  const std::int64_t nt = (Tn + tile - 1) / tile, nd = (Dm + tile - 1) / tile;
  at::parallel_for(0, B * nt * nd, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const std::int64_t b = i / (nt * nd), t0 = (i / nd) % nt * tile, d0 = i % nd * tile;
      const std::int64_t t1 = std::min(t0 + tile, Tn), d1 = std::min(d0 + tile, Dm);
      for (std::int64_t u = t0; u < t1; ++u)
        for (std::int64_t d = d0; d < d1; ++d) dst[(b * Tn + u) * Dm + d] = src[b * sb + u + d * sd];
    }
  });
  return out;
}

/// A conv state [N,Dm,W-1] of x's dtype when wanted, else an empty tensor.
Tensor conv_state(bool wanted, const Tensor& x, const Tensor& cu, const Tensor& w) {
  return wanted
             ? at::empty({sequences(x, cu), x.size(2), std::max<std::int64_t>(w.size(1) - 1, 0)}, x.options())
             : empty0(x);
}

weft::conv1d_activation activation(bool silu) {
  return silu ? weft::conv1d_activation::silu : weft::conv1d_activation::none;
}

using conv_result = std::tuple<Tensor, Tensor>;

conv_result conv_forward(const Tensor& x_, const Tensor& weight_, const opt& bias_, const opt& h0_,
                         bool output_final_state, bool silu, const opt& cu_) {
  constexpr const char* fn = "causal_conv1d";
  check_cpu(fn, "x", x_);
  return dispatch_float(fn, "x", x_, [&]<class T>() -> conv_result {
    constexpr auto dt = scalar_of<T>();
    const Tensor x = token_arg(fn, "x", x_, 3, "[B,T,Dm]", dt);
    const Tensor w = param_arg(fn, "weight", weight_, 2, "[Dm,W]", dt);
    const Tensor bias = param_arg(fn, "bias", bias_, 1, "[Dm]", dt);
    const Tensor h0 = param_arg(fn, "initial_state", h0_, 3, "[N,Dm,W-1]", dt);
    const Tensor cu = offsets_arg(fn, "cu_seqlens", cu_);
    Tensor y = at::empty_like(x);
    Tensor hT = conv_state(output_final_state, x, cu, w);
    weft::causal_conv1d_options<T> o;
    o.activation = activation(silu);
    o.initial_state = maybe<const T, 3>(h0);
    o.final_state = output_final_state ? strided<T, 3>(hT) : weft::tensor_view<T, 3>{};
    o.cu_seqlens = offsets_view(cu);
    translate([&] {
      weft::causal_conv1d(host_backend(), strided<const T, 3>(x), strided<const T, 2>(w),
                          maybe<const T, 1>(bias), strided<T, 3>(y), o);
    });
    return {y, hT};
  });
}

using conv_grads = std::tuple<Tensor, Tensor, Tensor, Tensor>;

conv_grads conv_backward(const Tensor& x_, const Tensor& weight_, const opt& bias_, const Tensor& dy_,
                         const opt& h0_, const opt& dhT_, bool silu, const opt& cu_, bool need_d_initial) {
  constexpr const char* fn = "causal_conv1d_backward";
  check_cpu(fn, "x", x_);
  return dispatch_float(fn, "x", x_, [&]<class T>() -> conv_grads {
    constexpr auto dt = scalar_of<T>();
    const Tensor x0 = token_arg(fn, "x", x_, 3, "[B,T,Dm]", dt),
                 dy0 = token_arg(fn, "dy", dy_, 3, "[B,T,Dm]", dt);
    const bool time_major = time_major_pair(x0, dy0);
    const Tensor x = time_major ? x0 : channel_last<T>(x0), dy = time_major ? dy0 : channel_last<T>(dy0);
    const Tensor w = param_arg(fn, "weight", weight_, 2, "[Dm,W]", dt);
    const Tensor bias = param_arg(fn, "bias", bias_, 1, "[Dm]", dt);
    const Tensor h0 = param_arg(fn, "initial_state", h0_, 3, "[N,Dm,W-1]", dt);
    const Tensor dhT = param_arg(fn, "d_final_state", dhT_, 3, "[N,Dm,W-1]", dt);
    const Tensor cu = offsets_arg(fn, "cu_seqlens", cu_);
    Tensor dx = at::empty_like(x), dw = at::empty_like(w);
    Tensor db = bias.defined() ? at::empty_like(bias) : empty0(x);
    Tensor dh0 = conv_state(need_d_initial, x, cu, w);
    weft::causal_conv1d_backward_options<T> o;
    o.activation = activation(silu);
    o.initial_state = maybe<const T, 3>(h0);
    o.d_initial_state = need_d_initial ? strided<T, 3>(dh0) : weft::tensor_view<T, 3>{};
    o.d_final_state = maybe<const T, 3>(dhT);
    o.cu_seqlens = offsets_view(cu);
    translate([&] {
      weft::causal_conv1d_backward(host_backend(), strided<const T, 3>(x), strided<const T, 2>(w),
                                   maybe<const T, 1>(bias), strided<const T, 3>(dy), strided<T, 3>(dx),
                                   strided<T, 2>(dw),
                                   bias.defined() ? strided<T, 1>(db) : weft::tensor_view<T, 1>{}, o);
    });
    return {dx, dw, db, dh0};
  });
}

Tensor conv_step(const Tensor& x_, const Tensor& state, const Tensor& weight_, const opt& bias_, bool silu) {
  constexpr const char* fn = "causal_conv1d_step";
  check_cpu(fn, "x", x_);
  return dispatch_float(fn, "x", x_, [&]<class T>() -> Tensor {
    constexpr auto dt = scalar_of<T>();
    check_in_place(fn, "state", state, dt, 3, "[N,Dm,W-1]");
    const Tensor x = token_arg(fn, "x", x_, 2, "[N,Dm]", dt);
    const Tensor w = param_arg(fn, "weight", weight_, 2, "[Dm,W]", dt);
    const Tensor bias = param_arg(fn, "bias", bias_, 1, "[Dm]", dt);
    Tensor y = at::empty_like(x);
    translate([&] {
      weft::causal_conv1d_step(host_backend(), strided<const T, 2>(x), strided<T, 3>(state),
                               strided<const T, 2>(w), maybe<const T, 1>(bias), strided<T, 2>(y),
                               weft::causal_conv1d_step_options{.activation = activation(silu)});
    });
    return y;
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(weft, m) {
  m.def(
      "selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, bool output_final_state, "
      "Tensor? cu_seqlens) -> (Tensor, Tensor)");
  m.def(
      "selective_scan_backward(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor dy, Tensor? D, "
      "Tensor? z, Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, Tensor? d_final_state, "
      "Tensor? cu_seqlens, bool need_d_initial) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
  m.def(
      "selective_scan_step(Tensor(a!) state, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? "
      "D, "
      "Tensor? z, Tensor? delta_bias, bool delta_softplus) -> Tensor");
  m.def(
      "causal_conv1d(Tensor x, Tensor weight, Tensor? bias, Tensor? initial_state, bool output_final_state, "
      "bool silu, Tensor? cu_seqlens) -> (Tensor, Tensor)");
  m.def(
      "causal_conv1d_backward(Tensor x, Tensor weight, Tensor? bias, Tensor dy, Tensor? initial_state, "
      "Tensor? d_final_state, bool silu, Tensor? cu_seqlens, bool need_d_initial) -> (Tensor, Tensor, "
      "Tensor, Tensor)");
  m.def("causal_conv1d_step(Tensor x, Tensor(a!) state, Tensor weight, Tensor? bias, bool silu) -> Tensor");
}

TORCH_LIBRARY_IMPL(weft, CPU, m) {
  m.impl("selective_scan", &scan_forward);
  m.impl("selective_scan_backward", &scan_backward);
  m.impl("selective_scan_step", &scan_step);
  m.impl("causal_conv1d", &conv_forward);
  m.impl("causal_conv1d_backward", &conv_backward);
  m.impl("causal_conv1d_step", &conv_step);
}

}  // namespace weft_torch
