// weft/overlap/stats.hpp - what every overlap helper returns, and the per-step timeline.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

#include "weft/comm/communicator.hpp"

namespace weft {

/// Times of one overlapped call, in seconds.
///   total_s         wall time of the call
///   compute_s       time inside the compute callable (the caller's GEMM, producer, ...)
///   comm_s          summed over the transfers: from posting each until it was seen complete
///                   (tests run between compute pieces, so this is an upper bound)
///   exposed_comm_s  total_s - compute_s: the time the call was not computing (waiting for
///                   transfers, posting them, reducing received data)
///   efficiency      the fraction of the communication hidden behind compute:
///                   1 - exposed_comm_s / comm_s, clamped to [0, 1] (1 when nothing travelled)
struct overlap_stats {
  double total_s = 0;
  double compute_s = 0;
  double comm_s = 0;
  double exposed_comm_s = 0;
  double efficiency = 1;
};

/// One interval of a timeline (seconds from the call's start), for plots of a schedule.
struct overlap_event {
  enum kind_t { compute, transfer, wait } kind;
  int step;
  double t0, t1;
};

namespace detail::overlap {

using clock = std::chrono::steady_clock;

/// Accumulates an overlap_stats and, when asked, a timeline.
class recorder {
 public:
  explicit recorder(std::vector<overlap_event>* timeline) : t0_(clock::now()), timeline_(timeline) {
    if (timeline_) timeline_->clear();
  }
  double now() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }

  template <class F>
  void compute(int step, F&& f) {
    const double a = now();
    f();
    const double b = now();
    stats_.compute_s += b - a;
    if (timeline_) timeline_->push_back({overlap_event::compute, step, a, b});
  }
  template <class F>
  void wait(int step, F&& f) {
    const double a = now();
    f();
    if (timeline_) timeline_->push_back({overlap_event::wait, step, a, now()});
  }
  void transfer(int step, double posted, double seen_done) {
    stats_.comm_s += seen_done - posted;
    if (timeline_) timeline_->push_back({overlap_event::transfer, step, posted, seen_done});
  }
  overlap_stats finish() {
    stats_.total_s = now();
    stats_.exposed_comm_s = std::max(0.0, stats_.total_s - stats_.compute_s);
    stats_.efficiency =
        stats_.comm_s > 0 ? std::clamp(1.0 - stats_.exposed_comm_s / stats_.comm_s, 0.0, 1.0) : 1.0;
    return stats_;
  }

 private:
  clock::time_point t0_;
  std::vector<overlap_event>* timeline_;
  overlap_stats stats_;
};

/// A set of in-flight requests of one communicator, each with the step it belongs to and its
/// posting time; poll() tests them all and records the ones seen complete.
template <class Comm>
class inflight {
 public:
  inflight(Comm& c, recorder& rec) : c_(c), rec_(rec) {}
  /// Adds a request; returns its handle (an index) for wait_one().
  std::size_t add(typename Comm::request r, int step) {
    items_.push_back({std::move(r), step, rec_.now(), false});
    return items_.size() - 1;
  }
  void poll() {
    for (auto& it : items_) {
      if (!it.done && c_.test(it.r)) done(it);
    }
  }
  void wait_one(std::size_t h) {
    auto& it = items_[h];
    if (it.done) return;
    rec_.wait(it.step, [&] { c_.wait(it.r); });
    done(it);
  }
  void wait_all() {
    for (std::size_t h = 0; h < items_.size(); ++h) wait_one(h);
  }
  bool all_done() const {
    return std::all_of(items_.begin(), items_.end(), [](const item& i) { return i.done; });
  }

 private:
  struct item {
    typename Comm::request r;
    int step;
    double posted;
    bool done;
  };
  void done(item& it) {
    it.done = true;
    rec_.transfer(it.step, it.posted, rec_.now());
  }
  Comm& c_;
  recorder& rec_;
  std::vector<item> items_;
};

}  // namespace detail::overlap
}  // namespace weft
