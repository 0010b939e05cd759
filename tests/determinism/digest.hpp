// Thread-count determinism. Each case runs public calls on the Kokkos backend, checks a repeat
// (and, where the docs promise it, the serial backend) bitwise in-process, and appends
// "<name> <64-bit hash of the output bytes>" to the file named by WEFT_DIGEST_FILE. CTest runs
// the executable with 1, 2 and 3 OpenMP threads and compares the three files (compare.cmake):
// a result that depends on the thread count fails there.
#pragma once

#include <catch2/catch_test_macros.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
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
