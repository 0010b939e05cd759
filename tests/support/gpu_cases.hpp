// Test support: how many CUDA test cases ran on a device in this process. The CUDA twins
// (test_x_cuda) also run their serial cases, so without this count a run in which no CUDA case
// ran would pass for a verified one; their main reports it as skipped (exit 4), or as failed
// when WEFT_REQUIRE_GPU=1 (the cuda test preset).
#pragma once

#include <atomic>

namespace weft_test {
inline std::atomic<int>& cuda_cases_run() {
  static std::atomic<int> n{0};
  return n;
}
}  // namespace weft_test
