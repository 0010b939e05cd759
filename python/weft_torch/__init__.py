"""weft_torch: weft's sequence kernels as PyTorch operators (torch.ops.weft.*).

FLA-compatible linear attention (weft_torch.fla), flash-attn-compatible attention
(weft_torch.flash_attn), mamba_ssm / causal-conv1d-compatible selective scan and conv
(weft_torch.mamba) and sampling (weft_torch.sampling). CPU tensors run weft's Kokkos
OpenMP path with torch.get_num_threads() threads (read once, at the first call).
"""
import atexit

import torch

from . import _C  # noqa: F401  (registers torch.ops.weft.*)
from . import _meta  # noqa: F401  (fake kernels and autograd)

atexit.register(torch.ops.weft._finalize)


def num_threads() -> int:
    """Threads weft's Kokkos host space runs on (fixed at the first call)."""
    return torch.ops.weft.num_threads()


from . import flash_attn, mamba, sampling  # noqa: E402,F401
from .fla import (  # noqa: E402
    chunk_delta_rule,
    chunk_gated_delta_rule,
    chunk_gla,
    chunk_linear_attn,
    chunk_mlstm,
    chunk_simple_gla,
    fused_recurrent_delta_rule,
    fused_recurrent_gated_delta_rule,
    fused_recurrent_gla,
    fused_recurrent_linear_attn,
    fused_recurrent_mlstm,
    fused_recurrent_simple_gla,
    linear_attention_step,
)

__all__ = [
    "num_threads",
    "chunk_simple_gla",
    "chunk_gla",
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "chunk_linear_attn",
    "chunk_mlstm",
    "fused_recurrent_simple_gla",
    "fused_recurrent_gla",
    "fused_recurrent_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "fused_recurrent_linear_attn",
    "fused_recurrent_mlstm",
    "linear_attention_step",
]
