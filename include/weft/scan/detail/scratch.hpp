// weft/scan/detail/scratch.hpp - the workspace layout of the scan family's fast paths that
// carve arrays of their own in front of an engine's scratch (segment flags, a reduction's
// result slot): one layout for sizing (workspace_size) and for carving (the call).
#pragma once

#include <cstddef>

#include "weft/core/workspace.hpp"

namespace weft::detail::scan {

/// Bytes of a workspace holding `count` Head values, then an engine's scratch (the carve
/// order of every fast path that needs both: carve_with_engine below).
template <class Head>
std::size_t with_engine_bytes(std::size_t count, std::size_t engine) {
  workspace_carver w;
  (void)w.take<Head>(count);
  (void)w.take<std::byte>(engine);
  return w.bytes();
}
template <class Head>
Head* carve_with_engine(void* base, std::size_t count, std::size_t engine, void*& engine_scratch) {
  workspace_carver w(base);
  Head* head = w.take<Head>(count);
  engine_scratch = w.take<std::byte>(engine);
  return head;
}

}  // namespace weft::detail::scan
