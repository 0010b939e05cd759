// ssm_xcheck DIR: runs weft's ssm family (selective scan, causal conv1d: forward, backward,
// decode steps) on inputs written by check_mamba.py and writes the outputs back, for the
// optional cross-check against mamba_ssm's and causal-conv1d's own reference functions. Not a
// Catch2 test: the comparison is made in Python, beside the references. fp32 only; one backend:
// Kokkos (DefaultHostExecutionSpace) when built with it, else serial.
//
// DIR/meta.txt, one "key values..." line each:
//   op    scan | scan_step | conv | conv_step
//   dims  scan: B T Dm Ns G    scan_step: S N Dm Ns G    (G = 0: B, C shared [.., Ns], else [.., G, Ns])
//         conv: B T Dm W       conv_step: S N Dm W       (S: decode steps, one after the other)
//   flags any of: D z bias softplus silu init final cm grad
//         (cm: u, delta, z, dy, x and B, C in mamba's channel-major memory [B,Dm,T], [B,(G,)Ns,T],
//          given to weft as strided views; outputs of those shapes are written the same way)
//   cu    c0 c1 ... cN     (optional, B == 1: packed sequences)
// Inputs, raw little-endian fp32, weft's index order unless cm:
//   scan: u, delta, z, dy [B,T,Dm]; Bm, Cm, [B,T,(G,)Ns]; A [Dm,Ns]; D, bias [Dm]; h0 (init), dhT [N,Dm,Ns]
//   scan_step: state0 [N,Dm,Ns]; u, delta, z [S,N,Dm]; Bm, Cm [S,N,(G,)Ns]; A, D, bias
//   conv: x, dy [B,T,Dm]; weight [Dm,W]; bias [Dm]; init, dfin [N,Dm,W-1]
//   conv_step: state0 [N,Dm,W-1]; x [S,N,Dm]; weight, bias
// Outputs DIR/<name>.<run>.bin, then <run> printed on a line of stdout:
//   scan: y, h1 (run fwd-<backend>); with grad: du, ddelta, dA, dB, dC, dD, dz, dbias (bwd-<backend>)
//   scan_step: y [S,N,Dm], h1 (step-<backend>)
//   conv: y, fin (fwd-); with grad: dx, dweight, dbias, dinit (bwd-)
//   conv_step: y [S,N,Dm], state1 (step-)
#include <weft/weft.hpp>

#if WEFT_XCHECK_KOKKOS
#include <Kokkos_Core.hpp>

#include <weft/kokkos.hpp>
#endif

#include <array>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using i64 = std::int64_t;
using vec = std::vector<float>;
std::string dir;

vec read_floats(const std::string& name, i64 n) {
  std::ifstream f(dir + "/" + name + ".bin", std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + dir + "/" + name + ".bin");
  vec x(static_cast<std::size_t>(n));
  const auto bytes = static_cast<std::streamsize>(n * static_cast<i64>(sizeof(float)));
  f.read(reinterpret_cast<char*>(x.data()), bytes);
  if (f.gcount() != bytes || f.peek() != EOF)
    throw std::runtime_error(name + ".bin: expected " + std::to_string(n) + " floats");
  return x;
}

void write_floats(const std::string& name, const std::string& run, const vec& x) {
  std::ofstream f(dir + "/" + name + "." + run + ".bin", std::ios::binary);
  f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
  if (!f) throw std::runtime_error("cannot write " + name + "." + run + ".bin");
}

struct problem {
  std::string op;
  std::array<i64, 5> dims{};
  std::set<std::string> flags;
  std::vector<i64> cu;
  bool has(const char* f) const { return flags.count(f) != 0; }
  vec in(const char* name, i64 n) const { return read_floats(name, n); }
  vec opt(const char* flag, const char* name, i64 n) const { return has(flag) ? in(name, n) : vec{}; }
};

problem read_problem() {
  problem p;
  std::ifstream meta(dir + "/meta.txt");
  if (!meta) throw std::runtime_error("cannot open " + dir + "/meta.txt");
  for (std::string line; std::getline(meta, line);) {
    std::istringstream in(line);
    std::string key;
    if (!(in >> key)) continue;
    if (key == "op") {
      in >> p.op;
    } else if (key == "dims") {
      for (auto& d : p.dims) in >> d;
    } else if (key == "flags") {
      for (std::string f; in >> f;) p.flags.insert(f);
    } else if (key == "cu") {
      for (i64 c; in >> c;) p.cu.push_back(c);
    } else {
      throw std::runtime_error("meta.txt: unknown key " + key);
    }
  }
  return p;
}

/// [e0,e1,e2] over memory [e0,e2,e1] (channel-major) when cm, else contiguous.
template <class T>
weft::tensor_view<T, 3> tok3(T* x, i64 e0, i64 e1, i64 e2, bool cm) {
  if (!cm) return weft::make_view(x, e0, e1, e2);
  return {x, {e0, e1, e2}, {e1 * e2, 1, e1}};
}

/// B or C: [B,T,Ns] (G == 0) or [B,T,G,Ns]; cm: memory [B,Ns,T] or [B,G,Ns,T].
template <int R, class T>
weft::tensor_view<T, R> bc(T* x, i64 B, i64 T_, i64 G, i64 Ns, bool cm) {
  if constexpr (R == 3) {
    return tok3(x, B, T_, Ns, cm);
  } else {
    if (!cm) return weft::make_view(x, B, T_, G, Ns);
    return {x, {B, T_, G, Ns}, {G * Ns * T_, 1, Ns * T_, T_}};
  }
}

template <int R, class Backend>
void scan(const Backend& be, const problem& p, const std::string& name) {
  const auto [B, T, Dm, Ns, G] = p.dims;
  const bool cm = p.has("cm");
  const i64 N = p.cu.empty() ? B : static_cast<i64>(p.cu.size()) - 1, nbc = B * T * (G ? G : 1) * Ns;
  const vec u = p.in("u", B * T * Dm), delta = p.in("delta", B * T * Dm), A = p.in("A", Dm * Ns),
            Bm = p.in("Bm", nbc), Cm = p.in("Cm", nbc), D = p.opt("D", "D", Dm),
            z = p.opt("z", "z", B * T * Dm), bias = p.opt("bias", "bias", Dm);
  const auto t3 = [&](const vec& x) { return tok3(x.data(), B, T, Dm, cm); };
  const auto v1 = [](const vec& x) { return weft::make_view(x.data(), static_cast<i64>(x.size())); };
  const auto av = weft::make_view(A.data(), Dm, Ns);
  const auto bv = bc<R>(Bm.data(), B, T, G, Ns, cm), cv = bc<R>(Cm.data(), B, T, G, Ns, cm);
  const weft::tensor_view<const i64, 1> cu =
      p.cu.empty() ? weft::tensor_view<const i64, 1>{} : weft::make_view(p.cu.data(), N + 1);
  vec y(u.size()), h1(static_cast<std::size_t>(N * Dm * Ns));
  weft::selective_scan_options<float> o;
  if (!D.empty()) o.D = v1(D);
  if (!z.empty()) o.z = t3(z);
  if (!bias.empty()) o.delta_bias = v1(bias);
  o.delta_softplus = p.has("softplus");
  const vec h0 = p.opt("init", "h0", N * Dm * Ns);
  if (!h0.empty()) o.initial_state = weft::make_view(h0.data(), N, Dm, Ns);
  o.final_state = weft::make_view(h1.data(), N, Dm, Ns);
  o.cu_seqlens = cu;
  weft::selective_scan(be, t3(u), t3(delta), av, bv, cv, tok3(y.data(), B, T, Dm, cm), o);
  be.fence();
  write_floats("y", "fwd-" + name, y);
  write_floats("h1", "fwd-" + name, h1);
  std::cout << "fwd-" << name << "\n";
  if (!p.has("grad")) return;
  const vec dy = p.in("dy", B * T * Dm), dhT = p.in("dhT", N * Dm * Ns);
  vec du(u.size()), dd(u.size()), dA(A.size()), dB(Bm.size()), dC(Cm.size()), dD(D.size()), dz(z.size()),
      db(bias.size());
  weft::selective_scan_backward_options<float> g;
  g.D = o.D;
  g.z = o.z;
  g.delta_bias = o.delta_bias;
  g.delta_softplus = o.delta_softplus;
  g.initial_state = o.initial_state;
  g.cu_seqlens = cu;
  g.d_final_state = weft::make_view(dhT.data(), N, Dm, Ns);
  if (!D.empty()) g.dD = weft::make_view(dD.data(), Dm);
  if (!z.empty()) g.dz = tok3(dz.data(), B, T, Dm, cm);
  if (!bias.empty()) g.d_delta_bias = weft::make_view(db.data(), Dm);
  weft::selective_scan_backward(be, t3(u), t3(delta), av, bv, cv, t3(dy), tok3(du.data(), B, T, Dm, cm),
                                tok3(dd.data(), B, T, Dm, cm), weft::make_view(dA.data(), Dm, Ns),
                                bc<R>(dB.data(), B, T, G, Ns, cm), bc<R>(dC.data(), B, T, G, Ns, cm), g);
  be.fence();
  const std::string run = "bwd-" + name;
  for (const auto& [n, x] : {std::pair{"du", &du},
                             {"ddelta", &dd},
                             {"dA", &dA},
                             {"dB", &dB},
                             {"dC", &dC},
                             {"dD", &dD},
                             {"dz", &dz},
                             {"dbias", &db}})
    if (!x->empty()) write_floats(n, run, *x);
  std::cout << run << "\n";
}

template <int R, class Backend>
void scan_step(const Backend& be, const problem& p, const std::string& name) {
  const auto [S, N, Dm, Ns, G] = p.dims;
  const i64 nbc = N * (G ? G : 1) * Ns;
  vec h = p.in("state0", N * Dm * Ns);
  const vec u = p.in("u", S * N * Dm), delta = p.in("delta", S * N * Dm), A = p.in("A", Dm * Ns),
            Bm = p.in("Bm", S * nbc), Cm = p.in("Cm", S * nbc), D = p.opt("D", "D", Dm),
            z = p.opt("z", "z", S * N * Dm), bias = p.opt("bias", "bias", Dm);
  vec y(u.size());
  weft::selective_scan_step_options<float> o;
  if (!D.empty()) o.D = weft::make_view(D.data(), Dm);
  if (!bias.empty()) o.delta_bias = weft::make_view(bias.data(), Dm);
  o.delta_softplus = p.has("softplus");
  for (i64 s = 0; s < S; ++s) {
    const i64 t = s * N * Dm;
    if (!z.empty()) o.z = weft::make_view(z.data() + t, N, Dm);
    const auto b = [&](const vec& x) {
      if constexpr (R == 2)
        return weft::make_view(x.data() + s * nbc, N, Ns);
      else
        return weft::make_view(x.data() + s * nbc, N, G, Ns);
    };
    weft::selective_scan_step(be, weft::make_view(h.data(), N, Dm, Ns), weft::make_view(u.data() + t, N, Dm),
                              weft::make_view(delta.data() + t, N, Dm), weft::make_view(A.data(), Dm, Ns),
                              b(Bm), b(Cm), weft::make_view(y.data() + t, N, Dm), o);
  }
  be.fence();
  write_floats("y", "step-" + name, y);
  write_floats("h1", "step-" + name, h);
  std::cout << "step-" << name << "\n";
}

template <class Backend>
void conv(const Backend& be, const problem& p, const std::string& name) {
  const auto [B, T, Dm, W, unused] = p.dims;
  const bool cm = p.has("cm");
  const i64 N = p.cu.empty() ? B : static_cast<i64>(p.cu.size()) - 1;
  const vec x = p.in("x", B * T * Dm), w = p.in("weight", Dm * W), bias = p.opt("bias", "bias", Dm),
            init = p.opt("init", "init", N * Dm * (W - 1));
  const auto wv = weft::make_view(w.data(), Dm, W);
  const auto bv = bias.empty() ? weft::tensor_view<const float, 1>{} : weft::make_view(bias.data(), Dm);
  const auto act = p.has("silu") ? weft::conv1d_activation::silu : weft::conv1d_activation::none;
  const weft::tensor_view<const i64, 1> cu =
      p.cu.empty() ? weft::tensor_view<const i64, 1>{} : weft::make_view(p.cu.data(), N + 1);
  vec y(x.size()), fin(static_cast<std::size_t>(p.has("final") ? N * Dm * (W - 1) : 0));
  weft::causal_conv1d_options<float> o{.activation = act, .cu_seqlens = cu};
  if (!init.empty()) o.initial_state = weft::make_view(init.data(), N, Dm, W - 1);
  if (p.has("final")) o.final_state = weft::make_view(fin.data(), N, Dm, W - 1);
  weft::causal_conv1d(be, tok3(x.data(), B, T, Dm, cm), wv, bv, tok3(y.data(), B, T, Dm, cm), o);
  be.fence();
  write_floats("y", "fwd-" + name, y);
  if (p.has("final")) write_floats("fin", "fwd-" + name, fin);
  std::cout << "fwd-" << name << "\n";
  if (!p.has("grad")) return;
  const vec dy = p.in("dy", B * T * Dm), dfin = p.opt("final", "dfin", N * Dm * (W - 1));
  vec dx(x.size()), dw(w.size()), db(bias.size()), dinit(init.size());
  weft::causal_conv1d_backward_options<float> g{.activation = act, .cu_seqlens = cu};
  g.initial_state = o.initial_state;
  if (!init.empty()) g.d_initial_state = weft::make_view(dinit.data(), N, Dm, W - 1);
  if (!dfin.empty()) g.d_final_state = weft::make_view(dfin.data(), N, Dm, W - 1);
  weft::causal_conv1d_backward(be, tok3(x.data(), B, T, Dm, cm), wv, bv, tok3(dy.data(), B, T, Dm, cm),
                               tok3(dx.data(), B, T, Dm, cm), weft::make_view(dw.data(), Dm, W),
                               db.empty() ? weft::tensor_view<float, 1>{} : weft::make_view(db.data(), Dm),
                               g);
  be.fence();
  const std::string run = "bwd-" + name;
  for (const auto& [n, v] : {std::pair{"dx", &dx}, {"dweight", &dw}, {"dbias", &db}, {"dinit", &dinit}})
    if (!v->empty()) write_floats(n, run, *v);
  std::cout << run << "\n";
}

template <class Backend>
void conv_step(const Backend& be, const problem& p, const std::string& name) {
  const auto [S, N, Dm, W, unused] = p.dims;
  vec state = p.in("state0", N * Dm * (W - 1));
  const vec x = p.in("x", S * N * Dm), w = p.in("weight", Dm * W), bias = p.opt("bias", "bias", Dm);
  const auto bv = bias.empty() ? weft::tensor_view<const float, 1>{} : weft::make_view(bias.data(), Dm);
  vec y(x.size());
  for (i64 s = 0; s < S; ++s)
    weft::causal_conv1d_step(
        be, weft::make_view(x.data() + s * N * Dm, N, Dm), weft::make_view(state.data(), N, Dm, W - 1),
        weft::make_view(w.data(), Dm, W), bv, weft::make_view(y.data() + s * N * Dm, N, Dm),
        {.activation = p.has("silu") ? weft::conv1d_activation::silu : weft::conv1d_activation::none});
  be.fence();
  write_floats("y", "step-" + name, y);
  write_floats("state1", "step-" + name, state);
  std::cout << "step-" << name << "\n";
}

template <class Backend>
void run(const Backend& be, const problem& p, const std::string& name) {
  const bool grouped = p.dims[4] != 0;
  if (p.op == "scan")
    grouped ? scan<4>(be, p, name) : scan<3>(be, p, name);
  else if (p.op == "scan_step")
    grouped ? scan_step<3>(be, p, name) : scan_step<2>(be, p, name);
  else if (p.op == "conv")
    conv(be, p, name);
  else if (p.op == "conv_step")
    conv_step(be, p, name);
  else
    throw std::runtime_error("meta.txt: unknown op " + p.op);
}

}  // namespace

int main(int argc, char** argv) {
#if WEFT_XCHECK_KOKKOS
  Kokkos::ScopeGuard kokkos(argc, argv);
#endif
  if (argc != 2) {
    std::cerr << "usage: ssm_xcheck DIR\n";
    return 2;
  }
  dir = argv[1];
  try {
    const problem p = read_problem();
#if WEFT_XCHECK_KOKKOS
    run(weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>{}, p, "kokkos");
#else
    run(weft::serial_backend{}, p, "serial");
#endif
  } catch (const std::exception& e) {
    std::cerr << "ssm_xcheck: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
