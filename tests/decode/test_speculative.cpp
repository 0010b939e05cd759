// verify_greedy, speculative_sample and jacobi_accept on every backend: plain-loop oracles for the
// greedy rules; for the sampled rules the output law against the target's (chi-square at
// alpha = 1e-6, see tests/decode/oracle.hpp) over random p/q pairs, including q with zeros where
// p is not and p with zeros where q is not; bad input; determinism and batch invariance.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "decode/data.hpp"
#include "decode/oracle.hpp"
#include "support/backends.hpp"

using weft_test::buffer;

namespace {

/// A random distribution over V entries; zero_mask[i] forces p[i] = 0.
std::vector<float> random_dist(std::int64_t V, weft_test::rng& r, const std::vector<bool>& zero) {
  std::vector<double> w(V);
  double z = 0;
  for (std::int64_t i = 0; i < V; ++i) z += (w[i] = zero[i] ? 0.0 : 0.05 + r.uniform());
  std::vector<float> p(V);
  for (std::int64_t i = 0; i < V; ++i) p[i] = static_cast<float>(w[i] / z);
  return p;
}

std::int32_t draw(const std::vector<float>& p, weft_test::rng& r) {
  double u = r.uniform(), acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc && p[i] > 0) return static_cast<std::int32_t>(i);
  }
  for (std::size_t i = p.size(); i-- > 0;)
    if (p[i] > 0) return static_cast<std::int32_t>(i);
  return 0;
}

std::vector<double> to_double(const std::vector<float>& p) {
  double z = 0;
  for (float v : p) z += v;
  std::vector<double> d(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) d[i] = p[i] / z;
  return d;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("verify_greedy against a plain loop, per-sequence lengths, NaN rows",
                        "[decode][verify_greedy]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 99, L = 5, V = 37;
  weft_test::rng r(3);
  auto logits = weft_test::make_logits(B * (L + 1), V, weft_test::law::normal1, 11);
  std::vector<std::int32_t> draft(B * L), lengths(B);
  for (std::int64_t b = 0; b < B; ++b) {
    lengths[b] = static_cast<std::int32_t>(r.next() % (L + 1));
    const std::int64_t agree = static_cast<std::int64_t>(r.next() % (L + 1));  // drafts matching the target
    for (std::int64_t t = 0; t < L; ++t) {
      const auto y = weft_test::oracle_argmax(&logits[(b * (L + 1) + t) * V], V);
      draft[b * L + t] = t < agree ? static_cast<std::int32_t>(y) : static_cast<std::int32_t>((y + 1) % V);
    }
  }
  logits[(7 * (L + 1) + 0) * V + 3] = NAN;  // sequence 7: NaN at position 0
  buffer<TestType, float> dl(be, logits);
  buffer<TestType, std::int32_t> dd(be, draft), dlen(be, lengths), out(be, B * (L + 1), -9), acc(be, B, -9);
  buffer<TestType, std::uint8_t> valid(be, B, 9);
  weft::verify_greedy(be, weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                      weft::make_view(dl.data(), B, L + 1, V), weft::make_view(out.data(), B, L + 1),
                      weft::make_view(acc.data(), B),
                      {.lengths = weft::make_view(static_cast<const std::int32_t*>(dlen.data()), B),
                       .valid = weft::make_view(valid.data(), B)});
  const auto o = out.to_host();
  const auto a = acc.to_host();
  const auto v = valid.to_host();
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> want(L + 1, -1);
    std::int64_t k = 0, w = 0;
    bool ok = true;
    for (std::int64_t t = 0; t <= lengths[b]; ++t) {
      bool nan = false;
      for (std::int64_t i = 0; i < V; ++i) nan |= std::isnan(logits[(b * (L + 1) + t) * V + i]);
      if (nan) {
        ok = false;
        break;
      }
      const auto y = static_cast<std::int32_t>(weft_test::oracle_argmax(&logits[(b * (L + 1) + t) * V], V));
      want[w++] = y;
      if (t == lengths[b] || draft[b * L + t] != y) break;
      ++k;
    }
    INFO("b " << b);
    REQUIRE(a[b] == k);
    REQUIRE(v[b] == (ok ? 1 : 0));
    for (std::int64_t t = 0; t <= L; ++t) REQUIRE(o[b * (L + 1) + t] == want[t]);
  }
}

TEMPLATE_LIST_TEST_CASE("speculative_sample: the output has the target's law (chi-square, alpha 1e-6)",
                        "[decode][speculative][distribution]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  // 3 random (p, q) sets x 989 sequences x 20 calls = 19780 chains per set; per set three chi-square
  // tests (first token ~ p_0, second ~ p_1 given the first draft accepted, bonus ~ p_L) and a
  // binomial test of the acceptance rate, each at alpha = 1e-6 (12 tests: < 1.2e-5 overall).
  const std::int64_t B = 989, L = 2, V = 6;
  // Zero patterns: q = 0 where p > 0 (ids 0, 1), p = 0 where q > 0 (id 2), both 0 (id 5).
  std::vector<bool> pz = {false, false, true, false, false, true},
                    qz = {true, false, false, false, false, true};
  for (int trial = 0; trial < 3; ++trial) {
    weft_test::rng r(100 + trial);
    std::vector<std::vector<float>> p(L + 1), q(L);
    for (std::int64_t t = 0; t <= L; ++t) p[t] = random_dist(V, r, t == 0 ? pz : std::vector<bool>(V, false));
    for (std::int64_t t = 0; t < L; ++t) q[t] = random_dist(V, r, t == 0 ? qz : std::vector<bool>(V, false));
    std::vector<float> hp, hq;
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t t = 0; t <= L; ++t) hp.insert(hp.end(), p[t].begin(), p[t].end());
      for (std::int64_t t = 0; t < L; ++t) hq.insert(hq.end(), q[t].begin(), q[t].end());
    }
    buffer<TestType, float> dp(be, hp), dq(be, hq);
    std::vector<std::int64_t> first(V, 0), second(V, 0), bonus(V, 0);
    std::int64_t kept_first = 0, n = 0;
    double accept_rate = 0;  // P(draft 0 accepted) = sum_i min(p_i, q_i)
    for (std::int64_t i = 0; i < V; ++i) accept_rate += std::min<double>(p[0][i], q[0][i]);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::int32_t> drafts(B * L);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < L; ++t) drafts[b * L + t] = draw(q[t], r);
      buffer<TestType, std::int32_t> dd(be, drafts), out(be, B * (L + 1), -9), acc(be, B, -9);
      weft::speculative_sample(be, weft::make_view(dq.data(), B, L, V),
                               weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                               weft::make_view(dp.data(), B, L + 1, V), weft::make_view(out.data(), B, L + 1),
                               weft::make_view(acc.data(), B),
                               {.seed = 7, .offset = static_cast<std::uint64_t>(rep + 100 * trial)});
      const auto o = out.to_host();
      const auto a = acc.to_host();
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int32_t* row = &o[b * (L + 1)];
        REQUIRE(a[b] >= 0);
        REQUIRE(a[b] <= L);
        for (std::int64_t t = 0; t < a[b]; ++t) REQUIRE(row[t] == drafts[b * L + t]);
        REQUIRE(row[a[b]] >= 0);
        REQUIRE(row[a[b]] < V);
        for (std::int64_t t = a[b] + 1; t <= L; ++t) REQUIRE(row[t] == -1);
        ++n;
        first[row[0]] += 1;
        if (a[b] >= 1) {
          second[row[1]] += 1;
          ++kept_first;
        }
        if (a[b] == L) bonus[row[L]] += 1;
      }
    }
    INFO("trial " << trial);
    const auto c1 = weft_test::chi2_test(first, to_double(p[0]));
    const auto c2 = weft_test::chi2_test(second, to_double(p[1]));
    const auto c3 = weft_test::chi2_test(bonus, to_double(p[L]));
    INFO("first: chi2 " << c1.statistic << " / " << c1.threshold << "; second: " << c2.statistic << " / "
                        << c2.threshold << "; bonus: " << c3.statistic << " / " << c3.threshold);
    CHECK(c1.pass);
    CHECK(c2.pass);
    CHECK(c3.pass);
    // Acceptance of the first draft: binomial, |k - n pi| <= 4.89 sd (two-sided alpha 1e-6).
    const double sd = std::sqrt(n * accept_rate * (1 - accept_rate));
    CHECK(std::abs(kept_first - n * accept_rate) <= 4.89 * sd);
  }
}

TEMPLATE_LIST_TEST_CASE("speculative_sample: lengths, large vocabulary, determinism, batch invariance",
                        "[decode][speculative][determinism]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 9, L = 4, V = 32000;
  weft_test::rng r(5);
  auto p = weft_test::softmax_rows(weft_test::make_logits(B * (L + 1), V, weft_test::law::normal5, 1),
                                   B * (L + 1), V);
  auto q = weft_test::softmax_rows(weft_test::make_logits(B * L, V, weft_test::law::normal5, 2), B * L, V);
  std::vector<std::int32_t> drafts(B * L), lengths(B);
  std::vector<std::uint64_t> seeds(B);
  for (std::int64_t b = 0; b < B; ++b) {
    lengths[b] = static_cast<std::int32_t>(b % (L + 1));
    seeds[b] = 1000 + static_cast<std::uint64_t>(b);
    for (std::int64_t t = 0; t < L; ++t) {
      // the draft's most likely token (often accepted when p and q agree)
      drafts[b * L + t] = static_cast<std::int32_t>(weft_test::oracle_argmax(&q[(b * L + t) * V], V));
      if (b % 2)
        drafts[b * L + t] = static_cast<std::int32_t>(weft_test::oracle_argmax(&p[(b * (L + 1) + t) * V], V));
    }
  }
  // make the target agree with the draft on odd rows so that long chains and bonus tokens occur
  for (std::int64_t b = 1; b < B; b += 2)
    for (std::int64_t t = 0; t < L; ++t)
      std::copy(p.begin() + (b * (L + 1) + t) * V, p.begin() + (b * (L + 1) + t + 1) * V,
                q.begin() + (b * L + t) * V);
  buffer<TestType, float> dp(be, p), dq(be, q);
  buffer<TestType, std::int32_t> dd(be, drafts), dlen(be, lengths);
  buffer<TestType, std::uint64_t> ds(be, seeds);
  auto run = [&](std::int64_t rows, std::int64_t first) {
    buffer<TestType, std::int32_t> out(be, rows * (L + 1), -9), acc(be, rows, -9);
    const std::int64_t P = (L + 1) * V, Q = L * V;
    weft::speculative_sample(
        be, weft::make_view(dq.data() + first * Q, rows, L, V),
        weft::make_view(static_cast<const std::int32_t*>(dd.data()) + first * L, rows, L),
        weft::make_view(dp.data() + first * P, rows, L + 1, V), weft::make_view(out.data(), rows, L + 1),
        weft::make_view(acc.data(), rows),
        {.seeds = weft::make_view(static_cast<const std::uint64_t*>(ds.data()) + first, rows),
         .lengths = weft::make_view(static_cast<const std::int32_t*>(dlen.data()) + first, rows)});
    auto o = out.to_host();
    for (auto x : acc.to_host()) o.push_back(x);
    return o;
  };
  const auto all = run(B, 0);
  CHECK(weft_test::bitwise_equal(all, run(B, 0)));
  bool saw_bonus = false;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto one = run(1, b);  // the same sequence alone
    for (std::int64_t t = 0; t <= L; ++t) REQUIRE(one[t] == all[b * (L + 1) + t]);
    const std::int32_t a = all[B * (L + 1) + b];
    REQUIRE(one[L + 1] == a);
    REQUIRE(a <= lengths[b]);
    REQUIRE(all[b * (L + 1) + a] >= 0);
    for (std::int64_t t = a + 1; t <= L; ++t) REQUIRE(all[b * (L + 1) + t] == -1);
    saw_bonus |= a == lengths[b] && lengths[b] > 0;
  }
  CHECK(saw_bonus);
}

TEMPLATE_LIST_TEST_CASE("jacobi_accept: converged prefix, and speculative Jacobi's law", "[decode][jacobi]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  {
    const std::int64_t B = 99, n = 7;
    weft_test::rng r(8);
    std::vector<std::int32_t> prev(B * n), next(B * n), lengths(B);
    for (std::int64_t b = 0; b < B; ++b) {
      lengths[b] = static_cast<std::int32_t>(r.next() % (n + 1));
      const std::int64_t same = static_cast<std::int64_t>(r.next() % (n + 1));
      for (std::int64_t t = 0; t < n; ++t) {
        next[b * n + t] = static_cast<std::int32_t>(r.next() % 50);
        prev[b * n + t] = t < same ? next[b * n + t] : next[b * n + t] + 1;
      }
    }
    buffer<TestType, std::int32_t> dp(be, prev), dn(be, next), dl(be, lengths), out(be, B * n, -9),
        acc(be, B, -9);
    weft::jacobi_accept(be, weft::make_view(static_cast<const std::int32_t*>(dp.data()), B, n),
                        weft::make_view(static_cast<const std::int32_t*>(dn.data()), B, n),
                        weft::make_view(out.data(), B, n), weft::make_view(acc.data(), B),
                        {.lengths = weft::make_view(static_cast<const std::int32_t*>(dl.data()), B)});
    const auto o = out.to_host();
    const auto a = acc.to_host();
    for (std::int64_t b = 0; b < B; ++b) {
      std::int64_t k = 0;
      while (k < lengths[b] && prev[b * n + k] == next[b * n + k]) ++k;
      REQUIRE(a[b] == k);
      const std::int64_t committed = k < lengths[b] ? k + 1 : lengths[b];
      for (std::int64_t t = 0; t < n; ++t) REQUIRE(o[b * n + t] == (t < committed ? next[b * n + t] : -1));
    }
  }
  {
    // Speculative Jacobi: the first committed token has the law of p_0 (989 x 10 = 9890 draws,
    // chi-square at alpha = 1e-6).
    const std::int64_t B = 989, n = 3, V = 5;
    weft_test::rng r(21);
    std::vector<std::vector<float>> p(n), q(n);
    for (std::int64_t t = 0; t < n; ++t) {
      p[t] = random_dist(V, r, {false, false, true, false, false});
      q[t] = random_dist(V, r, {true, false, false, false, false});
    }
    std::vector<float> hp, hq;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < n; ++t) {
        hp.insert(hp.end(), p[t].begin(), p[t].end());
        hq.insert(hq.end(), q[t].begin(), q[t].end());
      }
    buffer<TestType, float> dp(be, hp), dq(be, hq);
    std::vector<std::int64_t> first(V, 0);
    for (int rep = 0; rep < 10; ++rep) {
      std::vector<std::int32_t> drafts(B * n);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < n; ++t) drafts[b * n + t] = draw(q[t], r);
      buffer<TestType, std::int32_t> dd(be, drafts), out(be, B * n, -9), acc(be, B, -9);
      weft::jacobi_accept(be, weft::make_view(dq.data(), B, n, V),
                          weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, n),
                          weft::make_view(dp.data(), B, n, V), weft::make_view(out.data(), B, n),
                          weft::make_view(acc.data(), B), {.offset = static_cast<std::uint64_t>(rep)});
      const auto o = out.to_host();
      const auto a = acc.to_host();
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t committed = a[b] < n ? a[b] + 1 : n;
        for (std::int64_t t = 0; t < n; ++t) REQUIRE((o[b * n + t] >= 0) == (t < committed));
        first[o[b * n]] += 1;
      }
    }
    const auto c = weft_test::chi2_test(first, to_double(p[0]));
    INFO("chi2 " << c.statistic << " threshold " << c.threshold);
    CHECK(c.pass);
  }
}

TEMPLATE_LIST_TEST_CASE("chains: bad input throws invalid_argument naming the argument, writes nothing",
                        "[decode][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 3, L = 2, V = 10;
  auto p = weft_test::softmax_rows(weft_test::make_logits(B * (L + 1), V, weft_test::law::normal1, 4),
                                   B * (L + 1), V);
  auto q = weft_test::softmax_rows(weft_test::make_logits(B * L, V, weft_test::law::normal1, 5), B * L, V);
  std::vector<std::int32_t> drafts(B * L, 1);
  buffer<TestType, std::int32_t> out(be, B * (L + 1), -9), acc(be, B, -9);
  auto run = [&](const std::vector<float>& hp, const std::vector<float>& hq,
                 const std::vector<std::int32_t>& hd, const std::vector<std::int32_t>& hl) {
    buffer<TestType, float> dp(be, hp), dq(be, hq);
    buffer<TestType, std::int32_t> dd(be, hd), dl(be, hl);
    weft::speculative_options o;
    if (!hl.empty()) o.lengths = weft::make_view(static_cast<const std::int32_t*>(dl.data()), B);
    weft::speculative_sample(be, weft::make_view(dq.data(), B, L, V),
                             weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                             weft::make_view(dp.data(), B, L + 1, V), weft::make_view(out.data(), B, L + 1),
                             weft::make_view(acc.data(), B), o);
  };
  auto bad_d = drafts;
  bad_d[3] = static_cast<std::int32_t>(V);
  weft_test::expect_bad("draft_tokens", [&] { run(p, q, bad_d, {}); });
  bad_d[3] = -1;
  weft_test::expect_bad("draft_tokens", [&] { run(p, q, bad_d, {}); });
  weft_test::expect_bad("lengths", [&] { run(p, q, drafts, {0, 3, 1}); });
  auto bad_p = p;
  bad_p[V * 4 + 2] += 0.01f;
  weft_test::expect_bad("target_probs", [&] { run(bad_p, q, drafts, {}); });
  auto bad_q = q;
  bad_q[V + 2] = -0.001f;
  weft_test::expect_bad("draft_probs", [&] { run(p, bad_q, drafts, {}); });
  // none of the five rejected calls wrote anything
  for (const std::int32_t x : out.to_host()) CHECK(x == -9);
  for (const std::int32_t x : acc.to_host()) CHECK(x == -9);
  // a bad row past a sequence's length is not looked at: the same result as with clean rows
  run(p, q, drafts, {2, 2, 1});
  const std::vector<std::int32_t> clean_out = out.to_host(), clean_acc = acc.to_host();
  bad_q = q;
  bad_q[V * 5 + 1] = NAN;  // sequence 2, position 1
  run(p, bad_q, drafts, {2, 2, 1});
  CHECK(out.to_host() == clean_out);
  CHECK(acc.to_host() == clean_acc);
  buffer<TestType, std::int32_t> out2(be, B * (L + 1), -9), acc2(be, B, -9);
  buffer<TestType, float> dp(be, p);
  weft_test::expect_bad("draft_tokens", [&] {
    weft::verify_greedy(be, weft::make_view(static_cast<const std::int32_t*>(nullptr), B, L),
                        weft::make_view(dp.data(), B, L + 1, V), weft::make_view(out2.data(), B, L + 1),
                        weft::make_view(acc2.data(), B));
  });
  buffer<TestType, std::int32_t> dd(be, bad_d);
  weft_test::expect_bad("draft_tokens", [&] {
    weft::verify_greedy(be, weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                        weft::make_view(dp.data(), B, L + 1, V), weft::make_view(out2.data(), B, L + 1),
                        weft::make_view(acc2.data(), B));
  });
  weft_test::expect_bad("target_logits", [&] {
    weft::verify_greedy(be, weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                        weft::make_view(dp.data(), B, L, V), weft::make_view(out2.data(), B, L + 1),
                        weft::make_view(acc2.data(), B));
  });
  weft_test::expect_bad("out_tokens", [&] {
    weft::jacobi_accept(be, weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                        weft::make_view(static_cast<const std::int32_t*>(dd.data()), B, L),
                        weft::make_view(out2.data(), B, L + 1), weft::make_view(acc2.data(), B));
  });
  for (auto v : out2.to_host()) CHECK(v == -9);
  for (auto v : acc2.to_host()) CHECK(v == -9);
}
