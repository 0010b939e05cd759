// weft/overlap/matmul.hpp - tensor-parallel GEMMs whose communication hides behind the GEMM.
//
//   // c [M, N] = all_gather(rows of a) [M, K] . b [K, N]     (sequence-parallel -> column-parallel)
//   weft::all_gather_matmul(be, comm, a_shard, b, c, gemm, {.chunks = 4});
//   // c_shard [rows of rank, N] = rows of (sum over ranks of a_r [M, K_r] . b_r [K_r, N])
//   weft::matmul_reduce_scatter(be, comm, a, b, c_shard, gemm, {.chunks = 4});
//
// `gemm(a, b, c)` is the caller's: c = a . b for row-major 2-D views (tensor_view<const T, 2>,
// tensor_view<const T, 2>, tensor_view<T, 2>; strides given), e.g. cblas_sgemm or cuBLAS.
//
// Rows are sharded over ranks as weft::row_shard says: rank r holds rows [begin, end) with the
// first M % world ranks one row longer. `.chunks` splits each shard's rows into that many
// pieces, each its own message and its own GEMM call: the GEMM of piece i runs while piece
// i + 1 travels. More pieces hide more but cost GEMM speed (each call repacks b).
//
// all_gather_matmul: a ring (weft::ring_pipeline's schedule, piece by piece): step s computes
// the rows of rank (rank - s) mod world while the next shard arrives and this one is forwarded.
// matmul_reduce_scatter: step s computes this rank's partial product of the row block of rank
// (rank - 1 - s) mod world, adds the partial that arrived from the left and sends the sum to
// the right; at the last step the block is this rank's own and the sum is its result. Sums
// are in a fixed order (deterministic), not the order of a plain sum over ranks.
//
// Host-memory backends and communicators (serial, Kokkos host spaces; MPI, local, simulated
// links); the CUDA / NCCL form is not written yet (docs/overlap.md).
#pragma once

#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/core/tensor.hpp"
#include "weft/overlap/ring_pipeline.hpp"
#include "weft/overlap/stats.hpp"

namespace weft {

struct overlap_matmul_options {
  /// Pieces per shard (rows): the unit of transfer and of GEMM calls.
  int chunks = 1;
  int tag = 12;
  bool check_across_ranks = true;
  std::vector<overlap_event>* timeline = nullptr;
};

/// Rows [first, second) of rank `rank` when `rows` rows are split over `world` ranks.
inline std::pair<std::int64_t, std::int64_t> row_shard(std::int64_t rows, int world, int rank) {
  const std::int64_t base = rows / world, extra = rows % world;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

namespace detail::overlap {

template <class T>
tensor_view<T, 2> rows_of(tensor_view<T, 2> v, std::int64_t r0, std::int64_t r1) {
  return tensor_view<T, 2>(v.data() + r0 * v.stride(0), {r1 - r0, v.extent(1)}, {v.stride(0), v.stride(1)});
}

template <class T>
tensor_view<const T, 2> dense(const T* p, std::int64_t rows, std::int64_t cols) {
  return tensor_view<const T, 2>(p, {rows, cols}, {cols, 1});
}

template <class Backend, class Comm>
void require_host(const char* fn) {
  static_assert(
      Backend::host_accessible && Comm::host_memory,
      "weft overlap matmul helpers run on host-memory backends and communicators for now (the CUDA / "
      "NCCL form is planned)");
  (void)fn;
}

}  // namespace detail::overlap

template <class Backend, class Comm, class TA, class TB, class T, class Gemm>
overlap_stats all_gather_matmul(const Backend& be, Comm& c, tensor_view<TA, 2> a_view,
                                tensor_view<TB, 2> b_view, tensor_view<T, 2> out, Gemm&& gemm,
                                const overlap_matmul_options& o = {}) {
  static_assert(std::is_same_v<std::remove_const_t<TA>, T> && std::is_same_v<std::remove_const_t<TB>, T>,
                "weft::all_gather_matmul: a_shard, b and c have one element type");
  detail::overlap::require_host<Backend, Comm>("all_gather_matmul");
  const tensor_view<const T, 2> a_shard = a_view, b = b_view;
  constexpr const char* fn = "all_gather_matmul";
  const int w = c.size(), r = c.rank();
  const std::int64_t M = out.extent(0), K = b.extent(0), N = b.extent(1);
  const auto [r0, r1] = row_shard(M, w, r);
  detail::comm::agree(
      c, fn, "c", {detail::comm::type_code<T>(), M, K, N, o.chunks, o.tag},
      [&] {
        detail::check_view(fn, "a_shard", a_shard);
        detail::check_view(fn, "b", b);
        detail::check_output_view(fn, "c", out);
        detail::require(a_shard.extent(0) == r1 - r0, fn, "a_shard",
                        detail::concat(r1 - r0, " rows (rows [", r0, ", ", r1, ") of c's ", M, " on rank ", r,
                                       " of ", w, ")"),
                        a_shard.extent(0));
        detail::require(a_shard.extent(1) == K, fn, "a_shard", detail::concat(K, " columns (b's rows)"),
                        a_shard.extent(1));
        detail::require(a_shard.is_contiguous(), fn, "a_shard", "contiguous rows", "a strided view");
        detail::require(out.extent(1) == N, fn, "c", detail::concat(N, " columns (b's columns)"),
                        out.extent(1));
        detail::require(o.chunks >= 1, fn, "options.chunks", ">= 1", o.chunks);
        detail::require_disjoint(fn, "c", out, "a_shard", a_shard);
        detail::require_disjoint(fn, "c", out, "b", b);
      },
      o.check_across_ranks);
  be.fence();
  const auto off = detail::comm::even_offsets(M, w);
  const std::int64_t maxrows = off[1] - off[0];
  auto store = detail::comm::take_scratch<T>(c, w > 1 ? 2 * maxrows * K : 0);
  T* bufs[2] = {store.data, w > 1 ? store.data + maxrows * K : store.data};
  const int right = (r + 1) % w, left = (r - 1 + w) % w;

  detail::overlap::recorder rec(o.timeline);
  detail::overlap::inflight<Comm> flight(c, rec);
  std::vector<std::size_t> recv_h[2], send_h[2];
  for (int s = 0; s < w; ++s) {
    const int src = detail::comm::mod(r - s, w);
    const T* cur = s == 0 ? a_shard.data() : bufs[(s - 1) % 2];
    const auto po = detail::comm::even_offsets(off[src + 1] - off[src], o.chunks);
    if (s + 1 < w) {
      const int nb = s % 2, nsrc = detail::comm::mod(r - s - 1, w);
      for (auto h : send_h[nb]) flight.wait_one(h);
      send_h[nb].clear();
      recv_h[nb].clear();
      const auto npo = detail::comm::even_offsets(off[nsrc + 1] - off[nsrc], o.chunks);
      for (int k = 0; k < o.chunks; ++k) {
        recv_h[nb].push_back(flight.add(
            c.irecv(std::span<T>(bufs[nb] + npo[k] * K, static_cast<std::size_t>((npo[k + 1] - npo[k]) * K)),
                    left, o.tag),
            s));
      }
      if (s == 0) {
        for (int k = 0; k < o.chunks; ++k) {
          flight.add(
              c.isend(std::span<const T>(cur + po[k] * K, static_cast<std::size_t>((po[k + 1] - po[k]) * K)),
                      right, o.tag),
              s);
        }
      }
    }
    for (int k = 0; k < o.chunks; ++k) {
      const std::span<const T> piece(cur + po[k] * K, static_cast<std::size_t>((po[k + 1] - po[k]) * K));
      if (s > 0) {
        flight.wait_one(recv_h[(s - 1) % 2][static_cast<std::size_t>(k)]);
        if (s + 1 < w) send_h[(s - 1) % 2].push_back(flight.add(c.isend(piece, right, o.tag), s));
      }
      if (po[k + 1] > po[k]) {
        detail::overlap::guarded(c, [&] {
          rec.compute(s, [&] {
            gemm(detail::overlap::dense(piece.data(), po[k + 1] - po[k], K), b,
                 detail::overlap::rows_of(out, off[src] + po[k], off[src] + po[k + 1]));
          });
        });
      }
      flight.poll();
    }
  }
  flight.wait_all();
  return rec.finish();
}

template <class Backend, class Comm, class TA, class TB, class T, class Gemm>
overlap_stats matmul_reduce_scatter(const Backend& be, Comm& c, tensor_view<TA, 2> a_view,
                                    tensor_view<TB, 2> b_view, tensor_view<T, 2> out_shard, Gemm&& gemm,
                                    const overlap_matmul_options& o = {}) {
  static_assert(std::is_same_v<std::remove_const_t<TA>, T> && std::is_same_v<std::remove_const_t<TB>, T>,
                "weft::matmul_reduce_scatter: a, b and c_shard have one element type");
  detail::overlap::require_host<Backend, Comm>("matmul_reduce_scatter");
  const tensor_view<const T, 2> a = a_view, b = b_view;
  constexpr const char* fn = "matmul_reduce_scatter";
  const int w = c.size(), r = c.rank();
  const std::int64_t M = a.extent(0), K = a.extent(1), N = b.extent(1);
  const auto [r0, r1] = row_shard(M, w, r);
  detail::comm::agree(
      c, fn, "a", {detail::comm::type_code<T>(), M, N, 0, o.chunks, o.tag},
      [&] {
        detail::check_view(fn, "a", a);
        detail::check_view(fn, "b", b);
        detail::check_output_view(fn, "c_shard", out_shard);
        detail::require(b.extent(0) == K, fn, "b", detail::concat(K, " rows (a's columns)"), b.extent(0));
        detail::require(out_shard.extent(0) == r1 - r0, fn, "c_shard",
                        detail::concat(r1 - r0, " rows (rows [", r0, ", ", r1, ") of ", M, " on rank ", r,
                                       " of ", w, ")"),
                        out_shard.extent(0));
        detail::require(out_shard.extent(1) == N, fn, "c_shard", detail::concat(N, " columns (b's columns)"),
                        out_shard.extent(1));
        detail::require(o.chunks >= 1, fn, "options.chunks", ">= 1", o.chunks);
        detail::require_disjoint(fn, "c_shard", out_shard, "a", a);
        detail::require_disjoint(fn, "c_shard", out_shard, "b", b);
      },
      o.check_across_ranks);
  be.fence();
  const auto off = detail::comm::even_offsets(M, w);
  const std::int64_t maxrows = off[1] - off[0];
  // work[2]: this rank's partials (double-buffered: one may still be travelling); tmp[2]: the
  // partials arriving from the left (the next step's is posted before this step's GEMM).
  auto store = detail::comm::take_scratch<T>(c, 4 * maxrows * N);
  T* work[2] = {store.data, store.data + maxrows * N};
  T* tmp[2] = {store.data + 2 * maxrows * N, store.data + 3 * maxrows * N};
  const int right = (r + 1) % w, left = (r - 1 + w) % w;

  detail::overlap::recorder rec(o.timeline);
  detail::overlap::inflight<Comm> flight(c, rec);
  std::vector<std::size_t> recv_h[2], send_h[2];
  auto post_recvs = [&](int s) {  // the partial of step s's block, computed by the left at its step s - 1
    const int j = detail::comm::mod(r - 1 - s, w);
    const auto po = detail::comm::even_offsets(off[j + 1] - off[j], o.chunks);
    recv_h[s % 2].clear();
    for (int k = 0; k < o.chunks; ++k) {
      recv_h[s % 2].push_back(flight.add(
          c.irecv(std::span<T>(tmp[s % 2] + po[k] * N, static_cast<std::size_t>((po[k + 1] - po[k]) * N)),
                  left, o.tag),
          s));
    }
  };
  if (w > 1) post_recvs(1);
  for (int s = 0; s < w; ++s) {
    const int j = detail::comm::mod(r - 1 - s, w);
    const auto po = detail::comm::even_offsets(off[j + 1] - off[j], o.chunks);
    const bool last = s == w - 1;
    T* part = work[s % 2];
    for (auto h : send_h[s % 2]) flight.wait_one(h);  // the sends out of this buffer, two steps ago
    send_h[s % 2].clear();
    for (int k = 0; k < o.chunks; ++k) {
      const std::int64_t p0 = po[k], p1 = po[k + 1], rows = p1 - p0;
      const auto a_rows = detail::overlap::rows_of(a, off[j] + p0, off[j] + p1);
      T* dst = part + p0 * N;
      const bool direct = last && s == 0;  // world 1: the product is the result
      if (rows > 0)
        detail::overlap::guarded(c, [&] {
          rec.compute(s, [&] {
            if (direct) {
              gemm(a_rows, b, detail::overlap::rows_of(out_shard, p0, p1));
            } else {
              gemm(a_rows, b, tensor_view<T, 2>(dst, {rows, N}, {N, 1}));
            }
          });
        });
      if (s > 0) {
        flight.wait_one(recv_h[s % 2][static_cast<std::size_t>(k)]);
        const T* in = tmp[s % 2] + p0 * N;
        if (last) {
          const std::int64_t cs = out_shard.stride(1);
          for (std::int64_t i = 0; i < rows; ++i) {
            T* o_row = &out_shard(p0 + i, 0);
            if (cs == 1) {
              detail::comm::reduce_into(o_row, in + i * N, dst + i * N, N, reduce_op::sum);
            } else {
              for (std::int64_t x = 0; x < N; ++x) o_row[x * cs] = in[i * N + x] + dst[i * N + x];
            }
          }
        } else {
          detail::comm::reduce_into(dst, in, dst, rows * N, reduce_op::sum);
        }
      }
      if (!last) {
        send_h[s % 2].push_back(flight.add(
            c.isend(std::span<const T>(dst, static_cast<std::size_t>(rows * N)), right, o.tag), s));
      }
      flight.poll();
    }
    if (s + 2 < w) post_recvs(s + 2);
  }
  flight.wait_all();
  return rec.finish();
}

}  // namespace weft
