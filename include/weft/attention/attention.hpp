// weft/attention/attention.hpp - blockwise softmax attention and the exact merge of partials.
//
//   attention(be, q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], o [B,Tq,Hq,Dv],
//             lse [B,Hq,Tq] (fp32, natural log), opts)
//       o_i = sum_j softmax_j(s_ij) v_j over the keys j visible to query i, s_ij = scale q_i . k_j
//       (softcap c > 0: c tanh(s / c)); lse_i = log sum_j e^{s_ij}. A query that sees no key:
//       o = 0, lse = -inf. GQA / MQA: query head h reads KV head h / (Hq / Hkv).
//   merge_attention(be, o, lse, o_part, lse_part)
//       (o, lse) <- the result over the union of two disjoint key sets, in place.
//   workspace_size(be, ops::attention{}, q, k, v, opts)
//
// Visibility, in global positions (query i at q_offset + i, key j at k_offset + j; within its
// sequence under varlen): causal: key <= query; window {left, right}: query - left <= key <=
// query + right (-1: unbounded on that side); k_lengths[b]: only the first k_lengths[b] keys of
// row b (of its sequence under varlen); mask [B,Tq,M] (uint8, 1 = visible): on the last M keys,
// as tree_attention_mask writes it for a draft tree appended after the context.
// FlashAttention's causal mask with Tq != Tk is aligned bottom-right: q_offset = Tk - Tq.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "weft/attention/backward_items.hpp"
#include "weft/attention/blockwise.hpp"
#if !defined(__CUDACC__)  // host compilers: the register-tiled forward (attention/tiled.hpp)
#include "weft/attention/backward_tiled.hpp"
#include "weft/attention/tiled.hpp"
#define WEFT_ATTENTION_TILED 1
#else
#define WEFT_ATTENTION_TILED 0
#endif
#include "weft/core/backend.hpp"
#include "weft/core/dtype.hpp"
#include "weft/core/error.hpp"
#include "weft/core/services.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"

namespace weft {

/// A sliding window around each query: keys from query - left to query + right (positions);
/// -1 on a side means unbounded.
struct attention_window {
  std::int64_t left = -1;
  std::int64_t right = -1;
};

struct attention_options {
  float scale = 0;               ///< 0 means Dk^-1/2
  bool causal = false;           ///< key position <= query position
  std::int64_t q_offset = 0;     ///< global position of query 0 (of each sequence)
  std::int64_t k_offset = 0;     ///< global position of key 0 (of each sequence)
  attention_window window = {};  ///< sliding window (Mistral, Gemma-2 local layers)
  float softcap = 0;             ///< > 0: scores become softcap * tanh(s / softcap) (Gemma-2)
  tensor_view<const std::int64_t, 1> cu_seqlens_q = {};  ///< varlen query offsets [N+1] (B == 1)
  tensor_view<const std::int64_t, 1> cu_seqlens_k = {};  ///< varlen key offsets [N+1] (B == 1)
  tensor_view<const std::int32_t, 1> k_lengths = {};     ///< valid keys per row (or sequence) [B or N]
  tensor_view<const std::uint8_t, 3> mask = {};          ///< [B,Tq,M], 1 = visible, on the last M keys
  weft::workspace workspace = {};                        ///< optional caller scratch (see workspace_size)
};

namespace ops {
struct attention {};
}  // namespace ops

namespace impl {
/// attention_impl<Backend>: per backend (serial below; weft/attention/kokkos.hpp). Arguments
/// arrive checked. It provides
///   void forward(be, q, k, v, o, lse, const detail::attention::plan& p, const attention_options&)
///   void merge(be, o, lse, o_part, lse_part)
///   std::size_t forward_bytes(be, const detail::attention::plan& p)
///   void backward(be, q, k, v, o, lse, do_, dq, dk, dv, const plan& p, const attention_options&)
///   std::size_t backward_bytes(be, const plan& p)       (p with its key_blocks)
template <class Backend>
struct attention_impl {
  static_assert(detail::dependent_false<Backend>,
                "weft: no attention implementation for this backend (serial: weft/weft.hpp; Kokkos: "
                "weft/kokkos.hpp; CUDA: weft/cuda.cuh)");
};
}  // namespace impl

namespace detail::attention {

/// What the checks found: sizes, the resolved scale and the items' blocks (host memory).
struct plan {
  std::int64_t B = 0, Tq = 0, Tk = 0, Hq = 0, Hkv = 0, Dk = 0, Dv = 0;
  float scale = 0;
  std::vector<item_block> blocks;          // the forward's and the dq pass's items
  std::vector<key_block_item> key_blocks;  // the dk / dv pass's items (backward only)
};

inline bool given_view(const void* p, std::int64_t n) {
  return p != nullptr || n > 0;
}

/// The inputs' views and shapes and the options (no values read). Returns the plan without
/// blocks.
template <class TQ, class TK, class TV>
plan check_inputs(std::string_view fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                  const tensor_view<TV, 4>& v, const attention_options& opts) {
  static_assert(is_floating_v<std::remove_cv_t<TQ>> && is_floating_v<std::remove_cv_t<TK>> &&
                    is_floating_v<std::remove_cv_t<TV>>,
                "weft::attention: q, k, v hold floating-point elements (float, double, bf16, f16)");
  check_view(fn, "q", q);
  plan p;
  p.B = q.extent(0);
  p.Tq = q.extent(1);
  p.Hq = q.extent(2);
  p.Dk = q.extent(3);
  check_view(fn, "k", k);
  p.Tk = k.extent(1);
  p.Hkv = k.extent(2);
  require(k.extent(0) == p.B, fn, "k", concat("batch size ", p.B, " (q's)"), shape_string(k));
  require(k.extent(3) == p.Dk, fn, "k", concat("head dimension Dk = ", p.Dk, " (q's)"), shape_string(k));
  require(p.Hkv >= 1 || p.Hq == 0, fn, "k", "at least one KV head", shape_string(k));
  require(p.Hkv == 0 || p.Hq % p.Hkv == 0, fn, "k",
          concat("a KV head count that divides q's head count Hq = ", p.Hq), concat("Hkv = ", p.Hkv));
  check_view(fn, "v", v);
  p.Dv = v.extent(3);
  require_shape(fn, "v", v, std::array<std::int64_t, 4>{p.B, p.Tk, p.Hkv, p.Dv});
  require(std::isfinite(opts.scale) && opts.scale >= 0, fn, "opts.scale", "a finite scale >= 0 (0: Dk^-1/2)",
          opts.scale);
  require(std::isfinite(opts.softcap) && opts.softcap >= 0, fn, "opts.softcap",
          "a finite softcap >= 0 (0: none)", opts.softcap);
  constexpr std::int64_t pos_limit = std::int64_t{1} << 61;  // positions and windows: no overflow
  require(opts.window.left >= -1 && opts.window.left <= pos_limit, fn, "opts.window.left",
          "-1 (unbounded) or a key count in [0, 2^61]", opts.window.left);
  require(opts.window.right >= -1 && opts.window.right <= pos_limit, fn, "opts.window.right",
          "-1 (unbounded) or a key count in [0, 2^61]", opts.window.right);
  require(opts.q_offset >= -pos_limit && opts.q_offset <= pos_limit, fn, "opts.q_offset",
          "a position in [-2^61, 2^61]", opts.q_offset);
  require(opts.k_offset >= -pos_limit && opts.k_offset <= pos_limit, fn, "opts.k_offset",
          "a position in [-2^61, 2^61]", opts.k_offset);
  p.scale = opts.scale > 0 ? opts.scale : (p.Dk > 0 ? 1.0f / std::sqrt(static_cast<float>(p.Dk)) : 1.0f);
  const bool vq = given_view(opts.cu_seqlens_q.data(), opts.cu_seqlens_q.extent(0));
  const bool vk = given_view(opts.cu_seqlens_k.data(), opts.cu_seqlens_k.extent(0));
  require(vq == vk, fn, vq ? "opts.cu_seqlens_k" : "opts.cu_seqlens_q",
          "both cu_seqlens_q and cu_seqlens_k, or neither", "only one given");
  if (vq) {
    check_view(fn, "opts.cu_seqlens_q", opts.cu_seqlens_q);
    check_view(fn, "opts.cu_seqlens_k", opts.cu_seqlens_k);
    require(p.B == 1, fn, "opts.cu_seqlens_q", "q, k, v of batch size 1 (sequences packed along T)",
            concat("batch size ", p.B));
    require(opts.cu_seqlens_q.extent(0) >= 1, fn, "opts.cu_seqlens_q", "at least one offset (N+1 values)",
            "[0]");
    require(opts.cu_seqlens_k.extent(0) == opts.cu_seqlens_q.extent(0), fn, "opts.cu_seqlens_k",
            concat(opts.cu_seqlens_q.extent(0), " offsets (as cu_seqlens_q)"), opts.cu_seqlens_k.extent(0));
  }
  if (given_view(opts.k_lengths.data(), opts.k_lengths.extent(0))) {
    check_view(fn, "opts.k_lengths", opts.k_lengths);
    const std::int64_t rows = vq ? opts.cu_seqlens_q.extent(0) - 1 : p.B;
    require(opts.k_lengths.extent(0) == rows, fn, "opts.k_lengths",
            concat("shape [", rows, "] (one per ", vq ? "sequence" : "batch row", ")"),
            shape_string(opts.k_lengths));
  }
  if (given_view(opts.mask.data(), opts.mask.extent(2))) {
    check_view(fn, "opts.mask", opts.mask);
    require(opts.mask.extent(0) == p.B && opts.mask.extent(1) == p.Tq && opts.mask.extent(2) <= p.Tk, fn,
            "opts.mask", concat("shape [", p.B, ",", p.Tq, ",M] with M <= Tk = ", p.Tk),
            shape_string(opts.mask));
  }
  return p;
}

/// The outputs: shapes from the plan, disjoint from the inputs and from each other.
template <class TQ, class TK, class TV, class TO>
void check_outputs(std::string_view fn, const plan& p, const tensor_view<TQ, 4>& q,
                   const tensor_view<TK, 4>& k, const tensor_view<TV, 4>& v, const tensor_view<TO, 4>& o,
                   const tensor_view<float, 3>& lse) {
  static_assert(is_floating_v<std::remove_cv_t<TO>>, "weft::attention: o holds floating-point elements");
  static_assert(!std::is_const_v<TO>, "weft::attention: 'o' must be writable");
  check_output_view(fn, "o", o);
  require_shape(fn, "o", o, std::array<std::int64_t, 4>{p.B, p.Tq, p.Hq, p.Dv});
  check_output_view(fn, "lse", lse);
  require_shape(fn, "lse", lse, std::array<std::int64_t, 3>{p.B, p.Hq, p.Tq});
  require_disjoint(fn, "o", o, "q", q);
  require_disjoint(fn, "o", o, "k", k);
  require_disjoint(fn, "o", o, "v", v);
  require_disjoint(fn, "lse", lse, "q", q);
  require_disjoint(fn, "lse", lse, "k", k);
  require_disjoint(fn, "lse", lse, "v", v);
  require_disjoint(fn, "lse", lse, "o", o);
}

/// The offsets of a varlen call, read on the host and checked: 0 = cu[0] <= ... <= cu[N] = T.
template <class Backend>
std::vector<std::int64_t> read_offsets(std::string_view fn, const Backend& be, std::string_view name,
                                       const tensor_view<const std::int64_t, 1>& cu, std::int64_t T) {
  const std::vector<std::int64_t> off = copy_to_host(be, cu);
  require(off.front() == 0, fn, name, concat(name, "[0] == 0"), off.front());
  for (std::size_t n = 1; n < off.size(); ++n)
    require(off[n] >= off[n - 1], fn, name, "non-decreasing offsets",
            concat(name, "[", n, "] = ", off[n], " < ", name, "[", n - 1, "] = ", off[n - 1]));
  require(off.back() == T, fn, name, concat(name, "[N] == ", T), off.back());
  return off;
}

/// One batch row or varlen sequence: queries [q0, q1) of row b, keys [k0, k_end) of which
/// [k0, k1) are valid (k_lengths).
struct sequence {
  std::int64_t b, q0, q1, k0, k1, k_end;
};

/// The call's sequences; reads the small option views on the host and checks their values.
template <class Backend>
std::vector<sequence> sequences(std::string_view fn, const Backend& be, const attention_options& opts,
                                const plan& p) {
  std::vector<std::int64_t> cq{0, p.Tq}, ck{0, p.Tk};
  std::int64_t rows = p.B;
  const bool varlen = given_view(opts.cu_seqlens_q.data(), opts.cu_seqlens_q.extent(0));
  if (varlen) {
    cq = read_offsets(fn, be, "opts.cu_seqlens_q", opts.cu_seqlens_q, p.Tq);
    ck = read_offsets(fn, be, "opts.cu_seqlens_k", opts.cu_seqlens_k, p.Tk);
    rows = static_cast<std::int64_t>(cq.size()) - 1;
  }
  std::vector<std::int32_t> kl;
  if (given_view(opts.k_lengths.data(), opts.k_lengths.extent(0))) kl = copy_to_host(be, opts.k_lengths);
  std::vector<sequence> seqs;
  for (std::int64_t s = 0; s < rows; ++s) {
    sequence q{varlen ? 0 : s, 0, p.Tq, 0, p.Tk, p.Tk};
    if (varlen) q = {0, cq[s], cq[s + 1], ck[s], ck[s + 1], ck[s + 1]};
    if (!kl.empty()) {
      const std::int32_t n = kl[static_cast<std::size_t>(s)];
      require(n >= 0 && n <= q.k_end - q.k0, fn, "opts.k_lengths",
              concat("0 <= k_lengths[", s, "] <= ", q.k_end - q.k0), concat("k_lengths[", s, "] = ", n));
      q.k1 = q.k0 + n;
    }
    seqs.push_back(q);
  }
  return seqs;
}

/// The backward's key blocks (keys of one batch row or sequence, key_block at a time, over all
/// of its keys: those past k_lengths get zero gradients).
inline std::vector<key_block_item> make_key_blocks(const std::vector<sequence>& seqs,
                                                   const attention_options& opts) {
  std::vector<key_block_item> kb;
  for (const sequence& s : seqs)
    for (std::int64_t j = s.k0; j < s.k_end; j += key_block) {
      const std::int64_t j1 = s.k_end - j < key_block ? s.k_end : j + key_block;
      const std::int64_t kv = s.k1 < j ? j : (s.k1 < j1 ? s.k1 : j1);
      kb.push_back({s.b, j, j1, kv, s.q0, s.q1, opts.q_offset, opts.k_offset + (j - s.k0)});
    }
  return kb;
}

/// The items' blocks (queries of one batch row or sequence, query_block at a time), with
/// k_lengths applied, and for the backward (with_keys) its key blocks; reads the small option
/// views on the host and checks their values.
template <class Backend>
void make_blocks(std::string_view fn, const Backend& be, const attention_options& opts, plan& p,
                 bool with_keys = false) {
  const std::vector<sequence> seqs = sequences(fn, be, opts, p);
  p.blocks.clear();
  for (const sequence& s : seqs)
    for (std::int64_t i = s.q0; i < s.q1; i += query_block) {
      const std::int64_t i1 = s.q1 - i < query_block ? s.q1 : i + query_block;
      p.blocks.push_back({s.b, i, i1, s.k0, s.k1, opts.q_offset + (i - s.q0), opts.k_offset});
    }
  if (with_keys) p.key_blocks = make_key_blocks(seqs, opts);
}

/// The items of a call and their scratch, shared by every item-running backend.
template <class Backend>
struct blockwise {
  using Runner = item_runner<Backend>;
  /// Host backends run the register-tiled item (tiled.hpp), others the row-at-a-time one.
  static constexpr bool tiled = WEFT_ATTENTION_TILED && Backend::host_accessible;
  static std::size_t forward_floats(const plan& p) {
    const std::int64_t rows = p.Hq / p.Hkv * query_block;
#if WEFT_ATTENTION_TILED
    if constexpr (tiled) return tiled_scratch_floats(rows, p.Dk, p.Dv);
#endif
    return forward_scratch_floats(rows, p.Dk, p.Dv);
  }
  static std::size_t forward_bytes(const Backend& be, const plan& p) {
    if (p.blocks.empty() || p.Hkv == 0) return 0;
    return Runner::scratch_bytes(be, static_cast<std::int64_t>(p.blocks.size()) * p.Hkv,
                                 forward_floats(p) * sizeof(float));
  }
  template <class TQ, class TK, class TV, class TO>
  static void forward(const Backend& be, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k,
                      tensor_view<const TV, 4> v, tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                      const plan& p, const attention_options& opts) {
    if (p.Hkv == 0) return;
    const std::int64_t G = p.Hq / p.Hkv;
    const std::int64_t M = opts.mask.data() ? opts.mask.extent(2) : 0;
    const forward_fn<TQ, TK, TV, TO> f{q,
                                       k,
                                       v,
                                       o,
                                       lse,
                                       p.blocks.data(),
                                       p.Hkv,
                                       G,
                                       p.scale,
                                       opts.softcap,
                                       visibility{opts.causal, opts.window.left, opts.window.right},
                                       opts.mask,
                                       p.Tk - M};
    const std::int64_t n = static_cast<std::int64_t>(p.blocks.size()) * p.Hkv;
#if WEFT_ATTENTION_TILED
    if constexpr (tiled) {
      const auto t = make_tiled_forward(f, static_cast<std::int64_t>(p.blocks.size()));
      Runner::run(be, "weft::attention", n, t.scratch_bytes(), opts.workspace, "attention", t);
      return;
    }
#endif
    Runner::run(be, "weft::attention", n, f.scratch_bytes(), opts.workspace, "attention", f);
  }
  static std::size_t backward_bytes(const Backend& be, const plan& p) {
    if (p.Hkv == 0) return 0;
    const std::int64_t G = p.Hq / p.Hkv;
    std::size_t fq = dq_scratch_floats(G * query_block, p.Dk, p.Dv), fk = dkv_scratch_floats(p.Dk, p.Dv);
#if WEFT_ATTENTION_TILED
    if constexpr (tiled) {
      fq = dq_tiled_floats(G * query_block, p.Dk, p.Dv);
      fk = dkv_tiled_floats(p.Dk, p.Dv);
    }
#endif
    const std::size_t a = p.blocks.empty()
                              ? 0
                              : Runner::scratch_bytes(be, static_cast<std::int64_t>(p.blocks.size()) * p.Hkv,
                                                      fq * sizeof(float));
    const std::size_t b =
        p.key_blocks.empty()
            ? 0
            : Runner::scratch_bytes(be, static_cast<std::int64_t>(p.key_blocks.size()) * p.Hkv,
                                    fk * sizeof(float));
    return a > b ? a : b;
  }
  /// Two passes over the same workspace: dq by query blocks, then dk and dv by key blocks.
  template <class TQ, class TK, class TV, class TO, class TG, class TdQ, class TdK, class TdV>
  static void backward(const Backend& be, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k,
                       tensor_view<const TV, 4> v, tensor_view<const TO, 4> o,
                       tensor_view<const float, 3> lse, tensor_view<const TG, 4> dO, tensor_view<TdQ, 4> dq,
                       tensor_view<TdK, 4> dk, tensor_view<TdV, 4> dv, const plan& p,
                       const attention_options& opts) {
    if (p.Hkv == 0) return;
    const std::int64_t G = p.Hq / p.Hkv;
    const std::int64_t M = opts.mask.data() ? opts.mask.extent(2) : 0;
    const backward_common<TQ, TK, TV, TO, TG> c{q,
                                                k,
                                                v,
                                                o,
                                                lse,
                                                dO,
                                                p.Hkv,
                                                G,
                                                p.scale,
                                                opts.softcap,
                                                visibility{opts.causal, opts.window.left, opts.window.right},
                                                opts.mask,
                                                p.Tk - M};
    const std::int64_t nq = static_cast<std::int64_t>(p.blocks.size()),
                       nk = static_cast<std::int64_t>(p.key_blocks.size());
#if WEFT_ATTENTION_TILED
    if constexpr (tiled) {
      const tiled_dq_fn<TQ, TK, TV, TO, TG, TdQ> tq{{c}, dq, p.blocks.data(), nq};
      Runner::run(be, "weft::attention_backward", nq * p.Hkv, tq.scratch_bytes(), opts.workspace,
                  "attention_backward", tq);
      const tiled_dkv_fn<TQ, TK, TV, TO, TG, TdK, TdV> tk{{c}, dk, dv, p.key_blocks.data(), nk};
      Runner::run(be, "weft::attention_backward", nk * p.Hkv, tk.scratch_bytes(), opts.workspace,
                  "attention_backward", tk);
      return;
    }
#endif
    const dq_fn<TQ, TK, TV, TO, TG, TdQ> fq{c, dq, p.blocks.data()};
    Runner::run(be, "weft::attention_backward", static_cast<std::int64_t>(p.blocks.size()) * p.Hkv,
                fq.scratch_bytes(), opts.workspace, "attention_backward", fq);
    const dkv_fn<TQ, TK, TV, TO, TG, TdK, TdV> fk{c, dk, dv, p.key_blocks.data()};
    Runner::run(be, "weft::attention_backward", static_cast<std::int64_t>(p.key_blocks.size()) * p.Hkv,
                fk.scratch_bytes(), opts.workspace, "attention_backward", fk);
  }
  template <class TO, class TP>
  static void merge(const Backend& be, tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                    tensor_view<const TP, 4> o_part, tensor_view<const float, 3> lse_part) {
    Runner::run(be, "weft::merge_attention", o.extent(0) * o.extent(1) * o.extent(2), 0, workspace{},
                "merge_attention", merge_fn<TO, TP>{o, lse, o_part, lse_part});
  }
};

}  // namespace detail::attention

namespace impl {
/// The serial reference: the same item functions, one after the other.
template <>
struct attention_impl<serial_backend> : detail::attention::blockwise<serial_backend> {};
}  // namespace impl

/// Softmax attention (see the top of this file).
template <backend Backend, class TQ, class TK, class TV, class TO>
void attention(const Backend& be, tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
               tensor_view<TO, 4> o, tensor_view<float, 3> lse, const attention_options& opts = {}) {
  constexpr const char* fn = "attention";
  detail::attention::plan p = detail::attention::check_inputs(fn, q, k, v, opts);
  detail::attention::check_outputs(fn, p, q, k, v, o, lse);
  detail::attention::make_blocks(fn, be, opts, p);
  impl::attention_impl<Backend>::forward(be, tensor_view<const std::remove_cv_t<TQ>, 4>(q),
                                         tensor_view<const std::remove_cv_t<TK>, 4>(k),
                                         tensor_view<const std::remove_cv_t<TV>, 4>(v), o, lse, p, opts);
}

/// Scratch bytes of attention(be, q, k, v, o, lse, opts) (reads the small option views).
template <backend Backend, class TQ, class TK, class TV>
std::size_t workspace_size(const Backend& be, ops::attention, tensor_view<TQ, 4> q, tensor_view<TK, 4> k,
                           tensor_view<TV, 4> v, const attention_options& opts = {}) {
  constexpr const char* fn = "workspace_size";
  detail::attention::plan p = detail::attention::check_inputs(fn, q, k, v, opts);
  detail::attention::make_blocks(fn, be, opts, p);
  return impl::attention_impl<Backend>::forward_bytes(be, p);
}

/// (o, lse) <- the exact merge of (o, lse) and (o_part, lse_part), two results of attention
/// over disjoint key sets (see the top of this file).
template <backend Backend, class TO, class TP>
void merge_attention(const Backend& be, tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                     tensor_view<TP, 4> o_part, tensor_view<const float, 3> lse_part) {
  static_assert(!std::is_const_v<TO>, "weft::merge_attention: 'o' must be writable");
  constexpr const char* fn = "merge_attention";
  detail::check_output_view(fn, "o", o);
  const std::int64_t B = o.extent(0), T = o.extent(1), H = o.extent(2), D = o.extent(3);
  detail::check_output_view(fn, "lse", lse);
  detail::require_shape(fn, "lse", lse, std::array<std::int64_t, 3>{B, H, T});
  detail::check_view(fn, "o_part", o_part);
  detail::require_shape(fn, "o_part", o_part, std::array<std::int64_t, 4>{B, T, H, D});
  detail::check_view(fn, "lse_part", lse_part);
  detail::require_shape(fn, "lse_part", lse_part, std::array<std::int64_t, 3>{B, H, T});
  detail::require_disjoint(fn, "o", o, "o_part", o_part);
  detail::require_disjoint(fn, "o", o, "lse_part", lse_part);
  detail::require_disjoint(fn, "lse", lse, "o_part", o_part);
  detail::require_disjoint(fn, "lse", lse, "lse_part", lse_part);
  detail::require_disjoint(fn, "lse", lse, "o", o);
  impl::attention_impl<Backend>::merge(be, o, lse, tensor_view<const std::remove_cv_t<TP>, 4>(o_part),
                                       lse_part);
}

}  // namespace weft
