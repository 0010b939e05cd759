// weft/ring/backward.hpp - the backward of ring attention.
//
//   ring_attention_backward(be, comm, q, k, v, o, lse, do_, dq, dk, dv, opts) -> overlap_stats
//       on every rank, with this rank's shards: dq, dk, dv are this rank's rows of the gradients
//       of attention over the whole sequence, for the forward's o and lse (ring_attention with
//       the same options).
//
// The schedule is pass_kv whatever opts.schedule says (pass_q and bidirectional have no
// backward of their own yet; the gradients are the same). Every rank's K and V visit every
// rank (overlap/ring_pipeline.hpp); step s computes this rank's queries' part of the gradients
// for rank src = (rank - s)'s keys: dq adds up here, and the part of dK, dV (fp32) goes
// straight back to src (tag + 2) while the next step computes. src adds the parts it receives
// in a fixed order (its own, then rank + 1's, rank + 2's, ...): bitwise deterministic, and two
// buffers of memory whatever the world size. The parts travel on the links from each rank to
// src, not on the ring's link to rank + 1, so they do not queue behind the K, V blocks (on a
// switched fabric: NVLink, InfiniBand). Each step's part leaves in opts.pieces messages of key
// rows, each as soon as it is computed, so only 1 / pieces of the last step's transfer is not
// hidden. Each part is attention_backward on sub-views (FlashAttention-2's recomputation from
// lse; no T x T buffer).
#pragma once

#include <optional>

#include "weft/attention/backward.hpp"
#include "weft/ring/ring.hpp"

namespace weft {
namespace detail::ring {

/// Buffers of the backward (fp32). A part of dK, dV for key rows [a, b) is packed
/// dk [B, b-a, Hkv, Dk] then dv [B, b-a, Hkv, Dv]; a step's pieces lie back to back.
struct backward_buffers {
  std::vector<float> dq_acc, dq_s, dk_s, dv_s;  // dq sum; one call's gradients (scratch)
  std::vector<float> own;                       // this rank's dK, dV: [B,Tk,Hkv,Dk] then [B,Tk,Hkv,Dv]
  std::vector<float> send[2], recv[2];          // parts, by step parity
  std::int64_t row_floats = 0;                  // floats per key row of a part: B Hkv (Dk + Dv)
  explicit backward_buffers(const attention::plan& p) {
    row_floats = p.B * p.Hkv * (p.Dk + p.Dv);
    dq_acc.assign(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dk), 0.0f);
    dq_s.resize(dq_acc.size());
    dk_s.resize(static_cast<std::size_t>(p.B * p.Tk * p.Hkv * p.Dk));
    dv_s.resize(static_cast<std::size_t>(p.B * p.Tk * p.Hkv * p.Dv));
    own.assign(static_cast<std::size_t>(row_floats * p.Tk), 0.0f);
    for (auto* v : {&send[0], &send[1], &recv[0], &recv[1]}) v->resize(own.size());
  }
  /// Piece i of a step's part in buf: key rows [cut[i], cut[i + 1]).
  std::span<float> piece(std::vector<float>& buf, const std::vector<std::int64_t>& cut, std::size_t i) {
    return {buf.data() + row_floats * cut[i], static_cast<std::size_t>(row_floats * (cut[i + 1] - cut[i]))};
  }
};

/// y += x, both [B, n, H, D] views of fp32.
inline void add_rows(tensor_view<float, 4> y, tensor_view<const float, 4> x) {
  for (std::int64_t b = 0; b < y.extent(0); ++b)
    for (std::int64_t t = 0; t < y.extent(1); ++t)
      for (std::int64_t h = 0; h < y.extent(2); ++h)
        for (std::int64_t d = 0; d < y.extent(3); ++d) y(b, t, h, d) += x(b, t, h, d);
}

/// The gradient parts of this rank's queries against key rows [a, b) of a block: dq into
/// bb.dq_acc, the packed dK, dV part of those keys into `out` (overwritten). `calls` number
/// key rows from a.
template <class Backend, class TQ, class T, class TO, class TG>
void backward_piece(const Backend& be, const attention::plan& p, tensor_view<const TQ, 4> q,
                    tensor_view<const T, 4> k, tensor_view<const T, 4> v, tensor_view<const TO, 4> o,
                    tensor_view<const float, 3> lse, tensor_view<const TG, 4> dO,
                    const std::vector<call>& calls, std::int64_t a, std::int64_t b, backward_buffers& bb,
                    std::span<float> out) {
  std::fill(out.begin(), out.end(), 0.0f);
  const std::int64_t n = b - a;
  const auto dq_acc = make_view(bb.dq_acc.data(), p.B, p.Tq, p.Hq, p.Dk);
  const auto dq_s = make_view(bb.dq_s.data(), p.B, p.Tq, p.Hq, p.Dk);
  const auto dk_s = make_view(bb.dk_s.data(), p.B, n, p.Hkv, p.Dk);
  const auto dv_s = make_view(bb.dv_s.data(), p.B, n, p.Hkv, p.Dv);
  const auto dk_p = make_view(out.data(), p.B, n, p.Hkv, p.Dk);
  const auto dv_p = make_view(out.data() + p.B * n * p.Hkv * p.Dk, p.B, n, p.Hkv, p.Dv);
  for (const call& c : calls) {
    const std::int64_t nq = c.q1 - c.q0, nk = c.k1 - c.k0;
    weft::attention_backward(be, rows_of(q, 1, c.q0, nq), rows_of(k, 1, a + c.k0, nk),
                             rows_of(v, 1, a + c.k0, nk), rows_of(o, 1, c.q0, nq), rows_of(lse, 2, c.q0, nq),
                             rows_of(dO, 1, c.q0, nq), rows_of(dq_s, 1, c.q0, nq), rows_of(dk_s, 1, c.k0, nk),
                             rows_of(dv_s, 1, c.k0, nk), c.opts);
    add_rows(rows_of(dq_acc, 1, c.q0, nq), rows_of(tensor_view<const float, 4>(dq_s), 1, c.q0, nq));
    add_rows(rows_of(dk_p, 1, c.k0, nk), rows_of(tensor_view<const float, 4>(dk_s), 1, c.k0, nk));
    add_rows(rows_of(dv_p, 1, c.k0, nk), rows_of(tensor_view<const float, 4>(dv_s), 1, c.k0, nk));
  }
}

/// The pieces of the dK, dV part that rank q_rank's queries give rank k_rank's keys: key rows
/// [cut[0], cut[n]) are the rows some query sees (the others get nothing and are not sent),
/// cut into at most `pieces` ranges of equal work (visible pairs), so that each piece leaves
/// after the same share of the step's compute. Sender and receiver compute the same cuts.
inline std::vector<std::int64_t> part_cuts(const ring_plan& rp, int q_rank, int k_rank, int pieces) {
  const std::int64_t tk = rp.p.Tk;
  const std::vector<std::int64_t> work =
      key_work(plan_calls(rp.q_segments(q_rank), rp.k_segments(k_rank), rp.ru), tk);  // queries per key row
  std::int64_t first = 0, last = tk, total = 0;
  while (first < tk && work[static_cast<std::size_t>(first)] == 0) ++first;
  while (last > first && work[static_cast<std::size_t>(last - 1)] == 0) --last;
  for (std::int64_t j = first; j < last; ++j) total += work[static_cast<std::size_t>(j)];
  std::vector<std::int64_t> cut{first};
  const std::int64_t n = std::max<std::int64_t>(1, std::min<std::int64_t>(pieces, last - first));
  std::int64_t acc = 0, j = first;
  for (std::int64_t i = 1; i < n; ++i) {  // the first row where the running work reaches i / n
    while (j < last && (acc + work[static_cast<std::size_t>(j)]) * n <= total * i)
      acc += work[static_cast<std::size_t>(j++)];
    cut.push_back(std::max(j, cut.back()));
  }
  cut.push_back(last);
  return cut;
}

/// own[key rows cut[i] .. cut[i+1]) += a packed part of those rows.
inline void add_part(const attention::plan& p, backward_buffers& bb, const std::vector<std::int64_t>& cut,
                     std::size_t i, const float* part) {
  const std::int64_t a = cut[i], n = cut[i + 1] - a;
  const auto own_k = make_view(bb.own.data(), p.B, p.Tk, p.Hkv, p.Dk);
  const auto own_v = make_view(bb.own.data() + p.B * p.Tk * p.Hkv * p.Dk, p.B, p.Tk, p.Hkv, p.Dv);
  add_rows(rows_of(own_k, 1, a, n), make_view(part, p.B, n, p.Hkv, p.Dk));
  add_rows(rows_of(own_v, 1, a, n), make_view(part + p.B * n * p.Hkv * p.Dk, p.B, n, p.Hkv, p.Dv));
}

}  // namespace detail::ring

/// The gradients of ring attention on this rank's shard (see the top of this file).
template <backend Backend, communicator Comm, class TQ, class TK, class TV, class TO, class TG, class TdQ,
          class TdK, class TdV>
overlap_stats ring_attention_backward(const Backend& be, Comm& comm, tensor_view<TQ, 4> q,
                                      tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                                      tensor_view<const float, 3> lse, tensor_view<TG, 4> do_,
                                      tensor_view<TdQ, 4> dq, tensor_view<TdK, 4> dk, tensor_view<TdV, 4> dv,
                                      const ring_attention_options& opts = {}) {
  static_assert(Backend::host_accessible && Comm::host_memory,
                "weft::ring_attention_backward: host-memory backends and communicators in this version");
  static_assert(std::is_same_v<std::remove_cv_t<TK>, std::remove_cv_t<TV>>,
                "weft::ring_attention_backward: k and v of one element type (they travel as one block)");
  static_assert(is_floating_v<TdQ> && is_floating_v<TdK> && is_floating_v<TdV>,
                "weft::ring_attention_backward: dq, dk, dv are writable floating-point views");
  constexpr const char* fn = "ring_attention_backward";
  namespace dr = detail::ring;
  const auto t0 = detail::overlap::clock::now();
  const dr::ring_plan rp = dr::checked(
      comm, fn, opts.check_across_ranks,
      [&] {
        auto r = dr::check_common(fn, be, comm.rank(), comm.size(), q, k, v, opts);
        detail::attention::check_backward_views(fn, r.p, q, k, v, o, lse, do_, dq, dk, dv);
        return r;
      },
      [&](const dr::ring_plan& r) { return dr::signature<TQ, TK, TV>(r, opts); });
  using T = std::remove_cv_t<TK>;
  const auto& p = rp.p;
  const tensor_view<const std::remove_cv_t<TQ>, 4> cq(q);
  const tensor_view<const std::remove_cv_t<TO>, 4> co(o);
  const tensor_view<const std::remove_cv_t<TG>, 4> cg(do_);
  const int w = comm.size(), r = comm.rank();
  const auto qs = rp.q_segments(r);
  dr::backward_buffers bb(p);
  std::vector<T> local = dr::packed_kv(tensor_view<const T, 4>(k), tensor_view<const T, 4>(v), 0, p.Tk);
  std::vector<T> b0(local.size()), b1(local.size());
  using request = typename Comm::request;
  std::vector<request> sends[2], recvs[2];  // by step parity
  std::vector<std::int64_t> recv_cuts[2];
  double waited = 0;
  auto wait_all = [&](std::vector<request>& rs) {
    const auto a = detail::overlap::clock::now();
    for (auto& rq : rs) comm.wait(rq);
    rs.clear();
    waited += std::chrono::duration<double>(detail::overlap::clock::now() - a).count();
  };
  // The parts of step s come from rank + s: posted into recv[s % 2] at the end of step s - 1,
  // added at the end of step s + 1 (their transfer hides behind that step's compute).
  auto post_recvs = [&](int s) {
    auto& cut = recv_cuts[s % 2];
    cut = dr::part_cuts(rp, (r + s) % w, r, opts.pieces);
    for (std::size_t i = 0; i + 1 < cut.size(); ++i)
      recvs[s % 2].push_back(comm.irecv(bb.piece(bb.recv[s % 2], cut, i), (r + s) % w, opts.tag + 2));
  };
  auto add_recvs = [&](int s) {
    wait_all(recvs[s % 2]);
    const auto& cut = recv_cuts[s % 2];
    for (std::size_t i = 0; i + 1 < cut.size(); ++i)
      dr::add_part(p, bb, cut, i, bb.piece(bb.recv[s % 2], cut, i).data());
  };
  auto compute = [&](int s, int src, std::span<const T> block, auto& progress) {
    const auto kv = dr::unpack_kv(block.data(), p, p.Tk);
    const auto ks = rp.k_segments(src);
    wait_all(sends[s % 2]);  // the parts sent two steps ago, out of the buffer this step fills
    const auto cut = dr::part_cuts(rp, r, src, s == 0 ? 1 : opts.pieces);
    for (std::size_t i = 0; i + 1 < cut.size(); ++i) {
      const std::int64_t a = cut[i], e = cut[i + 1];
      const auto part = bb.piece(bb.send[s % 2], cut, i);
      dr::backward_piece(be, p, cq, kv.k, kv.v, co, lse, cg,
                         dr::plan_calls(qs, dr::restrict_rows(ks, a, e), rp.ru), a, e, bb, part);
      if (s == 0) {
        dr::add_part(p, bb, cut, i, part.data());
      } else {
        sends[s % 2].push_back(comm.isend(std::span<const float>(part), src, opts.tag + 2));
      }
      progress();  // between pieces: transports that move data only inside their calls
    }
    if (s >= 2) add_recvs(s - 1);
    if (s + 1 < w) post_recvs(s + 1);
  };
  overlap_stats st =
      ring_pipeline(comm, std::span<const T>(local), std::span<T>(b0), std::span<T>(b1), compute,
                    {.tag = opts.tag, .check_across_ranks = false, .timeline = opts.timeline});
  st.compute_s -= waited;
  if (w >= 2) add_recvs(w - 1);
  wait_all(sends[0]);
  wait_all(sends[1]);
  dr::copy_out<TdQ, TdQ>(dq, bb.dq_acc.data());
  dr::copy_out<TdK, TdK>(dk, bb.own.data());
  dr::copy_out<TdV, TdV>(dv, bb.own.data() + p.B * p.Tk * p.Hkv * p.Dk);
  return dr::whole_call(st, t0);
}

}  // namespace weft
