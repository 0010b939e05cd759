// weft/comm/local.hpp - a world of ranks that are threads of one process.
//
//   weft::local_world world(4);                    // 4 ranks
//   std::thread t([&] { auto c = world.communicator(1); ... });
//
// local_communicator is a complete communicator model (weft/comm/communicator.hpp): sends are
// buffered (the payload is copied at isend, so a send completes at once), receives match in
// the order they were posted per (source, tag), waits sleep on a condition variable and
// throw weft::comm_error past the time-out or when another rank abort()s. Its collectives are
// weft's own ring algorithms (weft/comm/collectives.hpp). It is how code written for a
// communicator is tested without MPI, and the transport simulated_link decorates in the
// single-process tests.
#pragma once

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"

namespace weft {

class local_communicator;

namespace detail::comm {

struct local_recv {
  std::byte* dst = nullptr;
  std::int64_t bytes = 0;
  bool done = false;
  std::string error;  // a size mismatch, reported by the receiver's wait
};

struct local_state {
  explicit local_state(int n) : size(n) {}
  int size;
  std::mutex m;
  std::condition_variable cv;
  using key = std::tuple<int, int, int>;  // (source, destination, tag)
  std::map<key, std::deque<std::vector<std::byte>>> messages;
  std::map<key, std::deque<std::shared_ptr<local_recv>>> posted;
  int aborted_by = -1;
  std::string abort_reason;
};

}  // namespace detail::comm

/// The shared state of a world of `size` ranks; hands out one communicator per rank.
class local_world {
 public:
  explicit local_world(int size, comm_options opts = {})
      : state_(std::make_shared<detail::comm::local_state>(size)), opts_(opts) {
    detail::require(size >= 1, "local_world", "size", ">= 1", size);
  }
  int size() const { return state_->size; }
  inline local_communicator communicator(int rank) const;

 private:
  std::shared_ptr<detail::comm::local_state> state_;
  comm_options opts_;
};

/// One rank of a local_world (move it into its thread; one thread per communicator).
class local_communicator : public detail::comm::ring_collectives<local_communicator> {
 public:
  /// A pending operation; a default-constructed request is complete.
  struct request {
    std::shared_ptr<detail::comm::local_recv> recv;  // null for sends (complete at once)
    comm_kind op = comm_kind::send;
    int peer = -1;
    std::int64_t bytes = 0;
    detail::comm::clock::time_point start{};
  };

  static constexpr bool host_memory = true;

  local_communicator(std::shared_ptr<detail::comm::local_state> s, int rank, comm_options opts)
      : s_(std::move(s)), rank_(rank), opts_(opts), stats_(opts.stats_capacity) {}

  int rank() const { return rank_; }
  int size() const { return s_->size; }
  const comm_options& options() const { return opts_; }
  const comm_stats& stats() const { return stats_; }
  comm_stats& stats() { return stats_; }
  /// Scratch for weft's collectives and overlap helpers (reused; see detail::comm::scratch_pool).
  std::byte* scratch(std::size_t bytes) { return scratch_.get(bytes); }
  static constexpr const char* name() { return "local"; }

  template <class T>
  request isend(std::span<const T> data, int peer, int tag = 0) {
    check_usable("isend", peer);
    auto b = std::as_bytes(data);
    std::lock_guard lk(s_->m);
    const auto key = std::make_tuple(rank_, peer, tag);
    auto& waiting = s_->posted[key];
    if (!waiting.empty()) {
      auto r = waiting.front();
      waiting.pop_front();
      deliver(*r, b.data(), static_cast<std::int64_t>(b.size()));
    } else {
      s_->messages[key].emplace_back(b.begin(), b.end());
    }
    s_->cv.notify_all();
    stats_.add({comm_kind::send, peer, static_cast<std::int64_t>(b.size()), 0.0});
    return request{nullptr, comm_kind::send, peer, static_cast<std::int64_t>(b.size()),
                   detail::comm::clock::now()};
  }
  template <class T>
  request isend(std::span<T> data, int peer, int tag = 0) {
    return isend(std::span<const T>(data), peer, tag);
  }

  template <class T>
  request irecv(std::span<T> data, int peer, int tag = 0) {
    check_usable("irecv", peer);
    auto b = std::as_writable_bytes(data);
    auto r = std::make_shared<detail::comm::local_recv>();
    r->dst = b.data();
    r->bytes = static_cast<std::int64_t>(b.size());
    std::lock_guard lk(s_->m);
    const auto key = std::make_tuple(peer, rank_, tag);
    auto& queue = s_->messages[key];
    if (!queue.empty()) {
      deliver(*r, queue.front().data(), static_cast<std::int64_t>(queue.front().size()));
      queue.pop_front();
    } else {
      s_->posted[key].push_back(r);
    }
    return request{r, comm_kind::recv, peer, r->bytes, detail::comm::clock::now()};
  }

  bool test(request& r) {
    if (!r.recv) return true;
    if (failed_)
      throw comm_error(rank_, r.peer, comm_kind_name(r.op),
                       "the communicator failed earlier; make a new one");
    std::unique_lock lk(s_->m);
    return finish_locked(r);
  }

  void wait(request& r) {
    if (!r.recv) return;
    if (failed_)
      throw comm_error(rank_, r.peer, comm_kind_name(r.op),
                       "the communicator failed earlier; make a new one");
    std::unique_lock lk(s_->m);
    const auto deadline = detail::comm::clock::now() + opts_.timeout;
    while (!finish_locked(r)) {
      if (s_->aborted_by >= 0 && s_->aborted_by != rank_) fail_aborted(r, lk);
      if (s_->cv.wait_until(lk, deadline) == std::cv_status::timeout && !finish_locked(r)) {
        fail_locked();
        throw comm_error(rank_, r.peer, comm_kind_name(r.op),
                         detail::comm::timeout_message(r.bytes, opts_.timeout));
      }
    }
  }

  /// Every other rank's pending and later waits throw comm_error naming this rank.
  void abort(const std::string& reason) {
    std::lock_guard lk(s_->m);
    if (s_->aborted_by < 0) {
      s_->aborted_by = rank_;
      s_->abort_reason = reason;
    }
    fail_locked();
    s_->cv.notify_all();
  }

  // The transport's collectives are weft's own ring (detail::comm::ring_collectives).

 private:
  static void deliver(detail::comm::local_recv& r, const std::byte* src, std::int64_t bytes) {
    if (bytes != r.bytes) {
      r.error = detail::concat("message of ", bytes, " bytes for a receive of ", r.bytes, " bytes");
    } else if (bytes > 0) {
      std::memcpy(r.dst, src, static_cast<std::size_t>(bytes));
    }
    r.done = true;
  }

  bool finish_locked(request& r) {
    if (!r.recv->done) return false;
    if (!r.recv->error.empty()) {
      fail_locked();
      throw comm_error(rank_, r.peer, comm_kind_name(r.op), r.recv->error);
    }
    stats_.add({r.op, r.peer, r.bytes, detail::comm::seconds_since(r.start)});
    r.recv.reset();
    return true;
  }

  [[noreturn]] void fail_aborted(const request& r, std::unique_lock<std::mutex>&) {
    fail_locked();
    throw comm_error(rank_, s_->aborted_by, comm_kind_name(r.op),
                     detail::concat("rank ", s_->aborted_by, " aborted: ", s_->abort_reason));
  }

  /// Marks this communicator failed and withdraws its posted receives: their buffers may be
  /// gone once the error unwinds, and a late sender must not write into them (the message is
  /// queued instead, unread). Called with the world's mutex held.
  void fail_locked() {
    failed_ = true;
    for (auto& [key, queue] : s_->posted) {
      if (std::get<1>(key) == rank_) queue.clear();
    }
  }

  void check_usable(const char* op, int peer) {
    detail::require(peer >= 0 && peer < size(), op, "peer", detail::concat("a rank in [0, ", size(), ")"),
                    peer);
    if (failed_) throw comm_error(rank_, peer, op, "the communicator failed earlier; make a new one");
    std::lock_guard lk(s_->m);
    if (s_->aborted_by >= 0 && s_->aborted_by != rank_) {
      fail_locked();
      throw comm_error(rank_, s_->aborted_by, op,
                       detail::concat("rank ", s_->aborted_by, " aborted: ", s_->abort_reason));
    }
  }

  std::shared_ptr<detail::comm::local_state> s_;
  int rank_;
  comm_options opts_;
  comm_stats stats_;
  detail::comm::scratch_pool scratch_;
  bool failed_ = false;
};

inline local_communicator local_world::communicator(int rank) const {
  detail::require(rank >= 0 && rank < size(), "local_world::communicator", "rank",
                  detail::concat("a rank in [0, ", size(), ")"), rank);
  return local_communicator(state_, rank, opts_);
}

}  // namespace weft
