# Finds weft's optional backends. For each X in KOKKOS CUDA MPI NCCL:
#   WEFT_ENABLE_X undefined -> weft built on its own: enabled when found (a status line says
#                              which were left out); weft as a subproject (add_subdirectory,
#                              FetchContent): enabled only where the consumer already asked
#                              for it (a Kokkos::kokkos / MPI::MPI_CXX / NCCL::nccl target, the
#                              CUDA language enabled), else off
#   WEFT_ENABLE_X=ON        -> required: configuration fails when missing
#   WEFT_ENABLE_X=OFF       -> disabled

# Whether a consumer that add_subdirectory()s weft already uses backend `name`.
function(_weft_consumer_uses name out)
  set(uses OFF)
  if(name STREQUAL "KOKKOS" AND TARGET Kokkos::kokkos)
    set(uses ON)
  elseif(name STREQUAL "CUDA" AND CMAKE_CUDA_COMPILER_LOADED)
    set(uses ON)
  elseif(name STREQUAL "MPI" AND TARGET MPI::MPI_CXX)
    set(uses ON)
  elseif(name STREQUAL "NCCL" AND TARGET NCCL::nccl)
    set(uses ON)
  endif()
  set(${out} ${uses} PARENT_SCOPE)
endfunction()

macro(_weft_optional name)
  if(DEFINED WEFT_ENABLE_${name})
    set(_weft_required_${name} ${WEFT_ENABLE_${name}})
    set(_weft_try_${name} ${WEFT_ENABLE_${name}})
  elseif(NOT PROJECT_IS_TOP_LEVEL)
    set(_weft_required_${name} OFF)
    _weft_consumer_uses(${name} _weft_try_${name})
  else()
    set(_weft_required_${name} OFF)
    set(_weft_try_${name} ON)
  endif()
  if(NOT _weft_try_${name})
    set(WEFT_ENABLE_${name} OFF)
  endif()
endmacro()

# The detected result is a normal variable (it shadows nothing the user set), so a later
# configure detects again instead of remembering a first "not found" forever.
macro(_weft_result name found why)
  if(${found})
    set(WEFT_ENABLE_${name} ON)
  elseif(_weft_required_${name})
    message(FATAL_ERROR "weft: WEFT_ENABLE_${name}=ON but ${why}")
  else()
    if(_weft_try_${name})
      message(STATUS "weft: ${name} backend left out: ${why}")
    endif()
    set(WEFT_ENABLE_${name} OFF)
  endif()
endmacro()

# --- Kokkos -------------------------------------------------------------------------------
_weft_optional(KOKKOS)
if(_weft_try_KOKKOS)
  set(_weft_kokkos_hints "")
  if(DEFINED ENV{WEFT_DEPS_PREFIX})
    list(APPEND _weft_kokkos_hints "$ENV{WEFT_DEPS_PREFIX}/kokkos")
  endif()
  if(DEFINED ENV{XDG_CACHE_HOME})
    list(APPEND _weft_kokkos_hints "$ENV{XDG_CACHE_HOME}/weft-deps/kokkos")
  endif()
  list(APPEND _weft_kokkos_hints "$ENV{HOME}/.cache/weft-deps/kokkos")
  find_package(Kokkos CONFIG QUIET HINTS ${_weft_kokkos_hints})
  _weft_result(KOKKOS Kokkos_FOUND "Kokkos was not found (run scripts/setup-deps.sh or set Kokkos_ROOT)")
  if(Kokkos_FOUND)
    message(STATUS "weft: Kokkos ${Kokkos_VERSION} from ${Kokkos_DIR}")
  endif()
endif()

# --- CUDA ---------------------------------------------------------------------------------
_weft_optional(CUDA)
if(_weft_try_CUDA)
  include(CheckLanguage)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
    set(CMAKE_CUDA_ARCHITECTURES 90)  # CI default; the 'cuda' preset builds 80;90
  endif()
  check_language(CUDA)
  set(_weft_cuda_ok OFF)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit QUIET)
    if(CUDAToolkit_FOUND)
      set(_weft_cuda_ok ON)
      set(CMAKE_CUDA_STANDARD 20)
      set(CMAKE_CUDA_STANDARD_REQUIRED ON)
      message(STATUS "weft: CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
    endif()
  endif()
  _weft_result(CUDA _weft_cuda_ok "no CUDA compiler (nvcc) was found")
endif()

# --- MPI ----------------------------------------------------------------------------------
_weft_optional(MPI)
if(_weft_try_MPI)
  set(MPI_CXX_SKIP_MPICXX ON)
  find_package(MPI QUIET COMPONENTS CXX)
  _weft_result(MPI MPI_CXX_FOUND "MPI was not found")
  # Flags weft's own tests and examples pass to mpiexec: Open MPI needs --oversubscribe to run
  # more ranks than cores (MPICH's hydra runs them as is, and rejects the flag).
  set(WEFT_MPIEXEC_FLAGS "")
  if(MPIEXEC_EXECUTABLE)
    execute_process(COMMAND "${MPIEXEC_EXECUTABLE}" --version OUTPUT_VARIABLE _weft_mpiexec_version ERROR_QUIET)
    if(_weft_mpiexec_version MATCHES "Open MPI|OpenRTE")
      set(WEFT_MPIEXEC_FLAGS --oversubscribe)
    endif()
  endif()
endif()

# --- NCCL (needs CUDA) --------------------------------------------------------------------
_weft_optional(NCCL)
if(_weft_try_NCCL)
  set(_weft_nccl_ok OFF)
  if(WEFT_ENABLE_CUDA)
    find_package(NCCL QUIET)
    set(_weft_nccl_ok ${NCCL_FOUND})
  endif()
  _weft_result(NCCL _weft_nccl_ok "NCCL (and CUDA) were not found")
endif()
