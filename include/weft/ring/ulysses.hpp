// weft/ring/ulysses.hpp - Ulysses (DeepSpeed-Ulysses / DSP) re-sharding by all-to-all, and the
// sub-communicators of a 2-D (Ulysses x ring) grid of ranks.
//
//   weft::sequence_to_heads(comm, x_seq, x_heads);   // [B, Tl, H, D] -> [B, W*Tl, H/W, D]
//   ... attention over the whole sequence, H/W heads per rank ...
//   weft::heads_to_sequence(comm, o_heads, o_seq);   // [B, W*Tl, H/W, D] -> [B, Tl, H, D]
//
//   weft::grid_2d grid(world, 4);                     // world = R x 4 ranks
//   weft::sequence_to_heads(grid.ulysses(), q, q_heads);
//   weft::ring_attention(be, grid.ring(), ...);       // over the R groups' shards
//
// The re-sharding. W ranks (W = comm.size()), rank r holds a contiguous block of Tl rows of a
// sequence of W*Tl rows with all H heads: x_r(b, t, h, d) = X(b, r*Tl + t, h, d). Ulysses gives
// each rank the whole sequence for Hl = H / W of the heads instead, so attention (which mixes
// rows, never heads) runs locally:
//   sequence_to_heads:  out_r(b, j*Tl + t, hl, d) = x_j(b, t, r*Hl + hl, d)  = X(b, j*Tl+t, r*Hl+hl, d)
//   heads_to_sequence:  out_r(b, t, j*Hl + hl, d) = y_j(b, r*Tl + t, hl, d)
// (exact inverses). One all-to-all does it: block j of rank r's send buffer is its rows for
// head group j, packed [B, Tl, Hl, D]; it lands as block r of rank j's receive buffer, which
// is unpacked into row block r (sequence_to_heads) or head group r (heads_to_sequence). Each
// rank sends (W-1)/W of its shard per call (an attention layer makes four: q, k, v in, o out),
// where a ring passes W-1 whole K/V shards.
// The views may be strided (packing reads and unpacking writes through the strides); elements
// are moved bit for bit, so any trivially copyable type works (float, double, bf16, f16, ...).
//
// Checks (on every rank, agreed across ranks before anything moves, as weft's collectives do):
// valid views, H divisible by W, out's shape exactly the one above, in and out disjoint, and
// the same (element type, B, Tl, H, D, direction) on every rank. Bad input on one rank throws
// weft::invalid_argument on every rank, never a hang. out is written only after the exchange
// completed, so it is untouched on any error. Host-memory communicators (local, MPI, simulated
// links) for now; the device (NCCL) form needs device packing kernels.
//
// The 2-D grid (USP, Fang & Zhao 2024; LoongTrain's 2-D attention, Gu et al. 2024): W = R x U
// ranks. Ulysses groups are consecutive ranks (group g = r / U, member m = r % U): they share
// a node's fast links, and Ulysses' all-to-all is the bandwidth-hungry step. Ring groups are
// the ranks with the same m across groups (stride U): the ring passes K/V blocks between
// nodes while attention computes. For W = 6, U = 3:
//   ulysses groups (rows):    {0 1 2} {3 4 5}      grid.ulysses() on rank 4: ranks {3, 4, 5}
//   ring groups (columns):    {0 3} {1 4} {2 5}    grid.ring() on rank 4:    ranks {1, 4}
// The sequence is split over the R ring groups by the ring's layout (weft/ring/layout.hpp),
// and each group's shard into U contiguous parts, member m holding part m. sequence_to_heads
// over ulysses() then reassembles the group's shard (parts in member order) for H/U heads, and
// ring attention over ring() covers the whole sequence for those heads. GQA: K and V are
// re-sharded by their own Hkv heads, so Hkv must be divisible by U too (repeat K/V heads
// first otherwise).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"
#include "weft/core/error.hpp"
#include "weft/core/tensor.hpp"

namespace weft {

/// A communicator over a subset of a parent communicator's ranks: rank i of the sub-communicator
/// is parent rank `ranks[i]`. Point-to-point calls translate the peer and go to the parent (its
/// requests, waits, time-outs and failures); weft's own ring collectives run over them. abort,
/// options, stats and scratch are the parent's (the stats record parent ranks as peers).
///
/// Tags: a sub-communicator uses the parent's tags (weft's collectives included). Two
/// sub-communicators of one parent may be used side by side only when no two ranks are members
/// of both, so no pair of ranks exchanges messages over both; this holds for the rows and
/// columns of a 2-D grid (grid_2d). Overlapping sub-communicators need distinct user tags and
/// must not run collectives in a different order on different ranks.
///
/// The parent must outlive the sub-communicator; use it from the parent's thread only.
template <class Comm>
class sub_communicator : public detail::comm::ring_collectives<sub_communicator<Comm>> {
  static_assert(Comm::host_memory,
                "weft::sub_communicator runs weft's collectives over point-to-point: host-memory "
                "communicators (local, MPI, simulated links) for now");

 public:
  using request = typename Comm::request;
  static constexpr bool host_memory = Comm::host_memory;
  static constexpr std::int64_t max_message_bytes = detail::comm::max_message_bytes<Comm>();

  /// `ranks`: distinct parent ranks that include the parent's own. Local check only (every
  /// member must construct it with the same list; grid_2d agrees on its lists first).
  sub_communicator(Comm& parent, std::vector<int> ranks) : parent_(&parent), ranks_(std::move(ranks)) {
    constexpr const char* fn = "sub_communicator";
    const int n = parent.size();
    std::vector<char> seen(static_cast<std::size_t>(n), 0);
    for (std::size_t i = 0; i < ranks_.size(); ++i) {
      const int p = ranks_[i];
      detail::require(p >= 0 && p < n, fn, "ranks", detail::concat("parent ranks in [0, ", n, ")"), p);
      detail::require(!seen[static_cast<std::size_t>(p)], fn, "ranks", "distinct parent ranks",
                      detail::concat("rank ", p, " twice"));
      seen[static_cast<std::size_t>(p)] = 1;
      if (p == parent.rank()) rank_ = static_cast<int>(i);
    }
    detail::require(rank_ >= 0, fn, "ranks",
                    detail::concat("a list that includes this parent rank ", parent.rank()),
                    "a list without it");
  }

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(ranks_.size()); }
  /// The parent rank of sub-communicator rank `r`.
  int parent_rank(int r) const { return ranks_.at(static_cast<std::size_t>(r)); }
  const std::vector<int>& ranks() const { return ranks_; }
  Comm& parent() const { return *parent_; }
  const comm_options& options() const { return parent_->options(); }
  const comm_stats& stats() const { return parent_->stats(); }
  comm_stats& stats() { return parent_->stats(); }
  std::byte* scratch(std::size_t bytes) requires requires(Comm& p) { p.scratch(std::size_t{}); }
  { return parent_->scratch(bytes); }

  template <class T>
  request isend(std::span<const T> data, int peer, int tag = 0) {
    return parent_->isend(data, translate("isend", peer), tag);
  }
  template <class T>
  request isend(std::span<T> data, int peer, int tag = 0) {
    return isend(std::span<const T>(data), peer, tag);
  }
  template <class T>
  request irecv(std::span<T> data, int peer, int tag = 0) {
    return parent_->irecv(data, translate("irecv", peer), tag);
  }
  void wait(request& r) { parent_->wait(r); }
  bool test(request& r) { return parent_->test(r); }
  void abort(const std::string& reason) { parent_->abort(reason); }

  // Persistent requests (MPI), forwarded where the parent has them.
  template <class T, class C = Comm>
  requires requires(C& p, std::span<const T> s) { p.send_init(s, 0, 0); }
  auto send_init(std::span<const T> data, int peer, int tag = 0) {
    return parent_->send_init(data, translate("send_init", peer), tag);
  }
  template <class T, class C = Comm>
  requires requires(C& p, std::span<T> s) { p.recv_init(s, 0, 0); }
  auto recv_init(std::span<T> data, int peer, int tag = 0) {
    return parent_->recv_init(data, translate("recv_init", peer), tag);
  }
  template <class P, class C = Comm>
  requires requires(C& c, P& p) { c.start(p); }
  auto start(P& p) { return parent_->start(p); }

  // The collectives are weft's own ring (detail::comm::ring_collectives).

 private:
  int translate(const char* op, int peer) const {
    detail::require(peer >= 0 && peer < size(), op, "peer", detail::concat("a rank in [0, ", size(), ")"),
                    peer);
    return ranks_[static_cast<std::size_t>(peer)];
  }

  Comm* parent_;
  std::vector<int> ranks_;
  int rank_ = -1;
};

/// The 2-D (USP / LoongTrain) split of a world of R x U ranks: Ulysses groups of U consecutive
/// ranks (group g = rank / U, member m = rank % U), ring groups of the R ranks with one m.
/// Constructing it is collective over `world`: ulysses_size is checked and agreed on every rank
/// (weft::invalid_argument on every rank when it is < 1, does not divide the world size, or
/// differs between ranks). The world must outlive the grid.
template <class Comm>
class grid_2d {
 public:
  grid_2d(Comm& world, int ulysses_size)
      : u_(checked(world, ulysses_size)),
        ulysses_(world, members(world.rank() / u_ * u_, 1, u_)),
        ring_(world, members(world.rank() % u_, u_, world.size() / u_)) {}

  int ulysses_size() const { return u_; }
  int ring_size() const { return ring_.size(); }
  /// This rank's group g (its rank in ring()) and member m (its rank in ulysses()).
  int group() const { return ring_.rank(); }
  int member() const { return ulysses_.rank(); }
  /// The U ranks of this rank's group, by member.
  sub_communicator<Comm>& ulysses() { return ulysses_; }
  /// The R ranks with this rank's member index, by group.
  sub_communicator<Comm>& ring() { return ring_; }

 private:
  static int checked(Comm& world, int u) {
    const int w = world.size();
    detail::comm::agree(
        world, "grid_2d", "ulysses_size", {u, w, 0, 0, 0, 0},
        [&] {
          detail::require(u >= 1 && w % u == 0, "grid_2d", "ulysses_size",
                          detail::concat("a divisor of the world size ", w, " (world = ring x ulysses)"), u);
        },
        true);
    return u;
  }
  static std::vector<int> members(int first, int step, int count) {
    std::vector<int> v(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = first + i * step;
    return v;
  }

  int u_;
  sub_communicator<Comm> ulysses_, ring_;
};

struct reshard_options {
  /// Agree on the arguments across ranks first (bad input: invalid_argument on every rank).
  bool check_across_ranks = true;
};

namespace detail::ulysses {

/// dst = src, element by element (same extents; any strides).
template <class T>
void copy_block(tensor_view<const T, 4> src, tensor_view<T, 4> dst) {
  const std::int64_t D = src.extent(3);
  const bool rows = src.stride(3) == 1 && dst.stride(3) == 1;
  for (std::int64_t b = 0; b < src.extent(0); ++b) {
    for (std::int64_t t = 0; t < src.extent(1); ++t) {
      for (std::int64_t h = 0; h < src.extent(2); ++h) {
        const T* s = &src(b, t, h, 0);
        T* d = &dst(b, t, h, 0);
        if (rows) {
          std::memcpy(static_cast<void*>(d), static_cast<const void*>(s),
                      static_cast<std::size_t>(D) * sizeof(T));
        } else {
          for (std::int64_t k = 0; k < D; ++k) d[k * dst.stride(3)] = s[k * src.stride(3)];
        }
      }
    }
  }
}

/// The part of v starting at `offset` along dimension `dim`, with extents `ext`.
template <class T>
tensor_view<T, 4> part(tensor_view<T, 4> v, int dim, std::int64_t offset,
                       const std::array<std::int64_t, 4>& ext) {
  std::array<std::int64_t, 4> st{v.stride(0), v.stride(1), v.stride(2), v.stride(3)};
  return tensor_view<T, 4>(v.data() + offset * st[static_cast<std::size_t>(dim)], ext, st);
}

/// The exchange both directions share: block j of the send buffer is `src`'s part j along
/// `src_dim`, packed [blk]; block j of the receive buffer (from rank j) is unpacked into
/// `dst`'s part j along `dst_dim`.
template <class Comm, class T>
void exchange(Comm& c, tensor_view<const T, 4> src, int src_dim, tensor_view<T, 4> dst, int dst_dim,
              const std::array<std::int64_t, 4>& blk) {
  const int w = c.size();
  const std::int64_t n = blk[0] * blk[1] * blk[2] * blk[3];
  if (n == 0) return;  // every view is empty (the sizes were agreed: every rank returns here)
  auto buf = detail::comm::take_scratch<T>(c, 2 * w * n);
  T* const send = buf.data;
  T* const recv = buf.data + w * n;
  const std::array<std::int64_t, 4> dense{blk[1] * blk[2] * blk[3], blk[2] * blk[3], blk[3], 1};
  for (int j = 0; j < w; ++j) {
    copy_block<T>(part(src, src_dim, j * blk[static_cast<std::size_t>(src_dim)], blk),
                  tensor_view<T, 4>(send + j * n, blk, dense));
  }
  weft::all_to_all(c, std::span<const T>(send, static_cast<std::size_t>(w * n)),
                   std::span<T>(recv, static_cast<std::size_t>(w * n)), {.check_across_ranks = false});
  for (int j = 0; j < w; ++j) {
    copy_block<T>(tensor_view<const T, 4>(recv + j * n, blk, dense),
                  part(dst, dst_dim, j * blk[static_cast<std::size_t>(dst_dim)], blk));
  }
}

/// The checks of both directions. `seq` is the [B, Tl, H, D] view (sequence shards, all heads),
/// `heads` the [B, W*Tl, H/W, D] one; `to_heads` tells which is the input.
template <class Comm, class T>
void check(Comm& c, const char* fn, tensor_view<const T, 4> seq, tensor_view<const T, 4> heads, bool to_heads,
           const tensor_view<T, 4>& out, const reshard_options& o) {
  const char* seq_name = to_heads ? "in" : "out";
  const char* heads_name = to_heads ? "out" : "in";
  const int w = c.size();
  const std::int64_t B = seq.extent(0), Tl = seq.extent(1), H = seq.extent(2), D = seq.extent(3);
  detail::comm::agree(
      c, fn, seq_name, {detail::comm::type_code<T>(), B, Tl, H, D, to_heads ? 1 : 2},
      [&] {
        detail::check_view(fn, "in", to_heads ? seq : heads);
        detail::check_output_view(fn, "out", out);
        detail::require(H % w == 0, fn, seq_name,
                        detail::concat("a head count H divisible by the world size ", w,
                                       " (Ulysses gives each rank H / world whole heads)"),
                        detail::concat("H = ", H));
        detail::require(Tl <= std::numeric_limits<std::int64_t>::max() / w, fn, seq_name,
                        detail::concat("world size x Tl that fits in int64"), detail::concat("Tl = ", Tl));
        detail::require_shape(fn, heads_name, heads, std::array<std::int64_t, 4>{B, w * Tl, H / w, D});
        detail::require_disjoint(fn, "out", out, "in", to_heads ? seq : heads);
        detail::comm::require_message_size<Comm, T>(fn, "in", B * Tl * (H / w) * D);
      },
      o.check_across_ranks);
}

}  // namespace detail::ulysses

/// Ulysses' first all-to-all: in [B, Tl, H, D] (this rank's Tl sequence rows, every head) ->
/// out [B, W*Tl, H/W, D] (every rank's rows, in rank order, for heads [rank*H/W, (rank+1)*H/W)).
template <class Comm, class TI, class T>
void sequence_to_heads(Comm& c, tensor_view<TI, 4> in_view, tensor_view<T, 4> out,
                       const reshard_options& o = {}) {
  static_assert(std::is_same_v<std::remove_const_t<TI>, T> && !std::is_const_v<T>,
                "weft::sequence_to_heads: in and out have one element type; out is writable");
  static_assert(std::is_trivially_copyable_v<T>, "weft::sequence_to_heads moves trivially copyable elements");
  static_assert(Comm::host_memory, "weft::sequence_to_heads: host-memory communicators for now");
  const tensor_view<const T, 4> in = in_view;
  constexpr const char* fn = "sequence_to_heads";
  detail::ulysses::check<Comm, T>(c, fn, in, out, true, out, o);
  const std::int64_t Hl = in.extent(2) / c.size();
  detail::ulysses::exchange<Comm, T>(c, in, 2, out, 1, {in.extent(0), in.extent(1), Hl, in.extent(3)});
}

/// Ulysses' second all-to-all, the exact inverse: in [B, W*Tl, H/W, D] (every rank's rows for
/// this rank's head group) -> out [B, Tl, H, D] (this rank's rows, every head).
template <class Comm, class TI, class T>
void heads_to_sequence(Comm& c, tensor_view<TI, 4> in_view, tensor_view<T, 4> out,
                       const reshard_options& o = {}) {
  static_assert(std::is_same_v<std::remove_const_t<TI>, T> && !std::is_const_v<T>,
                "weft::heads_to_sequence: in and out have one element type; out is writable");
  static_assert(std::is_trivially_copyable_v<T>, "weft::heads_to_sequence moves trivially copyable elements");
  static_assert(Comm::host_memory, "weft::heads_to_sequence: host-memory communicators for now");
  const tensor_view<const T, 4> in = in_view;
  constexpr const char* fn = "heads_to_sequence";
  detail::ulysses::check<Comm, T>(c, fn, out, in, false, out, o);
  const std::int64_t Hl = out.extent(2) / c.size();
  detail::ulysses::exchange<Comm, T>(c, in, 1, out, 2, {out.extent(0), out.extent(1), Hl, out.extent(3)});
}

}  // namespace weft
