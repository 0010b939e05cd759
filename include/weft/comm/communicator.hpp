// weft/comm/communicator.hpp - the communicator concept, its options, statistics and the
// slow-peer report every model keeps.
//
// A communicator is a value with a rank in a world of size() ranks:
//
//   c.rank(), c.size()
//   auto r = c.isend(std::span<const T>, peer, tag);   auto r = c.irecv(std::span<T>, peer, tag);
//   c.wait(r); bool done = c.test(r);                  // wait never blocks past the time-out
//   c.all_reduce(span<T>, reduce_op::sum); c.all_gather(send, recv);
//   c.reduce_scatter(send, recv, op); c.all_to_all(send, recv); c.barrier();
//   c.abort("why")                                     // every other rank's next wait throws
//   c.stats()                                          // comm_stats: what moved, and how fast
//
// Models: local_world / local_communicator (threads of one process, weft/comm/local.hpp),
// mpi_communicator (weft/comm/mpi.hpp), nccl_communicator (weft/comm/nccl.hpp) and the
// simulated_link<Comm> decorator (weft/comm/simulated_link.hpp). weft's own collectives over
// point-to-point (ring, recursive halving) are free functions in weft/comm/collectives.hpp.
//
// Faults never hang: every wait takes the communicator's time-out and throws weft::comm_error
// naming the rank, the peer, the operation and the bytes. After a comm_error the communicator
// is failed: every later call throws at once (the message streams are out of step); make a
// new one. A rank whose own code throws calls abort(), and its peers' waits throw comm_error
// naming it without waiting for the time-out.
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "weft/core/error.hpp"

namespace weft {

/// The reduction of all_reduce / reduce_scatter.
enum class reduce_op { sum, max, min };

struct comm_options {
  /// No wait lasts longer; past it the wait throws weft::comm_error.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  /// Records kept by stats() (the oldest are dropped first); 0 keeps none.
  std::size_t stats_capacity = 1 << 16;
};

/// What a comm_record measured.
enum class comm_kind : std::uint8_t {
  send,
  recv,
  all_reduce,
  all_gather,
  reduce_scatter,
  all_to_all,
  barrier
};

inline const char* comm_kind_name(comm_kind k) {
  switch (k) {
    case comm_kind::send:
      return "send";
    case comm_kind::recv:
      return "recv";
    case comm_kind::all_reduce:
      return "all_reduce";
    case comm_kind::all_gather:
      return "all_gather";
    case comm_kind::reduce_scatter:
      return "reduce_scatter";
    case comm_kind::all_to_all:
      return "all_to_all";
    case comm_kind::barrier:
      return "barrier";
  }
  return "?";
}

/// One completed operation: `peer` is -1 for collectives; `seconds` from post to completion.
struct comm_record {
  comm_kind op;
  int peer;
  std::int64_t bytes;
  double seconds;
};

/// Per-peer totals of the received point-to-point records (the receiver sees the link's delay:
/// from posting the receive until the data was there).
struct peer_summary {
  int peer = -1;
  std::int64_t transfers = 0;
  std::int64_t bytes = 0;
  double seconds = 0;
  double median_bytes_per_s = 0;  // median over this peer's transfers of bytes / seconds
};

/// Peers whose transfers are persistently slower than the others' (C4's observation: the
/// transfers of a training step are periodic and alike, so an outlier is a fault).
struct anomaly_report {
  std::vector<int> slow_peers;
  std::string text;  // one line per slow peer, or why nothing could be compared
  bool empty() const { return slow_peers.empty(); }
};

/// The statistics every communicator keeps: operation, peer, bytes, duration.
class comm_stats {
 public:
  explicit comm_stats(std::size_t capacity = 1 << 16) : capacity_(capacity) {}

  void add(const comm_record& r) {
    if (capacity_ == 0) return;
    if (records_.size() < capacity_) {
      records_.push_back(r);
    } else {
      records_[next_] = r;  // a ring once full: the newest `capacity` records
    }
    next_ = (next_ + 1) % capacity_;
    ++total_;
  }
  void clear() {
    records_.clear();
    next_ = 0;
    total_ = 0;
  }
  /// The kept records (in ring order once more than `capacity` were added).
  const std::vector<comm_record>& records() const { return records_; }
  /// Records ever added (including those dropped).
  std::int64_t total() const { return total_; }

  /// Totals per peer over the kept received records of at least `min_bytes`, by peer.
  std::vector<peer_summary> by_peer(std::int64_t min_bytes = 1) const {
    std::vector<peer_summary> out;
    std::vector<std::vector<double>> rates;
    for (const auto& r : records_) {
      if (r.op != comm_kind::recv || r.peer < 0 || r.bytes < std::max<std::int64_t>(min_bytes, 1)) continue;
      auto it = std::find_if(out.begin(), out.end(), [&](const peer_summary& s) { return s.peer == r.peer; });
      if (it == out.end()) {
        out.push_back(peer_summary{.peer = r.peer});
        rates.emplace_back();
        it = out.end() - 1;
      }
      it->transfers += 1;
      it->bytes += r.bytes;
      it->seconds += r.seconds;
      rates[static_cast<std::size_t>(it - out.begin())].push_back(static_cast<double>(r.bytes) /
                                                                  std::max(r.seconds, 1e-9));
    }
    for (std::size_t i = 0; i < out.size(); ++i) out[i].median_bytes_per_s = median(rates[i]);
    std::vector<std::size_t> order(out.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return out[a].peer < out[b].peer; });
    std::vector<peer_summary> sorted;
    for (auto i : order) sorted.push_back(out[i]);
    return sorted;
  }

  /// Peers with at least `min_transfers` transfers of at least `min_bytes` whose median rate,
  /// times `factor`, is below the median of the other peers' median rates. Small messages are
  /// left out: their time is latency, not the link's rate.
  anomaly_report anomalies(double factor = 3.0, std::int64_t min_transfers = 4,
                           std::int64_t min_bytes = std::int64_t{1} << 16) const {
    anomaly_report rep;
    std::vector<peer_summary> peers;
    for (const auto& s : by_peer(min_bytes)) {
      if (s.transfers >= min_transfers) peers.push_back(s);
    }
    if (peers.size() < 2) {
      rep.text = detail::concat("no comparison: ", peers.size(), " peer(s) with >= ", min_transfers,
                                " transfers of >= ", min_bytes, " bytes (needs 2)\n");
      return rep;
    }
    for (std::size_t i = 0; i < peers.size(); ++i) {
      std::vector<double> others;
      for (std::size_t j = 0; j < peers.size(); ++j) {
        if (j != i) others.push_back(peers[j].median_bytes_per_s);
      }
      const double typical = median(others);
      if (peers[i].median_bytes_per_s * factor < typical) {
        rep.slow_peers.push_back(peers[i].peer);
        rep.text += detail::concat("peer ", peers[i].peer, " is slow: median ",
                                   peers[i].median_bytes_per_s / 1e6, " MB/s over ", peers[i].transfers,
                                   " transfers, others ", typical / 1e6, " MB/s\n");
      }
    }
    return rep;
  }

 private:
  static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }

  std::size_t capacity_;
  std::size_t next_ = 0;
  std::int64_t total_ = 0;
  std::vector<comm_record> records_;
};

/// The communicator concept (checked with float payloads; models accept any trivially copyable T
/// for point-to-point and float, double, int32, int64 for reductions).
template <class C>
concept communicator = requires(C& c, const C& cc, typename C::request& r, std::span<float> s,
                                std::span<const float> cs) {
  { cc.rank() } -> std::convertible_to<int>;
  { cc.size() } -> std::convertible_to<int>;
  { c.isend(cs, 0, 0) } -> std::same_as<typename C::request>;
  { c.irecv(s, 0, 0) } -> std::same_as<typename C::request>;
  c.wait(r);
  { c.test(r) } -> std::convertible_to<bool>;
  c.all_reduce(s, reduce_op::sum);
  c.all_gather(cs, s);
  c.reduce_scatter(cs, s, reduce_op::sum);
  c.all_to_all(cs, s);
  c.barrier();
  c.abort(std::string{});
  { cc.stats() } -> std::convertible_to<const comm_stats&>;
  { cc.options() } -> std::convertible_to<const comm_options&>;
};

namespace detail::comm {

using clock = std::chrono::steady_clock;

/// The reusable scratch every host communicator keeps for weft's collectives and overlap
/// helpers: grown to the largest request, never initialised, released with the communicator.
/// Reusing it spares each call the page faults of a fresh allocation (tens of MiB: glibc maps
/// such blocks anew each time, and the kernel zeroes every page).
class scratch_pool {
 public:
  std::byte* get(std::size_t bytes) {
    if (bytes > size_) {
      data_.reset(new std::byte[bytes]);
      size_ = bytes;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<std::byte[]> data_;
  std::size_t size_ = 0;
};

inline double seconds_since(clock::time_point t0) {
  return std::chrono::duration<double>(clock::now() - t0).count();
}

/// Polls `done()` until it returns true or the deadline passes (returns false then). Spins
/// (yielding) for the first 20 ms, then sleeps with a growing back-off up to 200 us, so a
/// long wait does not burn a core. `between()` runs between polls (abort checks).
template <class Done, class Between>
bool poll_until(clock::time_point deadline, Done&& done, Between&& between) {
  const auto t0 = clock::now();
  auto pause = std::chrono::microseconds(2);
  for (;;) {
    if (done()) return true;
    between();
    const auto now = clock::now();
    if (now >= deadline) return done();
    if (now - t0 < std::chrono::milliseconds(20)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(
          std::min(pause, std::chrono::duration_cast<std::chrono::microseconds>(deadline - now)));
      pause = std::min(pause * 2, std::chrono::microseconds(200));
    }
  }
}

/// The message of a time-out.
inline std::string timeout_message(std::int64_t bytes, std::chrono::milliseconds timeout) {
  return concat("timed out after ", timeout.count(), " ms (", bytes, " bytes)");
}

template <class T>
std::span<const std::byte> bytes_of(std::span<const T> s) {
  return std::as_bytes(s);
}

/// A small code per element type, compared across ranks by the collectives' agreement step.
template <class T>
constexpr std::int64_t type_code() {
  return static_cast<std::int64_t>(sizeof(T)) * 16 + (std::is_floating_point_v<T> ? 1 : 0) +
         (std::is_signed_v<T> ? 2 : 0) + (std::is_same_v<T, double> ? 4 : 0);
}

}  // namespace detail::comm
}  // namespace weft
