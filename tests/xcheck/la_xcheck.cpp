// la_xcheck DIR: runs weft::linear_attention on inputs written by check_fla.py and writes the
// outputs back, for the optional cross-check against FLA's (and mlstm_kernels') own naive
// reference recurrences. Not a Catch2 test: the comparison is made in Python, beside the
// reference.
//
// DIR/meta.txt, one "key values..." line each:
//   gate   none | scalar | vector | mlstm_exp | mlstm_sig | delta | gated_delta
//   dims   B T H K V
//   scale  <float>          (optional; default K^-1/2)
//   state  0 | 1            (1: DIR/s0.bin [N,H,K,V], and for mLSTM n0.bin [N,H,K], m0.bin [N,H])
//   cu     c0 c1 ... cN     (optional, B == 1: packed variable-length sequences)
// Inputs, raw little-endian fp32: q.bin, k.bin [B,T,H,K]; v.bin [B,T,H,V]; g.bin [B,T,H] (scalar,
// gated_delta) or [B,T,H,K] (vector); beta.bin [B,T,H]; i.bin, f.bin [B,T,H] (mLSTM).
// For every run R in the list below it writes DIR/o.R.bin [B,T,H,V] and DIR/s1.R.bin [N,H,K,V]
// (mLSTM also n1.R.bin, m1.R.bin), and prints R on a line of stdout.
// With "grad 1" in meta.txt it also reads the upstream gradients do.bin [B,T,H,V], ds1.bin
// [N,H,K,V] (and dn1.bin, dm1.bin for mLSTM, where given), runs linear_attention_backward and
// writes dq, dk, dv, dg, dbeta, di, df, ds0, dn0, dm0 .R.bin (those of the inputs there are) for
// the runs R = backward-serial-c64, backward-kokkos-c16.
#include <weft/weft.hpp>

#if WEFT_XCHECK_KOKKOS
#include <Kokkos_Core.hpp>

#include <weft/kokkos.hpp>
#endif

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

std::string dir;

std::vector<float> read_floats(const std::string& name, std::size_t n) {
  std::ifstream f(dir + "/" + name, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + dir + "/" + name);
  std::vector<float> x(n);
  f.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(n * sizeof(float)));
  if (f.gcount() != static_cast<std::streamsize>(n * sizeof(float)) || f.peek() != EOF)
    throw std::runtime_error(name + ": expected " + std::to_string(n) + " floats");
  return x;
}

void write_floats(const std::string& name, const std::vector<float>& x) {
  std::ofstream f(dir + "/" + name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
  if (!f) throw std::runtime_error("cannot write " + dir + "/" + name);
}

struct problem {
  std::string gate;
  std::int64_t B = 0, T = 0, H = 0, K = 0, V = 0, N = 0;
  bool has_scale = false, has_state = false, grad = false;
  float scale = 0;
  std::vector<std::int64_t> cu;
  std::vector<float> q, k, v, g, beta, i, f, s0, n0, m0;
  std::vector<float> dout, ds1, dn1, dm1;  // upstream gradients (grad 1)
};

bool exists(const std::string& name) {
  return static_cast<bool>(std::ifstream(dir + "/" + name));
}

problem read_problem() {
  problem p;
  std::ifstream meta(dir + "/meta.txt");
  if (!meta) throw std::runtime_error("cannot open " + dir + "/meta.txt");
  std::string line;
  while (std::getline(meta, line)) {
    std::istringstream in(line);
    std::string key;
    if (!(in >> key)) continue;
    if (key == "gate") {
      in >> p.gate;
    } else if (key == "dims") {
      in >> p.B >> p.T >> p.H >> p.K >> p.V;
    } else if (key == "scale") {
      in >> p.scale;
      p.has_scale = true;
    } else if (key == "state") {
      int s = 0;
      in >> s;
      p.has_state = s != 0;
    } else if (key == "grad") {
      int g = 0;
      in >> g;
      p.grad = g != 0;
    } else if (key == "cu") {
      for (std::int64_t c; in >> c;) p.cu.push_back(c);
    } else {
      throw std::runtime_error("meta.txt: unknown key " + key);
    }
  }
  if (p.B < 1 || p.T < 0 || p.H < 1 || p.K < 1 || p.V < 1) throw std::runtime_error("meta.txt: bad dims");
  p.N = p.cu.empty() ? p.B : static_cast<std::int64_t>(p.cu.size()) - 1;
  const auto n = [](auto... e) { return static_cast<std::size_t>((e * ...)); };
  p.q = read_floats("q.bin", n(p.B, p.T, p.H, p.K));
  p.k = read_floats("k.bin", n(p.B, p.T, p.H, p.K));
  p.v = read_floats("v.bin", n(p.B, p.T, p.H, p.V));
  if (p.gate == "scalar" || p.gate == "gated_delta") p.g = read_floats("g.bin", n(p.B, p.T, p.H));
  if (p.gate == "vector") p.g = read_floats("g.bin", n(p.B, p.T, p.H, p.K));
  if (p.gate == "delta" || p.gate == "gated_delta") p.beta = read_floats("beta.bin", n(p.B, p.T, p.H));
  const bool mlstm = p.gate == "mlstm_exp" || p.gate == "mlstm_sig";
  if (mlstm) {
    p.i = read_floats("i.bin", n(p.B, p.T, p.H));
    p.f = read_floats("f.bin", n(p.B, p.T, p.H));
  }
  if (p.has_state) {
    p.s0 = read_floats("s0.bin", n(p.N, p.H, p.K, p.V));
    if (mlstm) p.n0 = read_floats("n0.bin", n(p.N, p.H, p.K));
    if (p.gate == "mlstm_exp") p.m0 = read_floats("m0.bin", n(p.N, p.H));
  }
  if (p.grad) {
    p.dout = read_floats("do.bin", n(p.B, p.T, p.H, p.V));
    if (exists("ds1.bin")) p.ds1 = read_floats("ds1.bin", n(p.N, p.H, p.K, p.V));
    if (exists("dn1.bin")) p.dn1 = read_floats("dn1.bin", n(p.N, p.H, p.K));
    if (exists("dm1.bin")) p.dm1 = read_floats("dm1.bin", n(p.N, p.H));
  }
  return p;
}

/// Calls fn(gate) with the gate object of p's kind.
template <class Fn>
void with_gate(const problem& p, Fn&& fn) {
  using weft::make_view;
  const auto v3 = [&](const std::vector<float>& x) { return make_view(x.data(), p.B, p.T, p.H); };
  if (p.gate == "none") {
    fn(weft::gates::none{});
  } else if (p.gate == "scalar") {
    fn(weft::gates::scalar{v3(p.g)});
  } else if (p.gate == "vector") {
    fn(weft::gates::vector{make_view(p.g.data(), p.B, p.T, p.H, p.K)});
  } else if (p.gate == "mlstm_exp") {
    fn(weft::gates::mlstm{v3(p.i), v3(p.f), weft::gates::mlstm_input::exponential});
  } else if (p.gate == "mlstm_sig") {
    fn(weft::gates::mlstm{v3(p.i), v3(p.f), weft::gates::mlstm_input::sigmoid});
  } else if (p.gate == "delta") {
    fn(weft::gates::delta{v3(p.beta)});
  } else if (p.gate == "gated_delta") {
    fn(weft::gates::gated_delta{v3(p.g), v3(p.beta)});
  } else {
    throw std::runtime_error("meta.txt: unknown gate " + p.gate);
  }
}

template <class Backend>
void run(const Backend& be, const problem& p, weft::linear_attention_mode mode, int chunk,
         const std::string& tag) {
  using weft::make_view;
  const bool mlstm = !p.i.empty(), stab = p.gate == "mlstm_exp";
  std::vector<float> o(p.v.size()), s1(static_cast<std::size_t>(p.N * p.H * p.K * p.V));
  std::vector<float> n1(static_cast<std::size_t>(p.N * p.H * p.K)), m1(static_cast<std::size_t>(p.N * p.H));
  weft::linear_attention_options opts{.mode = mode, .chunk_size = chunk};
  if (p.has_scale) opts.scale = p.scale;
  opts.final_state = make_view(s1.data(), p.N, p.H, p.K, p.V);
  if (p.has_state) opts.initial_state = make_view(p.s0.data(), p.N, p.H, p.K, p.V);
  if (!p.cu.empty()) opts.cu_seqlens = make_view(p.cu.data(), p.N + 1);
  if (mlstm) {
    opts.final_normalizer = make_view(n1.data(), p.N, p.H, p.K);
    if (p.has_state) opts.initial_normalizer = make_view(p.n0.data(), p.N, p.H, p.K);
    if (stab) {
      opts.final_stabilizer = make_view(m1.data(), p.N, p.H);
      if (p.has_state) opts.initial_stabilizer = make_view(p.m0.data(), p.N, p.H);
    }
  }
  with_gate(p, [&](const auto& gate) {
    weft::linear_attention(
        be, gate, make_view(p.q.data(), p.B, p.T, p.H, p.K), make_view(p.k.data(), p.B, p.T, p.H, p.K),
        make_view(p.v.data(), p.B, p.T, p.H, p.V), make_view(o.data(), p.B, p.T, p.H, p.V), opts);
  });
  be.fence();
  write_floats("o." + tag + ".bin", o);
  write_floats("s1." + tag + ".bin", s1);
  if (mlstm) write_floats("n1." + tag + ".bin", n1);
  if (stab) write_floats("m1." + tag + ".bin", m1);
  std::cout << tag << "\n";
}

/// linear_attention_backward on p with its upstream gradients; writes the input gradients.
template <class Backend>
void run_backward(const Backend& be, const problem& p, int chunk, const std::string& tag) {
  using weft::make_view;
  const bool is_mlstm = !p.i.empty(), stab = p.gate == "mlstm_exp";
  const std::int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V, N = p.N;
  std::vector<float> dq(p.q.size()), dk(p.k.size()), dv(p.v.size()), dg(p.g.size()), db(p.beta.size()),
      di(p.i.size()), df(p.f.size());
  std::vector<float> ds0(p.s0.size()), dn0(p.n0.size()), dm0(p.m0.size());
  weft::linear_attention_backward_options opts{.chunk_size = chunk};
  if (p.has_scale) opts.scale = p.scale;
  if (!p.cu.empty()) opts.cu_seqlens = make_view(p.cu.data(), N + 1);
  if (p.has_state) {
    opts.initial_state = make_view(p.s0.data(), N, H, K, V);
    opts.d_initial_state = make_view(ds0.data(), N, H, K, V);
    if (is_mlstm) {
      opts.initial_normalizer = make_view(p.n0.data(), N, H, K);
      opts.d_initial_normalizer = make_view(dn0.data(), N, H, K);
    }
    if (stab) {
      opts.initial_stabilizer = make_view(p.m0.data(), N, H);
      opts.d_initial_stabilizer = make_view(dm0.data(), N, H);
    }
  }
  if (!p.ds1.empty()) opts.d_final_state = make_view(p.ds1.data(), N, H, K, V);
  if (!p.dn1.empty()) opts.d_final_normalizer = make_view(p.dn1.data(), N, H, K);
  if (!p.dm1.empty()) opts.d_final_stabilizer = make_view(p.dm1.data(), N, H);
  const auto d3 = [&](std::vector<float>& x) { return make_view(x.data(), B, T, H); };
  with_gate(p, [&](const auto& gate) {
    using G = std::remove_cvref_t<decltype(gate)>;
    auto call = [&](const auto& dgate) {
      weft::linear_attention_backward(
          be, gate, make_view(p.q.data(), B, T, H, K), make_view(p.k.data(), B, T, H, K),
          make_view(p.v.data(), B, T, H, V), make_view(p.dout.data(), B, T, H, V),
          weft::linear_attention_grads{make_view(dq.data(), B, T, H, K), make_view(dk.data(), B, T, H, K),
                                       make_view(dv.data(), B, T, H, V), dgate},
          opts);
    };
    using namespace weft::gates;
    if constexpr (std::is_same_v<G, none>)
      call(none{});
    else if constexpr (std::is_same_v<G, scalar<const float>>)
      call(scalar{d3(dg)});
    else if constexpr (std::is_same_v<G, vector<const float>>)
      call(vector{make_view(dg.data(), B, T, H, K)});
    else if constexpr (std::is_same_v<G, mlstm<const float>>)
      call(mlstm{d3(di), d3(df)});
    else if constexpr (std::is_same_v<G, delta<const float>>)
      call(delta{d3(db)});
    else
      call(gated_delta{d3(dg), d3(db)});
  });
  be.fence();
  const std::pair<const char*, const std::vector<float>*> outs[] = {
      {"dq", &dq}, {"dk", &dk}, {"dv", &dv},   {"dg", &dg},   {"dbeta", &db},
      {"di", &di}, {"df", &df}, {"ds0", &ds0}, {"dn0", &dn0}, {"dm0", &dm0}};
  for (const auto& [name, x] : outs)
    if (!x->empty()) write_floats(std::string(name) + "." + tag + ".bin", *x);
  std::cout << tag << "\n";
}

template <class Backend>
void run_all(const Backend& be, const problem& p, const std::string& name) {
  run(be, p, weft::linear_attention_mode::recurrent, 64, name + "-recurrent");
  for (int c : {16, 64, 256})
    run(be, p, weft::linear_attention_mode::chunk, c, name + "-chunk" + std::to_string(c));
}

}  // namespace

int main(int argc, char** argv) {
#if WEFT_XCHECK_KOKKOS
  Kokkos::ScopeGuard kokkos(argc, argv);
#endif
  if (argc != 2) {
    std::cerr << "usage: la_xcheck DIR\n";
    return 2;
  }
  dir = argv[1];
  try {
    const problem p = read_problem();
    run_all(weft::serial_backend{}, p, "serial");
    if (p.grad) run_backward(weft::serial_backend{}, p, 64, "backward-serial-c64");
#if WEFT_XCHECK_KOKKOS
    run_all(weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>{}, p, "kokkos");
    if (p.grad)
      run_backward(weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>{}, p, 16, "backward-kokkos-c16");
#endif
  } catch (const std::exception& e) {
    std::cerr << "la_xcheck: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
