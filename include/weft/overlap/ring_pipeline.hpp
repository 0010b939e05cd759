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

template <class Comm, class T, class Compute>
overlap_stats ring_pipeline(Comm& c, std::span<const T> local, std::span<T> buf0, std::span<T> buf1,
                            Compute&& compute, const ring_pipeline_options& o = {}) {
  static_assert(std::is_trivially_copyable_v<T>, "weft::ring_pipeline moves trivially copyable elements");
  detail::comm::agree(
      c, "ring_pipeline", "local",
      {detail::comm::type_code<T>(), static_cast<std::int64_t>(local.size()), o.tag, o.forward ? 1 : 0},
      [&] {
        detail::require(buf0.size() == local.size(), "ring_pipeline", "buf0",
                        detail::concat(local.size(), " elements"), buf0.size());
        detail::require(buf1.size() == local.size(), "ring_pipeline", "buf1",
                        detail::concat(local.size(), " elements"), buf1.size());
        detail::require(o.tag >= 0 && o.tag < 15000, "ring_pipeline", "options.tag", "a tag in [0, 15000)",
                        o.tag);
      },
      o.check_across_ranks);
  const int w = c.size(), r = c.rank();
  const int right = o.forward ? (r + 1) % w : (r - 1 + w) % w;
  const int left = o.forward ? (r - 1 + w) % w : (r + 1) % w;
  detail::overlap::recorder rec(o.timeline);
  std::span<T> bufs[2] = {buf0, buf1};

  using request = typename Comm::request;
  constexpr bool persistent = detail::overlap::has_persistent<Comm, T>;
  using persistent_t = typename detail::overlap::persistent_of<Comm, T, persistent>::type;
  std::vector<persistent_t> psend, precv;  // [buffer]
  if constexpr (persistent) {
    if (w > 2) {  // buf0 / buf1 are sent from only when there are >= 3 ranks
      for (int b = 0; b < 2; ++b) psend.push_back(c.send_init(std::span<const T>(bufs[b]), right, o.tag));
    }
    if (w > 1) {
      for (int b = 0; b < 2; ++b) precv.push_back(c.recv_init(bufs[b], left, o.tag));
    }
  }
  auto post_send = [&](std::span<const T> from, int b) -> request {
    if constexpr (persistent) {
      if (b >= 0) return c.start(psend[static_cast<std::size_t>(b)]);
    }
    return c.isend(from, right, o.tag);
  };
  auto post_recv = [&](int b) -> request {
    if constexpr (persistent) {
      return c.start(precv[static_cast<std::size_t>(b)]);
    } else {
      return c.irecv(bufs[b], left, o.tag);
    }
  };

  std::optional<request> send_prev;  // the send posted at the step before (out of the other buffer)
  for (int s = 0; s < w; ++s) {
    const int source = o.forward ? (r - s + w) % w : (r + s) % w;
    const int cur = s == 0 ? -1 : (s - 1) % 2;  // the buffer holding this step's block (-1: local)
    const std::span<const T> block = cur < 0 ? local : std::span<const T>(bufs[cur]);
    detail::overlap::inflight<Comm> step(c, rec);
    std::size_t hr = 0;
    if (s + 1 < w) {
      // The next block lands in the buffer the previous step sent from: that send must be done.
      if (send_prev) {
        rec.wait(s, [&] { c.wait(*send_prev); });
        send_prev.reset();
      }
      hr = step.add(post_recv(s % 2), s);
      send_prev = post_send(block, cur);
    }
    auto progress = [&] { step.poll(); };
    detail::overlap::guarded(c, [&] {
      rec.compute(s, [&] {
        if constexpr (std::is_invocable_v<Compute&, int, int, std::span<const T>, decltype(progress)&>) {
          compute(s, source, block, progress);
        } else {
          compute(s, source, block);
        }
      });
    });
    if (s + 1 < w) step.wait_one(hr);
  }
  if (send_prev) rec.wait(w - 1, [&] { c.wait(*send_prev); });
  return rec.finish();
}

}  // namespace weft
