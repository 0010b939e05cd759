// ring_attention, its backward and usp_attention under mpiexec -n 1..4 over MPI_COMM_WORLD:
// the ranks' rows, summed over the world, equal single-process attention on the whole
// sequence (each rank computes that reference itself); bad input on one rank fails every rank.
#include <catch2/catch_test_macros.hpp>

#include <chrono>

#include "ring/cases.hpp"
#include "weft/comm/mpi.hpp"
#include "weft/ring/usp.hpp"

using namespace std::chrono_literals;
using weft::ring_layout;
using weft::ring_schedule;
using weft_test::attn::problem;
using weft_test::ring::rel_rmse;

TEST_CASE("ring_attention over MPI equals attention on the gathered sequence", "[ring][mpi]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 30s});
  for (bool causal : {false, true}) {
    problem p = weft_test::attn::sized(1, 45, 45, 4, 2, 8, 8);
    p.causal = causal;
    const weft_test::attn::inputs<float> in(p, 51);
    const auto ref = weft_test::attn::run(weft::serial_backend{}, p, in);
    for (ring_layout l : {ring_layout::contiguous, ring_layout::zigzag, ring_layout::striped}) {
      for (ring_schedule s : {ring_schedule::pass_kv, ring_schedule::pass_q, ring_schedule::bidirectional}) {
        std::vector<float> o(ref.o.size(), 0.f), lse(ref.lse.size(), 0.f);
        const auto complaint = weft_test::ring::run_rank(c, weft::serial_backend{}, p, in, l, s, o, lse);
        CHECK(complaint.empty());
        weft::all_reduce(c, std::span<float>(o));  // every row is one rank's
        weft::all_reduce(c, std::span<float>(lse));
        INFO("world " << c.size() << ", " << weft::ring_layout_name(l) << ", schedule "
                      << static_cast<int>(s));
        CHECK(rel_rmse(o, ref.o) <= 1e-5);
        CHECK(rel_rmse(lse, ref.lse) <= 1e-5);
      }
    }
  }
}

TEST_CASE("ring_attention_backward over MPI equals attention_backward", "[ring][mpi]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 30s});
  problem p = weft_test::attn::sized(1, 0, 0, 2, 1, 8, 8);
  p.cu_q = {0, 17, 17, 18, 37};
  p.cu_k = p.cu_q;
  p.Tq = p.Tk = 37;
  p.causal = true;
  const weft_test::attn::inputs<float> in(p, 52);
  const auto dO = weft_test::attn::randn<float>(static_cast<std::size_t>(37 * 2 * 8), 53);
  const auto ref = weft_test::attn::run_backward(weft::serial_backend{}, p, in, dO);
  std::vector<float> dq(in.q.size(), 0.f), dk(in.k.size(), 0.f), dv(in.v.size(), 0.f);
  weft_test::ring::run_rank_backward(c, weft::serial_backend{}, p, in, dO, ring_layout::zigzag,
                                     ring_schedule::pass_kv, dq, dk, dv);
  for (auto* g : {&dq, &dk, &dv}) weft::all_reduce(c, std::span<float>(*g));
  CHECK(rel_rmse(dq, ref.dq) <= 1e-5);
  CHECK(rel_rmse(dk, ref.dk) <= 1e-5);
  CHECK(rel_rmse(dv, ref.dv) <= 1e-5);
}

TEST_CASE("ring_attention over MPI: a bad shard on one rank fails every rank", "[ring][mpi][errors]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 30s});
  const std::int64_t rows = c.rank() == c.size() - 1 ? 5 : 4;  // the last rank breaks the padding rule
  std::vector<float> x(static_cast<std::size_t>(rows * 2 * 4), 1.f), o(x.size(), -7.f),
      lse(static_cast<std::size_t>(rows * 2));
  const auto xv = weft::make_view(static_cast<const float*>(x.data()), 1, rows, 2, 4);
  weft::ring_attention_options opts;
  opts.q_len = opts.k_len = 4 * c.size();
  CHECK_THROWS_AS(
      weft::ring_attention(weft::serial_backend{}, c, xv, xv, xv, weft::make_view(o.data(), 1, rows, 2, 4),
                           weft::make_view(lse.data(), 1, 2, rows), opts),
      weft::invalid_argument);
  CHECK(std::all_of(o.begin(), o.end(), [](float v) { return v == -7.f; }));
}

TEST_CASE("usp_attention over MPI equals the 1-D ring", "[ring][mpi][usp]") {
  weft::mpi_communicator c(MPI_COMM_WORLD, {.timeout = 30s});
  if (c.size() % 2 != 0) return;  // a 2-D grid needs an even world here
  weft::grid_2d grid(c, 2);
  problem p = weft_test::attn::sized(1, 22, 22, 4, 2, 4, 4);
  p.causal = true;
  const weft_test::attn::inputs<float> in(p, 54);
  const auto ref = weft_test::attn::run(weft::serial_backend{}, p, in);
  const auto pos = weft::usp_positions(ring_layout::zigzag, c.rank(), grid.ring_size(), 2, p.Tq);
  const auto tl = static_cast<std::int64_t>(pos.size());
  auto take = [&](const std::vector<float>& x, std::int64_t H, std::int64_t D) {
    std::vector<float> s(static_cast<std::size_t>(tl * H * D), 0.f);
    for (std::int64_t i = 0; i < tl; ++i)
      if (pos[static_cast<std::size_t>(i)] < p.Tq)
        for (std::int64_t e = 0; e < H * D; ++e)
          s[static_cast<std::size_t>(i * H * D + e)] =
              x[static_cast<std::size_t>(pos[static_cast<std::size_t>(i)] * H * D + e)];
    return s;
  };
  const auto q = take(in.q, 4, 4), k = take(in.k, 2, 4), v = take(in.v, 2, 4);
  std::vector<float> o(q.size()), lse(static_cast<std::size_t>(4 * tl));
  auto opts = weft_test::ring::options_of(p, ring_layout::zigzag, ring_schedule::pass_kv);
  opts.q_len = p.Tq;
  weft::usp_attention(weft::serial_backend{}, grid, weft::make_view(q.data(), 1, tl, 4, 4),
                      weft::make_view(k.data(), 1, tl, 2, 4), weft::make_view(v.data(), 1, tl, 2, 4),
                      weft::make_view(o.data(), 1, tl, 4, 4), weft::make_view(lse.data(), 1, 4, tl), opts);
  std::vector<float> full(ref.o.size(), 0.f);
  for (std::int64_t i = 0; i < tl; ++i)
    if (pos[static_cast<std::size_t>(i)] < p.Tq)
      for (std::int64_t e = 0; e < 16; ++e)
        full[static_cast<std::size_t>(pos[static_cast<std::size_t>(i)] * 16 + e)] =
            o[static_cast<std::size_t>(i * 16 + e)];
  weft::all_reduce(c, std::span<float>(full));
  CHECK(rel_rmse(full, ref.o) <= 1e-5);
}
