// An ssm_test::problem run through weft's selective_scan / selective_scan_backward on a backend,
// in the element type E, with the results widened to double.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "ssm/scan_oracle.hpp"
#include "support/backends.hpp"

namespace ssm_test {

struct layout {
  bool channel_major = false;  ///< u, delta, z, y (and dy, du, ...) stored [B,Dm,T], seen through strides
  bool groups_rank4 = true;    ///< B, C as [B,T,G,Ns]; false: [B,T,Ns] (needs G == 1)
  bool final_state = true;
};

/// A [B,T,Dm] tensor's storage: row-major, or [B,Dm,T] for channel_major.
inline std::vector<double> to_storage(const std::vector<double>& v, const problem& p, bool cm) {
  if (!cm || v.empty()) return v;
  std::vector<double> r(v.size());
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t t = 0; t < p.T; ++t)
      for (std::int64_t d = 0; d < p.Dm; ++d) r[(b * p.Dm + d) * p.T + t] = v[(b * p.T + t) * p.Dm + d];
  return r;
}
inline std::vector<double> from_storage(const std::vector<double>& v, const problem& p, bool cm) {
  if (!cm || v.empty()) return v;
  std::vector<double> r(v.size());
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t t = 0; t < p.T; ++t)
      for (std::int64_t d = 0; d < p.Dm; ++d) r[(b * p.T + t) * p.Dm + d] = v[(b * p.Dm + d) * p.T + t];
  return r;
}

template <class T>
weft::tensor_view<T, 3> tok_view(T* data, const problem& p, bool cm) {
  if (!cm) return weft::make_view(data, p.B, p.T, p.Dm);
  return weft::make_strided_view(data, std::array<std::int64_t, 3>{p.B, p.T, p.Dm},
                                 std::array<std::int64_t, 3>{p.Dm * p.T, 1, p.T});
}

/// The problem's inputs in backend memory, as E (parameters and states as accum_t<E>).
template <class Backend, class E>
struct inputs {
  using S = weft::accum_t<E>;
  const problem& p;
  layout lay;
  weft_test::buffer<Backend, E> u, delta, z, Bm, Cm;
  weft_test::buffer<Backend, S> A, D, bias, h0;
  weft_test::buffer<Backend, std::int64_t> cu;
  inputs(const Backend& be, const problem& pr, layout l)
      : p(pr),
        lay(l),
        u(be, cast<E>(to_storage(pr.u, pr, l.channel_major))),
        delta(be, cast<E>(to_storage(pr.delta, pr, l.channel_major))),
        z(be, cast<E>(to_storage(pr.z, pr, l.channel_major))),
        Bm(be, cast<E>(pr.Bm)),
        Cm(be, cast<E>(pr.Cm)),
        A(be, cast<S>(pr.A)),
        D(be, cast<S>(pr.D)),
        bias(be, cast<S>(pr.bias)),
        h0(be, cast<S>(pr.h0)),
        cu(be, pr.cu) {}
  weft::tensor_view<const E, 3> tok(const weft_test::buffer<Backend, E>& b) const {
    return tok_view<const E>(b.data(), p, lay.channel_major);
  }
  weft::tensor_view<const E, 4> bc4(const weft_test::buffer<Backend, E>& b) const {
    return weft::make_view<const E>(b.data(), p.B, p.T, p.G, p.Ns);
  }
  weft::tensor_view<const E, 3> bc3(const weft_test::buffer<Backend, E>& b) const {
    return weft::make_view<const E>(b.data(), p.B, p.T, p.Ns);
  }
  weft::tensor_view<const S, 2> Av() const { return weft::make_view<const S>(A.data(), p.Dm, p.Ns); }
  template <class O>
  void fill(O& o) const {
    if (!p.D.empty()) o.D = weft::make_view<const S>(D.data(), p.Dm);
    if (!p.bias.empty()) o.delta_bias = weft::make_view<const S>(bias.data(), p.Dm);
    if (!p.z.empty()) o.z = tok(z);
    o.delta_softplus = p.softplus;
    if (!p.h0.empty()) o.initial_state = weft::make_view<const S>(h0.data(), p.N(), p.Dm, p.Ns);
    if (!p.cu.empty()) o.cu_seqlens = weft::make_view<const std::int64_t>(cu.data(), p.N() + 1);
  }
};

/// weft's forward on backend be in element type E.
template <class Backend, class E>
result run_forward(const Backend& be, const problem& p, layout lay = {}) {
  using S = weft::accum_t<E>;
  const inputs<Backend, E> in(be, p, lay);
  weft_test::buffer<Backend, E> y(be, p.u.size(), E(-7.0f));
  weft_test::buffer<Backend, S> hT(be, static_cast<std::size_t>(p.N() * p.Dm * p.Ns), S(-7));
  weft::selective_scan_options<E> o;
  in.fill(o);
  if (lay.final_state) o.final_state = weft::make_view(hT.data(), p.N(), p.Dm, p.Ns);
  auto yv = tok_view<E>(y.data(), p, lay.channel_major);
  if (lay.groups_rank4)
    weft::selective_scan(be, in.tok(in.u), in.tok(in.delta), in.Av(), in.bc4(in.Bm), in.bc4(in.Cm), yv, o);
  else
    weft::selective_scan(be, in.tok(in.u), in.tok(in.delta), in.Av(), in.bc3(in.Bm), in.bc3(in.Cm), yv, o);
  result r;
  r.y = from_storage(widen(y.to_host()), p, lay.channel_major);
  if (lay.final_state) r.hT = widen(hT.to_host());
  return r;
}

struct grads {
  std::vector<double> du, ddelta, dA, dB, dC, dD, dz, dbias, dh0;
};

/// weft's backward for upstream gradients dy [B,T,Dm] and dhT [N,Dm,Ns] (empty: none).
template <class Backend, class E>
grads run_backward(const Backend& be, const problem& p, const std::vector<double>& dy,
                   const std::vector<double>& dhT, layout lay = {}) {
  using S = weft::accum_t<E>;
  const inputs<Backend, E> in(be, p, lay);
  const bool cm = lay.channel_major;
  const std::size_t ntok = p.u.size(), nbc = p.Bm.size(), nst = static_cast<std::size_t>(p.N() * p.Dm * p.Ns);
  weft_test::buffer<Backend, E> dyb(be, cast<E>(to_storage(dy, p, cm))), du(be, ntok, E(-7.0f)),
      ddelta(be, ntok, E(-7.0f)), dB(be, nbc, E(-7.0f)), dC(be, nbc, E(-7.0f)), dz(be, ntok, E(-7.0f));
  weft_test::buffer<Backend, S> dA(be, p.A.size(), S(-7)), dD(be, p.Dm, S(-7)), dbias(be, p.Dm, S(-7)),
      dh0(be, nst, S(-7)), dhTb(be, cast<S>(dhT));
  weft::selective_scan_backward_options<E> o;
  in.fill(o);
  o.dD = weft::make_view(dD.data(), p.Dm);
  o.d_delta_bias = weft::make_view(dbias.data(), p.Dm);
  o.d_initial_state = weft::make_view(dh0.data(), p.N(), p.Dm, p.Ns);
  if (!p.z.empty()) o.dz = tok_view<E>(dz.data(), p, cm);
  if (!dhT.empty()) o.d_final_state = weft::make_view<const S>(dhTb.data(), p.N(), p.Dm, p.Ns);
  auto dAv = weft::make_view(dA.data(), p.Dm, p.Ns);
  if (lay.groups_rank4) {
    weft::selective_scan_backward(be, in.tok(in.u), in.tok(in.delta), in.Av(), in.bc4(in.Bm), in.bc4(in.Cm),
                                  tok_view<const E>(dyb.data(), p, cm), tok_view<E>(du.data(), p, cm),
                                  tok_view<E>(ddelta.data(), p, cm), dAv,
                                  weft::make_view(dB.data(), p.B, p.T, p.G, p.Ns),
                                  weft::make_view(dC.data(), p.B, p.T, p.G, p.Ns), o);
  } else {
    weft::selective_scan_backward(be, in.tok(in.u), in.tok(in.delta), in.Av(), in.bc3(in.Bm), in.bc3(in.Cm),
                                  tok_view<const E>(dyb.data(), p, cm), tok_view<E>(du.data(), p, cm),
                                  tok_view<E>(ddelta.data(), p, cm), dAv,
                                  weft::make_view(dB.data(), p.B, p.T, p.Ns),
                                  weft::make_view(dC.data(), p.B, p.T, p.Ns), o);
  }
  grads g;
  g.du = from_storage(widen(du.to_host()), p, cm);
  g.ddelta = from_storage(widen(ddelta.to_host()), p, cm);
  g.dA = widen(dA.to_host());
  g.dB = widen(dB.to_host());
  g.dC = widen(dC.to_host());
  g.dD = widen(dD.to_host());
  g.dbias = widen(dbias.to_host());
  g.dh0 = widen(dh0.to_host());
  if (!p.z.empty()) g.dz = from_storage(widen(dz.to_host()), p, cm);
  return g;
}

}  // namespace ssm_test
