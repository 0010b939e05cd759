// weft/linear_attention/cuda.cuh - native CUDA paths of linear_attention.
//
// Status: compiled in CI (sm_90); not yet verified on hardware.
//
// chunk mode, every gate kind, K <= 128: chunk_kernel, one thread block per (sequence, head,
//   32-column slice of V) running detail::la::kernels::chunk_block (chunk_block.hpp): chunks of
//   64 tokens, the state slice in shared memory (at most 142 KiB, under sm_80's 163 KiB).
// Everything else (recurrent mode, decode steps, K > 128): one thread
// per (sequence, head, value column) runs detail::la::kernels::recurrent_column (column.hpp), the
// token loop of one column of the state (columns evolve independently for every gate kind).
// The two device algorithms also run on the host, one thread at a time, in
// tests/linear_attention/test_la_device_paths.cpp (against the fp64 oracle).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "weft/backend/cuda.cuh"
#include "weft/core/math.hpp"
#include "weft/linear_attention/chunk_block.hpp"
#include "weft/linear_attention/column.hpp"
#include "weft/linear_attention/linear_attention.hpp"

namespace weft {
namespace detail::la::cuda {

inline constexpr int threads = 128;

template <class T, int R>
__global__ void invalid_kernel(tensor_view<const T, R> v, std::int64_t n, bool finite, int* flag) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  std::int64_t rem = i, off = 0;
  for (int r = R - 1; r >= 0; --r) {
    off += (rem % v.extent(r)) * v.stride(r);
    rem /= v.extent(r);
  }
  if (invalid_gate_value(v.data()[off], finite)) atomicOr(flag, 1);  // an integer flag: order does not matter
}

/// Copies the initial state into per-column scratch (kernels::load_column).
template <class E>
__global__ void load_state_kernel(args<E> a, float* S, float* nv, float* m) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < a.N * a.H * a.V) kernels::load_column(a, c, S, nv, m);
}

/// One thread per (sequence, head, value column): kernels::run_column.
template <class Gate, class E>
__global__ void column_kernel(Gate gate, args<E> a, float* S, float* nv, const float* m) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < a.N * a.H * a.V) kernels::run_column(gate, a, c, S, nv, m);
}

/// Stages the mLSTM normalizer and stabilizer into scratch nm [N,H,K+1] (kernels::load_nm).
template <class E>
__global__ void load_nm_kernel(args<E> a, float* nm) {
  kernels::load_nm(a, nm, blockIdx.x, threadIdx.x, blockDim.x);
}

/// Block barrier for chunk_block.
struct block_sync {
  WEFT_INLINE void operator()() const {
#if WEFT_ON_DEVICE
    __syncthreads();
#endif
  }
};

template <class Gate, class E>
__global__ void __launch_bounds__(kernels::chunk_threads)
    chunk_kernel(Gate gate, args<E> a, const float* nm, int slices) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ double m_state;
  kernels::chunk_block(gate, a, nm, slices, blockIdx.x, threadIdx.x, blockDim.x, smem, m_state, block_sync{});
}

inline unsigned blocks_for(std::int64_t n) {
  return static_cast<unsigned>(ceil_div<std::int64_t>(n, threads));
}

}  // namespace detail::la::cuda

namespace impl {

/// CUDA: the chunk kernel (chunk_block) or the column kernel; gate values checked by
/// invalid_kernel (any_invalid: CUDA has no item runner for detail::any_element).
template <>
struct linear_attention_impl<cuda_backend> {
  template <class T, int R>
  static bool any_invalid(const cuda_backend& be, const tensor_view<T, R>& v, bool finite) {
    const std::int64_t n = v.size();
    if (n == 0) return false;
    scratch_buffer flag = be.allocate(sizeof(int));
    int* f = static_cast<int*>(flag.data());
    detail::cuda_check(cudaMemsetAsync(f, 0, sizeof(int), be.stream), "cudaMemsetAsync");
    detail::la::cuda::
        invalid_kernel<<<detail::la::cuda::blocks_for(n), detail::la::cuda::threads, 0, be.stream>>>(
            tensor_view<const T, R>(v), n, finite, f);
    be.check_launch("weft::linear_attention_check");
    int h = 0;
    be.copy_to_host_bytes(&h, f, sizeof h);
    return h != 0;
  }

  /// The chunk kernel applies: chunk mode, K <= 128.
  static bool use_chunk_kernel(const detail::la::sizes& s) {
    return s.mode == linear_attention_mode::chunk && s.K <= detail::la::kernels::max_k;
  }
  static_assert(detail::la::kernels::chunk_smem_bytes(detail::la::kind::vector, detail::la::kernels::max_k) <=
                    163 * 1024,
                "the chunk kernel's shared memory must fit sm_80's opt-in limit");

  static std::size_t workspace_bytes(const cuda_backend&, detail::la::kind kd, const detail::la::sizes& s) {
    if (use_chunk_kernel(s)) return sizeof(float) * static_cast<std::size_t>(s.N * s.H * (s.K + 1));
    const std::size_t cols = static_cast<std::size_t>(s.N * s.H * s.V * s.K);
    return sizeof(float) *
           (cols * (kd == detail::la::kind::mlstm ? 2 : 1) + static_cast<std::size_t>(s.N * s.H));
  }

  template <class Gate, class E>
  static void forward(const cuda_backend& be, const Gate& gate, const detail::la::args<E>& a, void* ws) {
    const std::int64_t cols = a.N * a.H * a.V;
    if (cols == 0) return;
    if (use_chunk_kernel(a.dims())) {
      float* nm = static_cast<float*>(ws);
      detail::la::cuda::load_nm_kernel<<<static_cast<unsigned>(a.N * a.H), 128, 0, be.stream>>>(a, nm);
      be.check_launch("weft::linear_attention_load_state");
      const int slices = static_cast<int>(ceil_div<std::int64_t>(a.V, detail::la::kernels::slice));
      const std::size_t smem = detail::la::kernels::chunk_smem_bytes(detail::la::kind_of<Gate>, a.K);
      auto kernel = detail::la::cuda::chunk_kernel<Gate, E>;
      detail::cuda_check(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "cudaFuncSetAttribute");
      kernel<<<static_cast<unsigned>(a.N * a.H * slices), detail::la::kernels::chunk_threads, smem,
               be.stream>>>(gate, a, nm, slices);
      be.check_launch("weft::linear_attention_chunk");
      be.fence();  // the workspace is released on return
      return;
    }
    constexpr bool is_mlstm = detail::la::kind_of<Gate> == detail::la::kind::mlstm;
    float* S = static_cast<float*>(ws);
    float* nv = is_mlstm ? S + cols * a.K : nullptr;
    float* m = S + cols * a.K * (is_mlstm ? 2 : 1);
    detail::la::cuda::
        load_state_kernel<<<detail::la::cuda::blocks_for(cols), detail::la::cuda::threads, 0, be.stream>>>(
            a, S, nv, m);
    be.check_launch("weft::linear_attention_load_state");
    detail::la::cuda::
        column_kernel<<<detail::la::cuda::blocks_for(cols), detail::la::cuda::threads, 0, be.stream>>>(
            gate, a, S, nv, m);
    be.check_launch("weft::linear_attention_columns");
    be.fence();  // the workspace is released on return
  }
};

}  // namespace impl
}  // namespace weft
