// The run really has the thread count CTest asked for (OMP_NUM_THREADS), so that the 1, 2 and
// 3 thread digests compare different partitions.
#include <cstdlib>
#include <string>

#include "determinism/digest.hpp"

TEST_CASE("threads: the Kokkos host space runs the requested thread count", "[determinism]") {
  const char* env = std::getenv("OMP_NUM_THREADS");
  REQUIRE(env != nullptr);
  CHECK(weft_test::host_kokkos{}.concurrency() == std::stoi(env));
}
