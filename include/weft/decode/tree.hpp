// weft/decode/tree.hpp - tree speculation: attention masks, verification, KV compaction.
//
// A draft tree of N nodes per sequence is given by parent indices in topological order:
// parents[b,0] = -1 (the root: the last accepted token) and 0 <= parents[b,i] < i for i >= 1.
// Node i holds token tokens[b,i]; target_*[b,i] is the target's next-token law after node i
// (i.e. for the children of i), draft_probs[b,i] the draft's law the children of i were drawn from.
//
//   tree_attention_mask(be, parents [B,N], mask [B,N,N], {.depth [B,N]})
//       mask[b,i,j] = 1 when j is i or an ancestor of i, else 0; depth of the root is 0.
//   verify_tree(be, tokens [B,N], parents [B,N], target_logits [B,N,V],
//               out_tokens [B,N], path [B,N], accepted [B], {.valid})            greedy
//       A node is accepted when its parent is and its token is the argmax (ties to the lowest id)
//       of the parent's logits; the deepest accepted node (ties to the lowest index) ends the
//       longest accepted path. path[b] = its nodes (depth 1, 2, ...), out_tokens[b] = their
//       tokens then the argmax after the last one, rest -1; accepted[b] = path length.
//   verify_tree(be, tokens, parents, draft_probs [B,N,V], target_probs [B,N,V],
//               out_tokens, path, accepted, {.seed, ...})                          sampled
//       SpecInfer's multi-step speculative sampling (Miao et al. 2024): at node r with residual
//       R = target[r], each child c (in index order, drawn i.i.d. from q = draft[r]) is accepted
//       when u * q(x_c) * sum(R) < R(x_c); a rejection sets R = max(0, R - sum(R) q). The first
//       accepted child becomes r; when none is, a token is drawn from R / sum(R) (the bonus when
//       r has no children). The output has the target's law.
//   kv_compact(be, cache [B,S,H,D] or [B,S,F], path [B,N], accepted [B], {.start [B]})
//       Node i's entry is at slot start[b] + i; the path's entries move to slots
//       start[b] + 1 .. start[b] + accepted[b], in order (in place: path nodes increase and node
//       j of the path has index >= j, so no source is overwritten before it is read).
#pragma once

#include <cstdint>

#include "weft/core/backend.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"
#include "weft/core/workspace.hpp"
#include "weft/decode/common.hpp"
#include "weft/decode/math.hpp"
#include "weft/decode/row_order.hpp"
#include "weft/decode/row_race.hpp"
#include "weft/decode/row_scan.hpp"
#include "weft/decode/speculative.hpp"

WEFT_NO_VECTORIZE_BEGIN

namespace weft {

namespace ops {
/// verify_tree (greedy or sampled): the tag of its workspace_size(be, ops::verify_tree{}, batch,
/// nodes, vocab).
struct verify_tree {};
}  // namespace ops

struct tree_mask_options {
  tensor_view<std::int32_t, 2> depth{};  ///< [B,N] optional out: depth of each node (root 0)
};

struct tree_verify_options {
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  tensor_view<const std::uint64_t, 1> seeds{};
  tensor_view<const std::uint64_t, 1> offsets{};
  tensor_view<std::uint8_t, 1> valid{};  ///< greedy: [B] optional out, 0 when a needed row has NaN
  float tolerance = 1e-3f;               ///< sampled: allowed |row sum - 1|
  weft::workspace workspace{};
};

struct kv_compact_options {
  tensor_view<const std::int64_t, 1> start{};  ///< [B] optional slot of the root (0 when empty)
};

namespace detail::decode {

/// 1 when parents[b] is not a tree in topological order.
struct parents_check_fn {
  tensor_view<const std::int32_t, 2> parents;
  WEFT_INLINE int operator()(std::int64_t b) const {
    const std::int64_t N = parents.extent(1);
    if (N > 0 && parents(b, 0) != -1) return 1;
    for (std::int64_t i = 1; i < N; ++i)
      if (parents(b, i) < 0 || parents(b, i) >= i) return 1;
    return 0;
  }
};

/// Node tokens 1..N-1 in [0, V): 1 = out of range.
struct node_tokens_check_fn {
  tensor_view<const std::int32_t, 2> tokens;
  std::int64_t vocab;
  WEFT_INLINE int operator()(std::int64_t b) const {
    for (std::int64_t i = 1; i < tokens.extent(1); ++i)
      if (tokens(b, i) < 0 || tokens(b, i) >= vocab) return 1;
    return 0;
  }
};

/// Row (b, i) of the ancestor mask.
struct tree_mask_fn {
  tensor_view<const std::int32_t, 2> parents;
  tensor_view<std::uint8_t, 3> mask;
  tensor_view<std::int32_t, 2> depth;
  WEFT_INLINE void operator()(std::int64_t r, void*) const {
    const std::int64_t N = parents.extent(1);
    const std::int64_t b = r / N, i = r % N;
    for (std::int64_t j = 0; j < N; ++j) mask(b, i, j) = 0;
    std::int32_t d = 0;
    for (std::int64_t j = i; j >= 0; j = parents(b, j), ++d) mask(b, i, j) = 1;
    if (depth.data()) depth(b, i) = d - 1;
  }
};

/// The greedy tree rule for sequence b; argmax_at(i) is the target's argmax after node i (-1 for a
/// NaN row); scratch: depth [N] and accepted [N] int32.
template <class Argmax>
WEFT_INLINE void greedy_tree_rule(std::int64_t b, const tensor_view<const std::int32_t, 2>& tokens,
                                  const tensor_view<const std::int32_t, 2>& parents, const Argmax& argmax_at,
                                  const tensor_view<std::int32_t, 2>& out,
                                  const tensor_view<std::int32_t, 2>& path,
                                  const tensor_view<std::int32_t, 1>& accepted,
                                  const tensor_view<std::uint8_t, 1>& valid, std::int32_t* depth,
                                  std::int32_t* ok) {
  const std::int64_t N = tokens.extent(1);
  bool good = true;
  std::int64_t deepest = 0;
  ok[0] = 1;
  depth[0] = 0;
  for (std::int64_t i = 1; i < N && good; ++i) {
    const std::int32_t p = parents(b, i);
    depth[i] = depth[p] + 1;
    ok[i] = 0;
    if (!ok[p]) continue;
    const std::int64_t y = argmax_at(p);
    if (y < 0) good = false;
    ok[i] = tokens(b, i) == y ? 1 : 0;
    if (ok[i] && depth[i] > depth[deepest]) deepest = i;
  }
  const std::int64_t last = good ? argmax_at(deepest) : -1;
  if (last < 0) good = false;
  const std::int64_t a = good ? depth[deepest] : 0;
  for (std::int64_t j = 0; j < N; ++j) {
    out(b, j) = -1;
    path(b, j) = -1;
  }
  if (good) {
    for (std::int64_t i = deepest, j = a - 1; j >= 0; i = parents(b, i), --j) {
      path(b, j) = static_cast<std::int32_t>(i);
      out(b, j) = tokens(b, i);
    }
    if (a < N) out(b, a) = static_cast<std::int32_t>(last);
  }
  accepted(b) = static_cast<std::int32_t>(a);
  if (valid.data()) valid(b) = good ? 1 : 0;
}

/// Greedy tree verification with the argmaxes computed here, once per node (CPU backends).
template <class T>
struct verify_tree_greedy_fn {
  tensor_view<const std::int32_t, 2> tokens, parents;
  tensor_view<const T, 3> target;
  tensor_view<std::int32_t, 2> out, path;
  tensor_view<std::int32_t, 1> accepted;
  tensor_view<std::uint8_t, 1> valid;
  static std::size_t scratch_bytes(std::int64_t N) { return static_cast<std::size_t>(N) * 12 + 64; }
  WEFT_INLINE void operator()(std::int64_t b, void* scratch) const {
    const std::int64_t N = tokens.extent(1), V = target.extent(2);
    std::int32_t* am = static_cast<std::int32_t*>(scratch);  // argmax after node i, -2 = not yet
    for (std::int64_t i = 0; i < N; ++i) am[i] = -2;
    const auto argmax_at = [&](std::int64_t i) {
      if (am[i] == -2) am[i] = static_cast<std::int32_t>(argmax_row(&target(b, i, 0), V).index);
      return static_cast<std::int64_t>(am[i]);
    };
    greedy_tree_rule(b, tokens, parents, argmax_at, out, path, accepted, valid, am + N, am + 2 * N);
  }
};

/// Greedy tree verification from argmaxes computed beforehand: am[b * N + i] (GPU backend).
struct greedy_tree_fn {
  tensor_view<const std::int32_t, 2> tokens, parents;
  const std::int32_t* am;
  tensor_view<std::int32_t, 2> out, path;
  tensor_view<std::int32_t, 1> accepted;
  tensor_view<std::uint8_t, 1> valid;
  static std::size_t scratch_bytes(std::int64_t N) { return static_cast<std::size_t>(N) * 8 + 64; }
  WEFT_INLINE void operator()(std::int64_t b, void* scratch) const {
    const std::int64_t N = tokens.extent(1);
    std::int32_t* depth = static_cast<std::int32_t*>(scratch);
    const auto argmax_at = [&](std::int64_t i) { return static_cast<std::int64_t>(am[b * N + i]); };
    greedy_tree_rule(b, tokens, parents, argmax_at, out, path, accepted, valid, depth, depth + N);
  }
};

/// Sampled tree verification of one sequence; scratch: the residual [V] floats.
template <class TD, class TT>
struct verify_tree_sampled_fn {
  tensor_view<const std::int32_t, 2> tokens, parents;
  tensor_view<const TD, 3> draft;
  tensor_view<const TT, 3> target;
  tensor_view<std::int32_t, 2> out, path;
  tensor_view<std::int32_t, 1> accepted;
  std::uint64_t seed, offset;
  tensor_view<const std::uint64_t, 1> seeds, offsets;
  static std::size_t scratch_bytes(std::int64_t V) {
    return static_cast<std::size_t>(V) * sizeof(float) + 64;
  }
  WEFT_INLINE void operator()(std::int64_t b, void* scratch) const {
    const std::int64_t N = tokens.extent(1), V = target.extent(2);
    float* R = static_cast<float*>(scratch);
    const row_key rk =
        make_row_key(seed, offset, seeds.data(), seeds.stride(0), offsets.data(), offsets.stride(0), b);
    for (std::int64_t j = 0; j < N; ++j) {
      out(b, j) = -1;
      path(b, j) = -1;
    }
    std::int64_t r = 0, a = 0;
    for (;;) {
      const TT* p = &target(b, r, 0);
      const TD* q = &draft(b, r, 0);
      for (std::int64_t v = 0; v < V; ++v) R[v] = load(p, v);
      double sum = 0.0;
      for (std::int64_t v = 0; v < V; ++v) sum += static_cast<double>(R[v]);
      std::int64_t next = -1;
      for (std::int64_t c = r + 1; c < N; ++c) {
        if (parents(b, c) != r) continue;
        const std::int32_t x = tokens(b, c);
        const double u = static_cast<double>(uniform24(draw_word(rk, stream::accept, 0, c)));
        if (u * static_cast<double>(load(q, x)) * sum < static_cast<double>(R[x])) {
          next = c;
          break;
        }
        // Rejected: R <- max(0, R - sum * q), the unnormalised residual.
        const float s = static_cast<float>(sum);
        double ns = 0.0;
        for (std::int64_t v = 0; v < V; ++v) {
          const float w = R[v] - s * load(q, v);
          R[v] = w > 0.0f ? w : 0.0f;
          ns += static_cast<double>(R[v]);
        }
        if (ns == 0.0) {  // R == sum * q up to rounding: nothing left to reject into, keep the target
          for (std::int64_t v = 0; v < V; ++v) R[v] = load(p, v);
          ns = 0.0;
          for (std::int64_t v = 0; v < V; ++v) ns += static_cast<double>(R[v]);
        }
        sum = ns;
      }
      if (next >= 0) {
        path(b, a) = static_cast<std::int32_t>(next);
        out(b, a) = tokens(b, next);
        ++a;
        r = next;
        continue;
      }
      const std::int64_t y =
          race_weights(V, plain_weight<float>{R}, rk, stream::residual, static_cast<std::uint32_t>(r));
      if (a < N) out(b, a) = static_cast<std::int32_t>(y);
      break;
    }
    accepted(b) = static_cast<std::int32_t>(a);
  }
};

/// Target rows of every node, and draft rows of nodes with children, must be distributions.
template <class T>
struct tree_probs_check_fn {
  tensor_view<const T, 3> p;
  tensor_view<const std::int32_t, 2> parents;
  bool only_parents;
  float tol;
  WEFT_INLINE int operator()(std::int64_t r) const {
    const std::int64_t N = p.extent(1);
    const std::int64_t b = r / N, i = r % N;
    if (only_parents) {
      bool has_child = false;
      for (std::int64_t c = i + 1; c < N && !has_child; ++c) has_child = parents(b, c) == i;
      if (!has_child) return 0;
    }
    return check_probs_row(&p(b, i, 0), p.extent(2), tol);
  }
};

/// Moves the path's cache entries of sequence b into place.
template <class T>
struct kv_compact_fn {
  tensor_view<T, 4> cache;  // [B, S, H, D]
  tensor_view<const std::int32_t, 2> path;
  tensor_view<const std::int32_t, 1> accepted;
  tensor_view<const std::int64_t, 1> start;
  WEFT_INLINE void operator()(std::int64_t b, void*) const {
    const std::int64_t s0 = start.data() ? start(b) : 0;
    const std::int64_t H = cache.extent(2), D = cache.extent(3);
    for (std::int64_t j = 1; j <= accepted(b); ++j) {
      const std::int64_t from = s0 + path(b, j - 1), to = s0 + j;
      if (from == to) continue;
      for (std::int64_t h = 0; h < H; ++h) {
        const T* src = &cache(b, from, h, 0);
        T* dst = &cache(b, to, h, 0);
        const std::int64_t sd = cache.stride(3);
        for (std::int64_t d = 0; d < D; ++d) dst[d * sd] = src[d * sd];
      }
    }
  }
};

/// accepted[b] in [0, N-1]; path nodes increasing, j + 1 <= path[j] < N; slots in range.
struct kv_compact_check_fn {
  tensor_view<const std::int32_t, 2> path;
  tensor_view<const std::int32_t, 1> accepted;
  tensor_view<const std::int64_t, 1> start;
  std::int64_t slots;
  WEFT_INLINE int operator()(std::int64_t b) const {
    const std::int64_t N = path.extent(1);
    const std::int64_t a = accepted(b);
    if (a < 0 || a >= N) return 1;
    const std::int64_t s0 = start.data() ? start(b) : 0;
    if (s0 < 0 || (a > 0 && s0 + a >= slots)) return 3;
    std::int64_t prev = 0;
    for (std::int64_t j = 0; j < a; ++j) {
      const std::int64_t n = path(b, j);
      if (n <= prev || n < j + 1 || n >= N) return 2;
      if (s0 + n >= slots) return 3;
      prev = n;
    }
    return 0;
  }
};

inline void check_tree_views(std::string_view fn, const tensor_view<const std::int32_t, 2>& tokens,
                             const tensor_view<const std::int32_t, 2>& parents,
                             const tensor_view<std::int32_t, 2>& out,
                             const tensor_view<std::int32_t, 2>& path,
                             const tensor_view<std::int32_t, 1>& accepted) {
  const std::int64_t B = tokens.extent(0), N = tokens.extent(1);
  check_view(fn, "tokens", tokens);
  require(N >= 1, fn, "tokens", "at least one node (the root) per tree", shape_string(tokens));
  check_view(fn, "parents", parents);
  require_shape(fn, "parents", parents, tokens.extents());
  check_output_view(fn, "out_tokens", out);
  require_shape(fn, "out_tokens", out, tokens.extents());
  check_output_view(fn, "path", path);
  require_shape(fn, "path", path, tokens.extents());
  check_output_view(fn, "accepted", accepted);
  require_shape(fn, "accepted", accepted, std::array<std::int64_t, 1>{B});
}

}  // namespace detail::decode

namespace impl {

template <class Backend, class Runner>
struct tree_rowwise {
  static void check_parents(const Backend& be, const char* fn,
                            const tensor_view<const std::int32_t, 2>& parents) {
    const auto f = Runner::first_failure(be, "weft::decode(check parents)", parents.extent(0),
                                         detail::decode::parents_check_fn{parents});
    detail::decode::throw_element_failure(fn, "parents", be, parents, f, f.item * parents.extent(1),
                                          "a tree in topological order: parents[0] = -1, 0 <= parents[i] < i",
                                          "b, i", "parent indices that do not form such a tree",
                                          [](std::int32_t x, const std::array<std::int64_t, 2>& at) {
                                            return at[1] == 0 ? x != -1 : x < 0 || x >= at[1];
                                          });
  }
  static void check_tokens(const Backend& be, const char* fn,
                           const tensor_view<const std::int32_t, 2>& tokens, std::int64_t V) {
    const auto f = Runner::first_failure(be, "weft::decode(check tokens)", tokens.extent(0),
                                         detail::decode::node_tokens_check_fn{tokens, V});
    detail::decode::throw_element_failure(fn, "tokens", be, tokens, f, f.item * tokens.extent(1) + 1,
                                          detail::concat("vocabulary ids in [0, ", V, ") for nodes 1..N-1"),
                                          "b, i", "a token out of range",
                                          detail::decode::token_out_of_range{V});
  }

  static void tree_attention_mask(const Backend& be, tensor_view<const std::int32_t, 2> parents,
                                  tensor_view<std::uint8_t, 3> mask, tensor_view<std::int32_t, 2> depth) {
    check_parents(be, "tree_attention_mask", parents);
    Runner::run(be, "weft::tree_attention_mask", parents.extent(0) * parents.extent(1), 0, {},
                "tree_attention_mask", detail::decode::tree_mask_fn{parents, mask, depth});
  }

  template <class T>
  static void verify_tree_greedy(const Backend& be, tensor_view<const std::int32_t, 2> tokens,
                                 tensor_view<const std::int32_t, 2> parents, tensor_view<const T, 3> target,
                                 tensor_view<std::int32_t, 2> out, tensor_view<std::int32_t, 2> path,
                                 tensor_view<std::int32_t, 1> accepted, const tree_verify_options& o) {
    check_parents(be, "verify_tree", parents);
    check_tokens(be, "verify_tree", tokens, target.extent(2));
    using F = detail::decode::verify_tree_greedy_fn<T>;
    Runner::run(be, "weft::verify_tree", tokens.extent(0), F::scratch_bytes(tokens.extent(1)), o.workspace,
                "verify_tree", F{tokens, parents, target, out, path, accepted, o.valid});
  }

  /// Value checks of sampled tree verification.
  template <class TD, class TT>
  static void check_tree_sampled_values(const Backend& be, const tensor_view<const std::int32_t, 2>& tokens,
                                        const tensor_view<const std::int32_t, 2>& parents,
                                        const tensor_view<const TD, 3>& draft,
                                        const tensor_view<const TT, 3>& target,
                                        const tree_verify_options& o) {
    check_parents(be, "verify_tree", parents);
    check_tokens(be, "verify_tree", tokens, target.extent(2));
    const std::int64_t rows = tokens.extent(0) * tokens.extent(1);
    for (int which = 0; which < 2; ++which) {
      const auto f = which == 0
                         ? Runner::first_failure(
                               be, "weft::verify_tree(check draft)", rows,
                               detail::decode::tree_probs_check_fn<TD>{draft, parents, true, o.tolerance})
                         : Runner::first_failure(
                               be, "weft::verify_tree(check target)", rows,
                               detail::decode::tree_probs_check_fn<TT>{target, parents, false, o.tolerance});
      if (which == 0)
        detail::decode::throw_probs_failure("verify_tree", "draft_probs", be, draft, f.item, f.code,
                                            o.tolerance, "b, i, v");
      else
        detail::decode::throw_probs_failure("verify_tree", "target_probs", be, target, f.item, f.code,
                                            o.tolerance, "b, i, v");
    }
  }

  template <class TD, class TT>
  static void verify_tree_sampled(const Backend& be, tensor_view<const std::int32_t, 2> tokens,
                                  tensor_view<const std::int32_t, 2> parents, tensor_view<const TD, 3> draft,
                                  tensor_view<const TT, 3> target, tensor_view<std::int32_t, 2> out,
                                  tensor_view<std::int32_t, 2> path, tensor_view<std::int32_t, 1> accepted,
                                  const tree_verify_options& o) {
    check_tree_sampled_values(be, tokens, parents, draft, target, o);
    using F = detail::decode::verify_tree_sampled_fn<TD, TT>;
    Runner::run(be, "weft::verify_tree", tokens.extent(0), F::scratch_bytes(target.extent(2)), o.workspace,
                "verify_tree",
                F{tokens, parents, draft, target, out, path, accepted, o.seed, o.offset, o.seeds, o.offsets});
  }

  template <class T>
  static void check_kv_compact(const Backend& be, const tensor_view<T, 4>& cache,
                               const tensor_view<const std::int32_t, 2>& path,
                               const tensor_view<const std::int32_t, 1>& accepted,
                               const kv_compact_options& o) {
    const auto f =
        Runner::first_failure(be, "weft::kv_compact(check)", cache.extent(0),
                              detail::decode::kv_compact_check_fn{path, accepted, o.start, cache.extent(1)});
    if (f.code == 1)
      detail::decode::throw_element_failure("kv_compact", "accepted", be, accepted, f, f.item,
                                            detail::concat("values in [0, ", path.extent(1) - 1, "]"), "b",
                                            "a count out of range",
                                            [N = path.extent(1)](std::int32_t a) { return a < 0 || a >= N; });
    if (f.code == 2) {
      // the first j < accepted[b] with path[b, j] not after path[b, j - 1], below j + 1 or past N - 1
      const std::int64_t N = path.extent(1);
      const std::vector<std::int32_t> row =
          detail::copy_to_host(be, tensor_view<const std::int32_t, 1>(
                                       path.data() + f.item * path.stride(0), std::array<std::int64_t, 1>{N},
                                       std::array<std::int64_t, 1>{path.stride(1)}));
      detail::decode::throw_element_failure(
          "kv_compact", "path", be, path, f, f.item * N,
          "increasing node indices with path[j] >= j + 1 (a root path)", "b, j", "a path that is not",
          [&row, N](std::int32_t n, const std::array<std::int64_t, 2>& at) {
            const std::int64_t j = at[1], prev = j == 0 ? 0 : row[static_cast<std::size_t>(j - 1)];
            return n <= prev || n < j + 1 || n >= N;
          });
    }
    if (f.code == 3)
      detail::decode::throw_failure("kv_compact", "start", f,
                                    detail::concat("slots start + node within [0, ", cache.extent(1), ")"),
                                    "a slot out of range");
  }

  template <class T>
  static void kv_compact(const Backend& be, tensor_view<T, 4> cache, tensor_view<const std::int32_t, 2> path,
                         tensor_view<const std::int32_t, 1> accepted, const kv_compact_options& o) {
    check_kv_compact(be, cache, path, accepted, o);
    Runner::run(be, "weft::kv_compact", cache.extent(0), 0, {}, "kv_compact",
                detail::decode::kv_compact_fn<T>{cache, path, accepted, o.start});
  }
};

}  // namespace impl

/// The ancestor mask of draft trees (see the header comment).
template <backend Backend>
void tree_attention_mask(const Backend& be, tensor_view<const std::int32_t, 2> parents,
                         tensor_view<std::uint8_t, 3> mask, const tree_mask_options& opts = {}) {
  constexpr const char* fn = "tree_attention_mask";
  detail::check_view(fn, "parents", parents);
  const std::int64_t B = parents.extent(0), N = parents.extent(1);
  detail::check_output_view(fn, "mask", mask);
  detail::require_shape(fn, "mask", mask, std::array<std::int64_t, 3>{B, N, N});
  if (detail::decode::given(opts.depth)) {
    detail::check_output_view(fn, "depth", opts.depth);
    detail::require_shape(fn, "depth", opts.depth, parents.extents());
  }
  impl::decode_impl<Backend>::tree_attention_mask(be, parents, mask, opts.depth);
}

/// Greedy tree verification (see the header comment).
template <backend Backend, class T>
void verify_tree(const Backend& be, tensor_view<const std::int32_t, 2> tokens,
                 tensor_view<const std::int32_t, 2> parents, tensor_view<T, 3> target_logits,
                 tensor_view<std::int32_t, 2> out_tokens, tensor_view<std::int32_t, 2> path,
                 tensor_view<std::int32_t, 1> accepted, const tree_verify_options& opts = {}) {
  constexpr const char* fn = "verify_tree";
  detail::decode::static_check_float<T>();
  detail::decode::check_tree_views(fn, tokens, parents, out_tokens, path, accepted);
  detail::decode::check_rows_view(fn, "target_logits", target_logits);
  detail::decode::check_vocab(fn, "target_logits", target_logits.extent(2));
  detail::require_shape(
      fn, "target_logits", target_logits,
      std::array<std::int64_t, 3>{tokens.extent(0), tokens.extent(1), target_logits.extent(2)});
  detail::decode::check_optional_rows(fn, "valid", opts.valid, tokens.extent(0), true);
  impl::decode_impl<Backend>::verify_tree_greedy(be, tokens, parents, tensor_view<const T, 3>(target_logits),
                                                 out_tokens, path, accepted, opts);
}

/// Sampled tree verification, SpecInfer's multi-step speculative sampling (see the header comment).
template <backend Backend, class TD, class TT>
void verify_tree(const Backend& be, tensor_view<const std::int32_t, 2> tokens,
                 tensor_view<const std::int32_t, 2> parents, tensor_view<TD, 3> draft_probs,
                 tensor_view<TT, 3> target_probs, tensor_view<std::int32_t, 2> out_tokens,
                 tensor_view<std::int32_t, 2> path, tensor_view<std::int32_t, 1> accepted,
                 const tree_verify_options& opts = {}) {
  constexpr const char* fn = "verify_tree";
  detail::decode::static_check_float<TD>();
  detail::decode::static_check_float<TT>();
  detail::decode::check_tree_views(fn, tokens, parents, out_tokens, path, accepted);
  detail::decode::check_rows_view(fn, "target_probs", target_probs);
  detail::decode::check_vocab(fn, "target_probs", target_probs.extent(2));
  const std::array<std::int64_t, 3> shape{tokens.extent(0), tokens.extent(1), target_probs.extent(2)};
  detail::require_shape(fn, "target_probs", target_probs, shape);
  detail::decode::check_rows_view(fn, "draft_probs", draft_probs);
  detail::require_shape(fn, "draft_probs", draft_probs, shape);
  detail::require(opts.tolerance >= 0.0f, fn, "tolerance", "a value >= 0", opts.tolerance);
  detail::decode::check_seed_views(fn, opts, tokens.extent(0));
  impl::decode_impl<Backend>::verify_tree_sampled(be, tokens, parents, tensor_view<const TD, 3>(draft_probs),
                                                  tensor_view<const TT, 3>(target_probs), out_tokens, path,
                                                  accepted, opts);
}

/// Moves the accepted path's KV entries into place (see the header comment). cache [B,S,H,D],
/// any strides (a head-major [B,H,S,D] buffer is the view with strides permuted).
template <backend Backend, class T>
void kv_compact(const Backend& be, tensor_view<T, 4> cache, tensor_view<const std::int32_t, 2> path,
                tensor_view<const std::int32_t, 1> accepted, const kv_compact_options& opts = {}) {
  constexpr const char* fn = "kv_compact";
  static_assert(!std::is_const_v<T>, "weft::kv_compact: 'cache' must be writable");
  detail::check_output_view(fn, "cache", cache);
  detail::check_view(fn, "path", path);
  detail::require(path.extent(0) == cache.extent(0), fn, "path",
                  detail::concat("shape [", cache.extent(0), ", N]"), detail::shape_string(path));
  detail::check_view(fn, "accepted", accepted);
  detail::require_shape(fn, "accepted", accepted, std::array<std::int64_t, 1>{cache.extent(0)});
  detail::decode::check_optional_rows(fn, "start", opts.start, cache.extent(0), false);
  impl::decode_impl<Backend>::kv_compact(be, cache, path, accepted, opts);
}

/// kv_compact for a cache [B,S,F] (F = heads x head dim, or any per-slot block).
template <backend Backend, class T>
void kv_compact(const Backend& be, tensor_view<T, 3> cache, tensor_view<const std::int32_t, 2> path,
                tensor_view<const std::int32_t, 1> accepted, const kv_compact_options& opts = {}) {
  const std::int64_t ext[4] = {cache.extent(0), cache.extent(1), 1, cache.extent(2)};
  const std::int64_t str[4] = {cache.stride(0), cache.stride(1), 0, cache.stride(2)};
  kv_compact(be, tensor_view<T, 4>(cache.data(), ext, str), path, accepted, opts);
}

}  // namespace weft

WEFT_NO_VECTORIZE_END
