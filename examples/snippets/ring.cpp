// snippet: examples/snippets/ring.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <cmath>
#include <thread>
#include <vector>

int main() {
  const std::int64_t T = 10, H = 2, D = 4;  // 10 tokens over 2 ranks, zigzag: padded to 12
  std::vector<float> q(T * H * D), k(q.size()), v(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = k[i] = v[i] = std::sin(0.1f * static_cast<float>(i));
  using weft::make_view;
  weft::local_world world(2);  // ranks as threads; weft::mpi_communicator for processes
  auto rank = [&](int r) {
    auto comm = world.communicator(r);
    const weft::ring_layout layout = weft::ring_layout::zigzag;
    const std::int64_t tl = weft::shard_rows(layout, comm.size(), T);  // 6 rows per rank
    std::vector<float> ql(tl * H * D), kl(ql.size()), vl(ql.size()), o(ql.size()), lse(H * tl);
    auto shard = [&](const std::vector<float>& full, std::vector<float>& local) {
      weft::shard_sequence(layout, r, comm.size(), make_view(full.data(), 1, T, H, D),
                           make_view(local.data(), 1, tl, H, D));
    };
    shard(q, ql);
    shard(k, kl);
    shard(v, vl);
    weft::ring_attention_options opts;
    opts.causal = true;
    opts.layout = layout;
    opts.q_len = opts.k_len = T;  // the rows at positions >= 10 are padding
    const weft::overlap_stats st =
        weft::ring_attention(weft::serial_backend{}, comm, make_view(ql.data(), 1, tl, H, D),
                             make_view(kl.data(), 1, tl, H, D), make_view(vl.data(), 1, tl, H, D),
                             make_view(o.data(), 1, tl, H, D), make_view(lse.data(), 1, H, tl), opts);
    // Each local row i sits at position shard_positions(...)[i]; query 0 sees only key 0.
    const auto pos = weft::shard_positions(layout, r, comm.size(), T);
    for (std::int64_t i = 0; i < tl; ++i) {
      if (pos[i] == 0) assert(std::abs(o[i * H * D] - v[0]) < 1e-6f);
      if (pos[i] >= T) assert(std::isinf(lse[i]) && o[i * H * D] == 0.0f);  // padding
    }
    assert(st.total_s >= st.compute_s);
  };
  std::thread other(rank, 1);
  rank(0);
  other.join();
}
