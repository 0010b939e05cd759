// weft_torch: sampling and speculative verification (FlashInfer-like names in weft_torch.sampling)
// on weft's decode family, Kokkos host path. Token ids are int32, as in weft and FlashInfer.
#include "common.hpp"

#include <tuple>

namespace weft_torch {
namespace {

using at::Tensor;
using opt = std::optional<Tensor>;

/// An optional [B] uint64 view from an int64 tensor (seeds, offsets), or an empty view.
Tensor u64_arg(const char* fn, const char* name, const opt& t) {
  if (!given(t)) return {};
  check_cpu(fn, name, *t);
  check_rank(fn, name, *t, 1, "[B]");
  TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, "weft_torch.", fn, ": ", name, " must be int64, got ",
                   t->scalar_type());
  return t->contiguous();
}

weft::tensor_view<const std::uint64_t, 1> u64_view(const Tensor& t) {
  if (!t.defined()) return {};
  return weft::tensor_view<const std::uint64_t, 1>(static_cast<const std::uint64_t*>(t.data_ptr()),
                                                   {t.size(0)}, {t.stride(0)});
}

Tensor i32_arg(const char* fn, const char* name, const Tensor& t, int rank, const char* shape) {
  check_cpu(fn, name, t);
  check_rank(fn, name, t, rank, shape);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, "weft_torch.", fn, ": ", name,
                   " must be int32 or int64 token ids, got ", t.scalar_type());
  if (t.scalar_type() == at::kLong) {
    // ids beyond int32 cannot be a vocabulary index: the conversion must not wrap them into one
    TORCH_CHECK_VALUE(t.numel() == 0 || (t.max().item<std::int64_t>() <= INT32_MAX &&
                                         t.min().item<std::int64_t>() >= INT32_MIN),
                      "weft_torch.", fn, ": ", name, " holds ids outside the int32 range");
  }
  return t.to(at::kInt).contiguous();
}

std::tuple<Tensor, Tensor> sample(const Tensor& x_, bool probs, double temperature, std::int64_t top_k,
                                  double top_p, double min_p, std::int64_t seed, std::int64_t offset,
                                  const opt& seeds_, const opt& offsets_) {
  const char* fn = probs ? "sample_probs" : "sample";
  check_cpu(fn, probs ? "probs" : "logits", x_);
  check_rank(fn, probs ? "probs" : "logits", x_, 2, "[B,Vocab]");
  const Tensor seeds = u64_arg(fn, "seeds", seeds_), offsets = u64_arg(fn, "offsets", offsets_);
  return dispatch_float(fn, probs ? "probs" : "logits", x_, [&]<class T>() -> std::tuple<Tensor, Tensor> {
    const Tensor x = x_.contiguous();
    Tensor tokens = at::empty({x.size(0)}, x.options().dtype(at::kInt));
    Tensor valid = at::empty({x.size(0)}, x.options().dtype(at::kByte));
    const weft::sample_options o{.temperature = static_cast<float>(temperature),
                                 .top_k = top_k,
                                 .top_p = static_cast<float>(top_p),
                                 .min_p = static_cast<float>(min_p),
                                 .seed = static_cast<std::uint64_t>(seed),
                                 .offset = static_cast<std::uint64_t>(offset),
                                 .seeds = u64_view(seeds),
                                 .offsets = u64_view(offsets),
                                 .valid = view<std::uint8_t, 1>(valid)};
    translate([&] {
      if (probs)
        weft::sample_probs(host_backend(), view<const T, 2>(x), view<std::int32_t, 1>(tokens), o);
      else
        weft::sample(host_backend(), view<const T, 2>(x), view<std::int32_t, 1>(tokens), o);
    });
    return {tokens, valid.to(at::kBool)};
  });
}

std::tuple<Tensor, Tensor> speculative(const Tensor& draft_probs_, const Tensor& draft_tokens_,
                                       const Tensor& target_probs_, std::int64_t seed, std::int64_t offset,
                                       const opt& lengths_) {
  constexpr const char* fn = "speculative_sample";
  check_cpu(fn, "draft_probs", draft_probs_);
  check_cpu(fn, "target_probs", target_probs_);
  check_rank(fn, "draft_probs", draft_probs_, 3, "[B,L,Vocab]");
  check_rank(fn, "target_probs", target_probs_, 3, "[B,L+1,Vocab]");
  const Tensor draft_tokens = i32_arg(fn, "draft_tokens", draft_tokens_, 2, "[B,L]");
  const Tensor lengths = given(lengths_) ? i32_arg(fn, "lengths", *lengths_, 1, "[B]") : Tensor{};
  TORCH_CHECK_TYPE(draft_probs_.scalar_type() == target_probs_.scalar_type(), "weft_torch.", fn,
                   ": draft_probs and target_probs must have one dtype");
  return dispatch_float(fn, "draft_probs", draft_probs_, [&]<class T>() -> std::tuple<Tensor, Tensor> {
    const Tensor dp = draft_probs_.contiguous(), tp = target_probs_.contiguous();
    const std::int64_t B = draft_tokens.size(0), L = draft_tokens.size(1);
    Tensor out = at::empty({B, L + 1}, dp.options().dtype(at::kInt));
    Tensor accepted = at::empty({B}, dp.options().dtype(at::kInt));
    const weft::speculative_options o{.seed = static_cast<std::uint64_t>(seed),
                                      .offset = static_cast<std::uint64_t>(offset),
                                      .lengths = lengths.defined()
                                                     ? view<const std::int32_t, 1>(lengths)
                                                     : weft::tensor_view<const std::int32_t, 1>{}};
    translate([&] {
      weft::speculative_sample(host_backend(), view<const T, 3>(dp),
                               view<const std::int32_t, 2>(draft_tokens), view<const T, 3>(tp),
                               view<std::int32_t, 2>(out), view<std::int32_t, 1>(accepted), o);
    });
    return {out, accepted};
  });
}

std::tuple<Tensor, Tensor> verify_greedy(const Tensor& draft_tokens_, const Tensor& target_logits_,
                                         const opt& lengths_) {
  constexpr const char* fn = "verify_greedy";
  check_cpu(fn, "target_logits", target_logits_);
  check_rank(fn, "target_logits", target_logits_, 3, "[B,L+1,Vocab]");
  const Tensor draft_tokens = i32_arg(fn, "draft_tokens", draft_tokens_, 2, "[B,L]");
  const Tensor lengths = given(lengths_) ? i32_arg(fn, "lengths", *lengths_, 1, "[B]") : Tensor{};
  return dispatch_float(fn, "target_logits", target_logits_, [&]<class T>() -> std::tuple<Tensor, Tensor> {
    const Tensor tl = target_logits_.contiguous();
    const std::int64_t B = draft_tokens.size(0), L = draft_tokens.size(1);
    Tensor out = at::empty({B, L + 1}, tl.options().dtype(at::kInt));
    Tensor accepted = at::empty({B}, tl.options().dtype(at::kInt));
    const weft::verify_options o{.lengths = lengths.defined() ? view<const std::int32_t, 1>(lengths)
                                                              : weft::tensor_view<const std::int32_t, 1>{}};
    translate([&] {
      weft::verify_greedy(host_backend(), view<const std::int32_t, 2>(draft_tokens), view<const T, 3>(tl),
                          view<std::int32_t, 2>(out), view<std::int32_t, 1>(accepted), o);
    });
    return {out, accepted};
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(weft, m) {
  m.def(
      "sample(Tensor x, bool probs, float temperature, int top_k, float top_p, float min_p, int seed, int "
      "offset, "
      "Tensor? seeds, Tensor? offsets) -> (Tensor, Tensor)");
  m.def(
      "speculative_sample(Tensor draft_probs, Tensor draft_tokens, Tensor target_probs, int seed, int "
      "offset, "
      "Tensor? lengths) -> (Tensor, Tensor)");
  m.def("verify_greedy(Tensor draft_tokens, Tensor target_logits, Tensor? lengths) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(weft, CPU, m) {
  m.impl("sample", &sample);
  m.impl("speculative_sample", &speculative);
  m.impl("verify_greedy", &verify_greedy);
}

}  // namespace weft_torch
