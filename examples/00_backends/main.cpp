// 00_backends: which backends this build has, and one primitive (reduce) run on each,
// checked against the serial reference. Exits non-zero on any mismatch.
#include <weft/weft.hpp>
#if WEFT_EXAMPLE_KOKKOS
#include <weft/kokkos.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#if WEFT_EXAMPLE_CUDA
// cuda_part.cu: runs the same reductions with weft::cuda_backend; false when no GPU.
bool cuda_reduce(const std::vector<float>& x, std::int64_t B, std::int64_t T, std::int64_t D, float* total,
                 std::vector<float>* sums, std::string* device);
#endif

namespace {
struct check {
  int failures = 0;
  void report(const char* backend, const char* what, double got, double want) {
    const bool ok = got == want;
    failures += !ok;
    std::printf("  %-8s %-28s %14.6f  %s\n", backend, what, got, ok ? "== serial" : "MISMATCH vs serial");
  }
};
}  // namespace

int main(int argc, char** argv) {
  const std::int64_t B = 4, T = 1 << 18, D = 8;
  // Values 0..3 over 2^23 elements: every partial sum stays below 2^24, so float sums are exact
  // in any bracketing and every backend must agree with serial bit for bit.
  std::vector<float> x(B * T * D);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(((i * 2654435761u) >> 13) % 4);

  std::printf("weft %d.%d.%d backends built in: serial", WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR,
              WEFT_VERSION_PATCH);
#if WEFT_EXAMPLE_KOKKOS
  std::printf(", kokkos");
#endif
#if WEFT_EXAMPLE_CUDA
  std::printf(", cuda");
#endif
  std::printf("\n");

  const auto all = weft::make_view(x.data(), B * T * D);
  const auto bt = weft::make_view(x.data(), B, T, D);
  std::vector<float> ref_sums(B * D);
  const weft::serial_backend serial;
  const float ref_total = weft::reduce(serial, all, weft::plus{});
  [[maybe_unused]] const float ref_max = weft::reduce(serial, all, weft::maximum{});
  weft::reduce(serial, bt, weft::make_view(ref_sums.data(), B, D), weft::plus{});
  std::printf("reduce over %lld floats, and [B,T,D] = [%lld,%lld,%lld] along T:\n",
              static_cast<long long>(x.size()), static_cast<long long>(B), static_cast<long long>(T),
              static_cast<long long>(D));
  check c;
  c.report("serial", "sum", ref_total, ref_total);

#if WEFT_EXAMPLE_KOKKOS
  {
    Kokkos::ScopeGuard guard(argc, argv);
    using exec = Kokkos::DefaultHostExecutionSpace;
    const weft::kokkos_backend<exec> kb{};
    std::printf("  (kokkos execution space %s, concurrency %d)\n", exec::name(), kb.concurrency());
    const auto t0 = std::chrono::steady_clock::now();
    const float total = weft::reduce(kb, all, weft::plus{});
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::vector<float> sums(B * D);
    weft::reduce(kb, bt, weft::make_view(sums.data(), B, D), weft::plus{});
    c.report("kokkos", "sum", total, ref_total);
    c.report("kokkos", "max", weft::reduce(kb, all, weft::maximum{}), ref_max);
    for (std::int64_t i = 0; i < B * D; i += 9)
      c.report("kokkos", ("sum along T, (b,d) #" + std::to_string(i)).c_str(), sums[i], ref_sums[i]);
    std::printf("  kokkos sum took %.2f ms (%.1f GB/s)\n", ms,
                4.0 * static_cast<double>(x.size()) / ms / 1e6);
  }
#else
  (void)argc;
  (void)argv;
#endif

#if WEFT_EXAMPLE_CUDA
  {
    float total = 0;
    std::vector<float> sums(B * D);
    std::string device;
    if (cuda_reduce(x, B, T, D, &total, &sums, &device)) {
      std::printf("  (cuda device %s)\n", device.c_str());
      c.report("cuda", "sum", total, ref_total);
      for (std::int64_t i = 0; i < B * D; i += 9)
        c.report("cuda", ("sum along T, (b,d) #" + std::to_string(i)).c_str(), sums[i], ref_sums[i]);
    } else {
      std::printf("  cuda     built, but no CUDA device here: skipped\n");
    }
  }
#endif
  std::printf("%s\n", c.failures ? "FAILED" : "all backends agree with serial");
  return c.failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
