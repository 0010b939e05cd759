// weft/comm/collectives.hpp - weft's own collectives over any communicator's point-to-point.
//
//   weft::all_reduce(comm, data, {.op = weft::reduce_op::sum});       // in place, any length
//   weft::reduce_scatter(comm, send, recv);   // send [world * n] -> recv [n]: block `rank` summed
//   weft::all_gather(comm, send, recv);       // send [n] -> recv [world * n], block r from rank r
//   weft::all_to_all(comm, send, recv);       // block j of send goes to rank j
//   weft::barrier(comm);
//
// Algorithms (`.algorithm`): `ring` (world - 1 steps; each rank sends (world-1)/world of the
// data: bandwidth-optimal for any world size), `halving` (recursive halving for reduce-scatter
// and recursive doubling for all-gather, log2(world) steps; powers of two only), `automatic`
// (halving for powers of two above 2, else ring) and `native` (the communicator's own member,
// e.g. MPI_Allreduce). all_reduce is reduce-scatter then all-gather over uneven blocks, so any
// length works.
//
// Determinism: every element is reduced at exactly one rank, in an order fixed by the
// algorithm and the world size, then copied to the others: results are bitwise equal on every
// rank and from run to run (not equal to a left-to-right sum over ranks).
//
// The reduction runs piece by piece (`.piece_bytes`) as each piece of a block arrives, so
// adding one piece overlaps the transfer of the next, and the piece is still in cache.
//
// Every call first checks its arguments on every rank and agrees on them (one small all-gather
// of each rank's verdict and of the element type and sizes): bad input throws
// weft::invalid_argument on every rank, naming the argument and the rank that rejected it,
// never a hang. `.check_across_ranks = false` skips the agreement (and its latency).
#pragma once

#include <array>
#include <bit>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "weft/comm/communicator.hpp"

namespace weft {

enum class collective_algorithm { automatic, ring, halving, native };

struct collective_options {
  reduce_op op = reduce_op::sum;
  collective_algorithm algorithm = collective_algorithm::automatic;
  /// The unit of transfer and reduction within a step.
  std::int64_t piece_bytes = std::int64_t{1} << 20;
  /// Agree on the arguments across ranks first (bad input: invalid_argument on every rank).
  bool check_across_ranks = true;
};

namespace detail::comm {

/// Tags of weft's own collectives: user point-to-point tags are below 15000 (simulated_link
/// adds 16384 to a tag for its timing header, and MPI guarantees tags up to 32767).
inline constexpr int tag_agree = 15001, tag_reduce_scatter = 15002, tag_all_gather = 15003,
                     tag_all_to_all = 15004, tag_barrier = 15005;

/// out[i] = a[i] op b[i] (out may be a or b).
template <class T>
void reduce_into(T* out, const T* a, const T* b, std::int64_t n, reduce_op op) {
  switch (op) {
    case reduce_op::sum:
      for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
      break;
    case reduce_op::max:
      for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] < b[i] ? b[i] : a[i];
      break;
    case reduce_op::min:
      for (std::int64_t i = 0; i < n; ++i) out[i] = b[i] < a[i] ? b[i] : a[i];
      break;
  }
}

/// Block b of a length-n buffer split over `world` ranks as evenly as possible: the first
/// n % world blocks have one element more. off has world + 1 entries.
inline std::vector<std::int64_t> even_offsets(std::int64_t n, int world) {
  std::vector<std::int64_t> off(static_cast<std::size_t>(world) + 1, 0);
  for (int b = 0; b < world; ++b) off[b + 1] = off[b] + n / world + (b < n % world ? 1 : 0);
  return off;
}

inline int mod(int a, int w) {
  return ((a % w) + w) % w;
}

/// n elements of scratch: the communicator's reusable pool when it has one (every weft model
/// does), else a fresh allocation owned by the returned value.
template <class T>
struct scratch_array {
  T* data = nullptr;
  std::unique_ptr<std::byte[]> owned;
};
template <class T, class Comm>
scratch_array<T> take_scratch(Comm& c, std::int64_t n) {
  const auto bytes = static_cast<std::size_t>(std::max<std::int64_t>(n, 1)) * sizeof(T);
  scratch_array<T> s;
  if constexpr (requires { c.scratch(bytes); }) {
    s.data = reinterpret_cast<T*>(c.scratch(bytes));
  } else {
    s.owned.reset(new std::byte[bytes]);
    s.data = reinterpret_cast<T*>(s.owned.get());
  }
  return s;
}

/// Every rank's verdict on its arguments and its call signature, all-gathered (a ring of tiny
/// messages, unchecked); rethrows the local failure on the failing rank and throws a matching
/// invalid_argument on every other rank. Signature values must agree across ranks.
struct verdict {
  std::int32_t bad = 0;
  char argument[28] = {};
  std::array<std::int64_t, 6> signature{};
};

inline std::string signature_string(const std::array<std::int64_t, 6>& s) {
  return concat("(type ", s[0], ", ", s[1], ", ", s[2], ", ", s[3], ", ", s[4], ", ", s[5], ")");
}

template <class Comm>
void gather_verdicts(Comm& c, const verdict& mine, std::vector<verdict>& all) {
  const int w = c.size(), r = c.rank();
  all.assign(static_cast<std::size_t>(w), verdict{});
  all[static_cast<std::size_t>(r)] = mine;
  for (int s = 0; s < w - 1; ++s) {
    const int js = mod(r - s, w), jr = mod(r - s - 1, w);
    auto sr =
        c.isend(std::span<const verdict>(&all[static_cast<std::size_t>(js)], 1), mod(r + 1, w), tag_agree);
    auto rr = c.irecv(std::span<verdict>(&all[static_cast<std::size_t>(jr)], 1), mod(r - 1, w), tag_agree);
    c.wait(rr);
    c.wait(sr);
  }
}

template <class Comm, class Check>
void agree(Comm& c, const char* fn, const char* what, std::array<std::int64_t, 6> signature, Check&& check,
           bool across_ranks) {
  if (!across_ranks || c.size() == 1 || !Comm::host_memory) {  // device transports: local checks only
    check();
    return;
  }
  verdict mine;
  mine.signature = signature;
  std::exception_ptr local;
  try {
    check();
  } catch (const invalid_argument& e) {
    local = std::current_exception();
    mine.bad = 1;
    std::strncpy(mine.argument, e.argument().c_str(), sizeof(mine.argument) - 1);
  }
  std::vector<verdict> all;
  gather_verdicts(c, mine, all);
  if (local) std::rethrow_exception(local);
  for (int k = 0; k < c.size(); ++k) {
    const auto& v = all[static_cast<std::size_t>(k)];
    if (v.bad) fail(fn, v.argument, "valid arguments on every rank", concat("rank ", k, " rejected it"));
  }
  for (int k = 0; k < c.size(); ++k) {
    const auto& v = all[static_cast<std::size_t>(k)];
    if (v.signature != signature) {
      fail(fn, what,
           concat("the same (element type, sizes, operation) on every rank: rank ", c.rank(), " has ",
                  signature_string(signature)),
           concat("rank ", k, " has ", signature_string(v.signature)));
    }
  }
}

/// Ring reduce-scatter over blocks `off`: block j of the result is the reduction of every
/// rank's block j of `own` and lands in `out` on rank j. `work` holds the partial sums in
/// flight: with `in_place`, own's own storage (own == work base, block j at off[j]); otherwise
/// two buffers of the largest block. `tmp` receives (largest block).
template <class Comm, class T>
void ring_reduce_scatter(Comm& c, const T* own, T* in_place_base, T* out,
                         const std::vector<std::int64_t>& off, reduce_op op, std::int64_t piece, T* tmp,
                         T* work0, T* work1) {
  const int w = c.size(), r = c.rank(), right = mod(r + 1, w), left = mod(r - 1, w);
  if (w == 1) {
    if (out != own && off[1] > off[0])
      std::memcpy(out, own, static_cast<std::size_t>(off[1] - off[0]) * sizeof(T));
    return;
  }
  using request = typename Comm::request;
  std::vector<request> sends, recvs;
  const T* prev = nullptr;
  for (int s = 0; s < w - 1; ++s) {
    const int js = mod(r - 1 - s, w), jr = mod(r - 2 - s, w);
    const T* send_ptr = s == 0 ? own + off[js] : prev;
    const std::int64_t ns = off[js + 1] - off[js], nr = off[jr + 1] - off[jr];
    T* target = s == w - 2 ? out : (in_place_base ? in_place_base + off[jr] : (s % 2 ? work1 : work0));
    sends.clear();
    recvs.clear();
    for (std::int64_t p = 0; p < std::max<std::int64_t>(nr, 1); p += piece) {
      const std::int64_t len = std::min(piece, nr - p);
      recvs.push_back(c.irecv(std::span<T>(tmp + p, static_cast<std::size_t>(std::max<std::int64_t>(len, 0))),
                              left, tag_reduce_scatter));
    }
    for (std::int64_t p = 0; p < std::max<std::int64_t>(ns, 1); p += piece) {
      const std::int64_t len = std::min(piece, ns - p);
      sends.push_back(
          c.isend(std::span<const T>(send_ptr + p, static_cast<std::size_t>(std::max<std::int64_t>(len, 0))),
                  right, tag_reduce_scatter));
    }
    std::int64_t p = 0;
    for (auto& rq : recvs) {
      c.wait(rq);
      const std::int64_t len = std::min(piece, nr - p);
      if (len > 0) reduce_into(target + p, tmp + p, own + off[jr] + p, len, op);
      p += piece;
    }
    for (auto& sq : sends) c.wait(sq);
    prev = target;
  }
}

/// Recursive-halving reduce-scatter (world a power of two) over blocks `off`. Round 0 reads
/// `own`; every round writes the kept half into `dst` (the same buffer as own when in place;
/// else a buffer laid out like own, of which the first half-range is used... indexed by off).
template <class Comm, class T>
void halving_reduce_scatter(Comm& c, const T* own, T* dst, T* out, const std::vector<std::int64_t>& off,
                            reduce_op op, T* tmp) {
  const int w = c.size(), r = c.rank();
  int lo = 0, hi = w;
  const T* src = own;
  for (int d = w / 2; d >= 1; d /= 2) {
    const int partner = r ^ d, mid = lo + (hi - lo) / 2;
    const bool lower = (r & d) == 0;
    const int keep_lo = lower ? lo : mid, keep_hi = lower ? mid : hi;
    const int give_lo = lower ? mid : lo, give_hi = lower ? hi : mid;
    const std::int64_t nk = off[keep_hi] - off[keep_lo], ng = off[give_hi] - off[give_lo];
    auto rr = c.irecv(std::span<T>(tmp, static_cast<std::size_t>(nk)), partner, tag_reduce_scatter);
    auto sr = c.isend(std::span<const T>(src + off[give_lo], static_cast<std::size_t>(ng)), partner,
                      tag_reduce_scatter);
    c.wait(rr);
    if (lower) {
      reduce_into(dst + off[keep_lo], src + off[keep_lo], tmp, nk, op);
    } else {
      reduce_into(dst + off[keep_lo], tmp, src + off[keep_lo], nk, op);
    }
    c.wait(sr);
    src = dst;
    lo = keep_lo;
    hi = keep_hi;
  }
  if (out != dst + off[r] && off[r + 1] > off[r]) {
    std::memcpy(out, dst + off[r], static_cast<std::size_t>(off[r + 1] - off[r]) * sizeof(T));
  }
}

/// All-gather in place over blocks `off` of `data` (block rank already there).
template <class Comm, class T>
void gather_blocks(Comm& c, T* data, const std::vector<std::int64_t>& off, bool halving) {
  const int w = c.size(), r = c.rank();
  if (halving) {
    for (int d = 1; d < w; d *= 2) {
      const int partner = r ^ d, mine = (r / d) * d, theirs = (partner / d) * d;
      auto rr =
          c.irecv(std::span<T>(data + off[theirs], static_cast<std::size_t>(off[theirs + d] - off[theirs])),
                  partner, tag_all_gather);
      auto sr =
          c.isend(std::span<const T>(data + off[mine], static_cast<std::size_t>(off[mine + d] - off[mine])),
                  partner, tag_all_gather);
      c.wait(rr);
      c.wait(sr);
    }
    return;
  }
  for (int s = 0; s < w - 1; ++s) {
    const int js = mod(r - s, w), jr = mod(r - s - 1, w);
    auto rr = c.irecv(std::span<T>(data + off[jr], static_cast<std::size_t>(off[jr + 1] - off[jr])),
                      mod(r - 1, w), tag_all_gather);
    auto sr = c.isend(std::span<const T>(data + off[js], static_cast<std::size_t>(off[js + 1] - off[js])),
                      mod(r + 1, w), tag_all_gather);
    c.wait(rr);
    c.wait(sr);
  }
}

inline bool use_halving(collective_algorithm a, int w, const char* fn) {
  const bool pow2 = std::has_single_bit(static_cast<unsigned>(w));
  if (a == collective_algorithm::halving) {
    require(pow2, fn, "options.algorithm", "a power-of-two world size for halving", w);
    return w > 1;
  }
  return a == collective_algorithm::automatic && pow2 && w > 2;
}

template <class T>
std::int64_t piece_elems(const collective_options& o) {
  return std::max<std::int64_t>(1, o.piece_bytes / static_cast<std::int64_t>(sizeof(T)));
}

template <class T>
void check_reducible(const char* fn) {
  static_assert(std::is_arithmetic_v<T>, "weft collectives reduce arithmetic element types");
  (void)fn;
}

/// The element types the transports' own reductions take (MPI and NCCL); other arithmetic
/// types use weft's algorithms even when `native` is asked for.
template <class T>
inline constexpr bool native_reducible =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint32_t> || std::is_same_v<T, std::uint64_t> ||
    std::is_same_v<T, std::uint8_t>;

/// The largest message the communicator carries (MPI: INT_MAX bytes), else unlimited.
template <class Comm>
constexpr std::int64_t max_message_bytes() {
  if constexpr (requires { Comm::max_message_bytes; }) {
    return Comm::max_message_bytes;
  } else {
    return std::numeric_limits<std::int64_t>::max();
  }
}

/// Checks that the largest single message of a call fits the transport.
template <class Comm, class T>
void require_message_size(const char* fn, const char* arg, std::int64_t elements) {
  const auto bytes = elements * static_cast<std::int64_t>(sizeof(T));
  require(bytes <= max_message_bytes<Comm>(), fn, arg,
          concat("at most ", max_message_bytes<Comm>(), " bytes per message on this transport"),
          concat(bytes, " bytes in one block"));
}

}  // namespace detail::comm

/// data <- the reduction over every rank's data (in place, any length).
template <class Comm, class T>
void all_reduce(Comm& c, std::span<T> data, const collective_options& o = {}) {
  if constexpr (!Comm::host_memory) {  // device buffers (NCCL): the transport's own collective
    c.all_reduce(data, o.op);
    return;
  }
  detail::comm::check_reducible<T>("all_reduce");
  const auto n = static_cast<std::int64_t>(data.size());
  detail::comm::agree(
      c, "all_reduce", "data", {detail::comm::type_code<T>(), n, static_cast<std::int64_t>(o.op), 0},
      [&] {
        detail::require(o.piece_bytes > 0, "all_reduce", "options.piece_bytes", "> 0", o.piece_bytes);
        const bool h = detail::comm::use_halving(o.algorithm, c.size(), "all_reduce");
        // The largest message: a block (ring) or half the data (halving's first round).
        detail::comm::require_message_size<Comm, T>("all_reduce", "data", h ? (n + 1) / 2 : n / c.size() + 1);
      },
      o.check_across_ranks);
  if (c.size() == 1 || n == 0) return;
  if constexpr (detail::comm::native_reducible<T>) {
    if (o.algorithm == collective_algorithm::native) {
      c.all_reduce(data, o.op);
      return;
    }
  }
  const auto t0 = detail::comm::clock::now();
  const auto off = detail::comm::even_offsets(n, c.size());
  const bool halving = detail::comm::use_halving(o.algorithm, c.size(), "all_reduce");
  const std::int64_t big = off[1] - off[0];
  T* base = data.data();
  if (halving) {
    auto tmp = detail::comm::take_scratch<T>(c, off[static_cast<std::size_t>(c.size() / 2)]);
    detail::comm::halving_reduce_scatter(c, base, base, base + off[c.rank()], off, o.op, tmp.data);
  } else {
    auto tmp = detail::comm::take_scratch<T>(c, big);
    detail::comm::ring_reduce_scatter(c, base, base, base + off[c.rank()], off, o.op,
                                      detail::comm::piece_elems<T>(o), tmp.data, static_cast<T*>(nullptr),
                                      static_cast<T*>(nullptr));
  }
  detail::comm::gather_blocks(c, base, off, halving);
  c.stats().add(
      {comm_kind::all_reduce, -1, n * static_cast<std::int64_t>(sizeof(T)), detail::comm::seconds_since(t0)});
}

/// recv [n] <- the reduction over every rank of block `rank` of send [world * n].
template <class Comm, class T>
void reduce_scatter(Comm& c, std::span<const T> send, std::span<T> recv, const collective_options& o = {}) {
  if constexpr (!Comm::host_memory) {
    c.reduce_scatter(send, recv, o.op);
    return;
  }
  detail::comm::check_reducible<T>("reduce_scatter");
  const auto n = static_cast<std::int64_t>(recv.size());
  const int w = c.size();
  detail::comm::agree(
      c, "reduce_scatter", "recv", {detail::comm::type_code<T>(), n, static_cast<std::int64_t>(o.op), 0},
      [&] {
        detail::require(static_cast<std::int64_t>(send.size()) == n * w, "reduce_scatter", "send",
                        detail::concat("world size x recv.size() = ", w, " x ", n, " = ", n * w, " elements"),
                        send.size());
        detail::require(o.piece_bytes > 0, "reduce_scatter", "options.piece_bytes", "> 0", o.piece_bytes);
        const bool h = detail::comm::use_halving(o.algorithm, w, "reduce_scatter");
        detail::comm::require_message_size<Comm, T>("reduce_scatter", "send", h ? n * (w / 2) : n);
      },
      o.check_across_ranks);
  if constexpr (detail::comm::native_reducible<T>) {
    if (o.algorithm == collective_algorithm::native && w > 1) {
      c.reduce_scatter(send, recv, o.op);
      return;
    }
  }
  const auto t0 = detail::comm::clock::now();
  std::vector<std::int64_t> off(static_cast<std::size_t>(w) + 1);
  for (int b = 0; b <= w; ++b) off[b] = n * b;
  if (detail::comm::use_halving(o.algorithm, w, "reduce_scatter")) {
    auto tmp =
        detail::comm::take_scratch<T>(c, n * (w / 2) + n * w);  // received halves, then the partial sums
    detail::comm::halving_reduce_scatter(c, send.data(), tmp.data + n * (w / 2), recv.data(), off, o.op,
                                         tmp.data);
  } else {
    // The received block, and (3 ranks or more) two partial sums in flight.
    auto tmp = detail::comm::take_scratch<T>(c, n * (w > 2 ? 3 : 1));
    T* const work0 = w > 2 ? tmp.data + n : nullptr;
    T* const work1 = w > 2 ? tmp.data + 2 * n : nullptr;
    detail::comm::ring_reduce_scatter(c, send.data(), static_cast<T*>(nullptr), recv.data(), off, o.op,
                                      detail::comm::piece_elems<T>(o), tmp.data, work0, work1);
  }
  c.stats().add({comm_kind::reduce_scatter, -1, n * w * static_cast<std::int64_t>(sizeof(T)),
                 detail::comm::seconds_since(t0)});
}

/// recv [world * n] <- every rank's send [n], block r from rank r.
template <class Comm, class T>
void all_gather(Comm& c, std::span<const T> send, std::span<T> recv, const collective_options& o = {}) {
  if constexpr (!Comm::host_memory) {
    c.all_gather(send, recv);
    return;
  }
  static_assert(std::is_trivially_copyable_v<T>, "weft::all_gather moves trivially copyable elements");
  const auto n = static_cast<std::int64_t>(send.size());
  const int w = c.size();
  detail::comm::agree(
      c, "all_gather", "send", {detail::comm::type_code<T>(), n, 0, 0},
      [&] {
        detail::require(static_cast<std::int64_t>(recv.size()) == n * w, "all_gather", "recv",
                        detail::concat("world size x send.size() = ", w, " x ", n, " = ", n * w, " elements"),
                        recv.size());
        const bool h = detail::comm::use_halving(o.algorithm, w, "all_gather");
        detail::comm::require_message_size<Comm, T>("all_gather", "send", h ? n * (w / 2) : n);
      },
      o.check_across_ranks);
  if (o.algorithm == collective_algorithm::native && w > 1) {
    c.all_gather(send, recv);
    return;
  }
  const auto t0 = detail::comm::clock::now();
  std::vector<std::int64_t> off(static_cast<std::size_t>(w) + 1);
  for (int b = 0; b <= w; ++b) off[b] = n * b;
  if (n > 0) std::memmove(recv.data() + off[c.rank()], send.data(), static_cast<std::size_t>(n) * sizeof(T));
  detail::comm::gather_blocks(c, recv.data(), off, detail::comm::use_halving(o.algorithm, w, "all_gather"));
  c.stats().add({comm_kind::all_gather, -1, n * w * static_cast<std::int64_t>(sizeof(T)),
                 detail::comm::seconds_since(t0)});
}

/// recv block j [n] <- rank j's send block `rank`; send and recv are [world * n].
template <class Comm, class T>
void all_to_all(Comm& c, std::span<const T> send, std::span<T> recv, const collective_options& o = {}) {
  if constexpr (!Comm::host_memory) {
    c.all_to_all(send, recv);
    return;
  }
  static_assert(std::is_trivially_copyable_v<T>, "weft::all_to_all moves trivially copyable elements");
  const int w = c.size(), r = c.rank();
  const auto n = static_cast<std::int64_t>(send.size()) / w;
  detail::comm::agree(
      c, "all_to_all", "send", {detail::comm::type_code<T>(), static_cast<std::int64_t>(send.size()), 0, 0},
      [&] {
        detail::require(static_cast<std::int64_t>(send.size()) % w == 0, "all_to_all", "send",
                        detail::concat("a multiple of the world size ", w, " elements"), send.size());
        detail::require(recv.size() == send.size(), "all_to_all", "recv",
                        detail::concat(send.size(), " elements"), recv.size());
        detail::comm::require_message_size<Comm, T>("all_to_all", "send",
                                                    static_cast<std::int64_t>(send.size()) / w);
      },
      o.check_across_ranks);
  const auto t0 = detail::comm::clock::now();
  using request = typename Comm::request;
  std::vector<request> reqs;
  for (int s = 1; s < w; ++s) {
    const int from = detail::comm::mod(r - s, w);
    reqs.push_back(c.irecv(recv.subspan(static_cast<std::size_t>(from * n), static_cast<std::size_t>(n)),
                           from, detail::comm::tag_all_to_all));
  }
  for (int s = 1; s < w; ++s) {
    const int to = detail::comm::mod(r + s, w);
    reqs.push_back(c.isend(send.subspan(static_cast<std::size_t>(to * n), static_cast<std::size_t>(n)), to,
                           detail::comm::tag_all_to_all));
  }
  if (n > 0) std::memcpy(recv.data() + r * n, send.data() + r * n, static_cast<std::size_t>(n) * sizeof(T));
  for (auto& q : reqs) c.wait(q);
  c.stats().add({comm_kind::all_to_all, -1, static_cast<std::int64_t>(send.size() * sizeof(T)),
                 detail::comm::seconds_since(t0)});
}

/// Returns once every rank has entered (dissemination: log2(world) rounds of 1-byte messages).
template <class Comm>
void barrier(Comm& c) {
  if constexpr (!Comm::host_memory) {
    c.barrier();
    return;
  }
  const int w = c.size(), r = c.rank();
  const auto t0 = detail::comm::clock::now();
  for (int d = 1; d < w; d *= 2) {
    std::byte out{1}, in{0};
    auto rr = c.irecv(std::span<std::byte>(&in, 1), detail::comm::mod(r - d, w), detail::comm::tag_barrier);
    auto sr =
        c.isend(std::span<const std::byte>(&out, 1), detail::comm::mod(r + d, w), detail::comm::tag_barrier);
    c.wait(rr);
    c.wait(sr);
  }
  c.stats().add({comm_kind::barrier, -1, 0, detail::comm::seconds_since(t0)});
}

namespace detail::comm {

/// The member collectives of a communicator whose transport has none of its own (the local
/// world, the simulated link): weft's ring over its point-to-point.
template <class Derived>
struct ring_collectives {
  template <class T>
  void all_reduce(std::span<T> data, reduce_op op = reduce_op::sum) {
    weft::all_reduce(self(), data, {.op = op, .algorithm = collective_algorithm::ring});
  }
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    weft::all_gather(self(), send, recv, {.algorithm = collective_algorithm::ring});
  }
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, reduce_op op = reduce_op::sum) {
    weft::reduce_scatter(self(), send, recv, {.op = op, .algorithm = collective_algorithm::ring});
  }
  template <class T>
  void all_to_all(std::span<const T> send, std::span<T> recv) {
    weft::all_to_all(self(), send, recv);
  }
  void barrier() { weft::barrier(self()); }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
};

}  // namespace detail::comm
}  // namespace weft
