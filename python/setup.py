"""Builds weft_torch: weft's kernels as PyTorch operators (torch.ops.weft.*).

    pip install --no-build-isolation ./python       (or scripts/test-python.sh)

Finds weft's headers in WEFT_INCLUDE_DIR, else the repository's include/ beside this folder,
else an installed prefix's include/ (CMAKE_PREFIX_PATH); Kokkos in Kokkos_ROOT, else the
prefix scripts/setup-deps.sh installs to. The operators run on weft's Kokkos host path.

Built for the CPU it is built on (-march=native, weft's runtime CPU dispatch off); set
WEFT_TORCH_PORTABLE=1 for a build that runs on any x86-64 and picks AVX2 / AVX-512 at run
time (compiles about 5x longer).
"""
import os
from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

here = Path(__file__).resolve().parent


def weft_include() -> Path:
    candidates = [os.environ.get("WEFT_INCLUDE_DIR"), here.parent / "include"]
    candidates += [Path(p) / "include" for p in os.environ.get("CMAKE_PREFIX_PATH", "").split(":") if p]
    for c in candidates:
        if c and (Path(c) / "weft" / "weft.hpp").is_file():
            return Path(c)
    raise SystemExit("weft_torch: weft's headers not found; set WEFT_INCLUDE_DIR to the folder holding weft/")


def kokkos_root() -> Path:
    deps = Path(os.environ.get("WEFT_DEPS_PREFIX", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weft-deps"))
    for c in [os.environ.get("Kokkos_ROOT"), deps / "kokkos"]:
        if c and (Path(c) / "include" / "Kokkos_Core.hpp").is_file():
            return Path(c)
    raise SystemExit("weft_torch: Kokkos not found; set Kokkos_ROOT (scripts/setup-deps.sh installs one)")


kokkos = kokkos_root()
libdir = next(d for d in (kokkos / "lib", kokkos / "lib64") if d.is_dir())
portable = os.environ.get("WEFT_TORCH_PORTABLE", "0") == "1"
cxx = ["-O3", "-std=c++20", "-fopenmp", "-DNDEBUG", "-Wno-unused-parameter", "-fno-wrapv"]
cxx += [] if portable else ["-march=native", "-DWEFT_NO_ISA_DISPATCH"]

setup(
    name="weft_torch",
    version="0.1.0",
    description="weft's sequence kernels (linear attention, attention, selective scan, sampling) as PyTorch operators",
    packages=["weft_torch"],
    ext_modules=[
        CppExtension(
            "weft_torch._C",
            sources=sorted(str(p.relative_to(here)) for p in (here / "csrc").glob("*.cpp")),
            include_dirs=[str(weft_include()), str(here / "csrc")],
            extra_compile_args={"cxx": cxx + ["-isystem", str(kokkos / "include")]},
            extra_link_args=["-fopenmp", str(libdir / "libkokkoscontainers.a"), str(libdir / "libkokkoscore.a"), "-ldl"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
)
