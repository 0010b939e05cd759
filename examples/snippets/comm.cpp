// snippet: examples/snippets/comm.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <span>
#include <thread>
#include <vector>

int main() {
  // Four ranks as threads of this process (weft::mpi_communicator in weft/comm/mpi.hpp is the
  // same concept over MPI_COMM_WORLD); no wait lasts longer than the time-out.
  weft::local_world world(4, {.timeout = std::chrono::seconds(10)});
  std::vector<std::thread> ranks;
  for (int r = 0; r < 4; ++r) {
    ranks.emplace_back([&world, r] {
      auto comm = world.communicator(r);
      std::vector<float> grad(1000, static_cast<float>(r + 1));
      weft::all_reduce(comm, std::span(grad));  // weft's own: recursive halving here (4 ranks)
      assert(grad[999] == 1 + 2 + 3 + 4);

      // The same ring over a modelled 1 GB/s link: transfers take the time such a link would,
      // and waits sleep rather than spin (measure overlap where the transport cannot overlap).
      weft::simulated_link link(comm, {.latency_s = 5e-6, .bandwidth_bytes_per_s = 1e9});
      std::vector<float> send(4 * 256, 1.0f), mine(256);
      weft::reduce_scatter(link, std::span<const float>(send), std::span(mine));
      assert(mine[0] == 4.0f);

      // What moved and how fast, per peer; a persistently slow peer would be named here.
      assert(!comm.stats().by_peer().empty());
      assert(link.stats().anomalies().empty());
    });
  }
  for (auto& t : ranks) t.join();
}
