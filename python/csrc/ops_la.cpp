// weft_torch: linear attention (FLA's chunk_* / fused_recurrent_* kernels) forward, backward and
// decode step, on weft's Kokkos host path.
#include "common.hpp"

#include <chrono>
#include <string>
#include <string_view>
#include <tuple>

namespace weft_torch {
namespace {

using at::Tensor;
using opt = std::optional<Tensor>;

enum class kind { none, scalar, vector, delta, gated_delta, mlstm };

kind parse_kind(const char* fn, std::string_view gate) {
  if (gate == "none") return kind::none;
  if (gate == "scalar") return kind::scalar;
  if (gate == "vector") return kind::vector;
  if (gate == "delta") return kind::delta;
  if (gate == "gated_delta") return kind::gated_delta;
  if (gate == "mlstm") return kind::mlstm;
  TORCH_CHECK_VALUE(false, "weft_torch.", fn,
                    ": gate must be one of none, scalar, vector, delta, gated_delta, "
                    "mlstm; got '",
                    std::string(gate), "'");
}

/// The gate tensors of one call, converted to the element type and checked for presence and
/// rank (weft checks their extents and values against q's).
struct gate_tensors {
  kind k;
  Tensor g, beta, i, f;
  bool sigmoid = false;
};

Tensor gate_arg(const char* fn, const char* name, const opt& t, bool needed, int rank, const char* shape,
                const char* gate, at::ScalarType dt) {
  if (!needed) {
    TORCH_CHECK_VALUE(!given(t), "weft_torch.", fn, ": ", name, " is not used by the '", gate,
                      "' gate; pass None");
    return {};
  }
  TORCH_CHECK_VALUE(given(t), "weft_torch.", fn, ": the '", gate, "' gate needs ", name, " ", shape);
  check_cpu(fn, name, *t);
  check_rank(fn, name, *t, rank, shape);
  TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), "weft_torch.", fn, ": ", name,
                   " must be a floating tensor, got ", t->scalar_type());
  return as(*t, dt);
}

gate_tensors gates_of(const char* fn, const std::string& gate, const opt& g, const opt& beta, const opt& i,
                      const opt& f, bool sigmoid, at::ScalarType dt) {
  gate_tensors r{parse_kind(fn, gate), {}, {}, {}, {}, sigmoid};
  const char* n = gate.c_str();
  const bool vec = r.k == kind::vector;
  r.g = gate_arg(fn, "g", g, r.k == kind::scalar || vec || r.k == kind::gated_delta, vec ? 4 : 3,
                 vec ? "[B,T,H,K]" : "[B,T,H]", n, dt);
  r.beta = gate_arg(fn, "beta", beta, r.k == kind::delta || r.k == kind::gated_delta, 3, "[B,T,H]", n, dt);
  r.i = gate_arg(fn, "i", i, r.k == kind::mlstm, 3, "[B,T,H]", n, dt);
  r.f = gate_arg(fn, "f", f, r.k == kind::mlstm, 3, "[B,T,H]", n, dt);
  return r;
}

/// Calls fn(gate) with the weft gate object over the (const T) tensors.
template <class T, class F>
decltype(auto) with_gate(const gate_tensors& t, F&& fn) {
  using C = const T;
  switch (t.k) {
    case kind::none:
      return fn(weft::gates::none{});
    case kind::scalar:
      return fn(weft::gates::scalar{view<C, 3>(t.g)});
    case kind::vector:
      return fn(weft::gates::vector{view<C, 4>(t.g)});
    case kind::delta:
      return fn(weft::gates::delta{view<C, 3>(t.beta)});
    case kind::gated_delta:
      return fn(weft::gates::gated_delta{view<C, 3>(t.g), view<C, 3>(t.beta)});
    case kind::mlstm:
      return fn(weft::gates::mlstm{
          view<C, 3>(t.i), view<C, 3>(t.f),
          t.sigmoid ? weft::gates::mlstm_input::sigmoid : weft::gates::mlstm_input::exponential});
  }
  TORCH_INTERNAL_ASSERT(false);
}

Tensor empty0(const Tensor& like) {
  return at::empty({0}, like.options());
}

/// An fp32 contiguous state argument of the given rank, or an undefined tensor.
Tensor state_arg(const char* fn, const char* name, const opt& t, int rank, const char* shape) {
  if (!given(t)) return {};
  check_cpu(fn, name, *t);
  check_rank(fn, name, *t, rank, shape);
  TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), "weft_torch.", fn, ": ", name,
                   " must be a floating tensor, got ", t->scalar_type());
  return as(*t, at::kFloat);
}

template <class T, int R>
weft::tensor_view<const float, R> cview(const Tensor& t) {
  return t.defined() ? view<const float, R>(t) : weft::tensor_view<const float, R>{};
}

void check_qkv(const char* fn, const Tensor& q, const Tensor& k, const Tensor& v) {
  check_cpu(fn, "q", q);
  check_cpu(fn, "k", k);
  check_cpu(fn, "v", v);
  check_rank(fn, "q", q, 4, "[B,T,H,K]");
  check_rank(fn, "k", k, 4, "[B,T,H,K]");
  check_rank(fn, "v", v, 4, "[B,T,H,V]");
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), "weft_torch.",
                   fn, ": q, k, v must have one dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
                   v.scalar_type());
}

void check_chunk_size(const char* fn, std::int64_t chunk_size) {
  TORCH_CHECK_VALUE(chunk_size >= 16 && chunk_size <= 256, "weft_torch.", fn,
                    ": chunk_size must be a power of two in [16, 256], got ", chunk_size);
}

std::int64_t sequences(const Tensor& q, const Tensor& cu) {
  return cu.defined() ? cu.size(0) - 1 : q.size(0);
}

using fwd_result = std::tuple<Tensor, Tensor, Tensor, Tensor>;

fwd_result la_forward(const Tensor& q_, const Tensor& k_, const Tensor& v_, const std::string& gate,
                      const opt& g, const opt& beta, const opt& i, const opt& f, std::optional<double> scale,
                      const opt& h0_, const opt& n0_, const opt& m0_, bool output_final_state, const opt& cu_,
                      bool recurrent, std::int64_t chunk_size, bool mlstm_sigmoid) {
  constexpr const char* fn = "linear_attention";
  check_qkv(fn, q_, k_, v_);
  return dispatch_float(fn, "q", q_, [&]<class T>() -> fwd_result {
    constexpr auto dt = scalar_of<T>();
    const Tensor q = as(q_, dt), k = as(k_, dt), v = as(v_, dt);
    const gate_tensors gt = gates_of(fn, gate, g, beta, i, f, mlstm_sigmoid, dt);
    const Tensor h0 = state_arg(fn, "initial_state", h0_, 4, "[N,H,K,V]");
    const Tensor n0 = state_arg(fn, "initial_normalizer", n0_, 3, "[N,H,K]");
    const Tensor m0 = state_arg(fn, "initial_stabilizer", m0_, 2, "[N,H]");
    const Tensor cu = offsets_arg(fn, "cu_seqlens", cu_);
    check_chunk_size(fn, chunk_size);
    const std::int64_t N = sequences(q, cu), H = q.size(2), K = q.size(3), V = v.size(3);
    const bool ml = gt.k == kind::mlstm;
    const bool state_out = output_final_state;
    Tensor o = at::empty({q.size(0), q.size(1), H, V}, q.options());
    const auto f32 = q.options().dtype(at::kFloat);
    Tensor hT = state_out ? at::empty({N, H, K, V}, f32) : at::empty({0}, f32);
    Tensor nT = state_out && ml ? at::empty({N, H, K}, f32) : at::empty({0}, f32);
    Tensor mT = state_out && ml && !mlstm_sigmoid ? at::empty({N, H}, f32) : at::empty({0}, f32);
    weft::linear_attention_options opts{
        .scale = scale,
        .mode = recurrent ? weft::linear_attention_mode::recurrent : weft::linear_attention_mode::chunk,
        .chunk_size = static_cast<int>(chunk_size),
        .initial_state = cview<T, 4>(h0),
        .final_state = state_out ? view<float, 4>(hT) : weft::tensor_view<float, 4>{},
        .cu_seqlens = offsets_view(cu),
        .initial_normalizer = cview<T, 3>(n0),
        .initial_stabilizer = cview<T, 2>(m0),
        .final_normalizer = nT.numel() ? view<float, 3>(nT) : weft::tensor_view<float, 3>{},
        .final_stabilizer = mT.numel() ? view<float, 2>(mT) : weft::tensor_view<float, 2>{},
    };
    translate([&] {
      with_gate<T>(gt, [&](const auto& gg) {
        weft::linear_attention(host_backend(), gg, view<const T, 4>(q), view<const T, 4>(k),
                               view<const T, 4>(v), view<T, 4>(o), opts);
      });
    });
    return {o, hT, nT, mT};
  });
}

using bwd_result = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

bwd_result la_backward(const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& do__,
                       const std::string& gate, const opt& g, const opt& beta, const opt& i, const opt& f,
                       std::optional<double> scale, const opt& h0_, const opt& n0_, const opt& m0_,
                       const opt& dhT_, const opt& dnT_, const opt& dmT_, const opt& cu_,
                       std::int64_t chunk_size, bool mlstm_sigmoid, bool need_d_initial) {
  constexpr const char* fn = "linear_attention_backward";
  check_qkv(fn, q_, k_, v_);
  check_cpu(fn, "do", do__);
  check_rank(fn, "do", do__, 4, "[B,T,H,V]");
  return dispatch_float(fn, "q", q_, [&]<class T>() -> bwd_result {
    constexpr auto dt = scalar_of<T>();
    const Tensor q = as(q_, dt), k = as(k_, dt), v = as(v_, dt), d_o = as(do__, dt);
    const gate_tensors gt = gates_of(fn, gate, g, beta, i, f, mlstm_sigmoid, dt);
    const Tensor h0 = state_arg(fn, "initial_state", h0_, 4, "[N,H,K,V]");
    const Tensor n0 = state_arg(fn, "initial_normalizer", n0_, 3, "[N,H,K]");
    const Tensor m0 = state_arg(fn, "initial_stabilizer", m0_, 2, "[N,H]");
    const Tensor dhT = state_arg(fn, "d_final_state", dhT_, 4, "[N,H,K,V]");
    const Tensor dnT = state_arg(fn, "d_final_normalizer", dnT_, 3, "[N,H,K]");
    const Tensor dmT = state_arg(fn, "d_final_stabilizer", dmT_, 2, "[N,H]");
    const Tensor cu = offsets_arg(fn, "cu_seqlens", cu_);
    check_chunk_size(fn, chunk_size);
    const std::int64_t N = sequences(q, cu), H = q.size(2), K = q.size(3), V = v.size(3);
    const bool ml = gt.k == kind::mlstm;
    Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    Tensor dg = gt.g.defined() ? at::empty_like(gt.g) : empty0(q);
    Tensor dbeta = gt.beta.defined() ? at::empty_like(gt.beta) : empty0(q);
    Tensor di = gt.i.defined() ? at::empty_like(gt.i) : empty0(q);
    Tensor df = gt.f.defined() ? at::empty_like(gt.f) : empty0(q);
    const auto f32 = q.options().dtype(at::kFloat);
    Tensor dh0 = need_d_initial ? at::empty({N, H, K, V}, f32) : at::empty({0}, f32);
    Tensor dn0 = need_d_initial && ml ? at::empty({N, H, K}, f32) : at::empty({0}, f32);
    Tensor dm0 = need_d_initial && ml && !mlstm_sigmoid ? at::empty({N, H}, f32) : at::empty({0}, f32);
    const weft::linear_attention_backward_options opts{
        .scale = scale,
        .chunk_size = static_cast<int>(chunk_size),
        .initial_state = cview<T, 4>(h0),
        .cu_seqlens = offsets_view(cu),
        .initial_normalizer = cview<T, 3>(n0),
        .initial_stabilizer = cview<T, 2>(m0),
        .d_final_state = cview<T, 4>(dhT),
        .d_final_normalizer = cview<T, 3>(dnT),
        .d_final_stabilizer = cview<T, 2>(dmT),
        .d_initial_state = dh0.numel() ? view<float, 4>(dh0) : weft::tensor_view<float, 4>{},
        .d_initial_normalizer = dn0.numel() ? view<float, 3>(dn0) : weft::tensor_view<float, 3>{},
        .d_initial_stabilizer = dm0.numel() ? view<float, 2>(dm0) : weft::tensor_view<float, 2>{},
    };
    const auto grads = [&](auto dgate) {
      return weft::linear_attention_grads<T, decltype(dgate)>{view<T, 4>(dq), view<T, 4>(dk), view<T, 4>(dv),
                                                              dgate};
    };
    translate([&] {
      with_gate<T>(gt, [&](const auto& gg) {
        using G = std::remove_cvref_t<decltype(gg)>;
        const auto run = [&](auto dgate) {
          weft::linear_attention_backward(host_backend(), gg, view<const T, 4>(q), view<const T, 4>(k),
                                          view<const T, 4>(v), view<const T, 4>(d_o), grads(dgate), opts);
        };
        if constexpr (std::is_same_v<G, weft::gates::none>)
          run(weft::gates::none{});
        else if constexpr (std::is_same_v<G, weft::gates::scalar<const T>>)
          run(weft::gates::scalar{view<T, 3>(dg)});
        else if constexpr (std::is_same_v<G, weft::gates::vector<const T>>)
          run(weft::gates::vector{view<T, 4>(dg)});
        else if constexpr (std::is_same_v<G, weft::gates::delta<const T>>)
          run(weft::gates::delta{view<T, 3>(dbeta)});
        else if constexpr (std::is_same_v<G, weft::gates::gated_delta<const T>>)
          run(weft::gates::gated_delta{view<T, 3>(dg), view<T, 3>(dbeta)});
        else
          run(weft::gates::mlstm{view<T, 3>(di), view<T, 3>(df), gg.input});
      });
    });
    return {dq, dk, dv, dg, dbeta, di, df, dh0, dn0, dm0};
  });
}

Tensor la_step(const Tensor& q_, const Tensor& k_, const Tensor& v_, const std::string& gate, const opt& g,
               const opt& beta, const opt& i, const opt& f, const Tensor& state, const opt& normalizer,
               const opt& stabilizer, std::optional<double> scale, bool mlstm_sigmoid) {
  constexpr const char* fn = "linear_attention_step";
  check_qkv(fn, q_, k_, v_);
  check_cpu(fn, "state", state);
  const auto in_place = [&](const char* name, const Tensor& t) {
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, "weft_torch.", fn, ": ", name,
                     " is updated in place and must be float32, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.is_contiguous(), "weft_torch.", fn, ": ", name,
                      " is updated in place and must be contiguous");
  };
  in_place("state", state);
  check_rank(fn, "state", state, 4, "[N,H,K,V]");
  if (given(normalizer)) {
    in_place("normalizer", *normalizer);
    check_rank(fn, "normalizer", *normalizer, 3, "[N,H,K]");
  }
  if (given(stabilizer)) {
    in_place("stabilizer", *stabilizer);
    check_rank(fn, "stabilizer", *stabilizer, 2, "[N,H]");
  }
  return dispatch_float(fn, "q", q_, [&]<class T>() -> Tensor {
    constexpr auto dt = scalar_of<T>();
    const Tensor q = as(q_, dt), k = as(k_, dt), v = as(v_, dt);
    const gate_tensors gt = gates_of(fn, gate, g, beta, i, f, mlstm_sigmoid, dt);
    Tensor o = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
    const weft::linear_attention_step_options opts{
        .scale = scale,
        .normalizer = given(normalizer) ? view<float, 3>(*normalizer) : weft::tensor_view<float, 3>{},
        .stabilizer = given(stabilizer) ? view<float, 2>(*stabilizer) : weft::tensor_view<float, 2>{},
    };
    translate([&] {
      with_gate<T>(gt, [&](const auto& gg) {
        weft::linear_attention_step(host_backend(), gg, view<const T, 4>(q), view<const T, 4>(k),
                                    view<const T, 4>(v), view<T, 4>(o), view<float, 4>(state), opts);
      });
    });
    return o;
  });
}

/// The benchmark's yardstick for the call overhead: seconds per weft::linear_attention_step
/// called straight from C++ on views built once (no dispatcher, no allocation, no checks of
/// this binding), `iters` times on these tensors (state updated in place each time).
double time_raw_step(const Tensor& q, const Tensor& k, const Tensor& v, const std::string& gate, const opt& g,
                     const opt& beta, const Tensor& state, std::int64_t iters) {
  constexpr const char* fn = "_time_raw_step";
  check_qkv(fn, q, k, v);
  TORCH_CHECK_TYPE(q.scalar_type() == at::kFloat && state.scalar_type() == at::kFloat, "weft_torch.", fn,
                   ": float32 tensors only");
  TORCH_CHECK_VALUE(q.is_contiguous() && k.is_contiguous() && v.is_contiguous() && state.is_contiguous(),
                    "weft_torch.", fn, ": contiguous tensors only");
  const gate_tensors gt = gates_of(fn, gate, g, beta, {}, {}, false, at::kFloat);
  Tensor o = at::empty({q.size(0), 1, q.size(2), v.size(3)}, q.options());
  const auto be = host_backend();
  double seconds = 0;
  translate([&] {
    with_gate<float>(gt, [&](const auto& gg) {
      const auto qv = view<const float, 4>(q), kv = view<const float, 4>(k), vv = view<const float, 4>(v);
      const auto ov = view<float, 4>(o);
      const auto sv = view<float, 4>(state);
      weft::linear_attention_step(be, gg, qv, kv, vv, ov, sv);  // warm-up
      const auto t0 = std::chrono::steady_clock::now();
      for (std::int64_t it = 0; it < iters; ++it) weft::linear_attention_step(be, gg, qv, kv, vv, ov, sv);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  });
  return seconds / static_cast<double>(iters);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(weft, m) {
  m.def(
      "_time_raw_step(Tensor q, Tensor k, Tensor v, str gate, Tensor? g, Tensor? beta, Tensor(a!) state, int "
      "iters) "
      "-> float");
  m.def(
      "linear_attention(Tensor q, Tensor k, Tensor v, str gate, Tensor? g, Tensor? beta, Tensor? i, "
      "Tensor? f, float? scale, Tensor? initial_state, Tensor? initial_normalizer, Tensor? "
      "initial_stabilizer, "
      "bool output_final_state, Tensor? cu_seqlens, bool recurrent, int chunk_size, bool mlstm_sigmoid) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "linear_attention_backward(Tensor q, Tensor k, Tensor v, Tensor do, str gate, Tensor? g, Tensor? beta, "
      "Tensor? i, Tensor? f, float? scale, Tensor? initial_state, Tensor? initial_normalizer, "
      "Tensor? initial_stabilizer, Tensor? d_final_state, Tensor? d_final_normalizer, "
      "Tensor? d_final_stabilizer, Tensor? cu_seqlens, int chunk_size, bool mlstm_sigmoid, "
      "bool need_d_initial) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor)");
  m.def(
      "linear_attention_step(Tensor q, Tensor k, Tensor v, str gate, Tensor? g, Tensor? beta, Tensor? i, "
      "Tensor? f, Tensor(a!) state, Tensor(b!)? normalizer, Tensor(c!)? stabilizer, float? scale, "
      "bool mlstm_sigmoid) -> Tensor");
}

TORCH_LIBRARY_IMPL(weft, CPU, m) {
  m.impl("linear_attention", &la_forward);
  m.impl("linear_attention_backward", &la_backward);
  m.impl("linear_attention_step", &la_step);
  m.impl("_time_raw_step", &time_raw_step);
}

}  // namespace weft_torch
