// Catch2 main for weft's tests: initialises Kokkos around the run when it is tested.
#include <catch2/catch_session.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "support/gpu_cases.hpp"

#if WEFT_TEST_KOKKOS
#include <Kokkos_Core.hpp>
#endif

int main(int argc, char* argv[]) {
#if WEFT_TEST_KOKKOS
  Kokkos::ScopeGuard kokkos(argc, argv);
#endif
  const int rc = Catch::Session().run(argc, argv);
#if WEFT_TEST_CUDA
  // A CUDA twin in which no CUDA case ran verified nothing on a GPU: skipped (CTest's
  // SKIP_RETURN_CODE 4), or failed where a GPU is required.
  if (rc == 0 && weft_test::cuda_cases_run() == 0) {
    const char* req = std::getenv("WEFT_REQUIRE_GPU");
    if (req != nullptr && std::strcmp(req, "1") == 0) {
      std::fprintf(stderr, "WEFT_REQUIRE_GPU=1, but no CUDA test case ran on a device\n");
      return 1;
    }
    std::fprintf(stderr, "no CUDA test case ran on a device: reported as skipped\n");
    return 4;
  }
#endif
  return rc;
}
