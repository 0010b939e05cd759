// 62_ring_attention: causal attention over a 32K-token sequence sharded over the ranks of
// MPI_COMM_WORLD (run under `mpiexec -n 4`; any number of ranks works), under the three
// layouts. Prints each rank's work (the (query, key) pairs it scores, and the seconds it
// computed) for contiguous, zigzag and striped, and checks the gathered result against
// attention in one process (rank 0) on 256 query rows spread over the sequence.
//
//   contiguous  rank r holds rows [r T/W, (r+1) T/W): under the causal mask the last rank
//               scores W times more pairs than the first (imbalance ~ 2 W / (W + 1))
//   zigzag      chunks r and 2W-1-r of 2W: every rank the same work
//   striped     rows r, r + W, ...: every rank the same work (to one row per step)
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "weft/comm/mpi.hpp"
#include "weft/weft.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    weft::mpi_communicator comm(MPI_COMM_WORLD);
    const int rank = comm.rank(), world = comm.size();
    const std::int64_t T = 32768, Hq = 2, Hkv = 1, D = 16;
    // The whole sequence, the same on every rank (a fixed pseudo-random pattern).
    auto fill = [](std::vector<float>& x, std::uint64_t s) {
      for (auto& e : x) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        e = static_cast<float>(static_cast<double>(s >> 40) / static_cast<double>(1ull << 24) - 0.5);
      }
    };
    std::vector<float> q(static_cast<std::size_t>(T * Hq * D)), k(static_cast<std::size_t>(T * Hkv * D)),
        v(k.size());
    fill(q, 1);
    fill(k, 2);
    fill(v, 3);
    using weft::make_view;
    // The single-process reference on 4 blocks of 64 query rows spread over the sequence (each
    // block: attention of its rows, at their positions, against all T keys), on rank 0.
    const std::int64_t rows = 64, starts[4] = {0, T / 3, 2 * T / 3, T - rows};
    std::vector<float> o_ref(static_cast<std::size_t>(4 * rows * Hq * D));
    if (rank == 0) {
      for (int blk = 0; blk < 4; ++blk) {
        std::vector<float> lse(static_cast<std::size_t>(Hq * rows));
        weft::attention_options ao;
        ao.causal = true;
        ao.q_offset = starts[blk];
        weft::attention(weft::serial_backend{}, make_view(q.data() + starts[blk] * Hq * D, 1, rows, Hq, D),
                        make_view(k.data(), 1, T, Hkv, D), make_view(v.data(), 1, T, Hkv, D),
                        make_view(o_ref.data() + blk * rows * Hq * D, 1, rows, Hq, D),
                        make_view(lse.data(), 1, Hq, rows), ao);
      }
      std::printf(
          "causal attention, T = %lld tokens, %d ranks, %lld query heads on %lld KV heads, D = %lld\n",
          static_cast<long long>(T), world, static_cast<long long>(Hq), static_cast<long long>(Hkv),
          static_cast<long long>(D));
      std::printf("%-11s %-34s %-10s %-22s %s\n", "layout", "pairs per rank (millions)", "imbalance",
                  "compute s (max/mean)", "max |o - o_ref| (256 rows)");
    }
    for (weft::ring_layout l :
         {weft::ring_layout::contiguous, weft::ring_layout::zigzag, weft::ring_layout::striped}) {
      const std::int64_t tl = weft::shard_rows(l, world, T);
      std::vector<float> ql(static_cast<std::size_t>(tl * Hq * D)),
          kl(static_cast<std::size_t>(tl * Hkv * D)), vl(kl.size()), ol(ql.size()),
          lsel(static_cast<std::size_t>(Hq * tl));
      weft::shard_sequence(l, rank, world, make_view(static_cast<const float*>(q.data()), 1, T, Hq, D),
                           make_view(ql.data(), 1, tl, Hq, D));
      weft::shard_sequence(l, rank, world, make_view(static_cast<const float*>(k.data()), 1, T, Hkv, D),
                           make_view(kl.data(), 1, tl, Hkv, D));
      weft::shard_sequence(l, rank, world, make_view(static_cast<const float*>(v.data()), 1, T, Hkv, D),
                           make_view(vl.data(), 1, tl, Hkv, D));
      weft::ring_attention_options opts;
      opts.causal = true;
      opts.layout = l;
      opts.q_len = opts.k_len = T;
      const weft::overlap_stats st =
          weft::ring_attention(weft::serial_backend{}, comm, make_view(ql.data(), 1, tl, Hq, D),
                               make_view(kl.data(), 1, tl, Hkv, D), make_view(vl.data(), 1, tl, Hkv, D),
                               make_view(ol.data(), 1, tl, Hq, D), make_view(lsel.data(), 1, Hq, tl), opts);
      // rank 0 gathers every rank's rows and its work
      std::vector<float> all(rank == 0 ? ol.size() * static_cast<std::size_t>(world) : 1);
      MPI_Gather(ol.data(), static_cast<int>(ol.size()), MPI_FLOAT, all.data(), static_cast<int>(ol.size()),
                 MPI_FLOAT, 0, MPI_COMM_WORLD);
      std::vector<double> secs(static_cast<std::size_t>(world));
      MPI_Gather(&st.compute_s, 1, MPI_DOUBLE, secs.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
      if (rank != 0) continue;
      std::vector<float> o(q.size(), 0.0f);
      char pairs[128] = "";
      double most = 0, sum = 0, smax = 0, ssum = 0;
      for (int r = 0; r < world; ++r) {
        weft::unshard_sequence(
            l, r, world,
            make_view(static_cast<const float*>(all.data() + ol.size() * static_cast<std::size_t>(r)), 1, tl,
                      Hq, D),
            make_view(o.data(), 1, T, Hq, D));
        const double n = static_cast<double>(weft::ring_attention_pairs(r, world, T, T, opts));
        most = std::max(most, n);
        sum += n;
        smax = std::max(smax, secs[static_cast<std::size_t>(r)]);
        ssum += secs[static_cast<std::size_t>(r)];
        const std::size_t len = std::strlen(pairs);
        std::snprintf(pairs + len, sizeof pairs - len, "%s%.0f", r ? " " : "", n * 1e-6);
      }
      double err = 0;
      for (int blk = 0; blk < 4; ++blk)
        for (std::int64_t i = 0; i < rows * Hq * D; ++i)
          err = std::max(
              err, static_cast<double>(std::abs(o[static_cast<std::size_t>(starts[blk] * Hq * D + i)] -
                                                o_ref[static_cast<std::size_t>(blk * rows * Hq * D + i)])));
      std::printf("%-11s %-34s %-10.3f %-22.3f %.2e\n", weft::ring_layout_name(l), pairs, most * world / sum,
                  smax * world / ssum, err);
      if (!(err <= 1e-5) || (l != weft::ring_layout::contiguous && most * world / sum > 1.05)) failed = 1;
    }
    if (rank == 0) std::printf(failed ? "MISMATCH\n" : "all layouts agree with single-process attention\n");
  }
  MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return failed;
}
