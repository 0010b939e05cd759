// weft/overlap/buckets.hpp - gradients all-reduced bucket by bucket while the backward pass
// produces the next buckets (DDP's buckets; with staleness 1, CO2's one-step-stale overlap).
//
//   weft::bucketed_all_reduce<float, weft::mpi_communicator> ar(comm, {.staleness = 0});
//   std::vector<std::span<float>> buckets = ...;         // the same sizes on every rank
//   auto st = ar.step(buckets, [&](int i, auto& progress) { backward_layer(i, progress); });
//   // staleness 0: every bucket holds the sum over ranks when step() returns
//
// step() calls produce(i) for i = 0, 1, ... in order (the backward pass, last layer first is
// the caller's numbering); as soon as produce(i) returns, bucket i's all-reduce starts (weft's
// ring: reduce-scatter then all-gather, a state machine advanced without blocking), and it is
// advanced between and, through `progress`, during the later produce calls. Every rank starts
// the buckets in the same order, so no rank waits on a bucket another has not reached.
// Results are bitwise equal to weft::all_reduce(comm, bucket, {.algorithm = ring}).
//
// staleness = 1: step t returns once step t - 1's buckets are reduced (their reduction ran
// during step t's produce calls); step t's own stay in flight until step t + 1 (or finish()).
// The caller updates its weights with step t - 1's gradients at step t: a one-step-stale
// update, as CO2 does. Step t's buckets must not be touched until step t + 1 returns, so a
// caller alternates two gradient buffers. finish() completes what is in flight.
#pragma once

#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/overlap/ring_pipeline.hpp"
#include "weft/overlap/stats.hpp"

namespace weft {

struct bucket_options {
  /// 0: each step's buckets are reduced when step() returns; 1: when the next step() returns.
  int staleness = 0;
  reduce_op op = reduce_op::sum;
  int tag = 13;
  bool check_across_ranks = true;
  std::vector<overlap_event>* timeline = nullptr;
};

namespace detail::overlap {

/// A ring all-reduce of one buffer, advanced by poll() without blocking (or by finish()).
/// The same block order and additions as weft::all_reduce's ring: bitwise equal results.
template <class Comm, class T>
class async_ring_all_reduce {
 public:
  async_ring_all_reduce(Comm& c, std::span<T> data, reduce_op op, int tag)
      : c_(c),
        data_(data),
        op_(op),
        tag_(tag),
        off_(comm::even_offsets(static_cast<std::int64_t>(data.size()), c.size())),
        tmp_(new T[static_cast<std::size_t>(std::max<std::int64_t>(off_[1] - off_[0], 1))]) {
    posted_ = comm::clock::now();
    if (c.size() > 1 && !data.empty()) post();
  }

  bool done() const { return step_ >= 2 * (c_.size() - 1) || c_.size() == 1 || data_.empty(); }
  double posted_s_ago() const { return comm::seconds_since(posted_); }

  /// Advances as far as possible without blocking; returns done().
  bool poll() {
    while (!done()) {
      if (!c_.test(recv_) || !c_.test(send_)) return false;
      advance();
    }
    return true;
  }
  void finish() {
    while (!done()) {
      c_.wait(recv_);
      c_.wait(send_);
      advance();
    }
  }

 private:
  // Steps 0 .. w-2 reduce-scatter (block js sent, block jr received into tmp and reduced);
  // steps w-1 .. 2w-3 all-gather (received straight into place).
  void post() {
    const int w = c_.size(), r = c_.rank(), right = (r + 1) % w, left = (r - 1 + w) % w;
    const bool scatter = step_ < w - 1;
    const int s = scatter ? step_ : step_ - (w - 1);
    const int js = scatter ? comm::mod(r - 1 - s, w) : comm::mod(r - s, w);
    const int jr = scatter ? comm::mod(r - 2 - s, w) : comm::mod(r - s - 1, w);
    T* base = data_.data();
    recv_ = c_.irecv(std::span<T>(scatter ? tmp_.get() : base + off_[jr],
                                  static_cast<std::size_t>(off_[jr + 1] - off_[jr])),
                     left, tag_);
    send_ = c_.isend(std::span<const T>(base + off_[js], static_cast<std::size_t>(off_[js + 1] - off_[js])),
                     right, tag_);
    jr_ = jr;
  }
  void advance() {
    const int w = c_.size();
    if (step_ < w - 1) {
      T* blk = data_.data() + off_[jr_];
      comm::reduce_into(blk, tmp_.get(), blk, off_[jr_ + 1] - off_[jr_], op_);
    }
    ++step_;
    if (!done()) post();
  }

  Comm& c_;
  std::span<T> data_;
  reduce_op op_;
  int tag_;
  std::vector<std::int64_t> off_;
  std::unique_ptr<T[]> tmp_;  // one block in flight (uninitialised: it is received into)
  typename Comm::request recv_{}, send_{};
  int step_ = 0, jr_ = 0;
  comm::clock::time_point posted_;
};

}  // namespace detail::overlap

template <class T, class Comm>
class bucketed_all_reduce {
  static_assert(Comm::host_memory, "weft::bucketed_all_reduce reduces on the host (NCCL form planned)");

 public:
  bucketed_all_reduce(Comm& c, bucket_options o = {}) : c_(c), o_(o) {
    detail::require(o.staleness == 0 || o.staleness == 1, "bucketed_all_reduce", "options.staleness",
                    "0 or 1", o.staleness);
  }
  bucketed_all_reduce(const bucketed_all_reduce&) = delete;
  bucketed_all_reduce& operator=(const bucketed_all_reduce&) = delete;

  /// One training step: produce(i [, progress]) fills bucket i; its all-reduce starts at once.
  template <class Produce>
  overlap_stats step(std::span<const std::span<T>> buckets, Produce&& produce) {
    check(buckets);
    detail::overlap::recorder rec(o_.timeline);
    std::vector<std::unique_ptr<op_t>> mine;
    auto progress = [&] {
      poll_all(previous_, rec);
      poll_all(mine, rec);
    };
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      detail::overlap::guarded(c_, [&] {
        rec.compute(static_cast<int>(i), [&] {
          if constexpr (std::is_invocable_v<Produce&, int, decltype(progress)&>) {
            produce(static_cast<int>(i), progress);
          } else {
            produce(static_cast<int>(i));
          }
        });
      });
      // Buckets in flight at once must not match each other's messages: one tag per bucket
      // and per step parity (staleness 1 has two steps' buckets in flight).
      const int tag = o_.tag + 2 * static_cast<int>(i) + static_cast<int>(steps_ % 2);
      mine.push_back(std::make_unique<op_t>(c_, buckets[i], o_.op, tag));
      progress();
    }
    finish_all(previous_, rec);
    previous_.clear();
    ++steps_;
    if (o_.staleness == 0) {
      finish_all(mine, rec);
    } else {
      previous_ = std::move(mine);
    }
    return rec.finish();
  }

  /// Completes the reductions still in flight (staleness 1: the last step's buckets). Its
  /// statistics are returned; the timeline keeps the last step's.
  overlap_stats finish() {
    detail::overlap::recorder rec(nullptr);
    finish_all(previous_, rec);
    previous_.clear();
    return rec.finish();
  }

  ~bucketed_all_reduce() {
    try {
      finish();
    } catch (...) {  // a failed communicator: nothing left to complete
    }
  }

 private:
  using op_t = detail::overlap::async_ring_all_reduce<Comm, T>;

  void check(std::span<const std::span<T>> buckets) {
    std::int64_t total = 0;
    std::uint64_t hash = 0;
    for (const auto& b : buckets) {  // every bucket's size must agree, not only the total
      total += static_cast<std::int64_t>(b.size());
      hash = hash * 1000003u + static_cast<std::uint64_t>(b.size()) + 1u;
    }
    const auto sizes_hash = static_cast<std::int64_t>(hash >> 1);
    detail::comm::agree(
        c_, "bucketed_all_reduce::step", "buckets",
        {detail::comm::type_code<T>(), static_cast<std::int64_t>(buckets.size()), total,
         static_cast<std::int64_t>(o_.op), sizes_hash, o_.tag * 4 + o_.staleness},
        [&] {
          detail::require(o_.tag >= 0 && o_.tag + 2 * static_cast<std::int64_t>(buckets.size()) < 15000,
                          "bucketed_all_reduce::step", "buckets",
                          detail::concat("fewer than (15000 - options.tag) / 2 = ", (15000 - o_.tag) / 2,
                                         " buckets (one tag pair each)"),
                          buckets.size());
          for (std::size_t i = 0; i < buckets.size(); ++i) {
            detail::require(buckets[i].data() != nullptr || buckets[i].empty(), "bucketed_all_reduce::step",
                            "buckets", "non-null spans", detail::concat("bucket ", i, " is null"));
          }
        },
        o_.check_across_ranks);
  }

  void poll_all(std::vector<std::unique_ptr<op_t>>& ops, detail::overlap::recorder& rec) {
    for (auto& op : ops) {
      if (op && !op->done() && op->poll())
        rec.transfer(-1, std::max(0.0, rec.now() - op->posted_s_ago()), rec.now());
    }
  }
  void finish_all(std::vector<std::unique_ptr<op_t>>& ops, detail::overlap::recorder& rec) {
    for (auto& op : ops) {
      if (!op || op->done()) continue;
      const double posted = rec.now() - op->posted_s_ago();
      rec.wait(-1, [&] { op->finish(); });
      rec.transfer(-1, std::max(0.0, posted), rec.now());
    }
  }

  Comm& c_;
  bucket_options o_;
  std::vector<std::unique_ptr<op_t>> previous_;
  std::int64_t steps_ = 0;
};

}  // namespace weft
