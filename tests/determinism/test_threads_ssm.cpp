// ssm: docs/ssm.md promises that every backend runs the same item functions, bitwise equal to the
// serial backend for any thread count, with the backward's sums over channels, batch and time in
// a fixed order. selective_scan (groups, every option, final state), selective_scan_step and
// selective_scan_backward, causal_conv1d (varlen), its backward and step, checked against serial
// in-process and their digests compared across 1, 2 and 3 threads (and CPU levels).
#include <cstdint>
#include <vector>

#include "determinism/digest.hpp"

using weft::make_view;
using weft_test::digest_case;
using weft_test::vs_serial;

TEST_CASE("threads: selective_scan, selective_scan_step, selective_scan_backward", "[determinism]") {
  const std::int64_t B = 2, T = 150, Dm = 100, Ns = 16, G = 2;
  const auto u = weft_test::normals<float>(B * T * Dm, 71);
  const auto delta = weft_test::normals<float>(B * T * Dm, 72);
  const auto z = weft_test::normals<float>(B * T * Dm, 73);
  const auto bm = weft_test::normals<float>(B * T * G * Ns, 74);
  const auto cm = weft_test::normals<float>(B * T * G * Ns, 75);
  const auto h0 = weft_test::normals<float>(B * Dm * Ns, 76);
  const auto dy = weft_test::normals<float>(B * T * Dm, 77);
  std::vector<float> A(Dm * Ns), D(Dm, 0.5f), bias(Dm, -3.0f);
  for (std::int64_t i = 0; i < Dm * Ns; ++i) A[i] = -1.0f - static_cast<float>(i % Ns);
  const auto tok = [&](const std::vector<float>& v) { return make_view(v.data(), B, T, Dm); };
  const auto Av = make_view(static_cast<const float*>(A.data()), Dm, Ns);
  const auto Bv = make_view(bm.data(), B, T, G, Ns), Cv = make_view(cm.data(), B, T, G, Ns);
  const weft::selective_scan_options<float> fo{
      .D = make_view(static_cast<const float*>(D.data()), Dm),
      .z = tok(z),
      .delta_bias = make_view(static_cast<const float*>(bias.data()), Dm),
      .delta_softplus = true,
      .initial_state = make_view(h0.data(), B, Dm, Ns)};
  digest_case<vs_serial::bitwise>("selective_scan/forward+final_state", [&](const auto& be) {
    std::vector<float> y(B * T * Dm, -7.0f), hT(B * Dm * Ns, -7.0f);
    auto o = fo;
    o.final_state = make_view(hT.data(), B, Dm, Ns);
    weft::selective_scan(be, tok(u), tok(delta), Av, Bv, Cv, make_view(y.data(), B, T, Dm), o);
    y.insert(y.end(), hT.begin(), hT.end());
    return y;
  });
  digest_case<vs_serial::bitwise>("selective_scan/step", [&](const auto& be) {
    std::vector<float> state(h0.begin(), h0.end()), y(B * Dm, -7.0f);
    weft::selective_scan_step(
        be, make_view(state.data(), B, Dm, Ns), make_view(u.data(), B, Dm), make_view(delta.data(), B, Dm),
        Av, make_view(bm.data(), B, G, Ns), make_view(cm.data(), B, G, Ns), make_view(y.data(), B, Dm),
        {.D = fo.D, .z = make_view(z.data(), B, Dm), .delta_bias = fo.delta_bias, .delta_softplus = true});
    y.insert(y.end(), state.begin(), state.end());
    return y;
  });
  digest_case<vs_serial::bitwise>("selective_scan/backward", [&](const auto& be) {
    std::vector<float> du(B * T * Dm), dd(B * T * Dm), dz(B * T * Dm), dA(Dm * Ns), dB(B * T * G * Ns),
        dC(B * T * G * Ns), dD(Dm), db(Dm), dh0(B * Dm * Ns);
    weft::selective_scan_backward(be, tok(u), tok(delta), Av, Bv, Cv, tok(dy), make_view(du.data(), B, T, Dm),
                                  make_view(dd.data(), B, T, Dm), make_view(dA.data(), Dm, Ns),
                                  make_view(dB.data(), B, T, G, Ns), make_view(dC.data(), B, T, G, Ns),
                                  {.D = fo.D,
                                   .z = fo.z,
                                   .delta_bias = fo.delta_bias,
                                   .delta_softplus = true,
                                   .initial_state = fo.initial_state,
                                   .dD = make_view(dD.data(), Dm),
                                   .dz = make_view(dz.data(), B, T, Dm),
                                   .d_delta_bias = make_view(db.data(), Dm),
                                   .d_initial_state = make_view(dh0.data(), B, Dm, Ns)});
    for (const auto* v : {&dd, &dz, &dA, &dB, &dC, &dD, &db, &dh0}) du.insert(du.end(), v->begin(), v->end());
    return du;
  });
}

TEST_CASE("threads: causal_conv1d forward, backward, step", "[determinism]") {
  const std::int64_t T = 3000, Dm = 200, W = 4, N = 4;  // varlen: 4 sequences, one of length 1
  const std::vector<std::int64_t> cu{0, 5, 1000, 1001, 3000};
  const auto x = weft_test::normals<float>(T * Dm, 81);
  const auto w = weft_test::normals<float>(Dm * W, 82, 0.5);
  const auto bias = weft_test::normals<float>(Dm, 83);
  const auto init = weft_test::normals<float>(N * Dm * (W - 1), 84);
  const auto dy = weft_test::normals<float>(T * Dm, 85);
  const auto dfin = weft_test::normals<float>(N * Dm * (W - 1), 86);
  const auto X = make_view(x.data(), 1, T, Dm);
  const auto Wt = make_view(w.data(), Dm, W);
  const auto Bv = make_view(bias.data(), Dm);
  const auto I = make_view(init.data(), N, Dm, W - 1);
  const auto CU = make_view(cu.data(), N + 1);
  digest_case<vs_serial::bitwise>("ssm/causal_conv1d", [&](const auto& be) {
    std::vector<float> y(T * Dm, -7.0f), fin(N * Dm * (W - 1), -7.0f);
    weft::causal_conv1d(be, X, Wt, Bv, make_view(y.data(), 1, T, Dm),
                        {.activation = weft::conv1d_activation::silu,
                         .initial_state = I,
                         .final_state = make_view(fin.data(), N, Dm, W - 1),
                         .cu_seqlens = CU});
    y.insert(y.end(), fin.begin(), fin.end());
    return y;
  });
  digest_case<vs_serial::bitwise>("ssm/causal_conv1d_backward", [&](const auto& be) {
    std::vector<float> dx(T * Dm, -7.0f), dw(Dm * W, -7.0f), db(Dm, -7.0f), dinit(N * Dm * (W - 1), -7.0f);
    weft::causal_conv1d_backward(be, X, Wt, Bv, make_view(dy.data(), 1, T, Dm),
                                 make_view(dx.data(), 1, T, Dm), make_view(dw.data(), Dm, W),
                                 make_view(db.data(), Dm),
                                 {.activation = weft::conv1d_activation::silu,
                                  .initial_state = I,
                                  .d_initial_state = make_view(dinit.data(), N, Dm, W - 1),
                                  .d_final_state = make_view(dfin.data(), N, Dm, W - 1),
                                  .cu_seqlens = CU});
    for (const auto* v : {&dw, &db, &dinit}) dx.insert(dx.end(), v->begin(), v->end());
    return dx;
  });
  digest_case<vs_serial::bitwise>("ssm/causal_conv1d_step", [&](const auto& be) {
    std::vector<float> st(init), y(N * Dm, -7.0f);
    weft::causal_conv1d_step(be, make_view(x.data(), N, Dm), make_view(st.data(), N, Dm, W - 1), Wt, Bv,
                             make_view(y.data(), N, Dm), {.activation = weft::conv1d_activation::silu});
    y.insert(y.end(), st.begin(), st.end());
    return y;
  });
}
