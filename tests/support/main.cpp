// Catch2 main for weft's tests: initialises Kokkos around the run when it is tested.
#include <catch2/catch_session.hpp>

#if WEFT_TEST_KOKKOS
#include <Kokkos_Core.hpp>
#endif

int main(int argc, char* argv[]) {
#if WEFT_TEST_KOKKOS
  Kokkos::ScopeGuard kokkos(argc, argv);
#endif
  return Catch::Session().run(argc, argv);
}
