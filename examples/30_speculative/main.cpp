// 30_speculative: speculative decoding with weft's decode primitives on two small n-gram models.
//
// The target and the draft are bigram tables over 16 tokens (deterministic formulas; the draft
// is a different, cheaper-looking model that never proposes some tokens the target can emit,
// and proposes some the target never emits). From the prompt token 0, 20000 sequences are
// generated three ways:
//   target only   weft::sample_probs on the target's row, one token per step;
//   chain         4 drafts per step from the draft model, weft::speculative_sample;
//   tree          a 7-node tree (2 children per node, depth 2), weft::verify_tree (SpecInfer);
//                 the KV "cache" (here: the token of each slot) is compacted with kv_compact.
// Speculation must not change the output law: for every method and position t = 1..6 the
// empirical law of token t is compared with the exact Markov-chain marginal e_0 P^t by a
// chi-square test (cells with expected count < 5 merged, alpha = 1e-6 per test: a correct
// implementation fails one of the 18 tests with probability < 2e-5). The acceptance rates and
// tokens per target call are printed. A greedy chain run is also checked against greedy
// target-only decoding token for token. Exits non-zero on any failure.
#include <weft/weft.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int V = 16;
constexpr int L = 4;          // chain drafts per step
constexpr int N = 7;          // tree nodes: 0 -> {1, 2}, 1 -> {3, 4}, 2 -> {5, 6}
constexpr int positions = 6;  // tokens checked per sequence
constexpr std::int64_t B = 20000;

using table = std::vector<float>;  // [V, V]: row i = law of the next token after token i

table make_table(double sharp, double shift, int forbidden) {
  table t(V * V);
  for (int i = 0; i < V; ++i) {
    double w[V], z = 0;
    for (int j = 0; j < V; ++j) {
      w[j] = (j == (i + forbidden) % V)
                 ? 0.0
                 : std::exp(sharp * std::sin(1.3 * i + 0.7 * j + shift) + 0.4 * std::cos(i * j));
      z += w[j];
    }
    for (int j = 0; j < V; ++j) t[i * V + j] = static_cast<float>(w[j] / z);
  }
  return t;
}

const table target = make_table(2.0, 0.0, 3);  // never emits i + 3
const table draft = make_table(1.5, 0.3, 5);   // never proposes i + 5

const weft::serial_backend be;

/// One draw per row from table rows rows[b], keyed by (seed = b, offset).
std::vector<std::int32_t> draw(const table& t, const std::vector<std::int32_t>& rows, std::uint64_t offset) {
  const std::int64_t n = static_cast<std::int64_t>(rows.size());
  std::vector<float> p(n * V);
  for (std::int64_t b = 0; b < n; ++b)
    for (int j = 0; j < V; ++j) p[b * V + j] = t[rows[b] * V + j];
  std::vector<std::uint64_t> seeds(n);
  for (std::int64_t b = 0; b < n; ++b) seeds[b] = 1000003u * static_cast<std::uint64_t>(b) + 17;
  std::vector<std::int32_t> out(n);
  weft::sample_probs(be, weft::make_view(p.data(), n, V), weft::make_view(out.data(), n),
                     {.seed = 0, .offset = offset, .seeds = weft::make_view(seeds.data(), n)});
  return out;
}

void copy_row(const table& t, std::int32_t token, float* dst) {
  for (int j = 0; j < V; ++j) dst[j] = t[token * V + j];
}

using sequences = std::vector<std::vector<std::int32_t>>;

sequences target_only() {
  sequences s(B, std::vector<std::int32_t>{0});
  for (int step = 0; step < positions; ++step) {
    std::vector<std::int32_t> last(B);
    for (std::int64_t b = 0; b < B; ++b) last[b] = s[b].back();
    const auto next = draw(target, last, 1000 + step);
    for (std::int64_t b = 0; b < B; ++b) s[b].push_back(next[b]);
  }
  return s;
}

struct stats {
  double drafted = 0, accepted = 0, calls = 0, tokens = 0;
};

sequences chain(stats& st) {
  sequences s(B, std::vector<std::int32_t>{0});
  std::vector<float> q(B * L * V), p(B * (L + 1) * V);
  std::vector<std::int32_t> drafts(B * L), out(B * (L + 1)), acc(B);
  for (std::uint64_t step = 0;; ++step) {
    bool done = true;
    for (auto& x : s) done &= x.size() > positions;
    if (done) break;
    std::vector<std::int32_t> cur(B);
    for (std::int64_t b = 0; b < B; ++b) cur[b] = s[b].back();
    for (int j = 0; j < L; ++j) {  // the draft model proposes L tokens autoregressively
      for (std::int64_t b = 0; b < B; ++b) {
        copy_row(draft, cur[b], &q[(b * L + j) * V]);
        copy_row(target, cur[b], &p[(b * (L + 1) + j) * V]);
      }
      const auto x = draw(draft, cur, 5000 + step * L + j);
      for (std::int64_t b = 0; b < B; ++b) drafts[b * L + j] = cur[b] = x[b];
    }
    for (std::int64_t b = 0; b < B; ++b) copy_row(target, cur[b], &p[(b * (L + 1) + L) * V]);
    weft::speculative_sample(be, weft::make_view(q.data(), B, L, V),
                             weft::make_view(static_cast<const std::int32_t*>(drafts.data()), B, L),
                             weft::make_view(p.data(), B, L + 1, V), weft::make_view(out.data(), B, L + 1),
                             weft::make_view(acc.data(), B), {.seed = 42, .offset = step});
    for (std::int64_t b = 0; b < B; ++b) {
      if (s[b].size() > positions) continue;
      st.drafted += L;
      st.accepted += acc[b];
      st.calls += 1;
      st.tokens += acc[b] + 1;
      for (int j = 0; j <= acc[b]; ++j) s[b].push_back(out[b * (L + 1) + j]);
    }
  }
  return s;
}

sequences tree(stats& st, bool& kv_ok) {
  const std::int32_t shape[N] = {-1, 0, 0, 1, 1, 2, 2};
  sequences s(B, std::vector<std::int32_t>{0});
  std::vector<std::int32_t> parents(B * N), tokens(B * N), out(B * N), path(B * N), acc(B);
  std::vector<float> q(B * N * V), p(B * N * V);
  for (std::int64_t b = 0; b < B; ++b)
    for (int i = 0; i < N; ++i) parents[b * N + i] = shape[i];
  for (std::uint64_t step = 0;; ++step) {
    bool done = true;
    for (auto& x : s) done &= x.size() > positions;
    if (done) break;
    std::vector<std::int32_t> rows(B);
    for (std::int64_t b = 0; b < B; ++b) tokens[b * N] = s[b].back();
    for (int i = 1; i < N; ++i) {  // each child drawn from the draft's law after its parent
      for (std::int64_t b = 0; b < B; ++b) rows[b] = tokens[b * N + shape[i]];
      const auto x = draw(draft, rows, 90000 + step * N + i);
      for (std::int64_t b = 0; b < B; ++b) tokens[b * N + i] = x[b];
    }
    for (std::int64_t b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i) {
        copy_row(draft, tokens[b * N + i], &q[(b * N + i) * V]);
        copy_row(target, tokens[b * N + i], &p[(b * N + i) * V]);
      }
    const auto cview = [](const std::vector<std::int32_t>& v) {
      return weft::make_view(static_cast<const std::int32_t*>(v.data()), B, N);
    };
    weft::verify_tree(be, cview(tokens), cview(parents), weft::make_view(q.data(), B, N, V),
                      weft::make_view(p.data(), B, N, V), weft::make_view(out.data(), B, N),
                      weft::make_view(path.data(), B, N), weft::make_view(acc.data(), B),
                      {.seed = 43, .offset = step});
    // A toy KV cache holding each node's token at slot 3 + node: after kv_compact, slots 4.. hold
    // the accepted path's tokens in order.
    std::vector<std::int32_t> kv(B * 16, -1);
    for (std::int64_t b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i) kv[b * 16 + 3 + i] = tokens[b * N + i];
    std::vector<std::int64_t> start(B, 3);
    weft::kv_compact(be, weft::make_view(kv.data(), B, 16, 1), cview(path),
                     weft::make_view(static_cast<const std::int32_t*>(acc.data()), B),
                     {.start = weft::make_view(static_cast<const std::int64_t*>(start.data()), B)});
    for (std::int64_t b = 0; b < B; ++b) {
      for (int j = 0; j < acc[b]; ++j) kv_ok &= kv[b * 16 + 4 + j] == out[b * N + j];
      if (s[b].size() > positions) continue;
      st.drafted += 2;  // depth of the tree: at most 2 drafts can be accepted
      st.accepted += acc[b];
      st.calls += 1;
      st.tokens += acc[b] + 1;
      for (int j = 0; j <= acc[b]; ++j) s[b].push_back(out[b * N + j]);
    }
  }
  return s;
}

/// Chi-square of token t's empirical law against e_0 P^t; alpha = 1e-6 (Wilson-Hilferty quantile).
bool check_law(const char* name, const sequences& s) {
  std::vector<double> law(V, 0.0), next(V);
  law[0] = 1.0;
  bool ok = true;
  std::printf("  %-12s chi-square / 1e-6 quantile, positions 1..%d:", name, positions);
  for (int t = 1; t <= positions; ++t) {
    for (int j = 0; j < V; ++j) {
      next[j] = 0;
      for (int i = 0; i < V; ++i) next[j] += law[i] * target[i * V + j];
    }
    law = next;
    std::vector<double> obs(V, 0.0);
    for (const auto& x : s) obs[x[t]] += 1;
    double stat = 0, e_acc = 0, o_acc = 0;
    int cells = 0;
    for (int j = 0; j < V; ++j) {
      if (law[j] == 0 && obs[j] > 0) ok = false;  // an impossible token
      e_acc += law[j] * static_cast<double>(B);
      o_acc += obs[j];
      if (e_acc >= 5 || j == V - 1) {
        stat += (o_acc - e_acc) * (o_acc - e_acc) / (e_acc > 0 ? e_acc : 1);
        ++cells;
        e_acc = o_acc = 0;
      }
    }
    const double df = cells - 1, a = 2.0 / (9.0 * df), z = 4.753424308822899;
    const double q = df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
    ok &= stat <= q;
    std::printf(" %.1f/%.1f%s", stat, q, stat <= q ? "" : "!");
  }
  std::printf("  %s\n", ok ? "same law" : "DIFFERENT LAW");
  return ok;
}

bool greedy_matches() {
  // Greedy chain verification must reproduce greedy target decoding exactly.
  std::vector<std::int32_t> ref{0}, got{0};
  for (int t = 0; t < 12; ++t) {
    const std::int32_t i = ref.back();
    std::int32_t best = 0;
    for (int j = 1; j < V; ++j)
      if (target[i * V + j] > target[i * V + best]) best = j;
    ref.push_back(best);
  }
  while (got.size() < ref.size()) {
    std::vector<float> logits((L + 1) * V);
    std::vector<std::int32_t> drafts(L), out(L + 1), acc(1);
    std::int32_t cur = got.back();
    for (int j = 0; j <= L; ++j) {
      for (int k = 0; k < V; ++k) logits[j * V + k] = std::log(target[cur * V + k]);
      if (j < L) {  // the draft's greedy guess
        std::int32_t best = 0;
        for (int k = 1; k < V; ++k)
          if (draft[cur * V + k] > draft[cur * V + best]) best = k;
        drafts[j] = cur = best;
      }
    }
    weft::verify_greedy(be, weft::make_view(static_cast<const std::int32_t*>(drafts.data()), 1, L),
                        weft::make_view(logits.data(), 1, L + 1, V), weft::make_view(out.data(), 1, L + 1),
                        weft::make_view(acc.data(), 1));
    for (int j = 0; j <= acc[0]; ++j) got.push_back(out[j]);
  }
  for (std::size_t t = 0; t < ref.size(); ++t)
    if (got[t] != ref[t]) return false;
  return true;
}

}  // namespace

int main() {
  std::printf("30_speculative: bigram target and draft over %d tokens, %lld sequences from token 0\n", V,
              static_cast<long long>(B));
  stats cs, ts;
  bool kv_ok = true;
  const auto plain = target_only();
  const auto ch = chain(cs);
  const auto tr = tree(ts, kv_ok);
  std::printf("chain (%d drafts): %.1f%% of drafts accepted, %.2f tokens per target call\n", L,
              100.0 * cs.accepted / cs.drafted, cs.tokens / cs.calls);
  std::printf("tree  (%d nodes, depth 2): %.1f%% of the depth accepted, %.2f tokens per target call\n", N,
              100.0 * ts.accepted / ts.drafted, ts.tokens / ts.calls);
  std::printf("output law, token by token (alpha = 1e-6 per test):\n");
  bool ok = check_law("target only", plain);
  ok &= check_law("chain", ch);
  ok &= check_law("tree", tr);
  std::printf("kv_compact moved the accepted path into place: %s\n", kv_ok ? "yes" : "NO");
  const bool greedy = greedy_matches();
  std::printf("greedy chain verification == greedy target decoding: %s\n", greedy ? "yes" : "NO");
  ok &= kv_ok && greedy;
  std::printf("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
