// weft/attention/cuda.cuh - native CUDA paths of the attention family.
//
// Status: compiled in CI (sm_90); not yet verified on hardware.
//
// attention, Dk and Dv <= 256: forward_kernel, one thread block of 128 threads per row tile (32
//   rows of one query block x KV head group) running detail::attention::device::forward_block
//   (device_block.hpp): FlashAttention-2's forward with key tiles of 32 in shared memory (at most
//   136 KiB), SIMT fp32, no atomics. The plan's blocks (the same checks and blocks as on every
//   backend: check_inputs, check_outputs, make_blocks) are copied to the workspace first.
// attention, Dk or Dv > 256: the CPU item functions (blockwise.hpp's forward_fn) through
//   item_runner<cuda_backend>, a thread per item with its scratch in global memory: correct,
//   slow.
// attention_backward, Dk and Dv <= 256: two kernels of 128 threads (device_backward.hpp),
//   FlashAttention-2's backward with P and dS recomputed from lse: dq_kernel, a thread block per
//   row tile as the forward's (key tiles of 16 in shared memory, at most 130 KiB), then
//   dkv_kernel, a thread block per 32 keys of one key block of the plan x KV head over the G
//   query heads and the queries that may see them (8 rows at a time, at most 146 KiB). Each
//   output element is summed by one thread in a fixed order, no atomics: bitwise repeatable.
//   The plan's blocks and key blocks are copied to the workspace first.
// attention_backward, Dk or Dv > 256: backward_items.hpp's dq_fn and dkv_fn through
//   item_runner<cuda_backend>, a thread per item: correct, slow.
// merge_attention: merge_fn through item_runner<cuda_backend>, a thread per row.
// forward_block, dq_block and dkv_block also run on the host, one thread and several at
// barriers, in tests/attention/test_attention_device_paths.cpp and
// test_backward_device_paths.cpp (against the fp64 oracles).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "weft/attention/attention.hpp"
#include "weft/attention/backward_items.hpp"
#include "weft/attention/device_backward.hpp"
#include "weft/attention/device_block.hpp"
#include "weft/backend/cuda.cuh"
#include "weft/core/workspace.hpp"

namespace weft {
namespace detail::attention::cuda {

/// Block barrier for the kernels' bodies (forward_block, dq_block, dkv_block).
struct block_sync {
  WEFT_INLINE void operator()() const {
#if WEFT_ON_DEVICE
    __syncthreads();
#endif
  }
};

template <class TQ, class TK, class TV, class TO>
__global__ void __launch_bounds__(device::threads) forward_kernel(device::forward_args<TQ, TK, TV, TO> a) {
  extern __shared__ __align__(16) float smem[];
  device::forward_block(a, blockIdx.x, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), smem,
                        block_sync{});
}

template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
__global__ void __launch_bounds__(device::threads)
    dq_kernel(device::backward_args<TQ, TK, TV, TO, TG, TdQ, TdK, TdV> a) {
  extern __shared__ __align__(16) float smem[];
  device::dq_block(a, blockIdx.x, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), smem,
                   block_sync{});
}

template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
__global__ void __launch_bounds__(device::threads)
    dkv_kernel(device::backward_args<TQ, TK, TV, TO, TG, TdQ, TdK, TdV> a) {
  extern __shared__ __align__(16) float smem[];
  device::dkv_block(a, blockIdx.x, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), smem,
                    block_sync{});
}

/// Launches kernel over n thread blocks with smem_bytes of dynamic shared memory (none if n = 0).
template <class Kernel, class A>
void launch(const cuda_backend& be, const char* label, Kernel kernel, std::int64_t n, std::size_t smem_bytes,
            const A& a) {
  if (n <= 0) return;
  detail::cuda_check(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)),
      "cudaFuncSetAttribute");
  kernel<<<static_cast<unsigned>(n), device::threads, smem_bytes, be.stream>>>(a);
  be.check_launch(label);
}

/// The forward and backward kernels apply (else the item functions run, a thread per item).
inline bool use_kernel(const plan& p) {
  return p.Dk <= device::max_head_dim && p.Dv <= device::max_head_dim;
}

/// Workspace layout: the plan's blocks, (backward) its key blocks, then (fallback only) the
/// items' scratch.
inline std::size_t blocks_bytes(const plan& p) {
  return align_up(p.blocks.size() * sizeof(item_block));
}
inline std::size_t key_blocks_bytes(const plan& p) {
  return align_up(p.key_blocks.size() * sizeof(key_block_item));
}

}  // namespace detail::attention::cuda

namespace impl {

template <>
struct attention_impl<cuda_backend> {
  using blockwise = detail::attention::blockwise<cuda_backend>;

  static std::size_t forward_bytes(const cuda_backend& be, const detail::attention::plan& p) {
    if (p.blocks.empty() || p.Hkv == 0) return 0;
    const std::size_t blocks = detail::attention::cuda::blocks_bytes(p);
    return detail::attention::cuda::use_kernel(p) ? blocks : blocks + blockwise::forward_bytes(be, p);
  }

  template <class TQ, class TK, class TV, class TO>
  static void forward(const cuda_backend& be, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k,
                      tensor_view<const TV, 4> v, tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                      const detail::attention::plan& p, const attention_options& opts) {
    namespace att = detail::attention;
    if (p.blocks.empty() || p.Hkv == 0) return;
    if (att::cuda::use_kernel(p)) {
      const std::int64_t tiles =
          ((p.Hq / p.Hkv) * att::query_block + att::device::rows - 1) / att::device::rows;
      detail::require(static_cast<std::int64_t>(p.blocks.size()) * p.Hkv * tiles <= 0x7fffffff, "attention",
                      "q", "at most 2^31 - 1 thread blocks (query blocks x KV heads x row tiles)", p.Tq);
    }
    const scratch_buffer ws = detail::acquire_scratch(be, opts.workspace, forward_bytes(be, p), "attention");
    auto* blocks = static_cast<att::item_block*>(ws.data());
    // Pageable source: the copy has left p.blocks when cudaMemcpyAsync returns.
    detail::cuda_check(cudaMemcpyAsync(blocks, p.blocks.data(), p.blocks.size() * sizeof(att::item_block),
                                       cudaMemcpyHostToDevice, be.stream),
                       "cudaMemcpyAsync");
    if (!att::cuda::use_kernel(p)) {
      const std::int64_t G = p.Hq / p.Hkv;
      const std::int64_t M = opts.mask.data() ? opts.mask.extent(2) : 0;
      const att::forward_fn<TQ, TK, TV, TO> f{
          q,
          k,
          v,
          o,
          lse,
          blocks,
          p.Hkv,
          G,
          p.scale,
          opts.softcap,
          att::visibility{opts.causal, opts.window.left, opts.window.right},
          opts.mask,
          p.Tk - M};
      char* base = static_cast<char*>(ws.data()) + att::cuda::blocks_bytes(p);
      detail::item_runner<cuda_backend>::run(be, "weft::attention",
                                             static_cast<std::int64_t>(p.blocks.size()) * p.Hkv,
                                             f.scratch_bytes(), base, f);  // fences: ws lives until then
      return;
    }
    const auto a = att::device::make_forward_args(q, k, v, o, lse, p, opts, blocks);
    const std::int64_t n = att::device::grid_blocks(a, p);
    const std::size_t smem = att::device::smem_floats(p.Dk, p.Dv) * sizeof(float);
    auto kernel = att::cuda::forward_kernel<TQ, TK, TV, TO>;
    detail::cuda_check(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "cudaFuncSetAttribute");
    kernel<<<static_cast<unsigned>(n), att::device::threads, smem, be.stream>>>(a);
    be.check_launch("weft::attention");
    // ws (the blocks) is freed stream-ordered after the kernel (or is the caller's).
  }

  static std::size_t backward_bytes(const cuda_backend& be, const detail::attention::plan& p) {
    namespace att = detail::attention;
    if (p.Hkv == 0 || (p.blocks.empty() && p.key_blocks.empty())) return 0;
    const std::size_t blocks = att::cuda::blocks_bytes(p) + att::cuda::key_blocks_bytes(p);
    return att::cuda::use_kernel(p) ? blocks : blocks + blockwise::backward_bytes(be, p);
  }

  /// Two kernels on be's stream: dq by query row tiles, then dk and dv by key tiles (each
  /// output element written by one thread, summed in a fixed order: no atomics).
  template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
  static void backward(const cuda_backend& be, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k,
                       tensor_view<const TV, 4> v, tensor_view<const TO, 4> o,
                       tensor_view<const float, 3> lse, tensor_view<const TG, 4> dO, tensor_view<TdQ, 4> dq,
                       tensor_view<TdK, 4> dk, tensor_view<TdV, 4> dv, const detail::attention::plan& p,
                       const attention_options& opts) {
    namespace att = detail::attention;
    if (p.Hkv == 0 || (p.blocks.empty() && p.key_blocks.empty())) return;
    const bool kernels = att::cuda::use_kernel(p);
    if (kernels) {
      const std::int64_t G = p.Hq / p.Hkv;
      const std::int64_t q_tiles = (G * att::query_block + att::device::rows - 1) / att::device::rows;
      detail::require(static_cast<std::int64_t>(p.blocks.size()) * p.Hkv * q_tiles <= 0x7fffffff,
                      "attention_backward", "q",
                      "at most 2^31 - 1 thread blocks (query blocks x KV heads x row tiles)", p.Tq);
      detail::require(
          static_cast<std::int64_t>(p.key_blocks.size()) * p.Hkv * (att::key_block / att::device::dkv_keys) <=
              0x7fffffff,
          "attention_backward", "k", "at most 2^31 - 1 thread blocks (key tiles x KV heads)", p.Tk);
    }
    const scratch_buffer ws =
        detail::acquire_scratch(be, opts.workspace, backward_bytes(be, p), "attention_backward");
    auto* blocks = static_cast<att::item_block*>(ws.data());
    auto* key_blocks =
        reinterpret_cast<att::key_block_item*>(static_cast<char*>(ws.data()) + att::cuda::blocks_bytes(p));
    // Pageable sources: the copies have left p.blocks, p.key_blocks when cudaMemcpyAsync returns.
    if (!p.blocks.empty())
      detail::cuda_check(cudaMemcpyAsync(blocks, p.blocks.data(), p.blocks.size() * sizeof(att::item_block),
                                         cudaMemcpyHostToDevice, be.stream),
                         "cudaMemcpyAsync");
    if (!p.key_blocks.empty())
      detail::cuda_check(
          cudaMemcpyAsync(key_blocks, p.key_blocks.data(), p.key_blocks.size() * sizeof(att::key_block_item),
                          cudaMemcpyHostToDevice, be.stream),
          "cudaMemcpyAsync");
    if (!kernels) {  // Dk or Dv > 256: the CPU's item functions, a thread per item
      const std::int64_t G = p.Hq / p.Hkv;
      const std::int64_t M = opts.mask.data() ? opts.mask.extent(2) : 0;
      const att::backward_common<TQ, TK, TV, TO, TG> c{
          q,
          k,
          v,
          o,
          lse,
          dO,
          p.Hkv,
          G,
          p.scale,
          opts.softcap,
          att::visibility{opts.causal, opts.window.left, opts.window.right},
          opts.mask,
          p.Tk - M};
      char* base =
          static_cast<char*>(ws.data()) + att::cuda::blocks_bytes(p) + att::cuda::key_blocks_bytes(p);
      const att::dq_fn<TQ, TK, TV, TO, TG, TdQ> fq{c, dq, blocks};
      detail::item_runner<cuda_backend>::run(be, "weft::attention_backward",
                                             static_cast<std::int64_t>(p.blocks.size()) * p.Hkv,
                                             fq.scratch_bytes(), base, fq);
      const att::dkv_fn<TQ, TK, TV, TO, TG, TdK, TdV> fk{c, dk, dv, key_blocks};
      detail::item_runner<cuda_backend>::run(be, "weft::attention_backward",
                                             static_cast<std::int64_t>(p.key_blocks.size()) * p.Hkv,
                                             fk.scratch_bytes(), base, fk);  // fences: ws lives until then
      return;
    }
    const auto a = att::device::make_backward_args(q, k, v, o, lse, dO, dq, dk, dv, p, opts,
                                                   static_cast<const att::item_block*>(blocks),
                                                   static_cast<const att::key_block_item*>(key_blocks));
    att::cuda::launch(be, "weft::attention_backward", att::cuda::dq_kernel<TQ, TK, TV, TO, TG, TdQ, TdK, TdV>,
                      att::device::dq_grid_blocks(a, p),
                      att::device::dq_smem_floats(p.Dk, p.Dv) * sizeof(float), a);
    att::cuda::launch(
        be, "weft::attention_backward", att::cuda::dkv_kernel<TQ, TK, TV, TO, TG, TdQ, TdK, TdV>,
        att::device::dkv_grid_blocks(a, p), att::device::dkv_smem_floats(p.Dk, p.Dv) * sizeof(float), a);
    // ws (the blocks) is freed stream-ordered after the kernels (or is the caller's).
  }

  template <class TO, class TP>
  static void merge(const cuda_backend& be, tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                    tensor_view<const TP, 4> o_part, tensor_view<const float, 3> lse_part) {
    blockwise::merge(be, o, lse, o_part, lse_part);
  }
};

}  // namespace impl
}  // namespace weft
