// weft/ring/ring.hpp - ring attention: softmax attention over a sequence sharded across ranks.
//
//   ring_attention(be, comm, q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], o [B,Tq,Hq,Dv],
//                  lse [B,Hq,Tq] (fp32), opts) -> overlap_stats
//       on every rank of comm, with q, k, v, o, lse this rank's shard (rows by opts.layout,
//       weft/ring/layout.hpp): o and lse are this rank's rows of attention(q, k, v) over the
//       whole (gathered) sequence with the same rules (causal, window, softcap, scale, GQA).
//
// Schedules (opts.schedule):
//   pass_kv        every rank's K and V visit every rank (overlap/ring_pipeline.hpp): step s
//                  attends this rank's queries to rank (rank - s)'s keys while the next block
//                  travels; partial results are merged exactly (merge_attention).
//   pass_q         K and V stay; queries travel. Step s attends rank (rank - s)'s queries to this
//                  rank's keys and sends the partial (o, lse) straight back to its owner, who
//                  merges them in a fixed order at the end. Moves fewer bytes when the query
//                  shard is smaller than the KV shard (prefill of new tokens against a long
//                  cache: Tq << Tk), at the cost of (world - 1) partials of memory.
//   bidirectional  pass_kv with each KV block cut in two halves by rows (TokenRing): the first
//                  half travels to rank + 1, the second to rank - 1, so each link direction
//                  carries half the bytes of pass_kv per step.
// Positions: global query row g sits at q_offset + g, global key row g at k_offset + g (within
// its sequence under varlen). Lengths: q_len / k_len are the global lengths before padding
// (0: world * local rows, no padding); local rows must follow the padding rule
// (shard_rows(layout, world, len)), padding rows are never attended and get o = 0, lse = -inf.
// Varlen: cu_seqlens_q / cu_seqlens_k are the global offsets [N+1] of the packed batch (B == 1),
// the same on every rank; every sequence is sharded on its own.
//
// Every rank checks its arguments and all ranks agree on them before anything moves: bad input
// throws weft::invalid_argument on every rank, never a hang. Deterministic: the same inputs
// give bitwise the same outputs (partials are merged in a fixed order).
#pragma once

#include <span>
#include <type_traits>
#include <vector>

#include "weft/ring/plan.hpp"

namespace weft {
namespace detail::ring {

/// Stats of a whole call: the pipeline's compute and transfer times, the wall time of the call.
inline overlap_stats whole_call(overlap_stats st, overlap::clock::time_point t0) {
  st.total_s = std::chrono::duration<double>(overlap::clock::now() - t0).count();
  st.exposed_comm_s = std::max(0.0, st.total_s - st.compute_s);
  st.efficiency = st.comm_s > 0 ? std::clamp(1.0 - st.exposed_comm_s / st.comm_s, 0.0, 1.0) : 1.0;
  return st;
}

template <class T>
std::vector<T> packed_kv(const tensor_view<const T, 4>& k, const tensor_view<const T, 4>& v, std::int64_t a,
                         std::int64_t b) {
  std::vector<T> out(
      static_cast<std::size_t>(k.extent(0) * (b - a) * k.extent(2) * (k.extent(3) + v.extent(3))));
  pack_rows(v, a, b, pack_rows(k, a, b, out.data()));
  return out;
}

template <class Backend, class Comm, class TQ, class T, class TO>
overlap_stats forward_pass_kv(const Backend& be, Comm& c, const ring_plan& rp, tensor_view<const TQ, 4> q,
                              tensor_view<const T, 4> k, tensor_view<const T, 4> v, accumulator<TO>& acc,
                              const ring_attention_options& o) {
  const auto& p = rp.p;
  const auto qs = rp.q_segments(rp.rank);
  std::vector<T> local = packed_kv(k, v, 0, p.Tk), b0(local.size()), b1(local.size());
  auto compute = [&](int, int src, std::span<const T> block, auto& progress) {
    const auto kv = unpack_kv(block.data(), p, p.Tk);
    attend(be, q, kv.k, kv.v, plan_calls(qs, rp.k_segments(src), rp.ru), acc.o, acc.lse, acc.po, acc.pl,
           acc.fresh, progress);
  };
  return ring_pipeline(c, std::span<const T>(local), std::span<T>(b0), std::span<T>(b1), compute,
                       {.tag = o.tag, .check_across_ranks = false, .timeline = o.timeline});
}

template <class Backend, class Comm, class TQ, class T, class TO>
overlap_stats forward_bidirectional(const Backend& be, Comm& c, const ring_plan& rp,
                                    tensor_view<const TQ, 4> q, tensor_view<const T, 4> k,
                                    tensor_view<const T, 4> v, accumulator<TO>& acc,
                                    const ring_attention_options& o) {
  const auto& p = rp.p;
  const auto qs = rp.q_segments(rp.rank);
  const std::int64_t h = (p.Tk + 1) / 2;  // rows of the half that travels to rank + 1
  std::vector<T> la = packed_kv(k, v, 0, h), a0(la.size()), a1(la.size());
  std::vector<T> lb = packed_kv(k, v, h, p.Tk), b0(lb.size()), b1(lb.size());
  auto compute = [&](int, int src_a, std::span<const T> blk_a, int src_b, std::span<const T> blk_b,
                     auto& progress) {
    const auto kva = unpack_kv(blk_a.data(), p, h);
    attend(be, q, kva.k, kva.v, plan_calls(qs, restrict_rows(rp.k_segments(src_a), 0, h), rp.ru), acc.o,
           acc.lse, acc.po, acc.pl, acc.fresh, progress);
    const auto kvb = unpack_kv(blk_b.data(), p, p.Tk - h);
    attend(be, q, kvb.k, kvb.v, plan_calls(qs, restrict_rows(rp.k_segments(src_b), h, p.Tk), rp.ru), acc.o,
           acc.lse, acc.po, acc.pl, acc.fresh, progress);
  };
  return ring_pipeline_bidirectional(c, std::span<const T>(la), std::span<T>(a0), std::span<T>(a1),
                                     std::span<const T>(lb), std::span<T>(b0), std::span<T>(b1), compute,
                                     {.tag = o.tag, .check_across_ranks = false, .timeline = o.timeline});
}

/// pass_q: queries travel; each partial result goes straight back to its owner (tag + 2).
template <class Backend, class Comm, class TQ, class TK, class TV, class TO>
overlap_stats forward_pass_q(const Backend& be, Comm& c, const ring_plan& rp, tensor_view<const TQ, 4> q,
                             tensor_view<const TK, 4> k, tensor_view<const TV, 4> v, accumulator<TO>& acc,
                             const ring_attention_options& o) {
  using TQv = std::remove_cv_t<TQ>;
  const auto& p = rp.p;
  const int w = c.size(), r = c.rank();
  const auto ks = rp.k_segments(r);
  std::vector<TQv> local(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dk)), b0(local.size()),
      b1(local.size());
  pack_rows(q, 0, p.Tq, local.data());
  const std::int64_t no = p.B * p.Tq * p.Hq * p.Dv, np = no + p.B * p.Hq * p.Tq;  // a partial: o then lse
  std::vector<float> recv(static_cast<std::size_t>(np * (w - 1))), send(recv.size());
  using request = typename Comm::request;
  std::vector<request> recvs, sends;
  for (int s = 1; s < w; ++s)
    recvs.push_back(c.irecv(std::span<float>(recv.data() + np * (s - 1), static_cast<std::size_t>(np)),
                            (r + s) % w, o.tag + 2));
  std::vector<char> fresh;
  auto compute = [&](int s, int src, std::span<const TQv> block, auto& progress) {
    const auto qv = make_view(block.data(), p.B, p.Tq, p.Hq, p.Dk);
    const auto calls = plan_calls(rp.q_segments(src), ks, rp.ru);
    if (s == 0) {
      attend(be, qv, k, v, calls, acc.o, acc.lse, acc.po, acc.pl, acc.fresh, progress);
      return;
    }
    float* part = send.data() + np * (s - 1);
    const auto po = make_view(part, p.B, p.Tq, p.Hq, p.Dv);
    const auto pl = make_view(part + no, p.B, p.Hq, p.Tq);
    fresh.assign(static_cast<std::size_t>(p.Tq), char{1});
    attend(be, qv, k, v, calls, po, pl, acc.po, acc.pl, fresh, progress);
    clear_fresh(po, pl, fresh, 0, p.Tq);
    sends.push_back(c.isend(std::span<const float>(part, static_cast<std::size_t>(np)), src, o.tag + 2));
  };
  const overlap_stats st =
      ring_pipeline(c, std::span<const TQv>(local), std::span<TQv>(b0), std::span<TQv>(b1), compute,
                    {.tag = o.tag, .check_across_ranks = false, .timeline = o.timeline});
  if (w > 1) clear_fresh(acc.o, acc.lse, acc.fresh, 0, p.Tq);
  for (int s = 1; s < w; ++s) {  // merged in a fixed order: deterministic
    c.wait(recvs[static_cast<std::size_t>(s - 1)]);
    const float* part = recv.data() + np * (s - 1);
    weft::merge_attention(be, acc.o, acc.lse, make_view(part, p.B, p.Tq, p.Hq, p.Dv),
                          make_view(part + no, p.B, p.Hq, p.Tq));
  }
  for (auto& s : sends) c.wait(s);
  return st;
}

}  // namespace detail::ring

/// Ring attention on this rank's shard (see the top of this file). Returns the overlap of
/// compute and transfers.
template <backend Backend, communicator Comm, class TQ, class TK, class TV, class TO>
overlap_stats ring_attention(const Backend& be, Comm& comm, tensor_view<TQ, 4> q, tensor_view<TK, 4> k,
                             tensor_view<TV, 4> v, tensor_view<TO, 4> o, tensor_view<float, 3> lse,
                             const ring_attention_options& opts = {}) {
  static_assert(
      Backend::host_accessible && Comm::host_memory,
      "weft::ring_attention: host-memory backends and communicators in this version (serial, Kokkos "
      "host; local, MPI, simulated_link over them)");
  static_assert(std::is_same_v<std::remove_cv_t<TK>, std::remove_cv_t<TV>>,
                "weft::ring_attention: k and v of one element type (they travel as one block)");
  constexpr const char* fn = "ring_attention";
  const auto t0 = detail::overlap::clock::now();
  const detail::ring::ring_plan rp = detail::ring::checked(
      comm, fn, opts.check_across_ranks,
      [&] {
        auto r = detail::ring::check_common(fn, be, comm.rank(), comm.size(), q, k, v, opts);
        detail::attention::check_outputs(fn, r.p, q, k, v, o, lse);
        return r;
      },
      [&](const detail::ring::ring_plan& r) { return detail::ring::signature<TQ, TK, TV>(r, opts); });
  using T = std::remove_cv_t<TK>;
  const tensor_view<const std::remove_cv_t<TQ>, 4> cq(q);
  const tensor_view<const T, 4> ck(k), cv(v);
  detail::ring::accumulator<TO> acc(rp.p, o, lse);
  overlap_stats st;
  if (comm.size() == 1) {  // no ring: the calls on this rank's own shard
    detail::overlap::recorder rec(opts.timeline);
    rec.compute(0, [&] {
      detail::ring::attend(be, cq, ck, cv,
                           detail::ring::plan_calls(rp.q_segments(0), rp.k_segments(0), rp.ru), acc.o,
                           acc.lse, acc.po, acc.pl, acc.fresh);
    });
    st = rec.finish();
  } else if (opts.schedule == ring_schedule::pass_q) {
    st = detail::ring::forward_pass_q(be, comm, rp, cq, ck, cv, acc, opts);
  } else if (opts.schedule == ring_schedule::bidirectional) {
    st = detail::ring::forward_bidirectional(be, comm, rp, cq, ck, cv, acc, opts);
  } else {
    st = detail::ring::forward_pass_kv(be, comm, rp, cq, ck, cv, acc, opts);
  }
  acc.finish(o);
  return detail::ring::whole_call(st, t0);
}

/// The (query, key) pairs rank `rank` scores in a ring call over global lengths q_len, k_len
/// with these options (layout, causal, window, offsets; varlen: opts.cu_seqlens_q / _k read on
/// the host): its work, 2 (Dk + Dv) FLOPs per pair and head. The schedule does not change it.
inline std::int64_t ring_attention_pairs(int rank, int world, std::int64_t q_len, std::int64_t k_len,
                                         const ring_attention_options& opts) {
  constexpr const char* fn = "ring_attention_pairs";
  detail::ring::check_layout_args(fn, opts.layout, rank, world, q_len);
  detail::require(k_len >= 0, fn, "k_len", ">= 0", k_len);
  auto host = [](const tensor_view<const std::int64_t, 1>& v) {
    return std::vector<std::int64_t>(v.data(), v.data() + v.extent(0));
  };
  const auto cq = host(opts.cu_seqlens_q), ck = host(opts.cu_seqlens_k);
  const detail::ring::rules ru{opts.causal, opts.window, opts.q_offset, opts.k_offset, 1.0f, 0.0f};
  const auto qs = detail::ring::segments(opts.layout, rank, world, q_len, cq);
  std::int64_t n = 0;
  for (int s = 0; s < world; ++s) {
    const auto ks = detail::ring::segments(opts.layout, s, world, k_len, ck);
    std::int64_t rows = 0;
    for (const auto& k : ks) rows = std::max(rows, k.row0 + k.rows);
    for (std::int64_t w : detail::ring::key_work(detail::ring::plan_calls(qs, ks, ru), rows)) n += w;
  }
  return n;
}

}  // namespace weft
