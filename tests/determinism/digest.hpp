// Thread-count determinism. Each case runs public calls on the Kokkos backend, checks a repeat
// (and, where the docs promise it, the serial backend) bitwise in-process, and appends
// "<name> <64-bit hash of the output bytes>" to the file named by WEFT_DIGEST_FILE. CTest runs
// the executable with 1, 2 and 3 OpenMP threads and compares the three files (compare.cmake):
// a result that depends on the thread count fails there. Built without -march flags
// (test_threads_portable, WEFT_TEST_CPU_LEVELS), the same cases run at each CPU level of the
// dispatch (core/isa.hpp): AVX2 and AVX-512 digests equal, and the baseline level checked
// against the dispatched one in-process.
#pragma once

#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "support/backends.hpp"
#include "weft/kokkos.hpp"

namespace weft_test {

using host_kokkos = weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>;

/// FNV-1a over the bytes of v.
template <class T>
std::uint64_t hash_bytes(const std::vector<T>& v) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (std::size_t i = 0; i < v.size() * sizeof(T); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

inline void write_digest(const std::string& name, std::uint64_t h) {
  static std::FILE* file = [] {
    const char* path = std::getenv("WEFT_DIGEST_FILE");
    return path != nullptr ? std::fopen(path, "w") : nullptr;
  }();
  if (file == nullptr) return;
  std::fprintf(file, "%s %016llx\n", name.c_str(), static_cast<unsigned long long>(h));
  std::fflush(file);
}

enum class vs_serial { not_promised, bitwise };

#if defined(WEFT_TEST_CPU_LEVELS)
/// Outputs at the x86-64 baseline level against the dispatched level's (core/isa.hpp). The
/// baseline has no FMA, so floating-point results may differ in rounding: relative RMS
/// difference <= 2e-5 (fp32 arithmetic, errors of a few ulp carried through recurrences; the
/// largest seen here is printed). Integer outputs (tokens, counts) must be equal.
template <class T>
void check_baseline_agrees(const std::string& name, const std::vector<T>& best, const std::vector<T>& base) {
  REQUIRE(best.size() == base.size());
  if constexpr (std::is_floating_point_v<T>) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < best.size(); ++i) {
      const double a = static_cast<double>(best[i]), b = static_cast<double>(base[i]);
      if (std::isnan(a) || std::isnan(b)) {
        CHECK(std::isnan(a) == std::isnan(b));
        continue;
      }
      if (std::isinf(a) || std::isinf(b)) {
        CHECK(a == b);
        continue;
      }
      num += (a - b) * (a - b);
      den += a * a;
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    static double worst = 0;
    if (rel > worst) {
      worst = rel;
      std::printf("baseline vs %s: largest relative RMS difference so far %.3g (%s)\n",
                  weft::to_string(weft::active_cpu_isa()), rel, name.c_str());
    }
    CHECK(rel <= 2e-5);
  } else {
    CHECK(bitwise_equal(best, base));
  }
}
#endif

/// Runs f(kokkos) twice and, if promised, f(serial); checks them bitwise and records the digest.
/// f returns the call's outputs as one std::vector (any trivially copyable type).
template <vs_serial Promise, class F>
void digest_case(const std::string& name, F&& f) {
  INFO(name);
  const host_kokkos kk{};
  const auto first = f(kk);
  REQUIRE(!first.empty());
  CHECK(bitwise_equal(first, f(kk)));
  if constexpr (Promise == vs_serial::bitwise) CHECK(bitwise_equal(first, f(weft::serial_backend{})));
#if defined(WEFT_TEST_CPU_LEVELS)
  if (weft::active_cpu_isa() != weft::cpu_isa::baseline) {  // the same call at the baseline level
    const weft::cpu_isa level = weft::set_cpu_isa(weft::cpu_isa::baseline);
    const auto base = f(kk);
    weft::set_cpu_isa(level);
    check_baseline_agrees(name, first, base);
  }
#endif
  write_digest(name, hash_bytes(first));
}

template <class T>
std::vector<T> normals(std::size_t n, std::uint64_t seed, double scale = 1.0, double shift = 0.0) {
  rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(shift + scale * r.normal());
  return v;
}

template <class T>
std::vector<T> uniforms(std::size_t n, std::uint64_t seed, double lo, double hi) {
  rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(lo + (hi - lo) * r.uniform());
  return v;
}

}  // namespace weft_test
