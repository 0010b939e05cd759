// weft_torch/csrc/common.hpp - what every operator unit shares: the backend, tensor -> view
// conversion, argument checks that belong to the binding (dtype, device), and the translation
// of weft's exceptions into the ones PyTorch maps to Python's ValueError / RuntimeError.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <Kokkos_Core.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include <weft/kokkos.hpp>

namespace weft_torch {

using backend = weft::kokkos_backend<Kokkos::DefaultHostExecutionSpace>;

/// Initialises Kokkos on first use (thread count: torch.get_num_threads() at that moment).
void ensure_kokkos();
/// The host backend, Kokkos initialised.
inline backend host_backend() {
  ensure_kokkos();
  return backend{};
}

/// The dtype of a float tensor as weft's element type is chosen by dispatch_float below.
[[noreturn]] void unsupported_dtype(const char* fn, const char* arg, const at::Tensor& t,
                                    const char* allowed);

/// Every tensor argument lives on the CPU (weft_torch's CUDA path is not built yet).
inline void check_cpu(const char* fn, const char* arg, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "weft_torch.", fn, ": ", arg, " is on ", t.device().str(),
                    "; this build of weft_torch runs CPU tensors only (weft's CUDA path is compiled, "
                    "its PyTorch binding is not yet built)");
}

/// A contiguous tensor of dtype `dt` holding `t` (copied only where needed).
inline at::Tensor as(const at::Tensor& t, at::ScalarType dt) {
  return t.to(dt).contiguous();
}

/// A contiguous row-major weft view of a tensor of element type T and rank R.
template <class T, int R>
weft::tensor_view<T, R> view(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == R && t.is_contiguous());
  std::array<std::int64_t, R> ext{};
  for (int d = 0; d < R; ++d) ext[d] = t.size(d);
  std::array<std::int64_t, R> str{};
  for (int d = 0; d < R; ++d) str[d] = t.stride(d);
  return weft::tensor_view<T, R>(static_cast<T*>(t.data_ptr()), ext, str);
}

/// Checks the rank of an argument (weft's own checks take it from there: extents, values).
inline void check_rank(const char* fn, const char* arg, const at::Tensor& t, int rank, const char* shape) {
  TORCH_CHECK_VALUE(t.dim() == rank, "weft_torch.", fn, ": ", arg, " must have ", rank, " dimensions ", shape,
                    ", got ", t.dim(), " (shape ", t.sizes(), ")");
}

/// Runs f, turning weft's argument errors into Python ValueError (c10::ValueError) and its
/// other exceptions into RuntimeError, with weft's message.
template <class F>
decltype(auto) translate(F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const weft::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
}

/// Calls f.template operator()<T>() with T = float or double as `t`'s dtype says.
template <class F>
decltype(auto) dispatch_float(const char* fn, const char* arg, const at::Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return f.template operator()<float>();
    case at::kDouble:
      return f.template operator()<double>();
    default:
      unsupported_dtype(fn, arg, t, "float32 or float64");
  }
}

template <class T>
constexpr at::ScalarType scalar_of() {
  if constexpr (std::is_same_v<T, double>)
    return at::kDouble;
  else
    return at::kFloat;
}

/// An optional tensor given (defined and present).
inline bool given(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined();
}

/// Sequence offsets (cu_seqlens) [N+1], int64 or int32, as a contiguous int64 tensor; undefined
/// when not given.
inline at::Tensor offsets_arg(const char* fn, const char* name, const std::optional<at::Tensor>& cu) {
  if (!given(cu)) return {};
  check_cpu(fn, name, *cu);
  check_rank(fn, name, *cu, 1, "[N+1]");
  TORCH_CHECK_TYPE(cu->scalar_type() == at::kLong || cu->scalar_type() == at::kInt, "weft_torch.", fn, ": ",
                   name, " must be int64 or int32 offsets, got ", cu->scalar_type());
  return as(*cu, at::kLong);
}

/// The view of offsets_arg's result (empty when it is undefined).
inline weft::tensor_view<const std::int64_t, 1> offsets_view(const at::Tensor& t) {
  return t.defined() ? view<const std::int64_t, 1>(t) : weft::tensor_view<const std::int64_t, 1>{};
}

}  // namespace weft_torch
