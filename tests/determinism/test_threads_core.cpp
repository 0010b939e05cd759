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

#if defined(WEFT_TEST_CPU_LEVELS)
#include <cstring>

#include "weft/core/isa.hpp"

// The run really is at the level CTest asked for (WEFT_ARCH, capped to what this CPU has), and
// the level can be changed and is checked.
TEST_CASE("cpu levels: WEFT_ARCH picks the level, set_cpu_isa changes it", "[determinism]") {
  using weft::cpu_isa;
  const char* env = std::getenv("WEFT_ARCH");
  REQUIRE(env != nullptr);
  cpu_isa want = cpu_isa::baseline;
  for (cpu_isa l : {cpu_isa::baseline, cpu_isa::avx2, cpu_isa::avx512})
    if (std::strcmp(env, weft::to_string(l)) == 0) want = l;
  REQUIRE(std::strcmp(weft::to_string(want), env) == 0);
  while (!weft::cpu_isa_supported(want)) want = static_cast<cpu_isa>(static_cast<int>(want) - 1);
  CHECK(weft::active_cpu_isa() == want);
  WARN("CPU level of this run: " << weft::to_string(weft::active_cpu_isa()));
  CHECK(weft::cpu_isa_supported(cpu_isa::baseline));
  const cpu_isa prev = weft::set_cpu_isa(cpu_isa::baseline);
  CHECK(prev == want);
  CHECK(weft::active_cpu_isa() == cpu_isa::baseline);
  CHECK(weft::set_cpu_isa(want) == cpu_isa::baseline);
  if (!weft::cpu_isa_supported(cpu_isa::avx512)) {
    weft_test::expect_bad("level", [] { weft::set_cpu_isa(cpu_isa::avx512); });
    CHECK(weft::active_cpu_isa() == want);  // unchanged by the failed call
  }
}
#endif
