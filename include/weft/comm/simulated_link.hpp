// weft/comm/simulated_link.hpp - a communicator decorator that delivers each message no earlier
// than a modelled link allows.
//
//   weft::mpi_communicator world(MPI_COMM_WORLD);
//   weft::simulated_link link(world, {.latency_s = 5e-6, .bandwidth_bytes_per_s = 2e9});
//   auto r = link.isend(data, peer);  ...  link.wait(r);   // as a 2 GB/s link would
//
// Why: on a machine whose transport cannot overlap (MPI over shared memory moves the bytes with
// the CPU, inside MPI calls), "compute chunk i while chunk i+1 travels" cannot be measured. A
// simulated link behaves like a NIC or NVLink: the message travels while the caller computes,
// and a wait sleeps (no CPU burnt) until the modelled arrival. Engines can test their own
// schedules with it, and the slow-peer report can be exercised by slowing one rank's link.
//
// The model, per sending rank and destination: a message of b bytes posted at t starts when
// the link to that destination is free (messages to one peer are serialised), occupies it for
// b * slowdown / bandwidth seconds, and arrives latency seconds after it left. Sender and
// receiver both complete at the arrival time. The arrival time travels with the message in a
// small header (tag + 16384), so ranks must share a clock: ranks on one host (steady_clock is
// the system's monotonic clock), which is what a simulated link is for. The payload itself
// moves over the wrapped communicator at its own speed (far faster than the modelled link).
//
// Collectives are weft's own (weft/comm/collectives.hpp) over the simulated point-to-point, so
// they take the modelled time too. User tags must be below 15000.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"

namespace weft {

struct link_model {
  double latency_s = 5e-6;
  double bandwidth_bytes_per_s = 10e9;
  /// This rank's outgoing transfers take `slowdown` times longer (a degraded NIC or cable).
  double slowdown = 1.0;
};

template <class Comm>
class simulated_link : public detail::comm::ring_collectives<simulated_link<Comm>> {
  static_assert(Comm::host_memory, "weft::simulated_link decorates host-memory communicators (local, MPI)");

 public:
  static constexpr bool host_memory = Comm::host_memory;
  static constexpr int header_tag_offset = 16384;

  struct request {
    typename Comm::request data{};
    typename Comm::request header{};
    // The header: when the sender posted the message and when it arrives (steady_clock ticks).
    std::shared_ptr<std::array<std::int64_t, 2>> stamp;
    detail::comm::clock::time_point arrive{};
    bool is_recv = false, done = true;  // a default-constructed request is complete
    comm_kind op = comm_kind::send;
    int peer = -1;
    std::int64_t bytes = 0;
    detail::comm::clock::time_point start{};
  };

  simulated_link(Comm& inner, link_model model)
      : inner_(&inner),
        model_(model),
        busy_until_(static_cast<std::size_t>(inner.size())),
        stats_(inner.options().stats_capacity) {
    detail::require(model.latency_s >= 0, "simulated_link", "model.latency_s", ">= 0", model.latency_s);
    detail::require(model.bandwidth_bytes_per_s > 0, "simulated_link", "model.bandwidth_bytes_per_s", "> 0",
                    model.bandwidth_bytes_per_s);
    detail::require(model.slowdown > 0, "simulated_link", "model.slowdown", "> 0", model.slowdown);
  }

  int rank() const { return inner_->rank(); }
  int size() const { return inner_->size(); }
  const comm_options& options() const { return inner_->options(); }
  const comm_stats& stats() const { return stats_; }
  comm_stats& stats() { return stats_; }
  const link_model& model() const { return model_; }
  std::byte* scratch(std::size_t bytes) { return inner_->scratch(bytes); }
  Comm& inner() { return *inner_; }

  template <class T>
  request isend(std::span<const T> data, int peer, int tag = 0) {
    detail::require(tag >= 0 && tag < header_tag_offset, "simulated_link::isend", "tag",
                    detail::concat("a tag in [0, ", header_tag_offset, ")"), tag);
    detail::require(peer >= 0 && peer < size(), "simulated_link::isend", "peer",
                    detail::concat("a rank in [0, ", size(), ")"), peer);
    const auto now = detail::comm::clock::now();
    const auto bytes = static_cast<std::int64_t>(data.size_bytes());
    auto& busy = busy_until_[static_cast<std::size_t>(peer)];
    const auto begin = std::max(now, busy);
    const auto leave =
        begin + to_duration(static_cast<double>(bytes) * model_.slowdown / model_.bandwidth_bytes_per_s);
    busy = leave;
    request r;
    r.done = false;
    r.arrive = leave + to_duration(model_.latency_s);
    r.stamp = std::make_shared<std::array<std::int64_t, 2>>(
        std::array<std::int64_t, 2>{now.time_since_epoch().count(), r.arrive.time_since_epoch().count()});
    r.header =
        inner_->isend(std::span<const std::int64_t>(r.stamp->data(), 2), peer, tag + header_tag_offset);
    r.data = inner_->isend(data, peer, tag);
    r.op = comm_kind::send;
    r.peer = peer;
    r.bytes = bytes;
    r.start = now;
    return r;
  }
  template <class T>
  request isend(std::span<T> data, int peer, int tag = 0) {
    return isend(std::span<const T>(data), peer, tag);
  }

  template <class T>
  request irecv(std::span<T> data, int peer, int tag = 0) {
    detail::require(tag >= 0 && tag < header_tag_offset, "simulated_link::irecv", "tag",
                    detail::concat("a tag in [0, ", header_tag_offset, ")"), tag);
    request r;
    r.done = false;
    r.stamp = std::make_shared<std::array<std::int64_t, 2>>();
    r.header = inner_->irecv(std::span<std::int64_t>(r.stamp->data(), 2), peer, tag + header_tag_offset);
    r.data = inner_->irecv(data, peer, tag);
    r.is_recv = true;
    r.op = comm_kind::recv;
    r.peer = peer;
    r.bytes = static_cast<std::int64_t>(data.size_bytes());
    r.start = detail::comm::clock::now();
    return r;
  }

  bool test(request& r) {
    if (r.done) return true;
    if (!inner_->test(r.header) || !inner_->test(r.data)) return false;
    if (detail::comm::clock::now() < arrival(r)) return false;
    complete(r);
    return true;
  }

  /// Waits for the wrapped transfer (with its time-out), then sleeps until the modelled arrival
  /// (a modelled arrival later than the time-out is a time-out too).
  void wait(request& r) {
    if (r.done) return;
    const auto deadline = detail::comm::clock::now() + options().timeout;
    inner_->wait(r.header);
    inner_->wait(r.data);
    if (arrival(r) > deadline) {
      std::this_thread::sleep_until(deadline);
      throw comm_error(rank(), r.peer, comm_kind_name(r.op),
                       detail::concat("the simulated link needs longer than the time-out of ",
                                      options().timeout.count(), " ms (", r.bytes, " bytes)"));
    }
    std::this_thread::sleep_until(arrival(r));
    complete(r);
  }

  void abort(const std::string& reason) { inner_->abort(reason); }

  // The transport's collectives are weft's own ring (detail::comm::ring_collectives).

 private:
  static detail::comm::clock::duration to_duration(double s) {
    return std::chrono::duration_cast<detail::comm::clock::duration>(std::chrono::duration<double>(s));
  }
  detail::comm::clock::time_point arrival(const request& r) const {
    return r.is_recv ? detail::comm::clock::time_point(detail::comm::clock::duration((*r.stamp)[1]))
                     : r.arrive;
  }
  // A record's duration is the message's time on the modelled link, from the sender's post to
  // its arrival (queueing behind earlier messages included), not when a wait happened to look.
  void complete(request& r) {
    r.done = true;
    const auto& st = *r.stamp;
    const detail::comm::clock::duration on_link(st[1] - st[0]);
    const double seconds = std::chrono::duration<double>(on_link).count();
    stats_.add(comm_record{r.op, r.peer, r.bytes, seconds});
  }

  Comm* inner_;
  link_model model_;
  std::vector<detail::comm::clock::time_point> busy_until_;
  comm_stats stats_;
};

}  // namespace weft
