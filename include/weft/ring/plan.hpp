// weft/ring/plan.hpp - what the ring calls share: the options, the checks every rank runs and
// agrees on, packing of KV blocks, and the fp32 accumulator of a rank's result.
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "weft/attention/attention.hpp"
#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"
#include "weft/overlap/ring_pipeline.hpp"
#include "weft/overlap/stats.hpp"
#include "weft/ring/block.hpp"
#include "weft/ring/layout.hpp"

namespace weft {

enum class ring_schedule { pass_kv, pass_q, bidirectional };

struct ring_attention_options {
  bool causal = false;
  ring_layout layout = ring_layout::contiguous;
  ring_schedule schedule = ring_schedule::pass_kv;
  float scale = 0;               ///< 0 means Dk^-1/2
  float softcap = 0;             ///< > 0: scores become softcap * tanh(s / softcap)
  attention_window window = {};  ///< sliding window, in positions
  std::int64_t q_offset = 0;     ///< position of global query row 0 (of each sequence)
  std::int64_t k_offset = 0;     ///< position of global key row 0 (of each sequence)
  std::int64_t q_len = 0;        ///< global query length before padding (0: world * local rows)
  std::int64_t k_len = 0;        ///< global key length before padding (0: world * local rows)
  tensor_view<const std::int64_t, 1> cu_seqlens_q = {};  ///< varlen: global offsets [N+1] (B == 1)
  tensor_view<const std::int64_t, 1> cu_seqlens_k = {};  ///< varlen: global offsets [N+1] (B == 1)
  int pieces = 8;  ///< backward: each step's dK, dV part leaves in this many messages (key rows)
  int tag = 21;    ///< point-to-point tags tag .. tag + 3
  bool check_across_ranks = true;
  std::vector<overlap_event>* timeline = nullptr;  ///< per-step intervals, for plots
};

namespace detail::ring {

/// What the checks found.
struct ring_plan {
  attention::plan p;  // local sizes (Tq, Tk: local rows) and the resolved scale
  int world = 1, rank = 0;
  std::int64_t q_len = 0, k_len = 0;
  std::vector<std::int64_t> cu_q, cu_k;  // varlen: global offsets; empty otherwise
  rules ru;

  std::vector<segment> q_segments(int r) const { return segments(layout, r, world, q_len, cu_q); }
  std::vector<segment> k_segments(int r) const { return segments(layout, r, world, k_len, cu_k); }
  ring_layout layout = ring_layout::contiguous;
};

inline std::int64_t fnv(std::int64_t h, std::int64_t x) {
  auto u = static_cast<std::uint64_t>(h);
  for (int i = 0; i < 8; ++i)
    u = (u ^ ((static_cast<std::uint64_t>(x) >> (8 * i)) & 0xff)) * 1099511628211ull;
  return static_cast<std::int64_t>(u & 0x3fffffffffffffffull);
}
inline std::int64_t bits(float f) {
  std::uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return u;
}

/// The checks every ring call shares (local: this rank's arguments only).
template <class Backend, class TQ, class TK, class TV>
ring_plan check_common(const char* fn, const Backend& be, int rank, int world, const tensor_view<TQ, 4>& q,
                       const tensor_view<TK, 4>& k, const tensor_view<TV, 4>& v,
                       const ring_attention_options& o) {
  attention_options ao;
  ao.scale = o.scale;
  ao.softcap = o.softcap;
  ao.window = o.window;
  ao.q_offset = o.q_offset;
  ao.k_offset = o.k_offset;
  ring_plan rp;
  rp.p = attention::check_inputs(fn, q, k, v, ao);
  rp.world = world;
  rp.rank = rank;
  rp.layout = o.layout;
  require(valid_layout(o.layout), fn, "opts.layout", "contiguous, zigzag or striped",
          static_cast<int>(o.layout));
  require(o.schedule == ring_schedule::pass_kv || o.schedule == ring_schedule::pass_q ||
              o.schedule == ring_schedule::bidirectional,
          fn, "opts.schedule", "pass_kv, pass_q or bidirectional", static_cast<int>(o.schedule));
  require(o.tag >= 0 && o.tag + 4 <= 15000, fn, "opts.tag", "a tag in [0, 14996]", o.tag);
  require(o.pieces >= 1 && o.pieces <= 1024, fn, "opts.pieces", "a piece count in [1, 1024]", o.pieces);
  const bool vq = attention::given_view(o.cu_seqlens_q.data(), o.cu_seqlens_q.extent(0));
  const bool vk = attention::given_view(o.cu_seqlens_k.data(), o.cu_seqlens_k.extent(0));
  require(vq == vk, fn, vq ? "opts.cu_seqlens_k" : "opts.cu_seqlens_q",
          "both cu_seqlens_q and cu_seqlens_k, or neither", "only one given");
  auto rows_rule = [&](const char* name, std::int64_t local, std::int64_t want, std::int64_t len) {
    require(local == want, fn, name,
            concat(want, " local rows: shard_rows(", ring_layout_name(o.layout), ", world ", world,
                   ", length ", len, ") (the padding rule)"),
            concat(local, " rows"));
  };
  if (vq) {
    check_view(fn, "opts.cu_seqlens_q", o.cu_seqlens_q);
    check_view(fn, "opts.cu_seqlens_k", o.cu_seqlens_k);
    require(rp.p.B == 1, fn, "q", "batch size 1 with cu_seqlens (sequences packed along T)",
            concat("batch size ", rp.p.B));
    require(o.cu_seqlens_q.extent(0) >= 1, fn, "opts.cu_seqlens_q", "at least one offset", "[0]");
    require(o.cu_seqlens_k.extent(0) == o.cu_seqlens_q.extent(0), fn, "opts.cu_seqlens_k",
            concat(o.cu_seqlens_q.extent(0), " offsets (as cu_seqlens_q)"), o.cu_seqlens_k.extent(0));
    require(o.q_len == 0 && o.k_len == 0, fn, "opts.q_len",
            "0 with cu_seqlens (the offsets give the lengths)", o.q_len);
    rp.cu_q = copy_to_host(be, o.cu_seqlens_q);
    rp.cu_k = copy_to_host(be, o.cu_seqlens_k);
    auto check_cu = [&](const char* name, const std::vector<std::int64_t>& cu) {
      require(cu.front() == 0, fn, name, "offsets starting at 0", cu.front());
      for (std::size_t n = 1; n < cu.size(); ++n)
        require(cu[n] >= cu[n - 1], fn, name, "non-decreasing offsets",
                concat(name, "[", n, "] = ", cu[n], " < ", cu[n - 1]));
    };
    check_cu("opts.cu_seqlens_q", rp.cu_q);
    check_cu("opts.cu_seqlens_k", rp.cu_k);
    rp.q_len = rp.cu_q.back();
    rp.k_len = rp.cu_k.back();
    rows_rule("q", rp.p.Tq, varlen_rows(o.layout, world, rp.cu_q), rp.q_len);
    rows_rule("k", rp.p.Tk, varlen_rows(o.layout, world, rp.cu_k), rp.k_len);
  } else {
    require(o.q_len >= 0, fn, "opts.q_len", ">= 0", o.q_len);
    require(o.k_len >= 0, fn, "opts.k_len", ">= 0", o.k_len);
    rp.q_len = o.q_len > 0 ? o.q_len : rp.p.Tq * world;
    rp.k_len = o.k_len > 0 ? o.k_len : rp.p.Tk * world;
    rows_rule("q", rp.p.Tq, shard_rows(o.layout, world, rp.q_len), rp.q_len);
    rows_rule("k", rp.p.Tk, shard_rows(o.layout, world, rp.k_len), rp.k_len);
  }
  rp.ru = {o.causal, o.window, o.q_offset, o.k_offset, rp.p.scale, o.softcap};
  return rp;
}

/// What every rank must agree on: element types, sizes and options (hashed).
template <class TQ, class TK, class TV>
std::array<std::int64_t, 6> signature(const ring_plan& rp, const ring_attention_options& o) {
  const auto& p = rp.p;
  std::int64_t h = 1469598103934665603ll & 0x3fffffffffffffffll, s = h;
  for (std::int64_t x : {p.Hq, p.Hkv, p.Dk, p.Dv}) h = fnv(h, x);
  for (std::int64_t x :
       {std::int64_t{o.causal}, static_cast<std::int64_t>(o.layout), static_cast<std::int64_t>(o.schedule),
        bits(o.scale), bits(o.softcap), o.window.left, o.window.right, o.q_offset, o.k_offset, rp.q_len,
        rp.k_len, std::int64_t{o.tag}, std::int64_t{o.pieces}})
    s = fnv(s, x);
  for (std::int64_t x : rp.cu_q) s = fnv(s, x);
  for (std::int64_t x : rp.cu_k) s = fnv(s, x);
  return {comm::type_code<std::remove_cv_t<TQ>>() * 4096 + comm::type_code<std::remove_cv_t<TK>>() * 64 +
              comm::type_code<std::remove_cv_t<TV>>(),
          p.B,
          p.Tq,
          p.Tk,
          h,
          s};
}

/// Runs `check` (returning the plan) on this rank, then agrees across ranks: a rank's bad
/// argument is an invalid_argument on every rank.
template <class Comm, class Check, class Sig>
ring_plan checked(Comm& c, const char* fn, bool across, Check&& check, Sig&& sig) {
  std::exception_ptr err;
  ring_plan rp;
  std::array<std::int64_t, 6> s{};
  try {
    rp = check();
    s = sig(rp);
  } catch (const invalid_argument&) {
    err = std::current_exception();
  }
  weft::detail::comm::agree(
      c, fn, "q", s,
      [&] {
        if (err) std::rethrow_exception(err);
      },
      across);
  return rp;
}

/// Copies rows [a, b) of a [B,T,H,D] view into dst (contiguous [B, b-a, H, D]); returns the end.
template <class T, class U>
U* pack_rows(const tensor_view<T, 4>& x, std::int64_t a, std::int64_t b, U* dst) {
  for (std::int64_t bb = 0; bb < x.extent(0); ++bb)
    for (std::int64_t t = a; t < b; ++t)
      for (std::int64_t h = 0; h < x.extent(2); ++h)
        for (std::int64_t d = 0; d < x.extent(3); ++d) *dst++ = x(bb, t, h, d);
  return dst;
}

/// out <- src (fp32, contiguous [B,T,H,D]), converted to out's element type U.
template <class T, class U>
void copy_out(tensor_view<T, 4> out, const float* src) {
  for (std::int64_t b = 0; b < out.extent(0); ++b)
    for (std::int64_t t = 0; t < out.extent(1); ++t)
      for (std::int64_t h = 0; h < out.extent(2); ++h)
        for (std::int64_t d = 0; d < out.extent(3); ++d) out(b, t, h, d) = static_cast<U>(*src++);
}

/// Views of a packed KV block of `rows` rows: k [B,rows,Hkv,Dk] then v [B,rows,Hkv,Dv].
template <class T>
struct kv_views {
  tensor_view<const T, 4> k, v;
};
template <class T>
kv_views<T> unpack_kv(const T* data, const attention::plan& p, std::int64_t rows) {
  return {make_view(data, p.B, rows, p.Hkv, p.Dk),
          make_view(data + p.B * rows * p.Hkv * p.Dk, p.B, rows, p.Hkv, p.Dv)};
}

/// The accumulator of a rank's result: o itself when it is fp32, else a buffer copied out at
/// the end; `fresh` marks rows no call has written.
template <class TO>
struct accumulator {
  std::vector<float> o_buf;
  tensor_view<float, 4> o;
  tensor_view<float, 3> lse;
  std::vector<float> part_o, part_lse;
  tensor_view<float, 4> po;
  tensor_view<float, 3> pl;
  std::vector<char> fresh;

  accumulator(const attention::plan& p, tensor_view<TO, 4> out, tensor_view<float, 3> lse_out)
      : lse(lse_out) {
    if constexpr (std::is_same_v<TO, float>) {
      o = out;
    } else {
      o_buf.resize(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv));
      o = make_view(o_buf.data(), p.B, p.Tq, p.Hq, p.Dv);
    }
    part_o.resize(static_cast<std::size_t>(p.B * p.Tq * p.Hq * p.Dv));
    part_lse.resize(static_cast<std::size_t>(p.B * p.Hq * p.Tq));
    po = make_view(part_o.data(), p.B, p.Tq, p.Hq, p.Dv);
    pl = make_view(part_lse.data(), p.B, p.Hq, p.Tq);
    fresh.assign(static_cast<std::size_t>(p.Tq), char{1});
  }
  void finish(tensor_view<TO, 4> out) {
    clear_fresh(o, lse, fresh, 0, static_cast<std::int64_t>(fresh.size()));
    if constexpr (!std::is_same_v<TO, float>) {
      for (std::int64_t b = 0; b < out.extent(0); ++b)
        for (std::int64_t t = 0; t < out.extent(1); ++t)
          for (std::int64_t h = 0; h < out.extent(2); ++h)
            for (std::int64_t d = 0; d < out.extent(3); ++d) out(b, t, h, d) = static_cast<TO>(o(b, t, h, d));
    }
  }
};

}  // namespace detail::ring
}  // namespace weft
