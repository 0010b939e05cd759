// unmask_by_confidence on every backend: the threshold / low-confidence / random strategies
// against a plain fp64 oracle, semi-autoregressive blocks, sampled predictions and random
// remasking against their laws (chi-square at alpha = 1e-6, tests/decode/oracle.hpp; the committed
// positions read from the tokens written, with an unreachable mask id), NaN rows, bad input.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "decode/data.hpp"
#include "decode/oracle.hpp"
#include "support/backends.hpp"

using weft_test::buffer;

namespace {
constexpr std::int32_t mask = 3;

struct step_result {
  std::vector<std::int32_t> tokens, committed;
  std::vector<std::uint8_t> valid;
  std::vector<float> confidence;
};

template <class B>
step_result run_step(const B& be, const std::vector<float>& logits, const std::vector<std::int32_t>& tokens,
                     std::int64_t Bn, std::int64_t T, std::int64_t V, weft::unmask_options o) {
  buffer<B, float> dl(be, logits);
  buffer<B, std::int32_t> dt(be, tokens), dc(be, Bn, -9);
  buffer<B, std::uint8_t> dv(be, Bn, 9);
  buffer<B, float> conf(be, Bn * T, 5.0f);
  o.committed = weft::make_view(dc.data(), Bn);
  o.valid = weft::make_view(dv.data(), Bn);
  o.confidence = weft::make_view(conf.data(), Bn, T);
  weft::unmask_by_confidence(be, weft::make_view(dl.data(), Bn, T, V), weft::make_view(dt.data(), Bn, T), o);
  return {dt.to_host(), dc.to_host(), dv.to_host(), conf.to_host()};
}

/// fp64 softmax probability of the argmax.
double top_prob(const float* l, std::int64_t V) {
  const auto a = weft_test::oracle_argmax(l, V);
  double z = 0;
  for (std::int64_t i = 0; i < V; ++i) z += std::exp(static_cast<double>(l[i]) - l[a]);
  return 1.0 / z;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("unmask_by_confidence: threshold and low-confidence against fp64", "[decode][unmask]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 99, T = 24, V = 40;
  weft_test::rng r(6);
  auto logits = weft_test::make_logits(B * T, V, weft_test::law::normal5, 31);
  std::vector<std::int32_t> tokens(B * T);
  for (auto& t : tokens) t = r.uniform() < 0.6 ? mask : static_cast<std::int32_t>(r.next() % V);
  for (std::int64_t i = 0; i < V; ++i) logits[(5 * T + 9) * V + i] = NAN;  // row 5, position 9
  tokens[5 * T + 9] = mask;
  const std::int64_t bs = 8, bl = 8;  // block [8, 16)
  for (auto strategy : {weft::unmask_strategy::threshold, weft::unmask_strategy::low_confidence}) {
    weft::unmask_options o;
    o.mask_id = mask;
    o.strategy = strategy;
    o.threshold = 0.7f;
    o.count = 3;
    o.block_start = bs;
    o.block_length = bl;
    const auto got = run_step(be, logits, tokens, B, T, V, o);
    for (std::int64_t b = 0; b < B; ++b) {
      std::vector<std::pair<double, std::int64_t>> cands;
      bool nan = false;
      for (std::int64_t t = bs; t < bs + bl; ++t) {
        if (tokens[b * T + t] != mask) continue;
        const float* l = &logits[(b * T + t) * V];
        if (std::isnan(l[0])) {
          nan = true;
          continue;
        }
        cands.push_back({top_prob(l, V), t});
      }
      std::vector<std::int64_t> commit;
      if (!nan && !cands.empty()) {
        std::stable_sort(cands.begin(), cands.end(), [](auto& a, auto& c) { return a.first > c.first; });
        if (strategy == weft::unmask_strategy::threshold) {
          for (auto& c : cands)
            if (c.first > 0.7) commit.push_back(c.second);
          if (commit.empty()) commit.push_back(cands[0].second);
        } else {
          for (std::size_t k = 0; k < std::min<std::size_t>(3, cands.size()); ++k)
            commit.push_back(cands[k].second);
        }
      }
      INFO("b " << b);
      REQUIRE(got.valid[b] == (nan ? 0 : 1));
      REQUIRE(got.committed[b] == static_cast<std::int32_t>(commit.size()));
      for (std::int64_t t = 0; t < T; ++t) {
        const bool c = std::find(commit.begin(), commit.end(), t) != commit.end();
        const auto want = c ? static_cast<std::int32_t>(weft_test::oracle_argmax(&logits[(b * T + t) * V], V))
                            : tokens[b * T + t];
        REQUIRE(got.tokens[b * T + t] == want);
        const bool cand = t >= bs && t < bs + bl && tokens[b * T + t] == mask;
        if (!cand) REQUIRE(got.confidence[b * T + t] == -INFINITY);
        if (cand && !std::isnan(logits[(b * T + t) * V]))
          REQUIRE(std::abs(got.confidence[b * T + t] - top_prob(&logits[(b * T + t) * V], V)) <= 1e-5);
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("unmask_by_confidence: random remasking and sampled predictions follow their laws",
                        "[decode][unmask][distribution]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 989, T = 6, V = 6;
  // The mask is unreachable: id V - 1 = 5 with logit -inf at every position, so a position holds
  // a non-mask token after the step iff it was committed, and the committed set is read from
  // what the library wrote, not from its keys. Every position masked; the random strategy commits
  // 2 of the 6, and they must be exactly the 2 largest keys it reports (ties to the lower
  // position): a library that commits fixed positions, or ignores its keys, fails here.
  // 989 x 4 = 3956 steps; chi-square at alpha = 1e-6 on the committed positions (7912 picks,
  // uniform), on the reported keys (23736 keys, uniform on [0, 1), 16 bins) and on the prediction
  // at position 0 when committed (~1300 draws of softmax(l / 0.8) over ids 0-4).
  const std::int32_t unreachable = static_cast<std::int32_t>(V - 1);
  const auto five = weft_test::make_logits(T, V - 1, weft_test::law::normal1, 2);
  std::vector<float> one;
  for (std::int64_t t = 0; t < T; ++t) {
    one.insert(one.end(), five.begin() + t * (V - 1), five.begin() + (t + 1) * (V - 1));
    one.push_back(-INFINITY);
  }
  std::vector<float> logits;
  for (std::int64_t b = 0; b < B; ++b) logits.insert(logits.end(), one.begin(), one.end());
  const std::vector<std::int32_t> tokens(B * T, unreachable);
  std::vector<std::int64_t> picked(T, 0), predicted(V, 0), keys(16, 0);
  for (int rep = 0; rep < 4; ++rep) {
    weft::unmask_options o;
    o.mask_id = unreachable;
    o.strategy = weft::unmask_strategy::random;
    o.count = 2;
    o.temperature = 0.8f;
    o.seed = 11;
    o.offset = static_cast<std::uint64_t>(rep);
    const auto got = run_step(be, logits, tokens, B, T, V, o);
    for (std::int64_t b = 0; b < B; ++b) {
      INFO("rep " << rep << " b " << b);
      REQUIRE(got.committed[b] == 2);
      REQUIRE(got.valid[b] == 1);
      // the committed set, from the tokens written
      std::vector<std::int64_t> written;
      for (std::int64_t t = 0; t < T; ++t)
        if (got.tokens[b * T + t] != unreachable) written.push_back(t);
      // the 2 largest reported keys (all positions are candidates: every key is a uniform in [0, 1))
      std::vector<std::pair<float, std::int64_t>> c;
      for (std::int64_t t = 0; t < T; ++t) {
        const float k = got.confidence[b * T + t];
        REQUIRE(k >= 0.0f);
        REQUIRE(k < 1.0f);
        keys[static_cast<std::size_t>(k * 16.0f)] += 1;
        c.push_back({k, t});
      }
      std::stable_sort(c.begin(), c.end(), [](auto& a, auto& d) { return a.first > d.first; });
      std::vector<std::int64_t> largest = {std::min(c[0].second, c[1].second),
                                           std::max(c[0].second, c[1].second)};
      REQUIRE(written == largest);
      for (auto t : written) {
        picked[t] += 1;
        REQUIRE(got.tokens[b * T + t] >= 0);
        REQUIRE(got.tokens[b * T + t] < unreachable);
      }
      if (written[0] == 0) predicted[got.tokens[b * T + 0]] += 1;
    }
  }
  const auto cp = weft_test::chi2_test(picked, std::vector<double>(T, 1.0 / T));
  const auto ck = weft_test::chi2_test(keys, std::vector<double>(16, 1.0 / 16));
  // the prediction at position 0 ~ softmax(logits / 0.8) over ids 0-4 (the mask id has probability 0)
  std::vector<double> law(V, 0.0);
  double z = 0;
  for (std::int64_t i = 0; i < V - 1; ++i) z += (law[i] = std::exp(one[i] / 0.8));
  for (auto& w : law) w /= z;
  const auto cl = weft_test::chi2_test(predicted, law);
  INFO("positions chi2 " << cp.statistic << " / " << cp.threshold << "; keys chi2 " << ck.statistic << " / "
                         << ck.threshold << "; prediction chi2 " << cl.statistic << " / " << cl.threshold);
  CHECK(cp.pass);
  CHECK(ck.pass);
  CHECK(cl.pass);
}

TEMPLATE_LIST_TEST_CASE("unmask_by_confidence: bad input throws, writes nothing", "[decode][unmask][errors]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, T = 4, V = 9;
  const auto logits = weft_test::make_logits(B * T, V, weft_test::law::normal1, 1);
  std::vector<std::int32_t> tokens(B * T, mask);
  buffer<TestType, float> dl(be, logits);
  auto expect_bad_unmask = [&](const std::vector<std::int32_t>& tk, weft::unmask_options o, const char* arg) {
    buffer<TestType, std::int32_t> dt(be, tk);
    buffer<TestType, std::int32_t> committed(be, B, -9);
    o.committed = weft::make_view(committed.data(), B);
    weft_test::expect_bad(arg, [&] {
      weft::unmask_by_confidence(be, weft::make_view(dl.data(), B, T, V), weft::make_view(dt.data(), B, T),
                                 o);
    });
    CHECK(dt.to_host() == tk);
    for (auto v : committed.to_host()) CHECK(v == -9);
  };
  weft::unmask_options o;
  o.mask_id = mask;
  auto bad = o;
  bad.mask_id = static_cast<std::int32_t>(V);
  expect_bad_unmask(tokens, bad, "mask_id");
  bad = o;
  bad.block_start = 2;
  bad.block_length = 3;
  expect_bad_unmask(tokens, bad, "block_length");
  bad = o;
  bad.temperature = -1;
  expect_bad_unmask(tokens, bad, "temperature");
  auto bt = tokens;
  bt[5] = -2;
  expect_bad_unmask(bt, o, "tokens");
  std::vector<std::int32_t> counts = {1, -1};
  buffer<TestType, std::int32_t> dc(be, counts);
  bad = o;
  bad.strategy = weft::unmask_strategy::low_confidence;
  bad.counts = weft::make_view(static_cast<const std::int32_t*>(dc.data()), B);
  expect_bad_unmask(tokens, bad, "counts");
}
