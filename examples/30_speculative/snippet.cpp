// snippet: examples/30_speculative/snippet.cpp
// docs/decode.md quotes this file: sample a batch of logits with top-k / top-p, then verify a
// chain of drafts with speculative sampling.
#include <weft/weft.hpp>

#include <cstdio>
#include <vector>

int main() {
  const std::int64_t B = 2, V = 5, L = 2;
  std::vector<float> logits = {2.0f, 1.0f, 0.5f, -1.0f, -3.0f,   // sequence 0
                               0.1f, 0.2f, 3.0f, 0.0f,  -1.0f};  // sequence 1
  std::vector<std::int32_t> next(B);
  weft::sample(weft::serial_backend{}, weft::make_view(logits.data(), B, V), weft::make_view(next.data(), B),
               {.temperature = 0.8f, .top_k = 3, .top_p = 0.9f, .seed = 1234, .offset = 0});

  // Drafts x_t ~ q_t, target laws p_0 .. p_L: keep the accepted drafts, then one more token.
  std::vector<float> q(B * L * V, 0.2f), p(B * (L + 1) * V, 0.2f);
  std::vector<std::int32_t> drafts = {1, 4, 2, 2}, out(B * (L + 1)), accepted(B);
  weft::speculative_sample(weft::serial_backend{}, weft::make_view(q.data(), B, L, V),
                           weft::make_view(drafts.data(), B, L), weft::make_view(p.data(), B, L + 1, V),
                           weft::make_view(out.data(), B, L + 1), weft::make_view(accepted.data(), B),
                           {.seed = 1234, .offset = 1});
  // p == q here, so every draft is accepted and a bonus token follows.
  for (std::int64_t b = 0; b < B; ++b)
    std::printf("sequence %lld: sampled %d, accepted %d drafts, then token %d\n", static_cast<long long>(b),
                next[b], accepted[b], out[b * (L + 1) + L]);
  return accepted[0] == L && accepted[1] == L ? 0 : 1;
}
