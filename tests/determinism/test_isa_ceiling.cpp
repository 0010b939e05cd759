// core/isa.hpp: a unit with no wrapper above its own level never reports, accepts or runs a
// higher one. Built with no -march flag and WEFT_NO_ISA_DISPATCH, so the unit's own level is
// the x86-64 baseline: on a CPU with AVX2 (every CI machine) the uncapped detection would say
// avx2 and these checks fail.
#include <catch2/catch_test_macros.hpp>

#include "support/backends.hpp"
#include "weft/core/isa.hpp"

using weft::cpu_isa;

TEST_CASE("cpu levels: the reported level is capped at the unit's code (WEFT_ISA_CEILING)", "[determinism]") {
  STATIC_REQUIRE(WEFT_ISA_DISPATCH == 0);
  STATIC_REQUIRE(WEFT_ISA_CEILING == WEFT_ISA_TU_LEVEL);
  if (WEFT_ISA_TU_LEVEL != 0) SKIP("this unit was compiled above the x86-64 baseline");
  CHECK(weft::active_cpu_isa() == cpu_isa::baseline);
  CHECK(weft::cpu_isa_supported(cpu_isa::baseline));
  CHECK_FALSE(weft::cpu_isa_supported(cpu_isa::avx2));
  CHECK_FALSE(weft::cpu_isa_supported(cpu_isa::avx512));
  weft_test::expect_bad("level", [] { weft::set_cpu_isa(cpu_isa::avx2); });
  CHECK(weft::active_cpu_isa() == cpu_isa::baseline);  // unchanged by the failed call
  CHECK(weft::set_cpu_isa(cpu_isa::baseline) == cpu_isa::baseline);
}
