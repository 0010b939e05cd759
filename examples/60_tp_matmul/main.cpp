// 60_tp_matmul: a tensor-parallel MLP block (Megatron's sequence + tensor parallelism) whose
// communication hides behind its GEMMs. Run under `mpiexec -n 2` (any number of ranks works).
//
//   x [T, d] is sharded by rows (sequence parallel). Layer 1 needs all of x against this rank's
//   columns of W1:   h = all_gather(x) . W1[:, cols]        -> weft::all_gather_matmul
//   h = gelu(h); layer 2 multiplies by this rank's rows of W2 and sums over ranks, each rank
//   keeping its rows:  y = reduce_scatter(h . W2[rows, :])  -> weft::matmul_reduce_scatter
//
// The GEMM is OpenBLAS' sgemm (the caller's: weft only schedules). Every rank checks its rows of
// y against the whole MLP computed in one process, and prints the overlap statistics.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "weft/comm/mpi.hpp"
#include "weft/weft.hpp"

#if WEFT_EXAMPLE_OPENBLAS
#include <cblas.h>
#endif

namespace {

using cview = weft::tensor_view<const float, 2>;
using mview = weft::tensor_view<float, 2>;

// c = a . b on row-major views (any row stride, unit column stride).
void gemm(cview a, cview b, mview c) {
#if WEFT_EXAMPLE_OPENBLAS
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(a.extent(0)),
              static_cast<int>(b.extent(1)), static_cast<int>(a.extent(1)), 1.f, a.data(),
              static_cast<int>(a.stride(0)), b.data(), static_cast<int>(b.stride(0)), 0.f, c.data(),
              static_cast<int>(c.stride(0)));
#else
  for (std::int64_t i = 0; i < a.extent(0); ++i) {
    for (std::int64_t j = 0; j < b.extent(1); ++j) {
      float s = 0;
      for (std::int64_t k = 0; k < a.extent(1); ++k) s += a(i, k) * b(k, j);
      c(i, j) = s;
    }
  }
#endif
}

float gelu(float x) {
  return 0.5f * x * (1.f + std::tanh(0.7978845608f * (x + 0.044715f * x * x * x)));
}

std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, std::uint32_t seed, float scale) {
  std::vector<float> m(static_cast<std::size_t>(rows * cols));
  for (auto& v : m) {
    seed = seed * 1664525u + 1013904223u;
    v = scale * (static_cast<float>(seed >> 8) / 16777216.f - 0.5f);
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    weft::mpi_communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::seconds(60)});
    const int r = comm.rank(), w = comm.size();
    const std::int64_t T = 1024, d = 256, f = 1024;  // tokens, model width, MLP width
    // Every rank builds the same full weights and input (seeded), then keeps its shards.
    const auto x = random_matrix(T, d, 1, 2.f), W1 = random_matrix(d, f, 2, 0.2f),
               W2 = random_matrix(f, d, 3, 0.1f);
    const auto [t0, t1] = weft::row_shard(T, w, r);  // this rank's tokens
    const auto [c0, c1] = weft::row_shard(f, w, r);  // this rank's MLP columns
    const std::int64_t fl = c1 - c0;
    const cview x_shard(x.data() + t0 * d, {t1 - t0, d}, {d, 1});
    const cview w1_cols(W1.data() + c0, {d, fl}, {f, 1});      // W1[:, c0:c1], strided
    const cview w2_rows(W2.data() + c0 * d, {fl, d}, {d, 1});  // W2[c0:c1, :]

    std::vector<float> h(static_cast<std::size_t>(T * fl)), y(static_cast<std::size_t>((t1 - t0) * d));
    const auto s1 = weft::all_gather_matmul(weft::serial_backend{}, comm, x_shard, w1_cols,
                                            weft::make_view(h.data(), T, fl), gemm, {.chunks = 4});
    for (auto& v : h) v = gelu(v);
    const auto s2 =
        weft::matmul_reduce_scatter(weft::serial_backend{}, comm, weft::make_view(h.data(), T, fl), w2_rows,
                                    weft::make_view(y.data(), t1 - t0, d), gemm, {.chunks = 4});

    // The whole MLP in one process: y_ref = gelu(x . W1) . W2, rows t0..t1.
    std::vector<float> H(static_cast<std::size_t>(T * f)), Y(static_cast<std::size_t>(T * d));
    gemm(weft::make_view(x.data(), T, d), weft::make_view(W1.data(), d, f), weft::make_view(H.data(), T, f));
    for (auto& v : H) v = gelu(v);
    gemm(weft::make_view(H.data(), T, f), weft::make_view(W2.data(), f, d), weft::make_view(Y.data(), T, d));
    double err = 0, ref = 0;
    for (std::int64_t i = t0; i < t1; ++i) {
      for (std::int64_t j = 0; j < d; ++j) {
        const double e = Y[static_cast<std::size_t>(i * d + j)];
        err += std::pow(y[static_cast<std::size_t>((i - t0) * d + j)] - e, 2);
        ref += e * e;
      }
    }
    const double rel = std::sqrt(err / ref);
    failed = !(rel < 1e-5);
    std::printf("rank %d/%d: tokens [%lld, %lld), MLP columns [%lld, %lld)\n", r, w,
                static_cast<long long>(t0), static_cast<long long>(t1), static_cast<long long>(c0),
                static_cast<long long>(c1));
    std::printf(
        "  all_gather_matmul     total %7.2f ms  compute %7.2f ms  exposed comm %6.2f ms  efficiency %.2f\n",
        s1.total_s * 1e3, s1.compute_s * 1e3, s1.exposed_comm_s * 1e3, s1.efficiency);
    std::printf(
        "  matmul_reduce_scatter total %7.2f ms  compute %7.2f ms  exposed comm %6.2f ms  efficiency %.2f\n",
        s2.total_s * 1e3, s2.compute_s * 1e3, s2.exposed_comm_s * 1e3, s2.efficiency);
    std::printf("  y vs the single-process MLP: relative RMSE %.2e  %s\n", rel, failed ? "FAILED" : "ok");
  }
  int any = failed;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
