// decode: docs/decode.md promises that the Kokkos backend runs the serial row functions, bitwise
// equal to the serial backend for any thread count. Every public call, checked against serial
// in-process at each thread count, and its digest compared across 1, 2 and 3 threads.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "determinism/digest.hpp"

using weft::make_view;
using weft_test::digest_case;
using weft_test::vs_serial;

namespace {

constexpr std::int64_t B = 37, V = 5003;

std::vector<float> probs_of(const std::vector<float>& logits, std::int64_t rows, std::int64_t vocab) {
  std::vector<float> p(logits.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, z = 0;
    for (std::int64_t i = 0; i < vocab; ++i) mx = std::max(mx, double(logits[r * vocab + i]));
    for (std::int64_t i = 0; i < vocab; ++i) z += std::exp(double(logits[r * vocab + i]) - mx);
    for (std::int64_t i = 0; i < vocab; ++i)
      p[r * vocab + i] = static_cast<float>(std::exp(double(logits[r * vocab + i]) - mx) / z);
  }
  return p;
}

std::vector<std::uint64_t> row_seeds(std::int64_t rows, std::uint64_t base) {
  std::vector<std::uint64_t> s(rows);
  for (std::int64_t b = 0; b < rows; ++b) s[b] = base + 7919 * static_cast<std::uint64_t>(b);
  return s;
}

}  // namespace

TEST_CASE("threads: argmax, sample, sample_probs, softmax, top_k_renorm", "[determinism]") {
  const auto x = weft_test::normals<float>(B * V, 51, 3.0);
  const auto p = probs_of(x, B, V);
  const auto seeds = row_seeds(B, 1000);
  digest_case<vs_serial::bitwise>("argmax", [&](const auto& be) {
    std::vector<std::int32_t> t(B, -7);
    weft::argmax(be, make_view(x.data(), B, V), make_view(t.data(), B));
    return t;
  });
  struct spec {
    const char* name;
    weft::sample_options o;
  };
  const spec specs[] = {{"sample/T1", {.temperature = 1.0f}},
                        {"sample/T0.7/top_k40", {.temperature = 0.7f, .top_k = 40}},
                        {"sample/top_p0.9", {.top_p = 0.9f}},
                        {"sample/min_p0.05/top_k1000", {.top_k = 1000, .min_p = 0.05f}},
                        {"sample/min_p0.1", {.min_p = 0.1f}}};  // min-p alone: the prefilter scan
  for (const spec& s : specs) {
    digest_case<vs_serial::bitwise>(s.name, [&](const auto& be) {
      std::vector<std::int32_t> t(B, -7);
      auto o = s.o;
      o.seeds = make_view(seeds.data(), B);
      weft::sample(be, make_view(x.data(), B, V), make_view(t.data(), B), o);
      return t;
    });
    digest_case<vs_serial::bitwise>(std::string(s.name) + "/probs", [&](const auto& be) {
      std::vector<std::int32_t> t(B, -7);
      auto o = s.o;
      o.seed = 17;
      weft::sample_probs(be, make_view(p.data(), B, V), make_view(t.data(), B), o);
      return t;
    });
  }
  digest_case<vs_serial::bitwise>("softmax", [&](const auto& be) {
    std::vector<float> out(B * V, -7.0f);
    weft::softmax(be, make_view(x.data(), B, V), make_view(out.data(), B, V), {.temperature = 0.8f});
    return out;
  });
  digest_case<vs_serial::bitwise>("log_softmax", [&](const auto& be) {
    std::vector<float> out(B * V, -7.0f);
    weft::log_softmax(be, make_view(x.data(), B, V), make_view(out.data(), B, V));
    return out;
  });
  digest_case<vs_serial::bitwise>("top_k_renorm", [&](const auto& be) {
    std::vector<float> out(B * V, -7.0f);
    weft::top_k_renorm(be, make_view(p.data(), B, V), make_view(out.data(), B, V), 50);
    return out;
  });
}

TEST_CASE("threads: speculative chains, Jacobi", "[determinism]") {
  constexpr std::int64_t L = 4, W = 1009;
  const auto q = probs_of(weft_test::normals<float>(B * L * W, 61, 2.0), B * L, W);
  auto p = probs_of(weft_test::normals<float>(B * (L + 1) * W, 62, 2.0), B * (L + 1), W);
  // odd rows: the target agrees with the draft, so that long chains and bonus tokens occur
  for (std::int64_t b = 1; b < B; b += 2)
    for (std::int64_t t = 0; t < L; ++t)
      std::copy(q.begin() + (b * L + t) * W, q.begin() + (b * L + t + 1) * W,
                p.begin() + (b * (L + 1) + t) * W);
  std::vector<std::int32_t> drafts(B * L), lengths(B), next(B * L);
  weft_test::rng r(63);
  for (std::int64_t i = 0; i < B * L; ++i) drafts[i] = static_cast<std::int32_t>(r.next() % W);
  for (std::int64_t i = 0; i < B * L; ++i)
    next[i] = r.next() % 3 ? drafts[i] : static_cast<std::int32_t>(r.next() % W);
  for (std::int64_t b = 0; b < B; ++b) lengths[b] = static_cast<std::int32_t>(b % (L + 1));
  const auto seeds = row_seeds(B, 2000);
  const auto cd = make_view(static_cast<const std::int32_t*>(drafts.data()), B, L);
  const auto cl = make_view(static_cast<const std::int32_t*>(lengths.data()), B);
  auto chain = [&](std::vector<std::int32_t>& out, std::vector<std::int32_t>& acc) {
    out.insert(out.end(), acc.begin(), acc.end());
    return out;
  };
  digest_case<vs_serial::bitwise>("speculative_sample", [&](const auto& be) {
    std::vector<std::int32_t> out(B * (L + 1), -7), acc(B, -7);
    weft::speculative_sample(be, make_view(q.data(), B, L, W), cd, make_view(p.data(), B, L + 1, W),
                             make_view(out.data(), B, L + 1), make_view(acc.data(), B),
                             {.seeds = make_view(seeds.data(), B), .lengths = cl});
    return chain(out, acc);
  });
  const auto logits = weft_test::normals<float>(B * (L + 1) * W, 64, 2.0);
  digest_case<vs_serial::bitwise>("verify_greedy", [&](const auto& be) {
    std::vector<std::int32_t> out(B * (L + 1), -7), acc(B, -7);
    weft::verify_greedy(be, cd, make_view(logits.data(), B, L + 1, W), make_view(out.data(), B, L + 1),
                        make_view(acc.data(), B), {.lengths = cl});
    return chain(out, acc);
  });
  digest_case<vs_serial::bitwise>("jacobi_accept/greedy", [&](const auto& be) {
    std::vector<std::int32_t> out(B * L, -7), acc(B, -7);
    weft::jacobi_accept(be, cd, make_view(static_cast<const std::int32_t*>(next.data()), B, L),
                        make_view(out.data(), B, L), make_view(acc.data(), B));
    return chain(out, acc);
  });
  digest_case<vs_serial::bitwise>("jacobi_accept/sampled", [&](const auto& be) {
    std::vector<std::int32_t> out(B * L, -7), acc(B, -7);
    weft::jacobi_accept(be, make_view(q.data(), B, L, W), cd, make_view(p.data(), B, L, W),
                        make_view(out.data(), B, L), make_view(acc.data(), B), {.seed = 5});
    return chain(out, acc);
  });
}

TEST_CASE("threads: trees (mask, greedy and sampled verification, KV compaction), unmasking",
          "[determinism]") {
  constexpr std::int64_t N = 12, W = 1009, S = 16, Hk = 2, D = 8;
  std::vector<std::int32_t> parents(B * N), tokens(B * N);
  weft_test::rng r(71);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < N; ++i) {
      parents[b * N + i] = i == 0 ? -1 : static_cast<std::int32_t>(r.next() % i);
      tokens[b * N + i] = static_cast<std::int32_t>(r.next() % 4);  // few ids: paths get accepted
    }
  const auto cp = make_view(static_cast<const std::int32_t*>(parents.data()), B, N);
  const auto ct = make_view(static_cast<const std::int32_t*>(tokens.data()), B, N);
  digest_case<vs_serial::bitwise>("tree_attention_mask", [&](const auto& be) {
    std::vector<std::uint8_t> mask(B * N * N, 7);
    std::vector<std::int32_t> depth(B * N, -7);
    weft::tree_attention_mask(be, cp, make_view(mask.data(), B, N, N),
                              {.depth = make_view(depth.data(), B, N)});
    for (auto d : depth) mask.push_back(static_cast<std::uint8_t>(d));
    return mask;
  });
  // logits that favour ids 0..3, so that tree paths are accepted
  auto logits = weft_test::normals<float>(B * N * W, 72, 1.0);
  for (std::int64_t i = 0; i < B * N; ++i)
    for (std::int64_t t = 0; t < 4; ++t) logits[i * W + t] += 4.0f;
  const auto pt = probs_of(logits, B * N, W),
             pd = probs_of(weft_test::normals<float>(B * N * W, 73, 1.0), B * N, W);
  const auto cache0 = weft_test::normals<float>(B * S * Hk * D, 74);
  auto verified = [&](const auto& be, bool sampled) {
    std::vector<std::int32_t> out(B * N, -7), path(B * N, -7), acc(B, -7);
    if (sampled)
      weft::verify_tree(be, ct, cp, make_view(pd.data(), B, N, W), make_view(pt.data(), B, N, W),
                        make_view(out.data(), B, N), make_view(path.data(), B, N), make_view(acc.data(), B),
                        {.seed = 9});
    else
      weft::verify_tree(be, ct, cp, make_view(logits.data(), B, N, W), make_view(out.data(), B, N),
                        make_view(path.data(), B, N), make_view(acc.data(), B));
    // the accepted path's KV entries compacted into place
    std::vector<float> cache = cache0;
    weft::kv_compact(be, make_view(cache.data(), B, S, Hk, D),
                     make_view(static_cast<const std::int32_t*>(path.data()), B, N),
                     make_view(static_cast<const std::int32_t*>(acc.data()), B));
    for (auto* v : {&path, &acc}) out.insert(out.end(), v->begin(), v->end());
    for (float c : cache) out.push_back(std::bit_cast<std::int32_t>(c));
    return out;
  };
  digest_case<vs_serial::bitwise>("verify_tree/greedy + kv_compact",
                                  [&](const auto& be) { return verified(be, false); });
  digest_case<vs_serial::bitwise>("verify_tree/sampled + kv_compact",
                                  [&](const auto& be) { return verified(be, true); });

  constexpr std::int64_t T = 64, U = 257;
  const std::int32_t mask_id = U - 1;
  const auto ul = weft_test::normals<float>(B * T * U, 75, 2.0);
  std::vector<std::int32_t> tokens0(B * T);
  for (std::int64_t i = 0; i < B * T; ++i)
    tokens0[i] = r.next() % 4 ? mask_id : static_cast<std::int32_t>(r.next() % U);
  for (auto strategy : {weft::unmask_strategy::threshold, weft::unmask_strategy::low_confidence,
                        weft::unmask_strategy::random}) {
    digest_case<vs_serial::bitwise>(
        "unmask_by_confidence/" + std::to_string(static_cast<int>(strategy)), [&](const auto& be) {
          std::vector<std::int32_t> tk = tokens0, committed(B, -7);
          std::vector<float> conf(B * T, -7.0f);
          weft::unmask_by_confidence(be, make_view(ul.data(), B, T, U), make_view(tk.data(), B, T),
                                     {.mask_id = mask_id,
                                      .strategy = strategy,
                                      .threshold = 0.3f,
                                      .count = 5,
                                      .temperature = 0.9f,
                                      .seed = 3,
                                      .confidence = make_view(conf.data(), B, T),
                                      .committed = make_view(committed.data(), B)});
          // one vector of doubles (exact for the ids), so that the confidences are compared as
          // floating-point values where levels differ in rounding (digest.hpp)
          std::vector<double> all(tk.begin(), tk.end());
          all.insert(all.end(), committed.begin(), committed.end());
          all.insert(all.end(), conf.begin(), conf.end());
          return all;
        });
  }
}
