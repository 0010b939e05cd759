// weft/core/workspace.hpp - scratch memory: caller-provided or backend-allocated.
//
// Algorithms that need scratch take an optional `.workspace` in their options. Engines
// that pre-allocate ask `weft::workspace_size(...)` for the bytes to give; everyone else
// leaves it empty and the backend allocates (host memory, a Kokkos View, or
// cudaMallocAsync on the backend's stream).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "weft/core/error.hpp"

namespace weft {

/// Caller-owned scratch memory in the backend's memory space.
struct workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

/// Scratch owned by a backend allocation; frees itself (stream-ordered on CUDA).
class scratch_buffer {
 public:
  scratch_buffer() = default;
  scratch_buffer(void* data, std::size_t bytes, std::shared_ptr<void> owner)
      : data_(data), bytes_(bytes), owner_(std::move(owner)) {}
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  std::shared_ptr<void> owner_;
};

namespace detail {

inline constexpr std::size_t workspace_alignment = 256;

inline constexpr std::size_t align_up(std::size_t n, std::size_t a = workspace_alignment) {
  return (n + a - 1) / a * a;
}

/// Computes the size of a workspace made of several aligned arrays, and carves them out.
/// The same sequence of take<T>(n) calls is used to size (on a null base) and to carve.
class workspace_carver {
 public:
  explicit workspace_carver(void* base = nullptr) : base_(static_cast<std::byte*>(base)) {}
  template <class T>
  T* take(std::size_t n) {
    const std::size_t off = align_up(used_);
    used_ = off + n * sizeof(T);
    return base_ ? reinterpret_cast<T*>(base_ + off) : nullptr;
  }
  std::size_t bytes() const { return align_up(used_); }

 private:
  std::byte* base_;
  std::size_t used_ = 0;
};

/// Uses the caller's workspace when given (checking its size), else allocates from `be`.
template <class Backend>
scratch_buffer acquire_scratch(const Backend& be, const workspace& ws, std::size_t bytes,
                               std::string_view fn) {
  if (ws.data != nullptr || ws.bytes != 0) {
    require(ws.data != nullptr, fn, "workspace", "a non-null pointer", "nullptr");
    require(ws.bytes >= bytes, fn, "workspace", concat("at least ", bytes, " bytes"),
            concat(ws.bytes, " bytes"));
    require(reinterpret_cast<std::uintptr_t>(ws.data) % workspace_alignment == 0, fn, "workspace",
            concat(workspace_alignment, "-byte alignment"), ws.data);
    return scratch_buffer(ws.data, ws.bytes, nullptr);
  }
  return be.allocate(bytes);
}

}  // namespace detail
}  // namespace weft
