// snippet: examples/readme/readme.cpp
#include <weft/weft.hpp>  // core + serial backend; weft/kokkos.hpp, weft/cuda.cuh add the fast paths

#include <cstdio>
#include <vector>

int main() {
  const std::int64_t B = 2, T = 1000, D = 4;
  std::vector<float> x(B * T * D, 0.5f), sums(B * D);
  weft::serial_backend be;  // or weft::kokkos_backend<Kokkos::OpenMP>{}, weft::cuda_backend{stream}

  // Reduce along T of a [B,T,D] tensor: views are pointer + extents (+ strides), owning nothing.
  weft::reduce(be, weft::make_view(x.data(), B, T, D), weft::make_view(sums.data(), B, D), weft::plus{});
  const float total = weft::reduce(be, weft::make_view(x.data(), B * T * D), weft::plus{});

  bool rejected = false;
  try {  // every argument is checked before anything is written
    weft::reduce(be, weft::make_view(x.data(), B, T, D), weft::make_view(sums.data(), D, B), weft::plus{});
  } catch (const weft::invalid_argument& e) {
    std::printf("rejected: %s\n", e.what());
    rejected = true;
  }
  std::printf("sums[0] = %g (expect 500), total = %g (expect 4000)\n", sums[0], total);
  return rejected && sums[0] == 500.0f && total == 4000.0f ? 0 : 1;
}
