// snippet: examples/snippets/scan.cpp
#include <weft/weft.hpp>

#include <cassert>
#include <cstdio>
#include <vector>

// A user monoid: 2x2 integer matrices under multiplication (associative, not commutative).
struct mat_mul {
  struct value_type {
    long a, b, c, d;
  };
  value_type identity() const { return {1, 0, 0, 1}; }
  value_type operator()(const value_type& x, const value_type& y) const {
    return {x.a * y.a + x.b * y.c, x.a * y.b + x.b * y.d, x.c * y.a + x.d * y.c, x.c * y.b + x.d * y.d};
  }
};

int main() {
  const weft::serial_backend be;  // or weft::kokkos_backend<Kokkos::OpenMP>{}, weft::cuda_backend{stream}

  // Fibonacci by a scan of [[1,1],[1,0]] matrices: prefix i holds F(i+2), F(i+1), F(i+1), F(i).
  std::vector<mat_mul::value_type> m(10, {1, 1, 1, 0}), p(10);
  weft::inclusive_scan(be, weft::make_view(m.data(), 10), weft::make_view(p.data(), 10), mat_mul{});
  assert(p[9].b == 55);

  // h_t = a_t h_{t-1} + b_t on [B,T,D], and its gradients.
  const std::int64_t B = 1, T = 4, D = 1;
  std::vector<float> a = {0.5f, 0.5f, 0.5f, 0.5f}, b = {1, 1, 1, 1}, h(4), dh = {0, 0, 0, 1}, da(4), db(4);
  weft::linear_recurrence(be, weft::make_view(a.data(), B, T, D), weft::make_view(b.data(), B, T, D),
                          weft::make_view(h.data(), B, T, D));
  assert(h[3] == 1.875f);  // 1, 1.5, 1.75, 1.875
  weft::linear_recurrence_backward(be, weft::make_view(a.data(), B, T, D), weft::make_view(h.data(), B, T, D),
                                   weft::make_view(dh.data(), B, T, D), weft::make_view(da.data(), B, T, D),
                                   weft::make_view(db.data(), B, T, D));
  assert(db[0] == 0.125f);  // dh_3/db_0 = a_1 a_2 a_3

  // Reverse scans fold from the end: out[i] = x[n-1] . ... . x[i].
  std::vector<float> x = {1, 2, 3, 4}, y(4);
  weft::inclusive_scan(be, weft::make_view(x.data(), 4), weft::make_view(y.data(), 4), weft::plus{},
                       {.reverse = true});
  assert(y[0] == 10 && y[3] == 4);
  std::printf("F(10) = %ld, h_3 = %g, dL/db_0 = %g, reverse sum %g\n", p[9].b, h[3], db[0], y[0]);
  return 0;
}
