"""FLA-compatible linear attention: the names, argument names, [B,T,H,K] layout and results of
flash-linear-attention's `fla.ops.*` functions, on weft's kernels.

    from weft_torch.fla import chunk_gla          # instead of: from fla.ops.gla import chunk_gla
    o, final_state = chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)

Every function returns `(o, final_state)`, `final_state` None unless `output_final_state`.
States are float32 `[N,H,K,V]` (N = B, or len(cu_seqlens) - 1 with B == 1), as in FLA.
Gates are in log space per token, as in FLA (`g = F.logsigmoid(...)`). The `chunk_*` and
`fused_recurrent_*` forms compute the same function (weft's chunk form and its token loop);
both are differentiable through weft's backward kernels.
"""
from typing import Optional, Tuple

import torch

_op = torch.ops.weft.linear_attention


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    # FLA's l2norm (fla.modules.l2norm): x / sqrt(sum(x^2) + 1e-6), on the last dimension.
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _check_layout(fn: str, head_first: bool) -> None:
    if head_first:
        raise ValueError(f"weft_torch.{fn}: head_first=True is not supported (FLA deprecated it); "
                         "pass [B,T,H,K] tensors")


def _run(fn, q, k, v, gate, g=None, beta=None, i=None, f=None, scale=None, initial_state=None,
         output_final_state=False, cu_seqlens=None, recurrent=False, chunk_size=64, normalizer=None,
         stabilizer=None, sigmoid=False):
    if cu_seqlens is not None and q.dim() == 4 and q.shape[0] != 1:
        raise ValueError(f"weft_torch.{fn}: with cu_seqlens the batch size must be 1, got {q.shape[0]}")
    if scale is not None:
        scale = float(scale)
    o, hT, nT, mT = _op(q, k, v, gate, g, beta, i, f, scale, initial_state, normalizer, stabilizer,
                        bool(output_final_state), cu_seqlens, recurrent, int(chunk_size), sigmoid)
    return o, hT, nT, mT


def _hints(fn, kwargs):
    # FLA's hints that weft derives itself (chunk_indices from cu_seqlens); anything else is an error.
    for name, value in kwargs.items():
        if name in ("chunk_indices", "cu_seqlens_cpu"):
            continue
        if name == "cp_context" and value is None:
            continue
        raise TypeError(f"weft_torch.{fn}: unsupported argument {name}")


def _la(fn, q, k, v, gate, recurrent, output_final_state, state_v_first=False, initial_state=None, **kw):
    # state_v_first: FLA's [N,H,V,K] state layout; weft's is [N,H,K,V].
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, hT, _, _ = _run(fn, q, k, v, gate, recurrent=recurrent, output_final_state=output_final_state,
                       initial_state=initial_state, **kw)
    if not output_final_state:
        return o, None
    return o, (hT.transpose(-1, -2) if state_v_first else hT)


def _gamma(fn, q, g, g_gamma):
    # FLA's g_gamma [H]: a constant log decay per head (RetNet), broadcast over [B,T,H].
    if g_gamma is None:
        return g
    if g is not None:
        raise ValueError(f"weft_torch.{fn}: pass g or g_gamma, not both")
    return g_gamma.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2])


def _beta(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval):
    # FLA: beta = sigmoid(beta) (x 2 with allow_neg_eigval) inside the kernel when asked.
    if use_beta_sigmoid_in_kernel:
        beta = torch.sigmoid(beta) * (2.0 if allow_neg_eigval else 1.0)
    return beta


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None, output_final_state=False,
                     state_v_first=False, cu_seqlens=None, head_first=False, chunk_size=64, **kwargs):
    """Simple GLA / RetNet / Mamba2-SSD: S_t = exp(g_t) S_{t-1} + k_t v_t^T, g [B,T,H] (None: no decay)."""
    _check_layout("chunk_simple_gla", head_first)
    _hints("chunk_simple_gla", kwargs)
    g = _gamma("chunk_simple_gla", q, g, g_gamma)
    return _la("chunk_simple_gla", q, k, v, "scalar" if g is not None else "none", False, output_final_state,
               state_v_first, initial_state, g=g, scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size)


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, reverse=False, state_v_first=False, cu_seqlens=None,
                               head_first=False, **kwargs):
    """The token loop of chunk_simple_gla."""
    _check_layout("fused_recurrent_simple_gla", head_first)
    _hints("fused_recurrent_simple_gla", kwargs)
    if reverse:
        raise ValueError("weft_torch.fused_recurrent_simple_gla: reverse=True is not supported")
    g = _gamma("fused_recurrent_simple_gla", q, g, g_gamma)
    return _la("fused_recurrent_simple_gla", q, k, v, "scalar" if g is not None else "none", True,
               output_final_state, state_v_first, initial_state, g=g, scale=scale, cu_seqlens=cu_seqlens)


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, state_v_first=False,
              cu_seqlens=None, head_first=False, chunk_size=64, **kwargs):
    """GLA: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, g [B,T,H,K] (decay on the key dimension)."""
    _check_layout("chunk_gla", head_first)
    _hints("chunk_gla", kwargs)
    return _la("chunk_gla", q, k, v, "vector", False, output_final_state, state_v_first, initial_state, g=g,
               scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size)


def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None, output_final_state=False,
                        reverse=False, state_v_first=False, cu_seqlens=None, head_first=False, **kwargs):
    """The token loop of chunk_gla (FLA's argument name gk; gv, a decay on the value dimension, is not supported)."""
    _check_layout("fused_recurrent_gla", head_first)
    _hints("fused_recurrent_gla", kwargs)
    if gv is not None or reverse:
        raise ValueError("weft_torch.fused_recurrent_gla: gv and reverse=True are not supported")
    return _la("fused_recurrent_gla", q, k, v, "vector" if gk is not None else "none", True, output_final_state,
               state_v_first, initial_state, g=gk, scale=scale, cu_seqlens=cu_seqlens)


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False, normalize=False,
                      cu_seqlens=None, head_first=False, chunk_size=64):
    """Linear attention without gate: S_t = S_{t-1} + k_t v_t^T (normalize=True is not supported)."""
    _check_layout("chunk_linear_attn", head_first)
    if normalize:
        raise ValueError("weft_torch.chunk_linear_attn: normalize=True is not supported")
    return _la("chunk_linear_attn", q, k, v, "none", False, output_final_state, False, initial_state, scale=scale,
               cu_seqlens=cu_seqlens, chunk_size=chunk_size)


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                                normalize=False, cu_seqlens=None, head_first=False):
    """The token loop of chunk_linear_attn."""
    _check_layout("fused_recurrent_linear_attn", head_first)
    if normalize:
        raise ValueError("weft_torch.fused_recurrent_linear_attn: normalize=True is not supported")
    return _la("fused_recurrent_linear_attn", q, k, v, "none", True, output_final_state, False, initial_state,
               scale=scale, cu_seqlens=cu_seqlens)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                     head_first=False, use_qk_l2norm_in_kernel=False, state_v_first=False, chunk_size=64,
                     **kwargs):
    """DeltaNet: S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T, beta [B,T,H]."""
    _check_layout("chunk_delta_rule", head_first)
    _hints("chunk_delta_rule", kwargs)
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    return _la("chunk_delta_rule", q, k, v, "delta", False, output_final_state, state_v_first, initial_state,
               beta=beta, scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size)


def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None, output_final_state=False,
                               cu_seqlens=None, head_first=False, use_qk_l2norm_in_kernel=False,
                               state_v_first=False, **kwargs):
    """The token loop of chunk_delta_rule (beta None: ones, as in FLA)."""
    _check_layout("fused_recurrent_delta_rule", head_first)
    _hints("fused_recurrent_delta_rule", kwargs)
    if beta is None:
        beta = q.new_ones(q.shape[:3])
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    return _la("fused_recurrent_delta_rule", q, k, v, "delta", True, output_final_state, state_v_first,
               initial_state, beta=beta, scale=scale, cu_seqlens=cu_seqlens)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           use_qk_l2norm_in_kernel=False, use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                           state_v_first=False, cu_seqlens=None, head_first=False, chunk_size=64, **kwargs):
    """Gated DeltaNet: S_t = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T, a_t = exp(g_t), g, beta [B,T,H]."""
    _check_layout("chunk_gated_delta_rule", head_first)
    _hints("chunk_gated_delta_rule", kwargs)
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    beta = _beta(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    return _la("chunk_gated_delta_rule", q, k, v, "gated_delta", False, output_final_state, state_v_first,
               initial_state, g=g, beta=beta, scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size)


def fused_recurrent_gated_delta_rule(q, k, v, g, beta=None, scale=None, initial_state=None,
                                     output_final_state=False, use_qk_l2norm_in_kernel=False,
                                     use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                                     state_v_first=False, cu_seqlens=None, head_first=False, **kwargs):
    """The token loop of chunk_gated_delta_rule."""
    _check_layout("fused_recurrent_gated_delta_rule", head_first)
    _hints("fused_recurrent_gated_delta_rule", kwargs)
    if beta is None:
        beta = q.new_ones(q.shape[:3])
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    beta = _beta(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    return _la("fused_recurrent_gated_delta_rule", q, k, v, "gated_delta", True, output_final_state,
               state_v_first, initial_state, g=g, beta=beta, scale=scale, cu_seqlens=cu_seqlens)


def _mlstm(fn, recurrent, q, k, v, i, f, scale, initial_state, output_final_state, cu_seqlens, input_gate,
           chunk_size):
    if input_gate not in ("exponential", "sigmoid"):
        raise ValueError(f"weft_torch.{fn}: input_gate must be 'exponential' or 'sigmoid', got {input_gate!r}")
    sig = input_gate == "sigmoid"
    C0 = n0 = m0 = None
    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != (2 if sig else 3):
            raise ValueError(f"weft_torch.{fn}: initial_state must be the tuple (C [N,H,K,V], n [N,H,K]"
                             + ("" if sig else ", m [N,H]") + ")")
        C0, n0 = initial_state[0], initial_state[1]
        m0 = None if sig else initial_state[2]
    o, hT, nT, mT = _run(fn, q, k, v, "mlstm", i=i, f=f, scale=scale, initial_state=C0, normalizer=n0,
                         stabilizer=m0, output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                         recurrent=recurrent, chunk_size=chunk_size, sigmoid=sig)
    if not output_final_state:
        return o, None
    return o, ((hT, nT) if sig else (hT, nT, mT))


def chunk_mlstm(q, k, v, i, f, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                input_gate="exponential", chunk_size=64):
    """xLSTM mLSTM (mlstm_kernels' chunkwise kernel) in FLA's [B,T,H,K] layout: i, f [B,T,H] gate
    pre-activations; the state is the tuple (C [N,H,K,V], n [N,H,K], m [N,H]) (no m for the sigmoid input gate)."""
    return _mlstm("chunk_mlstm", False, q, k, v, i, f, scale, initial_state, output_final_state, cu_seqlens,
                  input_gate, chunk_size)


def fused_recurrent_mlstm(q, k, v, i, f, scale=None, initial_state=None, output_final_state=False,
                          cu_seqlens=None, input_gate="exponential"):
    """The token loop of chunk_mlstm."""
    return _mlstm("fused_recurrent_mlstm", True, q, k, v, i, f, scale, initial_state, output_final_state,
                  cu_seqlens, input_gate, 64)


_GATES = {"linear_attn": "none", "simple_gla": "scalar", "gla": "vector", "delta_rule": "delta",
          "gated_delta_rule": "gated_delta", "mlstm": "mlstm"}


def linear_attention_step(kind: str, q, k, v, state, g=None, beta=None, i=None, f=None, scale=None,
                          normalizer=None, stabilizer=None, input_gate="exponential") -> torch.Tensor:
    """One decode token per sequence: q, k [N,1,H,K], v [N,1,H,V]; `state` float32 [N,H,K,V]
    (and the mLSTM normalizer / stabilizer) updated in place. kind: one of linear_attn, simple_gla,
    gla, delta_rule, gated_delta_rule, mlstm. Returns o [N,1,H,V]."""
    if kind not in _GATES:
        raise ValueError(f"weft_torch.linear_attention_step: kind must be one of {sorted(_GATES)}, got {kind!r}")
    return torch.ops.weft.linear_attention_step(q, k, v, _GATES[kind], g, beta, i, f, state, normalizer, stabilizer,
                                                None if scale is None else float(scale), input_gate == "sigmoid")
