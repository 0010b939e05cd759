// 00_backends, CUDA part: the same reductions on weft::cuda_backend.
#include <weft/cuda.cuh>

#include <string>
#include <vector>

bool cuda_reduce(const std::vector<float>& x, std::int64_t B, std::int64_t T, std::int64_t D, float* total,
                 std::vector<float>* sums, std::string* device) {
  if (!weft::cuda_device_available()) return false;
  cudaDeviceProp prop{};
  weft::detail::cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  *device = prop.name;
  float *dx = nullptr, *ds = nullptr;
  weft::detail::cuda_check(cudaMalloc(&dx, x.size() * sizeof(float)), "cudaMalloc");
  weft::detail::cuda_check(cudaMalloc(&ds, static_cast<std::size_t>(B * D) * sizeof(float)), "cudaMalloc");
  weft::detail::cuda_check(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice),
                           "cudaMemcpy");
  const weft::cuda_backend be{};
  *total = weft::reduce(be, weft::make_view(dx, static_cast<std::int64_t>(x.size())), weft::plus{});
  weft::reduce(be, weft::make_view(dx, B, T, D), weft::make_view(ds, B, D), weft::plus{});
  be.fence();
  weft::detail::cuda_check(cudaMemcpy(sums->data(), ds, sums->size() * sizeof(float), cudaMemcpyDeviceToHost),
                           "cudaMemcpy");
  cudaFree(dx);
  cudaFree(ds);
  return true;
}
