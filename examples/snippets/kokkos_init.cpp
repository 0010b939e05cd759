// snippet: examples/snippets/kokkos_init.cpp
// A Kokkos backend needs Kokkos initialised around every weft call on it: Kokkos::ScopeGuard
// calls Kokkos::initialize(argc, argv) and, when it goes out of scope, Kokkos::finalize().
#include <weft/weft.hpp>
#if __has_include(<Kokkos_Core.hpp>)
#include <weft/kokkos.hpp>
#endif

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  const std::int64_t B = 4, T = 1 << 16, D = 2;
  std::vector<float> x(B * T * D, 0.25f), serial(B * D), parallel(B * D);
  const auto in = weft::make_view(x.data(), B, T, D);  // sums along T
  weft::reduce(weft::serial_backend{}, in, weft::make_view(serial.data(), B, D), weft::plus{});
#if __has_include(<Kokkos_Core.hpp>)
  Kokkos::ScopeGuard guard(argc, argv);  // before the first Kokkos call (views, backends, weft)
  {
    // Everything that holds Kokkos memory (Views, weft's scratch) must be gone before finalize:
    // keep it in a scope that closes before the guard's.
    const weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace> be{};
    weft::reduce(be, in, weft::make_view(parallel.data(), B, D), weft::plus{});
    std::printf("Kokkos %s, %d threads: sum %g (serial %g)\n", Kokkos::DefaultHostExecutionSpace::name(),
                be.concurrency(), parallel[0], serial[0]);
  }
#else
  (void)argc;
  (void)argv;
  parallel = serial;
  std::printf("built without Kokkos: sum %g\n", serial[0]);
#endif
  return parallel == serial && serial[0] == 0.25f * T ? 0 : 1;
}
