// weft/core/error.hpp - the three exception types every public call may throw.
//
//   weft::invalid_argument  wrong shapes, strides, null pointers, bad options or values;
//                           thrown before anything is written. Names the function, the
//                           argument, what was expected and what was given.
//   weft::backend_error     a backend (CUDA, Kokkos, allocation) failed.
//   weft::comm_error        a communication failed or timed out (rank, peer, operation).
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace weft {

namespace detail {
// Streams any printable values into one string (g++ 12 has no std::format).
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

/// An argument of a public call is wrong. Thrown before anything is written.
class invalid_argument : public std::invalid_argument {
 public:
  invalid_argument(std::string function, std::string argument, std::string expected, std::string actual)
      : std::invalid_argument(detail::concat("weft::", function, ": argument '", argument, "': expected ",
                                             expected, ", got ", actual)),
        function_(std::move(function)),
        argument_(std::move(argument)),
        expected_(std::move(expected)),
        actual_(std::move(actual)) {}

  const std::string& function() const noexcept { return function_; }
  const std::string& argument() const noexcept { return argument_; }
  const std::string& expected() const noexcept { return expected_; }
  const std::string& actual() const noexcept { return actual_; }

 private:
  std::string function_, argument_, expected_, actual_;
};

/// A backend operation (kernel launch, allocation, synchronisation) failed.
class backend_error : public std::runtime_error {
 public:
  backend_error(std::string backend, std::string operation, std::string what)
      : std::runtime_error(detail::concat("weft [", backend, "] ", operation, ": ", what)),
        backend_(std::move(backend)),
        operation_(std::move(operation)) {}
  const std::string& backend() const noexcept { return backend_; }
  const std::string& operation() const noexcept { return operation_; }

 private:
  std::string backend_, operation_;
};

/// A communication failed or timed out. `peer` is -1 for collectives.
class comm_error : public std::runtime_error {
 public:
  comm_error(int rank, int peer, std::string operation, std::string what)
      : std::runtime_error(detail::concat("weft comm: rank ", rank,
                                          peer >= 0 ? detail::concat(", peer ", peer) : "", ", ", operation,
                                          ": ", what)),
        rank_(rank),
        peer_(peer),
        operation_(std::move(operation)) {}
  int rank() const noexcept { return rank_; }
  int peer() const noexcept { return peer_; }
  const std::string& operation() const noexcept { return operation_; }

 private:
  int rank_, peer_;
  std::string operation_;
};

namespace detail {
/// Throws weft::invalid_argument; for checks whose messages are costly to build, write
/// `if (bad) fail(...)` so the message is only formatted on failure.
[[noreturn]] inline void fail(std::string_view function, std::string_view argument, std::string expected,
                              std::string actual) {
  throw invalid_argument(std::string(function), std::string(argument), std::move(expected),
                         std::move(actual));
}

/// Throws weft::invalid_argument unless `ok`. The message parts are only built on failure.
template <class Expected, class Actual>
inline void require(bool ok, std::string_view function, std::string_view argument, const Expected& expected,
                    const Actual& actual) {
  if (!ok) {
    throw invalid_argument(std::string(function), std::string(argument), concat(expected), concat(actual));
  }
}
}  // namespace detail

}  // namespace weft
