// weft_torch/_C: Kokkos' lifetime inside the Python process, and the extension module that
// `import weft_torch._C` loads (the operators register themselves through TORCH_LIBRARY).
#include <Python.h>

#include <ATen/Parallel.h>

#include <mutex>
#include <string>

#include "common.hpp"

namespace weft_torch {

namespace {
std::once_flag kokkos_once;
int kokkos_threads = 0;
bool we_initialised = false;  ///< Kokkos was initialised here (and so is finalised here)
}  // namespace

void ensure_kokkos() {
  std::call_once(kokkos_once, [] {
    if (Kokkos::is_initialized()) return;  // the embedding program initialised it
    kokkos_threads = at::get_num_threads();
#if defined(KOKKOS_VERSION) && KOKKOS_VERSION >= 40000
    Kokkos::initialize(
        Kokkos::InitializationSettings().set_num_threads(kokkos_threads).set_disable_warnings(true));
#else
    Kokkos::InitArguments args;
    args.num_threads = kokkos_threads;
    args.disable_warnings = true;  // OMP_PROC_BIND advice: the OpenMP runtime is torch's
    Kokkos::initialize(args);
#endif
    we_initialised = true;
  });
}

[[noreturn]] void unsupported_dtype(const char* fn, const char* arg, const at::Tensor& t,
                                    const char* allowed) {
  TORCH_CHECK_TYPE(false, "weft_torch.", fn, ": ", arg, " has dtype ", t.scalar_type(),
                   "; supported: ", allowed);
  std::abort();
}

namespace {

/// Threads of weft's Kokkos host space (initialising it if needed).
std::int64_t num_threads() {
  ensure_kokkos();
  return Kokkos::DefaultHostExecutionSpace().concurrency();
}

/// Called from Python's atexit: Kokkos is finalised before the interpreter tears down.
void finalize() {
  if (we_initialised && Kokkos::is_initialized()) Kokkos::finalize();
  we_initialised = false;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(weft, m) {
  m.def("num_threads() -> int", &num_threads);
  m.def("_finalize() -> ()", &finalize);
}

}  // namespace weft_torch

extern "C" {
/// `import weft_torch._C` loads this library (and so registers the operators); it has no
/// Python functions of its own: everything is under torch.ops.weft.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}
