// Test support for the comm and overlap families: run one function per rank of a local_world
// (each rank a thread), collecting each rank's result or exception. Catch2's assertions are
// not thread-safe, so the ranks only record; the test thread checks after join.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "weft/weft.hpp"

namespace weft_test {

/// What one rank's function ended with.
struct rank_outcome {
  std::exception_ptr error;
  double seconds = 0;

  bool ok() const { return !error; }
  /// The message of the exception (empty when none).
  std::string what() const {
    if (!error) return {};
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown exception";
    }
  }
  /// Rethrows the rank's exception as E and gives it to f; false when the rank threw none or
  /// another type.
  template <class E, class F>
  bool caught(F&& f) const {
    if (!error) return false;
    try {
      std::rethrow_exception(error);
    } catch (const E& e) {
      f(e);
      return true;
    } catch (...) {
      return false;
    }
  }
};

/// Runs f(comm) on every rank of a fresh local_world of `world` ranks, one thread each.
template <class F>
std::vector<rank_outcome> on_ranks(int world, F&& f,
                                   weft::comm_options opts = {.timeout = std::chrono::seconds(20)}) {
  weft::local_world lw(world, opts);
  std::vector<rank_outcome> out(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto c = lw.communicator(r);
      const auto t0 = std::chrono::steady_clock::now();
      try {
        f(c);
      } catch (...) {
        out[static_cast<std::size_t>(r)].error = std::current_exception();
      }
      out[static_cast<std::size_t>(r)].seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

/// The message of the first rank that failed, or empty.
inline std::string first_error(const std::vector<rank_outcome>& o) {
  for (std::size_t r = 0; r < o.size(); ++r) {
    if (!o[r].ok()) return "rank " + std::to_string(r) + ": " + o[r].what();
  }
  return {};
}

}  // namespace weft_test
