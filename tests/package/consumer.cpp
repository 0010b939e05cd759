// A downstream program: reduce with the serial backend (and Kokkos when linked).
#include <cstdio>
#include <vector>

#ifdef CONSUMER_KOKKOS
#include <weft/kokkos.hpp>
#else
#include <weft/weft.hpp>
#endif

int main(int argc, char** argv) {
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; ++i) x[i] = static_cast<float>(i);
  const float s = weft::reduce(weft::serial_backend{}, weft::make_view(x.data(), 1000), weft::plus{});
  int bad = s != 499500.0f;
#ifdef CONSUMER_KOKKOS
  Kokkos::ScopeGuard guard(argc, argv);
  const float k = weft::reduce(weft::kokkos_backend<>{}, weft::make_view(x.data(), 1000), weft::plus{});
  bad += k != 499500.0f;
  std::printf("consumer: serial %g, kokkos (%s) %g\n", s, Kokkos::DefaultExecutionSpace::name(), k);
#else
  (void)argc;
  (void)argv;
  std::printf("consumer: serial %g\n", s);
#endif
  return bad;
}
