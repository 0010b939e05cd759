// The NCCL communicator on one GPU (world size 1): collectives, a grouped send / receive to
// itself, and ring_pipeline. Without a GPU every case skips (the run reports skipped).
#include <catch2/catch_test_macros.hpp>

#include <vector>

#include "support/gpu_cases.hpp"
#include "weft/comm/nccl.hpp"
#include "weft/cuda.cuh"
#include "weft/weft.hpp"

namespace {

struct one_rank {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  one_rank() {
    int dev = 0;
    REQUIRE(ncclCommInitAll(&comm, 1, &dev) == ncclSuccess);
    REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  }
  ~one_rank() {
    cudaStreamDestroy(stream);
    ncclCommDestroy(comm);
  }
};

template <class T>
T* device(const std::vector<T>& h) {
  T* d = nullptr;
  REQUIRE(cudaMalloc(&d, h.size() * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return d;
}
template <class T>
std::vector<T> host(const T* d, std::size_t n) {
  std::vector<T> h(n);
  REQUIRE(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}

}  // namespace

TEST_CASE("nccl: world size 1 collectives, grouped send/recv and ring_pipeline", "[comm][nccl][cuda]") {
  if (!weft::cuda_device_available()) SKIP("no CUDA device");
  ++weft_test::cuda_cases_run();
  one_rank w;
  weft::nccl_communicator c(w.comm, w.stream);
  CHECK(c.size() == 1);
  std::vector<float> x = {1, 2, 3, 4};
  float* dx = device(x);
  weft::all_reduce(c, std::span<float>(dx, 4));
  CHECK(host(dx, 4) == x);
  float* dy = device(std::vector<float>(4, 0.f));
  auto r = c.irecv(std::span<float>(dy, 4), 0);
  auto s = c.isend(std::span<const float>(dx, 4), 0);
  c.wait(r);
  c.wait(s);
  CHECK(host(dy, 4) == x);
  float* b0 = device(std::vector<float>(4, 0.f));
  float* b1 = device(std::vector<float>(4, 0.f));
  int steps = 0;
  weft::ring_pipeline(c, std::span<const float>(dx, 4), std::span<float>(b0, 4), std::span<float>(b1, 4),
                      [&](int, int source, std::span<const float>) { steps += 1 + source; });
  CHECK(steps == 1);
  c.barrier();
  for (float* p : {dx, dy, b0, b1}) cudaFree(p);
}
