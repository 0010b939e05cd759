// 50_mamba_block: one Mamba-1 block (Gu & Dao 2023; mamba_ssm's Mamba module) from weft's ssm
// primitives and the caller's GEMM (a plain loop here):
//
//   [x_in, z] = x W_in                                 in_proj: d_model -> 2 Dm
//   xc  = silu(causal_conv1d(x_in, conv_w, conv_b))    width 4, per channel
//   [dt_low, B, C] = xc W_x                            x_proj: Dm -> R + 2 Ns
//   dt  = dt_low W_dt                                  dt_proj: R -> Dm (its bias: delta_bias)
//   y   = selective_scan(xc, dt, A = -exp(A_log), B, C, D, z, softplus)
//   out = y W_out                                      out_proj: Dm -> d_model
//
// run on the Kokkos host backend when built with Kokkos (else serial), then checked: against
// the serial backend (bitwise for the weft calls, so the blocks agree exactly), and by decoding:
// a prefill of the first T - 1 tokens with final states, then the last token through
// causal_conv1d_step and selective_scan_step, equals the full pass's last row. Prints the
// agreement and the times; exits non-zero on a mismatch.
#include <weft/weft.hpp>
#if WEFT_EXAMPLE_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {

constexpr std::int64_t d_model = 128, Dm = 256, Ns = 16, R = 8, width = 4;

/// y (n x m) = x (n x d) W (d x m), row-major: the caller's GEMM.
void matmul(const float* x, const std::vector<float>& W, float* y, std::int64_t n, std::int64_t d,
            std::int64_t m) {
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < m; ++j) y[i * m + j] = 0.0f;
    for (std::int64_t p = 0; p < d; ++p)
      for (std::int64_t j = 0; j < m; ++j) y[i * m + j] += x[i * d + p] * W[p * m + j];
  }
}

struct weights {
  std::vector<float> in, conv_w, conv_b, x_proj, dt_proj, dt_bias, A, D, out;
  explicit weights(std::uint32_t seed) {
    std::mt19937 r(seed);
    const auto mat = [&](std::int64_t rows, std::int64_t cols, float scale) {
      std::normal_distribution<float> nd(0.0f, scale / std::sqrt(static_cast<float>(rows)));
      std::vector<float> w(static_cast<std::size_t>(rows * cols));
      for (auto& v : w) v = nd(r);
      return w;
    };
    in = mat(d_model, 2 * Dm, 1.0f);
    conv_w = mat(Dm, width, 1.0f);
    conv_b = mat(1, Dm, 0.1f);
    x_proj = mat(Dm, R + 2 * Ns, 1.0f);
    dt_proj = mat(R, Dm, 1.0f);
    std::uniform_real_distribution<float> u(std::log(1e-3f), std::log(1e-1f));
    for (std::int64_t d = 0; d < Dm; ++d) {  // dt in [0.001, 0.1] at init: bias = softplus^-1(dt)
      const float dt = std::exp(u(r));
      dt_bias.push_back(dt + std::log(-std::expm1(-dt)));
      D.push_back(1.0f);
      for (std::int64_t n = 0; n < Ns; ++n) A.push_back(-static_cast<float>(n + 1));  // -exp(A_log), S4D-real
    }
    out = mat(Dm, d_model, 1.0f);
  }
};

/// States a prefill leaves behind for decoding.
struct states {
  std::vector<float> conv = std::vector<float>(Dm * (width - 1)), ssm = std::vector<float>(Dm * Ns);
};

/// The block over T tokens of one sequence; with `st`, the final conv and scan states.
template <class Backend>
std::vector<float> block(const Backend& be, const weights& w, const std::vector<float>& x, std::int64_t T,
                         states* st) {
  using weft::make_strided_view;
  using weft::make_view;
  std::vector<float> xz(T * 2 * Dm), xc(T * Dm), xdbl(T * (R + 2 * Ns)), dt(T * Dm), y(T * Dm),
      out(T * d_model);
  matmul(x.data(), w.in, xz.data(), T, d_model, 2 * Dm);
  const auto half = [&](std::int64_t offset) {  // x_in or z: every other Dm columns of xz, [1,T,Dm]
    return make_strided_view(static_cast<const float*>(xz.data()) + offset,
                             std::array<std::int64_t, 3>{1, T, Dm},
                             std::array<std::int64_t, 3>{T * 2 * Dm, 2 * Dm, 1});
  };
  weft::causal_conv1d(
      be, half(0), make_view(w.conv_w.data(), Dm, width), make_view(w.conv_b.data(), Dm),
      make_view(xc.data(), 1, T, Dm),
      {.activation = weft::conv1d_activation::silu,
       .final_state = st ? make_view(st->conv.data(), 1, Dm, width - 1) : weft::tensor_view<float, 3>{}});
  matmul(xc.data(), w.x_proj, xdbl.data(), T, Dm, R + 2 * Ns);
  std::vector<float> dt_low(T * R);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < R; ++j) dt_low[t * R + j] = xdbl[t * (R + 2 * Ns) + j];
  matmul(dt_low.data(), w.dt_proj, dt.data(), T, R, Dm);
  const auto bc = [&](std::int64_t offset) {  // B or C: Ns columns of x_dbl, [1,T,Ns]
    return make_strided_view(static_cast<const float*>(xdbl.data()) + offset,
                             std::array<std::int64_t, 3>{1, T, Ns},
                             std::array<std::int64_t, 3>{T * (R + 2 * Ns), R + 2 * Ns, 1});
  };
  weft::selective_scan(
      be, make_view(static_cast<const float*>(xc.data()), 1, T, Dm),
      make_view(static_cast<const float*>(dt.data()), 1, T, Dm), make_view(w.A.data(), Dm, Ns), bc(R),
      bc(R + Ns), make_view(y.data(), 1, T, Dm),
      {.D = make_view(w.D.data(), Dm),
       .z = half(Dm),
       .delta_bias = make_view(w.dt_bias.data(), Dm),
       .delta_softplus = true,
       .final_state = st ? make_view(st->ssm.data(), 1, Dm, Ns) : weft::tensor_view<float, 3>{}});
  matmul(y.data(), w.out, out.data(), T, Dm, d_model);
  return out;
}

/// One decode token through the block, advancing the states in place.
template <class Backend>
std::vector<float> step(const Backend& be, const weights& w, const float* x, states& st) {
  using weft::make_view;
  std::vector<float> xz(2 * Dm), xc(Dm), xdbl(R + 2 * Ns), dt(Dm), y(Dm), out(d_model);
  matmul(x, w.in, xz.data(), 1, d_model, 2 * Dm);
  weft::causal_conv1d_step(be, make_view(static_cast<const float*>(xz.data()), 1, Dm),
                           make_view(st.conv.data(), 1, Dm, width - 1), make_view(w.conv_w.data(), Dm, width),
                           make_view(w.conv_b.data(), Dm), make_view(xc.data(), 1, Dm),
                           {.activation = weft::conv1d_activation::silu});
  matmul(xc.data(), w.x_proj, xdbl.data(), 1, Dm, R + 2 * Ns);
  matmul(xdbl.data(), w.dt_proj, dt.data(), 1, R, Dm);
  weft::selective_scan_step(
      be, make_view(st.ssm.data(), 1, Dm, Ns), make_view(static_cast<const float*>(xc.data()), 1, Dm),
      make_view(static_cast<const float*>(dt.data()), 1, Dm), make_view(w.A.data(), Dm, Ns),
      make_view(static_cast<const float*>(xdbl.data()) + R, 1, Ns),
      make_view(static_cast<const float*>(xdbl.data()) + R + Ns, 1, Ns), make_view(y.data(), 1, Dm),
      {.D = make_view(w.D.data(), Dm),
       .z = make_view(static_cast<const float*>(xz.data()) + Dm, 1, Dm),
       .delta_bias = make_view(w.dt_bias.data(), Dm),
       .delta_softplus = true});
  matmul(y.data(), w.out, out.data(), 1, Dm, d_model);
  return out;
}

double rel_err(const float* a, const float* b, std::int64_t n) {
  double e = 0.0, m = 1e-30;
  for (std::int64_t i = 0; i < n; ++i) {
    e = std::max(e, std::fabs(static_cast<double>(a[i]) - b[i]));
    m = std::max(m, std::fabs(static_cast<double>(b[i])));
  }
  return e / m;
}

}  // namespace

int main(int argc, char** argv) {
#if WEFT_EXAMPLE_KOKKOS
  Kokkos::ScopeGuard guard(argc, argv);
  const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
#else
  (void)argc, (void)argv;
  const weft::serial_backend be{};
#endif
  const std::int64_t T = 512;
  const weights w(2026);
  std::vector<float> x(T * d_model);
  std::mt19937 r(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(r);

  const auto t0 = std::chrono::steady_clock::now();
  const auto out = block(be, w, x, T, nullptr);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto ref = block(weft::serial_backend{}, w, x, T, nullptr);

  states st;  // prefill T - 1 tokens, then decode the last one
  (void)block(be, w, x, T - 1, &st);
  const auto last = step(be, w, x.data() + (T - 1) * d_model, st);

  const double e_serial = rel_err(out.data(), ref.data(), T * d_model);
  const double e_decode = rel_err(last.data(), out.data() + (T - 1) * d_model, d_model);
  std::printf("Mamba block, T = %lld, d_model = %lld, Dm = %lld, Ns = %lld: %.1f ms on %s\n",
              static_cast<long long>(T), static_cast<long long>(d_model), static_cast<long long>(Dm),
              static_cast<long long>(Ns), ms, decltype(be)::name());
  std::printf("  vs serial backend: max relative error %.2e (expected 0: the same item functions)\n",
              e_serial);
  std::printf("  prefill %lld + decode step vs full pass, last token: max relative error %.2e\n",
              static_cast<long long>(T - 1), e_decode);
  const bool ok = e_serial == 0.0 && e_decode < 1e-5;  // the step sums C . h in another order
  std::printf("%s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
