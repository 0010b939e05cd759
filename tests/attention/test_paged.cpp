// paged_attention and append_paged_kv on every backend against the fp64 oracle
// (tests/attention/oracle.hpp), run per sequence on its keys gathered contiguously with the
// queries at the end (q_offset = k_length - Tq): Tq 1, 5, 16; pages of 1, 16, 64 keys;
// k_lengths == Tq and around page boundaries; GQA 4:1, MQA, Dk != Dv (lane and scalar paths);
// G Tq rows per KV head around the register-tiled path's bounds (bf16 keys as pairs or floats);
// windows, softcap, a tree mask and rows that see nothing; explicit and automatic splits;
// shuffled pages bitwise equal to pages in order; the serial backend's bits on many threads;
// bf16 and f16 caches; the append helper; bad input.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attention/run.hpp"

using weft::make_view;
using weft_test::buffer;
using weft_test::attn::check_close;
using weft_test::attn::outputs;
using weft_test::attn::randn;

namespace {

constexpr double tol32 = 2e-5;  // fp32 accumulation (as test_attention.cpp)

/// A decode problem: sequences of k_lengths lens, the last Tq tokens of each are the queries.
struct paged_case {
  std::int64_t Tq = 1, Hq = 8, Hkv = 2, Dk = 64, Dv = 64, ps = 16;
  std::vector<std::int32_t> lens{1};
  bool causal = true;
  std::int64_t left = -1, right = -1;
  double softcap = 0;
  std::int64_t M = 0;              // mask columns (the last M keys of each row)
  std::vector<std::uint8_t> mask;  // [B, Tq, M]
  std::int64_t split_keys = 0;
  std::int64_t B() const { return static_cast<std::int64_t>(lens.size()); }
};

/// Host data: q, each row's keys and values (contiguous), and their pages.
template <class T>
struct paged_data {
  std::vector<float> q;              // [B, Tq, Hq, Dk]
  std::vector<std::vector<T>> k, v;  // per row: [L, Hkv, Dk], [L, Hkv, Dv]
  std::vector<T> kp, vp;             // [num_pages, ps, Hkv, D]
  std::vector<std::int32_t> table;   // [B, max_pages]
  std::int64_t num_pages = 0, max_pages = 0;

  /// Pages in order (row 0's first, ...) or shuffled; unused pages, unused slots and unused
  /// table entries hold NaN / -1, so reading them shows.
  paged_data(const paged_case& c, std::uint64_t seed, bool shuffle) {
    q = randn<float>(static_cast<std::size_t>(c.B() * c.Tq * c.Hq * c.Dk), seed);
    for (std::int64_t b = 0; b < c.B(); ++b) {
      const std::int64_t L = c.lens[static_cast<std::size_t>(b)];
      k.push_back(randn<T>(static_cast<std::size_t>(L * c.Hkv * c.Dk),
                           seed + 10 + 2 * static_cast<std::uint64_t>(b)));
      v.push_back(randn<T>(static_cast<std::size_t>(L * c.Hkv * c.Dv),
                           seed + 11 + 2 * static_cast<std::uint64_t>(b)));
      max_pages = std::max(max_pages, (L + c.ps - 1) / c.ps + 1);
    }
    for (std::int32_t L : c.lens) num_pages += (L + c.ps - 1) / c.ps;
    num_pages += 2;  // never used
    std::vector<std::int32_t> order(static_cast<std::size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    if (shuffle) {
      weft_test::rng r(seed + 99);
      for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[r.next() % i]);
    }
    const T nan = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
    kp.assign(static_cast<std::size_t>(num_pages * c.ps * c.Hkv * c.Dk), nan);
    vp.assign(static_cast<std::size_t>(num_pages * c.ps * c.Hkv * c.Dv), nan);
    table.assign(static_cast<std::size_t>(c.B() * max_pages), -1);
    std::size_t next = 0;
    for (std::int64_t b = 0; b < c.B(); ++b) {
      const std::int64_t L = c.lens[static_cast<std::size_t>(b)];
      for (std::int64_t j = 0; j < (L + c.ps - 1) / c.ps; ++j)
        table[static_cast<std::size_t>(b * max_pages + j)] = order[next++];
      for (std::int64_t j = 0; j < L; ++j) {
        const std::int64_t page = table[static_cast<std::size_t>(b * max_pages + j / c.ps)], slot = j % c.ps;
        std::copy_n(&k[static_cast<std::size_t>(b)][static_cast<std::size_t>(j * c.Hkv * c.Dk)], c.Hkv * c.Dk,
                    &kp[static_cast<std::size_t>((page * c.ps + slot) * c.Hkv * c.Dk)]);
        std::copy_n(&v[static_cast<std::size_t>(b)][static_cast<std::size_t>(j * c.Hkv * c.Dv)], c.Hkv * c.Dv,
                    &vp[static_cast<std::size_t>((page * c.ps + slot) * c.Hkv * c.Dv)]);
      }
    }
  }
};

/// weft::paged_attention on backend Be; o of type TO, returned as floats.
template <class TO = float, class Be, class T>
outputs run_paged(const Be& be, const paged_case& c, const paged_data<T>& d) {
  buffer<Be, float> q(be, d.q);
  buffer<Be, T> kp(be, d.kp), vp(be, d.vp);
  buffer<Be, std::int32_t> table(be, d.table), lens(be, c.lens);
  buffer<Be, std::uint8_t> mask(be, c.mask);
  buffer<Be, TO> o(be, static_cast<std::size_t>(c.B() * c.Tq * c.Hq * c.Dv), static_cast<TO>(-7.0f));
  buffer<Be, float> lse(be, static_cast<std::size_t>(c.B() * c.Hq * c.Tq), -7.0f);
  const weft::paged_kv_cache<const T, const T> cache{
      make_view(static_cast<const T*>(kp.data()), d.num_pages, c.ps, c.Hkv, c.Dk),
      make_view(static_cast<const T*>(vp.data()), d.num_pages, c.ps, c.Hkv, c.Dv),
      make_view(static_cast<const std::int32_t*>(table.data()), c.B(), d.max_pages),
      make_view(static_cast<const std::int32_t*>(lens.data()), c.B())};
  weft::paged_attention_options opts;
  opts.causal = c.causal;
  opts.window = {c.left, c.right};
  opts.softcap = static_cast<float>(c.softcap);
  opts.split_keys = c.split_keys;
  if (c.M > 0) opts.mask = make_view(static_cast<const std::uint8_t*>(mask.data()), c.B(), c.Tq, c.M);
  weft::paged_attention(be, make_view(static_cast<const float*>(q.data()), c.B(), c.Tq, c.Hq, c.Dk), cache,
                        make_view(o.data(), c.B(), c.Tq, c.Hq, c.Dv),
                        make_view(lse.data(), c.B(), c.Hq, c.Tq), opts);
  const std::vector<TO> oh = o.to_host();
  return {std::vector<float>(oh.begin(), oh.end()), lse.to_host()};
}

/// The fp64 oracle, one sequence at a time on its contiguous keys.
template <class T>
weft_test::attn::result oracle(const paged_case& c, const paged_data<T>& d) {
  weft_test::attn::result all;
  for (std::int64_t b = 0; b < c.B(); ++b) {
    weft_test::attn::problem p;
    p.B = 1;
    p.Tq = c.Tq;
    p.Tk = c.lens[static_cast<std::size_t>(b)];
    p.Hq = c.Hq;
    p.Hkv = c.Hkv;
    p.Dk = c.Dk;
    p.Dv = c.Dv;
    p.causal = c.causal;
    p.q_offset = p.Tk - c.Tq;
    p.left = c.left;
    p.right = c.right;
    p.softcap = c.softcap;
    if (c.M > 0) {
      p.mask_keys = c.M;
      p.mask.assign(c.mask.begin() + b * c.Tq * c.M, c.mask.begin() + (b + 1) * c.Tq * c.M);
    }
    const std::size_t nq = static_cast<std::size_t>(c.Tq * c.Hq * c.Dk);
    const std::vector<float> qb(d.q.begin() + static_cast<std::ptrdiff_t>(b * nq),
                                d.q.begin() + static_cast<std::ptrdiff_t>((b + 1) * nq));
    const auto r =
        weft_test::attn::attention(p, qb, d.k[static_cast<std::size_t>(b)], d.v[static_cast<std::size_t>(b)]);
    all.o.insert(all.o.end(), r.o.begin(), r.o.end());
    all.lse.insert(all.lse.end(), r.lse.begin(), r.lse.end());
  }
  return all;
}

template <class T = float, class Be>
void check_case(const Be& be, const paged_case& c, std::uint64_t seed, double tol = tol32) {
  const paged_data<T> d(c, seed, true);
  check_close(run_paged(be, c, d), oracle(c, d), tol);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("paged_attention: Tq, page sizes, k_lengths at page boundaries", "[attention][paged]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t Tq : {1, 5, 16})
    for (std::int64_t ps : {1, 16, 64}) {
      paged_case c;
      c.Tq = Tq;
      c.ps = ps;
      const auto P = static_cast<std::int32_t>(ps), T = static_cast<std::int32_t>(Tq);
      c.lens = {T, std::max(T, 2 * P - 1), std::max(T, 2 * P), std::max(T, 2 * P + 1), std::max(T, P + 37)};
      INFO("Tq " << Tq << " page size " << ps);
      check_case(be, c, static_cast<std::uint64_t>(Tq * 100 + ps));
    }
}

TEMPLATE_LIST_TEST_CASE("paged_attention: GQA, MQA, Dk != Dv", "[attention][paged]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t dims[][2] = {{64, 64}, {128, 128}, {64, 32}, {32, 80}, {40, 24}, {5, 3}};
  const std::int64_t heads[][2] = {{8, 2}, {4, 1}, {2, 2}, {16, 1}};  // 16:1: 80 rows per item
  for (const auto& dm : dims)
    for (const auto& h : heads) {
      paged_case c;
      c.Tq = 5;
      c.Hq = h[0];
      c.Hkv = h[1];
      c.Dk = dm[0];
      c.Dv = dm[1];
      c.lens = {70, 5};
      INFO("Dk " << c.Dk << " Dv " << c.Dv << " Hq " << c.Hq << " Hkv " << c.Hkv);
      check_case(be, c, static_cast<std::uint64_t>(dm[0] * 31 + dm[1] + h[0] * 7 + h[1]));
    }
}

TEMPLATE_LIST_TEST_CASE("paged_attention: rows per KV head around the register-tiled path's bounds",
                        "[attention][paged]", weft_test::backends) {
  // G Tq rows per KV head: 7 (rows in pairs), 8 and more (register tiles of 8, 4, 2, 1 rows;
  // the softmax in groups of 16 rows: 15, 16, 17, 33); bf16 keys with Dk % 32 == 0 (transposed
  // as pairs of bf16) and not (as floats), values with and without the pair split, Dv % 16 != 0.
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t rows[][3] = {{2, 2, 7},  {4, 2, 4},  {6, 2, 3}, {3, 1, 5},
                                  {2, 2, 16}, {1, 1, 17}, {6, 2, 11}};
  const std::int64_t dims[][2] = {{128, 128}, {48, 40}, {64, 32}, {40, 24}};
  int n = 0;
  for (const auto& r : rows)
    for (const auto& dm : dims) {
      paged_case c;
      c.Hq = r[0];
      c.Hkv = r[1];
      c.Tq = r[2];
      c.Dk = dm[0];
      c.Dv = dm[1];
      c.lens = {150, static_cast<std::int32_t>(c.Tq) + 2};  // 150: blocks of 64, 64, 22 keys
      INFO("G Tq " << c.Hq / c.Hkv * c.Tq << " Dk " << c.Dk << " Dv " << c.Dv);
      if (n % 4 == 3)
        check_case<float>(be, c, static_cast<std::uint64_t>(700 + n));
      else
        check_case<weft::bf16>(be, c, static_cast<std::uint64_t>(700 + n));
      ++n;
    }
}

TEMPLATE_LIST_TEST_CASE("paged_attention: windows, softcap, a tree mask, rows that see nothing",
                        "[attention][paged]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  struct w {
    bool causal;
    std::int64_t left, right;
    double softcap;
    bool mask;
  };
  const w cases[] = {{true, 7, -1, 0, false},  {true, 40, -1, 0, false}, {false, 20, 3, 0, false},
                     {true, -1, -1, 5, false}, {true, -1, -1, 0, true},  {true, 0, -1, 0, true},
                     {false, -1, -1, 30, true}};
  int n = 0;
  for (const w& x : cases) {
    paged_case c;
    c.Tq = 7;
    c.lens = {100, 7, 33};
    c.causal = x.causal;
    c.left = x.left;
    c.right = x.right;
    c.softcap = x.softcap;
    c.split_keys = 16;  // the window and the mask cut through several splits
    if (x.mask) {       // a draft tree over the Tq new tokens: each sees its ancestors (and some not itself)
      c.M = c.Tq;
      weft_test::rng r(static_cast<std::uint64_t>(n));
      c.mask.assign(static_cast<std::size_t>(c.B() * c.Tq * c.M), 0);
      for (std::int64_t b = 0; b < c.B(); ++b)
        for (std::int64_t i = 0; i < c.Tq; ++i)
          for (std::int64_t j = 0; j <= i; ++j)
            c.mask[static_cast<std::size_t>((b * c.Tq + i) * c.M + j)] = r.uniform() < 0.6 ? 1 : 0;
    }
    INFO("case " << n << " causal " << x.causal << " window " << x.left << "," << x.right << " softcap "
                 << x.softcap << " mask " << x.mask);
    check_case(be, c, static_cast<std::uint64_t>(500 + n));
    ++n;
  }
}

TEMPLATE_LIST_TEST_CASE("paged_attention: split sizes against the oracle, repeatable", "[attention][paged]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  for (std::int64_t split : {0, 1, 16, 50, 64, 1000}) {
    paged_case c;
    c.Tq = 5;
    c.lens = {700, 5, 300};
    c.split_keys = split;
    INFO("split_keys " << split);
    const paged_data<float> d(c, 7, true);
    const outputs a = run_paged(be, c, d);
    check_close(a, oracle(c, d), tol32);
    const outputs again = run_paged(be, c, d);
    CHECK(weft_test::bitwise_equal(a.o, again.o));
    CHECK(weft_test::bitwise_equal(a.lse, again.lse));
  }
}

TEMPLATE_LIST_TEST_CASE("paged_attention: the bits of the serial backend on many threads",
                        "[attention][paged]", weft_test::fast_backends) {
  auto be = weft_test::make_backend<TestType>();
  paged_case c;
  c.Tq = 5;
  c.lens = {600, 47, 1100};  // several splits per row (automatic: at least 512 keys each)
  const paged_data<weft::bf16> d(c, 5, true);
  const outputs a = run_paged(be, c, d), ref = run_paged(weft::serial_backend{}, c, d);
  CHECK(weft_test::bitwise_equal(a.o, ref.o));
  CHECK(weft_test::bitwise_equal(a.lse, ref.lse));
}

TEMPLATE_LIST_TEST_CASE("paged_attention: shuffled pages give the bits of pages in order",
                        "[attention][paged]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  paged_case c;
  c.Tq = 5;
  c.ps = 16;
  c.lens = {300, 47, 16};
  const paged_data<weft::bf16> in_order(c, 3, false), shuffled(c, 3, true);
  REQUIRE(in_order.table != shuffled.table);
  const outputs a = run_paged(be, c, in_order), b = run_paged(be, c, shuffled);
  CHECK(weft_test::bitwise_equal(a.o, b.o));
  CHECK(weft_test::bitwise_equal(a.lse, b.lse));
}

TEMPLATE_LIST_TEST_CASE("paged_attention: bf16 and f16 caches, bf16 output", "[attention][paged]",
                        weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  paged_case c;
  c.Tq = 5;
  c.lens = {200, 37};
  // The oracle reads the same 16-bit values as doubles: only fp32 accumulation differs.
  check_case<weft::bf16>(be, c, 11);
  check_case<weft::f16>(be, c, 12);
  // bf16 o: one rounding to 8 significant bits (unit roundoff 2^-8) of |o| <= max |v|.
  const paged_data<weft::bf16> d(c, 13, true);
  check_close(run_paged<weft::bf16>(be, c, d), oracle(c, d), 1.0 / 256 + tol32);
}

TEMPLATE_LIST_TEST_CASE("append_paged_kv: rows land in their pages, nothing else is written",
                        "[attention][paged]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  paged_case c;
  c.Hq = 4;
  c.Hkv = 2;
  c.Dk = 16;
  c.Dv = 8;
  c.ps = 4;
  c.lens = {13, 6};
  const paged_data<float> ref(c, 21, true);  // the pages the appends must produce (NaN elsewhere)
  const float nan = std::numeric_limits<float>::quiet_NaN();
  buffer<TestType, float> kpb(be, ref.kp.size(), nan), vpb(be, ref.vp.size(), nan);
  buffer<TestType, std::int32_t> table(be, ref.table), lens(be, c.lens);
  // Row 0's 13 keys in 4 calls (3, 3, 3, 4 rows, the last two for row 0 alone), row 1's 6 in 2.
  struct step {
    std::int64_t Tn;
    std::vector<std::int32_t> start;  // one per row appended (rows 0..)
  };
  const step steps[] = {{3, {0, 0}}, {3, {3, 3}}, {3, {6}}, {4, {9}}};
  for (const step& s : steps) {
    const std::int64_t B = static_cast<std::int64_t>(s.start.size()), Tn = s.Tn;
    std::vector<float> kn, vn;
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& k = ref.k[static_cast<std::size_t>(b)];
      const auto& v = ref.v[static_cast<std::size_t>(b)];
      const std::int64_t s0 = s.start[static_cast<std::size_t>(b)];
      kn.insert(kn.end(), k.begin() + s0 * c.Hkv * c.Dk, k.begin() + (s0 + Tn) * c.Hkv * c.Dk);
      vn.insert(vn.end(), v.begin() + s0 * c.Hkv * c.Dv, v.begin() + (s0 + Tn) * c.Hkv * c.Dv);
    }
    buffer<TestType, float> knb(be, kn), vnb(be, vn);
    buffer<TestType, std::int32_t> stb(be, s.start);
    const weft::paged_kv_cache<float, float> cache{
        make_view(kpb.data(), ref.num_pages, c.ps, c.Hkv, c.Dk),
        make_view(vpb.data(), ref.num_pages, c.ps, c.Hkv, c.Dv),
        make_view(static_cast<const std::int32_t*>(table.data()), B, ref.max_pages),
        make_view(static_cast<const std::int32_t*>(lens.data()), B)};
    weft::append_paged_kv(be, cache, make_view(static_cast<const float*>(knb.data()), B, Tn, c.Hkv, c.Dk),
                          make_view(static_cast<const float*>(vnb.data()), B, Tn, c.Hkv, c.Dv),
                          make_view(static_cast<const std::int32_t*>(stb.data()), B));
  }
  CHECK(weft_test::bitwise_equal(kpb.to_host(), ref.kp));
  CHECK(weft_test::bitwise_equal(vpb.to_host(), ref.vp));
}

TEMPLATE_LIST_TEST_CASE("paged_attention, append_paged_kv: bad input names the argument, nothing written",
                        "[attention][paged][errors]", weft_test::backends) {
  auto be = weft_test::make_backend<TestType>();
  const std::int64_t B = 2, Tq = 3, Hq = 4, Hkv = 2, D = 8, NP = 6, PS = 4, MP = 3;
  buffer<TestType, float> q(be, static_cast<std::size_t>(B * Tq * Hq * D), 0.5f);
  buffer<TestType, float> kp(be, static_cast<std::size_t>(NP * PS * Hkv * D), 0.25f);
  buffer<TestType, float> vp(be, static_cast<std::size_t>(NP * PS * Hkv * D), 1.0f);
  buffer<TestType, float> o(be, static_cast<std::size_t>(B * Tq * Hq * D), -7.0f);
  buffer<TestType, float> lse(be, static_cast<std::size_t>(B * Hq * Tq), -7.0f);
  const std::vector<std::int32_t> good_table{0, 1, -1, 2, 3, 4}, bad_table{0, 1, -1, 2, 6, 4},
      neg_table{0, -1, 5, 2, 3, 4};
  const std::vector<std::int32_t> good_lens{5, 12}, long_lens{5, 13}, short_lens{2, 12};
  buffer<TestType, std::int32_t> gt(be, good_table), bt(be, bad_table), nt(be, neg_table), gl(be, good_lens),
      ll(be, long_lens), sl(be, short_lens);
  auto i2 = [](const auto& b, std::int64_t r, std::int64_t c) {
    return make_view(static_cast<const std::int32_t*>(b.data()), r, c);
  };
  auto i1 = [](const auto& b, std::int64_t n) {
    return make_view(static_cast<const std::int32_t*>(b.data()), n);
  };
  const auto Q = make_view(static_cast<const float*>(q.data()), B, Tq, Hq, D);
  const auto O = make_view(o.data(), B, Tq, Hq, D);
  const auto L = make_view(lse.data(), B, Hq, Tq);
  using cache_t = weft::paged_kv_cache<float, float>;
  const cache_t good{make_view(kp.data(), NP, PS, Hkv, D), make_view(vp.data(), NP, PS, Hkv, D),
                     i2(gt, B, MP), i1(gl, B)};
  auto with = [&](auto f) {
    cache_t c = good;
    f(c);
    return c;
  };
  weft::paged_attention(be, Q, good, O, L);  // the good call writes (the bad ones below get o2, lse2)
  const std::vector<float> o0 = o.to_host();
  CHECK(o0 != std::vector<float>(o0.size(), -7.0f));
  buffer<TestType, float> o2(be, o.size(), -7.0f), lse2(be, lse.size(), -7.0f);
  const auto O2 = make_view(o2.data(), B, Tq, Hq, D);
  const auto L2 = make_view(lse2.data(), B, Hq, Tq);
  auto call2 = [&](const cache_t& c, const weft::paged_attention_options& opt = {}) {
    weft::paged_attention(be, Q, c, O2, L2, opt);
  };
  // shapes
  weft_test::expect_bad("cache.k_pages", [&] {  // Hq % Hkv != 0
    call2(with([&](cache_t& c) {
      c.k_pages = make_view(kp.data(), NP / 3 * 2, PS, 3, D);
      c.v_pages = make_view(vp.data(), NP / 3 * 2, PS, 3, D);
    }));
  });
  weft_test::expect_bad(
      "q", [&] { call2(with([&](cache_t& c) { c.k_pages = make_view(kp.data(), NP, PS, Hkv, D / 2); })); });
  weft_test::expect_bad("cache.v_pages", [&] {
    call2(with([&](cache_t& c) { c.v_pages = make_view(vp.data(), NP, PS / 2, Hkv, D * 2); }));
  });
  weft_test::expect_bad("cache.block_table",
                        [&] { call2(with([&](cache_t& c) { c.block_table = i2(gt, 1, MP); })); });
  weft_test::expect_bad("cache.k_lengths",
                        [&] { call2(with([&](cache_t& c) { c.k_lengths = i1(gl, 1); })); });
  weft_test::expect_bad(
      "o", [&] { weft::paged_attention(be, Q, good, make_view(o2.data(), B, Tq, Hq, D / 2), L2); });
  weft_test::expect_bad("lse",
                        [&] { weft::paged_attention(be, Q, good, O2, make_view(lse2.data(), B, Tq, Hq)); });
  weft_test::expect_bad("o", [&] {  // o overlapping the pages
    weft::paged_attention(be, Q, good, make_view(vp.data(), B, Tq, Hq, D), L2);
  });
  weft_test::expect_bad("lse",
                        [&] { weft::paged_attention(be, Q, good, O2, make_view(o2.data(), B, Hq, Tq)); });
  // values: the block table's used entries, k_lengths
  try {
    call2(with([&](cache_t& c) { c.block_table = i2(bt, B, MP); }));
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "cache.block_table");
    CHECK(std::string(e.what()).find("block_table[1, 1] = 6") != std::string::npos);
  }
  weft_test::expect_bad("cache.block_table",
                        [&] { call2(with([&](cache_t& c) { c.block_table = i2(nt, B, MP); })); });
  try {
    call2(with([&](cache_t& c) { c.k_lengths = i1(ll, B); }));
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "cache.k_lengths");
    CHECK(std::string(e.what()).find("k_lengths[1] = 13") != std::string::npos);
  }
  weft_test::expect_bad("cache.k_lengths",
                        [&] { call2(with([&](cache_t& c) { c.k_lengths = i1(sl, B); })); });
  // options
  weft_test::expect_bad("opts.window.left", [&] { call2(good, {.window = {-2, 0}}); });
  weft_test::expect_bad("opts.window.right", [&] { call2(good, {.window = {3, -5}}); });
  weft_test::expect_bad("opts.split_keys", [&] { call2(good, {.split_keys = -1}); });
  weft_test::expect_bad("opts.scale", [&] { call2(good, {.scale = -1.0f}); });
  weft_test::expect_bad("opts.softcap",
                        [&] { call2(good, {.softcap = std::numeric_limits<float>::infinity()}); });
  std::vector<std::uint8_t> mh(static_cast<std::size_t>(B * Tq * 6), 1);
  buffer<TestType, std::uint8_t> m(be, mh);
  weft_test::expect_bad("opts.mask", [&] {  // M = 6 > k_lengths[0] = 5
    call2(good, {.mask = make_view(static_cast<const std::uint8_t*>(m.data()), B, Tq, 6)});
  });
  weft_test::expect_bad("opts.mask", [&] {
    call2(good, {.mask = make_view(static_cast<const std::uint8_t*>(m.data()), B, Tq + 1, 2)});
  });
  // workspace: too small
  const std::size_t ws = weft::workspace_size(be, weft::ops::paged_attention{}, Q, good);
  CHECK(ws > 0);
  weft_test::expect_bad("workspace", [&] {
    weft::paged_attention_options opt;
    opt.workspace = {kp.data(), 8};
    call2(good, opt);
  });
  CHECK(o2.to_host() == std::vector<float>(o2.size(), -7.0f));
  CHECK(lse2.to_host() == std::vector<float>(lse2.size(), -7.0f));
  // append: start + Tn beyond the table, overlapping inputs, two rows writing one slot
  buffer<TestType, float> kn(be, static_cast<std::size_t>(B * 2 * Hkv * D), 3.0f), vn(be, kn.size(), 4.0f);
  const std::vector<std::int32_t> st_ok{3, 8}, st_far{3, 11}, st_neg{-1, 0}, st_p1{3, 4},
      same_table{0, 1, -1, 0, 1, -1};
  buffer<TestType, std::int32_t> so(be, st_ok), sf(be, st_far), sn(be, st_neg), s1(be, st_p1),
      st2(be, same_table);
  const auto KN = make_view(static_cast<const float*>(kn.data()), B, 2, Hkv, D);
  const auto VN = make_view(static_cast<const float*>(vn.data()), B, 2, Hkv, D);
  const std::vector<float> kp0 = kp.to_host(), vp0 = vp.to_host();
  try {
    weft::append_paged_kv(be, good, KN, VN, i1(sf, B));
    FAIL("no exception");
  } catch (const weft::invalid_argument& e) {
    CHECK(e.argument() == "start");
    CHECK(std::string(e.what()).find("start[1] = 11") != std::string::npos);
  }
  weft_test::expect_bad("start", [&] { weft::append_paged_kv(be, good, KN, VN, i1(sn, B)); });
  weft_test::expect_bad("start", [&] { weft::append_paged_kv(be, good, KN, VN, i1(so, 1)); });
  weft_test::expect_bad("v_new", [&] {
    weft::append_paged_kv(be, good, KN, make_view(static_cast<const float*>(vn.data()), B, 2, Hkv, D / 2),
                          i1(so, B));
  });
  weft_test::expect_bad("cache.k_pages", [&] {  // k_new inside the pages
    weft::append_paged_kv(be, good, make_view(static_cast<const float*>(kp.data()), B, 2, Hkv, D), VN,
                          i1(so, B));
  });
  weft_test::expect_bad("cache.block_table", [&] {  // rows 0 and 1 share pages 0, 1: slot 3 of page 0 twice
    const std::vector<std::int32_t> s{3, 2};
    buffer<TestType, std::int32_t> sb(be, s);
    weft::append_paged_kv(be, with([&](cache_t& c) { c.block_table = i2(st2, B, MP); }), KN, VN, i1(sb, B));
  });
  weft_test::expect_bad("cache.block_table", [&] {  // row 1 writes positions 4, 5: block_table[1, 1] = 6
    weft::append_paged_kv(be, with([&](cache_t& c) { c.block_table = i2(bt, B, MP); }), KN, VN, i1(s1, B));
  });
  weft_test::expect_bad("cache.v_pages", [&] {  // the value pages inside the key pages
    weft::append_paged_kv(be, with([&](cache_t& c) { c.v_pages = make_view(kp.data(), NP, PS, Hkv, D); }), KN,
                          VN, i1(so, B));
  });
  CHECK(kp.to_host() == kp0);
  CHECK(vp.to_host() == vp0);
  weft::append_paged_kv(be, good, KN, VN, i1(so, B));  // the good call writes
  CHECK(kp.to_host() != kp0);
}
