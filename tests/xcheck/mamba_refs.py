"""mamba_ssm's and causal-conv1d's own reference functions, loaded without their CUDA builds.

Both packages are installed WITHOUT their CUDA extensions (MAMBA_SKIP_CUDA_BUILD=TRUE,
CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE; scripts/xcheck-mamba.sh), and the modules that hold the
references import the extensions (`import selective_scan_cuda`, `import causal_conv1d_cuda`) or
triton at import time, and mamba_ssm/__init__.py imports the whole model stack. So nothing here
imports them: load() finds each package's folder (importlib.util.find_spec of the top-level name,
which runs nothing), parses the file and executes only the named reference functions, as written
there, with the names they use (torch, F, rearrange, repeat from einops, Tensor).

Used by tests/xcheck/check_mamba.py (weft's C++ ssm family) and python/tests/test_mamba.py
(weft_torch.mamba). load() raises ImportError when torch, einops or a package is absent.
"""
import ast
import importlib.util
import os

NAMES = {
    "selective_scan_ref": ("mamba_ssm", "ops/selective_scan_interface.py"),
    "selective_state_update_ref": ("mamba_ssm", "ops/triton/selective_state_update.py"),
    "causal_conv1d_ref": ("causal_conv1d", "causal_conv1d_interface.py"),
    "causal_conv1d_update_ref": ("causal_conv1d", "causal_conv1d_interface.py"),
    "causal_conv1d_varlen_states_ref": ("causal_conv1d", "causal_conv1d_varlen.py"),
}


def _load(package, relpath, names):
    import torch
    import torch.nn.functional as F
    from einops import rearrange, repeat

    spec = importlib.util.find_spec(package)  # a top-level name: its __init__ is not run
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no module named {package!r}")
    path = os.path.join(list(spec.submodule_search_locations)[0], relpath)
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError) as e:
        raise ImportError(f"{path}: {e}") from e
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    missing = set(names) - {d.name for d in defs}
    if missing:
        raise ImportError(f"{path} defines no {sorted(missing)}")
    env = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat, "Tensor": torch.Tensor,
           "__name__": f"{package}_refs"}
    exec(compile(ast.Module(body=defs, type_ignores=[]), path, "exec"), env)  # noqa: S102
    return {n: env[n] for n in names}


def load(*names):
    """The reference functions `names` (keys of NAMES), in that order."""
    by_file = {}
    for n in names:
        by_file.setdefault(NAMES[n], []).append(n)
    found = {}
    for (package, relpath), ns in by_file.items():
        found.update(_load(package, relpath, ns))
    return [found[n] for n in names]
