// snippet: examples/snippets/overlap.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <thread>
#include <vector>

// The caller's GEMM (cblas_sgemm, cuBLAS, ...): c = a . b on row-major views.
void gemm(weft::tensor_view<const float, 2> a, weft::tensor_view<const float, 2> b,
          weft::tensor_view<float, 2> c) {
  for (std::int64_t i = 0; i < a.extent(0); ++i) {
    for (std::int64_t j = 0; j < b.extent(1); ++j) {
      float s = 0;
      for (std::int64_t k = 0; k < a.extent(1); ++k) s += a(i, k) * b(k, j);
      c(i, j) = s;
    }
  }
}

int main() {
  const std::int64_t M = 10, K = 3, N = 2;  // 10 rows over 2 ranks: 5 each
  std::vector<float> A(M * K), B(K * N, 1.0f);
  for (std::int64_t i = 0; i < M * K; ++i) A[i] = static_cast<float>(i % 7);
  weft::local_world world(2);
  auto rank = [&](int r) {
    auto comm = world.communicator(r);
    const auto [r0, r1] = weft::row_shard(M, comm.size(), comm.rank());  // this rank's rows
    std::vector<float> C(M * N);
    // C = all_gather(rows of A) . B: the GEMM of one shard's rows runs while the next travels.
    const weft::overlap_stats st = weft::all_gather_matmul(
        weft::serial_backend{}, comm, weft::make_view(A.data() + r0 * K, r1 - r0, K),
        weft::make_view(B.data(), K, N), weft::make_view(C.data(), M, N), gemm, {.chunks = 2});
    for (std::int64_t i = 0; i < M; ++i) assert(C[i * N] == A[i * K] + A[i * K + 1] + A[i * K + 2]);
    assert(st.total_s >= st.compute_s && st.efficiency >= 0 && st.efficiency <= 1);
  };
  std::thread other(rank, 1);
  rank(0);
  other.join();
}
