// weft/overlap/ring_pipeline.hpp - every rank's block visits every rank, one hop per step, while
// the block that arrived last is computed on.
//
//   auto st = weft::ring_pipeline(comm, local, buf0, buf1,
//       [&](int step, int source, std::span<const float> block) { ...use rank source's block... });
//
// Step s (0 <= s < world) computes on the block of rank (rank - s) mod world: step 0 on `local`
// itself, later steps on the block received from the left neighbour (rank - 1) at the step
// before. During step s the block of step s + 1 travels: its receive (from the left) and the
// send of the current block (to the right) are posted before compute(s) runs, and waited
// after. Blocks rotate through buf0 / buf1 (double buffering); `local` is only read. All three
// spans have the same size on every rank (pad the shorter shards).
//
// Progress: transports that move data only inside their own calls (MPI over shared memory) can
// be driven during compute: a compute callable that takes a fourth argument gets a `progress`
// callable to call between its pieces of work (it tests the step's transfers).
//
// Communicators with persistent requests (mpi_communicator::send_init / recv_init) get them:
// the four sends and receives out of and into buf0 / buf1 are made once and restarted each step.
//
// If compute throws, the communicator is abort()ed (every peer fails at once, naming this rank)
// and the exception propagates.
//
// ring_pipeline_bidirectional: two rings at once (TokenRing), one block moving to rank + 1 and
// one to rank - 1 each step (below). Both run on one engine, detail::overlap::ring_lane.
#pragma once

#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"
#include "weft/core/error.hpp"
#include "weft/overlap/stats.hpp"

namespace weft {

struct ring_pipeline_options {
  int tag = 11;
  /// Agree on block size, element type, tag and direction across ranks first (docs/comm.md).
  bool check_across_ranks = true;
  /// Send to rank + 1 and receive from rank - 1 (true), or the other way round.
  bool forward = true;
  std::vector<overlap_event>* timeline = nullptr;
};

namespace detail::overlap {

template <class Comm, class T>
concept has_persistent = requires(Comm& c, std::span<T> s, std::span<const T> cs) {
  c.send_init(cs, 0, 0);
  c.recv_init(s, 0, 0);
};

template <class Comm, class T, bool Persistent>
struct persistent_of {
  using type = int;
};
template <class Comm, class T>
struct persistent_of<Comm, T, true> {
  using type = decltype(std::declval<Comm&>().send_init(std::declval<std::span<const T>>(), 0, 0));
};

/// Runs f; if it throws, aborts the communicator with the exception's text and rethrows.
template <class Comm, class F>
void guarded(Comm& c, F&& f) {
  try {
    f();
  } catch (const comm_error&) {
    throw;
  } catch (const std::exception& e) {
    c.abort(e.what());
    throw;
  } catch (...) {
    c.abort("an exception");
    throw;
  }
}

}  // namespace detail::overlap

namespace detail::overlap {

/// The blocks of one lane: `local` at step 0, then bufs[0] and bufs[1] in turn. (Apart from
/// ring_lane, which only depends on the communicator's type, so that GCC does not fold the
/// accessor of two lanes into one and then warn about the other's bounds.)
template <class T>
struct lane_blocks {
  std::span<const T> local;
  std::span<T> bufs[2];
  std::span<const T> block(int s) const { return s == 0 ? local : std::span<const T>(bufs[(s - 1) % 2]); }
};

/// One direction of a ring: a block that starts as `local` and moves one hop per step through
/// bufs[0] / bufs[1]. The engine of ring_pipeline (one lane) and ring_pipeline_bidirectional
/// (two lanes, opposite directions).
template <class Comm, class T>
class ring_lane {
 public:
  using request = typename Comm::request;
  lane_blocks<T> blocks;  ///< blocks.block(s): the block computed on at step s

  ring_lane(Comm& c, std::span<const T> local, std::span<T> b0, std::span<T> b1, bool forward, int tag)
      : blocks{local, {b0, b1}}, c_(c), forward_(forward), tag_(tag) {
    const int w = c.size(), r = c.rank();
    right_ = forward ? (r + 1) % w : (r - 1 + w) % w;
    left_ = forward ? (r - 1 + w) % w : (r + 1) % w;
    if constexpr (persistent) {
      if (w > 2) {  // buf0 / buf1 are sent from only when there are >= 3 ranks
        for (int b = 0; b < 2; ++b)
          psend_.push_back(c.send_init(std::span<const T>(blocks.bufs[b]), right_, tag));
      }
      if (w > 1) {
        for (int b = 0; b < 2; ++b) precv_.push_back(c.recv_init(blocks.bufs[b], left_, tag));
      }
    }
  }
  /// The rank whose block is computed on at step s.
  int source(int s) const {
    const int w = c_.size(), r = c_.rank();
    return forward_ ? (r - s + w) % w : (r + s) % w;
  }

  /// Before compute(s): posts the receive of step s + 1's block and the send of step s's.
  /// Returns the receive's handle in `step` (or npos on the last step).
  std::size_t post(int s, inflight<Comm>& step, recorder& rec) {
    if (s + 1 >= c_.size()) return npos;
    // The next block lands in the buffer the previous step sent from: that send must be done.
    if (send_prev_) {
      rec.wait(s, [&] { c_.wait(*send_prev_); });
      send_prev_.reset();
    }
    const std::size_t h = step.add(post_recv(s % 2), s);
    send_prev_ = post_send(blocks.block(s), s == 0 ? -1 : (s - 1) % 2);
    return h;
  }
  void finish(recorder& rec) {
    if (send_prev_) rec.wait(c_.size() - 1, [&] { c_.wait(*send_prev_); });
    send_prev_.reset();
  }
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

 private:
  static constexpr bool persistent = has_persistent<Comm, T>;
  using persistent_t = typename persistent_of<Comm, T, persistent>::type;
  request post_send(std::span<const T> from, int b) {
    if constexpr (persistent) {
      if (b >= 0) return c_.start(psend_[static_cast<std::size_t>(b)]);
    }
    return c_.isend(from, right_, tag_);
  }
  request post_recv(int b) {
    if constexpr (persistent) {
      return c_.start(precv_[static_cast<std::size_t>(b)]);
    } else {
      return c_.irecv(blocks.bufs[b], left_, tag_);
    }
  }
  Comm& c_;
  bool forward_;
  int tag_, right_ = 0, left_ = 0;
  std::vector<persistent_t> psend_, precv_;  // [buffer]
  std::optional<request> send_prev_;         // the send posted at the step before
};

template <class T>
void check_lane(const char* fn, const char* local, std::span<const T> l, std::span<T> b0, std::span<T> b1,
                const char* n0, const char* n1) {
  detail::require(b0.size() == l.size(), fn, n0, detail::concat(l.size(), " elements (as ", local, ")"),
                  b0.size());
  detail::require(b1.size() == l.size(), fn, n1, detail::concat(l.size(), " elements (as ", local, ")"),
                  b1.size());
}

inline void check_tag(const char* fn, int tag, int used) {
  detail::require(tag >= 0 && tag + used <= 15000, fn, "options.tag",
                  detail::concat("a tag in [0, ", 15000 - used, "]"), tag);
}

}  // namespace detail::overlap

template <class Comm, class T, class Compute>
overlap_stats ring_pipeline(Comm& c, std::span<const T> local, std::span<T> buf0, std::span<T> buf1,
                            Compute&& compute, const ring_pipeline_options& o = {}) {
  static_assert(std::is_trivially_copyable_v<T>, "weft::ring_pipeline moves trivially copyable elements");
  detail::comm::agree(
      c, "ring_pipeline", "local",
      {detail::comm::type_code<T>(), static_cast<std::int64_t>(local.size()), o.tag, o.forward ? 1 : 0},
      [&] {
        detail::overlap::check_lane("ring_pipeline", "local", local, buf0, buf1, "buf0", "buf1");
        detail::overlap::check_tag("ring_pipeline", o.tag, 1);
      },
      o.check_across_ranks);
  detail::overlap::recorder rec(o.timeline);
  detail::overlap::ring_lane<Comm, T> lane(c, local, buf0, buf1, o.forward, o.tag);
  for (int s = 0; s < c.size(); ++s) {
    detail::overlap::inflight<Comm> step(c, rec);
    const std::size_t h = lane.post(s, step, rec);
    auto progress = [&] { step.poll(); };
    const std::span<const T> block = lane.blocks.block(s);
    detail::overlap::guarded(c, [&] {
      rec.compute(s, [&] {
        if constexpr (std::is_invocable_v<Compute&, int, int, std::span<const T>, decltype(progress)&>) {
          compute(s, lane.source(s), block, progress);
        } else {
          compute(s, lane.source(s), block);
        }
      });
    });
    if (h != lane.npos) step.wait_one(h);
  }
  lane.finish(rec);
  return rec.finish();
}

/// Two rings at once (TokenRing's bidirectional schedule): block `fwd` moves to rank + 1 each
/// step and block `bwd` to rank - 1, so each link direction carries half the data. Step s
/// computes on rank (rank - s)'s fwd block and rank (rank + s)'s bwd block:
///   compute(s, source_fwd, block_fwd, source_bwd, block_bwd [, progress]).
/// The bwd ring uses tag options.tag + 1; options.forward is ignored.
template <class Comm, class T, class Compute>
overlap_stats ring_pipeline_bidirectional(Comm& c, std::span<const T> fwd, std::span<T> fwd0,
                                          std::span<T> fwd1, std::span<const T> bwd, std::span<T> bwd0,
                                          std::span<T> bwd1, Compute&& compute,
                                          const ring_pipeline_options& o = {}) {
  static_assert(std::is_trivially_copyable_v<T>, "weft::ring_pipeline moves trivially copyable elements");
  constexpr const char* fn = "ring_pipeline_bidirectional";
  detail::comm::agree(
      c, fn, "fwd",
      {detail::comm::type_code<T>(), static_cast<std::int64_t>(fwd.size()),
       static_cast<std::int64_t>(bwd.size()), o.tag, 2, 0},
      [&] {
        detail::overlap::check_lane(fn, "fwd", fwd, fwd0, fwd1, "fwd0", "fwd1");
        detail::overlap::check_lane(fn, "bwd", bwd, bwd0, bwd1, "bwd0", "bwd1");
        detail::overlap::check_tag(fn, o.tag, 2);
      },
      o.check_across_ranks);
  detail::overlap::recorder rec(o.timeline);
  detail::overlap::ring_lane<Comm, T> a(c, fwd, fwd0, fwd1, true, o.tag),
      b(c, bwd, bwd0, bwd1, false, o.tag + 1);
  for (int s = 0; s < c.size(); ++s) {
    detail::overlap::inflight<Comm> step(c, rec);
    const std::size_t ha = a.post(s, step, rec), hb = b.post(s, step, rec);
    auto progress = [&] { step.poll(); };
    detail::overlap::guarded(c, [&] {
      rec.compute(s, [&] {
        if constexpr (std::is_invocable_v<Compute&, int, int, std::span<const T>, int, std::span<const T>,
                                          decltype(progress)&>) {
          compute(s, a.source(s), a.blocks.block(s), b.source(s), b.blocks.block(s), progress);
        } else {
          compute(s, a.source(s), a.blocks.block(s), b.source(s), b.blocks.block(s));
        }
      });
    });
    if (ha != a.npos) step.wait_one(ha);
    if (hb != b.npos) step.wait_one(hb);
  }
  a.finish(rec);
  b.finish(rec);
  return rec.finish();
}

}  // namespace weft
